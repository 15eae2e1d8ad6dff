"""The Conversations API and the Responses `conversation` parameter: the openai SDK, agents sessions, HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from gateway.responses import conversations
from tests.fake_upstream import JsonReply

USER = {"type": "message", "role": "user", "content": "My name is Ada."}


@pytest.fixture
def sdk(live_server, api_key):
    with openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0, timeout=20) as client:
        yield client


def upstream_messages(fake_upstream) -> list[tuple[str, Any]]:
    return [(message["role"], message.get("content")) for message in fake_upstream.requests[-1][1]["messages"]]


def item_texts(sdk: openai.OpenAI, conversation_id: str) -> list[tuple[str, str]]:
    items = sdk.conversations.items.list(conversation_id, order="asc")
    return [(item.role, item.content[0].text) for item in items]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_sdk_conversation_lifecycle(sdk):
    conversation = sdk.conversations.create(items=[USER], metadata={"topic": "names"})
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "names"}
    assert sdk.conversations.retrieve(conversation.id).created_at == conversation.created_at
    assert sdk.conversations.update(conversation.id, metadata={"topic": "other"}).metadata == {"topic": "other"}

    added = sdk.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi Ada."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bye."}]},
    ])
    assert [item.role for item in added.data] == ["assistant", "user"] and added.has_more is False
    assert item_texts(sdk, conversation.id) == [("user", "My name is Ada."), ("assistant", "Hi Ada."),
                                                ("user", "Bye.")]
    newest = sdk.conversations.items.list(conversation.id, limit=2)  # desc by default
    assert [item.content[0].text for item in newest.data] == ["Bye.", "Hi Ada."] and newest.has_more
    assert len(list(sdk.conversations.items.list(conversation.id, limit=1))) == 3  # the SDK pages with `after`
    first = newest.data[-1]
    assert sdk.conversations.items.retrieve(first.id, conversation_id=conversation.id).id == first.id
    assert sdk.conversations.items.delete(first.id, conversation_id=conversation.id).id == conversation.id
    assert item_texts(sdk, conversation.id) == [("user", "My name is Ada."), ("user", "Bye.")]
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(first.id, conversation_id=conversation.id)

    deleted = sdk.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (conversation.id, True, "conversation.deleted")
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


def test_responses_read_and_extend_their_conversation(sdk, fake_upstream):
    conversation = sdk.conversations.create(items=[USER])
    first = sdk.responses.create(model="test-model", input="What is my name?", conversation=conversation.id)
    assert first.conversation.id == conversation.id and first.output_text == "Hello world"
    assert upstream_messages(fake_upstream) == [("user", "My name is Ada."), ("user", "What is my name?")]
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert items[-1].id == first.output[0].id and items[-1].role == "assistant"

    sdk.responses.create(model="test-model", input="Again?", conversation={"id": conversation.id}, store=False,
                         instructions="Be brief.")
    assert upstream_messages(fake_upstream) == [
        ("system", "Be brief."), ("user", "My name is Ada."), ("user", "What is my name?"),
        ("assistant", "Hello world"), ("user", "Again?"),
    ]
    assert len(item_texts(sdk, conversation.id)) == 5  # linear: each turn adds its own input and output


def test_streamed_responses_extend_their_conversation(sdk):
    conversation = sdk.conversations.create()
    with sdk.responses.stream(model="test-model", input="Hi", conversation=conversation.id) as stream:
        final = stream.get_final_response()
    assert item_texts(sdk, conversation.id) == [("user", "Hi"), ("assistant", final.output_text)]


def test_failed_responses_leave_the_conversation_unchanged(sdk, fake_upstream):
    conversation = sdk.conversations.create(items=[USER])
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "down"}}, status=500)
    with pytest.raises(openai.InternalServerError):
        sdk.responses.create(model="test-model", input="x", conversation=conversation.id)
    assert item_texts(sdk, conversation.id) == [("user", "My name is Ada.")]


def test_conversation_and_previous_response_id_are_exclusive(client, auth_headers):
    conversation = client.post("/v1/conversations", json={}, headers=auth_headers).json
    answer = client.post("/v1/responses", headers=auth_headers, json={
        "model": "test-model", "input": "x", "conversation": conversation["id"], "previous_response_id": "resp_1"})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "mutually_exclusive_parameters"


def test_conversations_belong_to_their_account(client, auth_headers, make_key):
    conversation = client.post("/v1/conversations", json={"items": [USER]}, headers=auth_headers).json
    other = {"Authorization": f"Bearer {make_key('other')}"}
    base = f"/v1/conversations/{conversation['id']}"
    for method, path in [("get", base), ("post", base), ("delete", base), ("get", f"{base}/items"),
                         ("post", f"{base}/items")]:
        body = {"metadata": {}} if path == base else {"items": [USER]}
        answer = getattr(client, method)(path, headers=other, json=body if method == "post" else None)
        assert answer.status_code == 404, (method, path)
    answer = client.post("/v1/responses", headers=other, json={
        "model": "test-model", "input": "x", "conversation": conversation["id"]})
    assert answer.status_code == 404 and answer.json["error"]["param"] == "conversation"
    assert len(client.get(f"{base}/items", headers=auth_headers).json["data"]) == 1


@pytest.mark.parametrize(
    "path,body,param",
    [
        ("/v1/conversations", {"items": [USER] * 21}, "items"),
        ("/v1/conversations", {"metadata": {"k": "v" * 513}}, "metadata"),
        ("/v1/conversations", {"itemz": []}, "itemz"),
        ("/v1/conversations", {"items": [{"type": "item_reference", "id": "msg_1"}]}, "items[0].type"),
        ("/v1/conversations", {"items": [{"type": "message", "role": "robot", "content": "x"}]}, None),
        ("{conversation}/items", {"items": []}, "items"),
    ],
)
def test_bad_conversation_requests_are_400(client, auth_headers, path, body, param):
    conversation = client.post("/v1/conversations", json={}, headers=auth_headers).json
    path = path.replace("{conversation}", f"/v1/conversations/{conversation['id']}")
    answer = client.post(path, json=body, headers=auth_headers)
    assert answer.status_code == 400, answer.json
    if param is not None:
        assert answer.json["error"]["param"].startswith(param)


def test_added_items_keep_unique_ids(client, auth_headers):
    item = {**USER, "id": "msg_client_chosen"}
    conversation = client.post("/v1/conversations", json={"items": [item]}, headers=auth_headers).json
    added = client.post(f"/v1/conversations/{conversation['id']}/items", json={"items": [item]},
                        headers=auth_headers).json
    assert added["data"][0]["id"] != "msg_client_chosen" and added["data"][0]["id"].startswith("msg_")
    listing = client.get(f"/v1/conversations/{conversation['id']}/items?order=asc&after=msg_client_chosen",
                         headers=auth_headers).json
    assert [entry["id"] for entry in listing["data"]] == [added["data"][0]["id"]]


def test_history_is_bounded(client, auth_headers, monkeypatch):
    monkeypatch.setattr(conversations, "MAX_HISTORY_ITEMS", 2)
    conversation = client.post("/v1/conversations", json={"items": [USER] * 3}, headers=auth_headers).json
    answer = client.post("/v1/responses", headers=auth_headers, json={
        "model": "test-model", "input": "x", "conversation": conversation["id"]})
    assert answer.status_code == 400 and answer.json["error"]["code"] == "conversation_too_long"


def test_agents_sdk_session_keeps_the_history(live_server, api_key, fake_upstream):
    from agents import Agent, OpenAIConversationsSession, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)
        agent = Agent(name="assistant", model=OpenAIResponsesModel(model="test-model", openai_client=client))
        session = OpenAIConversationsSession(openai_client=client)
        for text in ("My name is Ada.", "What is my name?"):
            await Runner.run(agent, text, session=session)
        items = await session.get_items()
        await client.close()
        return items

    items = asyncio.run(run())
    assert [item.get("role") for item in items] == ["user", "assistant", "user", "assistant"]
    assert [role for role, _ in upstream_messages(fake_upstream)] == ["user", "assistant", "user"]


def test_websocket_turns_extend_their_conversation(sdk, live_server, api_key):
    from tests.test_responses_ws import open_socket, turn

    conversation = sdk.conversations.create(items=[USER])
    with open_socket(live_server, api_key) as ws:
        events = turn(ws, input="Over the socket", conversation=conversation.id)
    assert events[-1]["response"]["conversation"] == {"id": conversation.id}
    assert item_texts(sdk, conversation.id)[1:] == [("user", "Over the socket"), ("assistant", "Hello world")]


def test_background_responses_extend_their_conversation(sdk):
    conversation = sdk.conversations.create()
    queued = sdk.responses.create(model="test-model", input="Later", conversation=conversation.id, background=True)
    for _ in range(100):
        if sdk.responses.retrieve(queued.id).status == "completed":
            break
        time.sleep(0.05)
    assert item_texts(sdk, conversation.id) == [("user", "Later"), ("assistant", "Hello world")]
