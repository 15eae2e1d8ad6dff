"""Attribution: tags (X-Gateway-Tags, OpenAI's metadata) and the end user, parsed (table-driven) and recorded on the
usage rows of chat, completions, embeddings, Messages and Responses requests; bad tags are a 400 with no row and no
charge."""

from __future__ import annotations

import openai
import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting.attribution import Attribution, attribution_of
from gateway.accounting.keys import create_key
from gateway.accounting.operations import Settlement
from gateway.accounting.writer import writer
from gateway.config import AttributionSettings
from gateway.errors import InvalidRequest
from gateway.tables import LedgerEntry, UsageEntry
from tests.polling import wait_until

PAID = {"provider": "fake", "upstream_model": "upstream-model", "input_price_per_mtok": 2.5,
        "output_price_per_mtok": 10, "max_output_tokens": 100}
HI = [{"role": "user", "content": "hi"}]
RULES = AttributionSettings(max_tags=3, max_tag_length=12, metadata_keys=("team", "feature"))

both_databases = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ([], {}, Attribution()),
    (["a,b"], {}, Attribution(("a", "b"))),
    ([" a , b ,, a ,"], {}, Attribution(("a", "b"))),  # trimmed, empty items and repeats dropped
    (["a", "b"], {}, Attribution(("a", "b"))),  # the header sent twice
    (["t:x/y_z.1-2"], {}, Attribution(("t:x/y_z.1-2",))),
    ([], {"metadata": {"team": "core", "other": "no", "feature": "chat"}}, Attribution(("team:core", "feature:chat"))),
    (["team:core"], {"metadata": {"team": "core"}}, Attribution(("team:core",))),  # one tag, said twice
    ([], {"metadata": {"team": 7, "feature": ""}}, Attribution()),  # not strings: the face validates them
    ([], {"metadata": "team"}, Attribution()),
    ([], {"user": "alice"}, Attribution((), "alice")),
    ([], {"metadata": {"user_id": "bob"}}, Attribution((), "bob")),  # Anthropic's
    ([], {"user": "alice", "metadata": {"user_id": "bob"}}, Attribution((), "alice")),
    ([], {"user": 3}, Attribution()),
    ([], {"user": "u" * 300}, Attribution((), "u" * 256)),  # cut to the column's width
])
def test_attribution_of(headers, body, expected):
    assert attribution_of(headers, body, RULES) == expected


@pytest.mark.parametrize(("headers", "body", "param", "words"), [
    (["a b"], {}, "X-Gateway-Tags", "only letters"),
    (["a;b"], {}, "X-Gateway-Tags", "only letters"),
    (["é"], {}, "X-Gateway-Tags", "only letters"),
    (["x" * 13], {}, "X-Gateway-Tags", "longer than 12"),
    (["a,b,c,d"], {}, "X-Gateway-Tags", "at most 3 tags"),
    (["a,b"], {"metadata": {"team": "t", "feature": "f"}}, "X-Gateway-Tags", "at most 3 tags"),
    ([], {"metadata": {"team": "Co In"}}, "metadata.team", "only letters"),
    ([], {"metadata": {"feature": "abcdefgh"}}, "metadata.feature", "longer than 12"),
])
def test_bad_tags_name_where_they_came_from(headers, body, param, words):
    with pytest.raises(InvalidRequest) as raised:
        attribution_of(headers, body, RULES)
    assert raised.value.param == param and words in raised.value.message


def test_no_tags_allowed_when_max_tags_is_zero():
    with pytest.raises(InvalidRequest):
        attribution_of(["a"], {}, AttributionSettings(max_tags=0))
    assert attribution_of([], {"user": "u"}, AttributionSettings(max_tags=0)) == Attribution((), "u")


@pytest.fixture
def settings(make_settings):
    return make_settings(models={"paid-model": PAID}, attribution={"metadata_keys": ["team"]})


@pytest.fixture
def api_key(app) -> str:
    """A key whose account holds 100 credits (the paid model needs a balance)."""
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("attributed")
        credits.grant_credits(key.account_id, credits.to_micro(100))
    return secret


def committed_rows(app) -> list[UsageEntry]:
    """The usage rows once the writer committed everything queued so far (a settlement that writes nothing)."""
    writer(app).call(Settlement(1, None, None, 0, "barrier"))
    with db.database.connection_context():
        return list(UsageEntry.select().order_by(UsageEntry.id))


def charges(app) -> int:
    with db.database.connection_context():
        return LedgerEntry.select().where(LedgerEntry.kind == "charge").count()


FACES = [
    ("/v1/chat/completions", {"model": "paid-model", "messages": HI, "user": "alice",
                              "metadata": {"team": "core"}}, "chat/completions"),
    ("/v1/chat/completions", {"model": "paid-model", "messages": HI, "user": "alice", "stream": True,
                              "metadata": {"team": "core"}}, "chat/completions"),
    ("/api/v1/chat/completions", {"model": "paid-model", "messages": HI, "user": "alice",
                                  "metadata": {"team": "core"}}, "chat/completions"),
    ("/v1/messages", {"model": "paid-model", "max_tokens": 20, "messages": HI,
                      "metadata": {"user_id": "alice"}}, "messages"),
    ("/v1/responses", {"model": "paid-model", "input": "hi", "user": "alice", "metadata": {"team": "core"}},
     "responses"),
]


@both_databases
@pytest.mark.parametrize(("path", "body", "endpoint"), FACES, ids=lambda value: value if isinstance(value, str) else "")
def test_tags_and_end_user_are_on_the_usage_row(client, auth_headers, path, body, endpoint):
    answer = client.post(path, json=body, headers={**auth_headers, "X-Gateway-Tags": "app:web, beta"})
    answer.get_data()
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [row] = committed_rows(client.application)
    expected = "app:web,beta,team:core" if "team" in str(body) else "app:web,beta"
    assert (row.endpoint, row.end_user, row.tags, row.status) == (endpoint, "alice", expected, 200)
    assert row.cost > 0


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/embeddings"])
def test_completions_and_embeddings_record_them_too(client, auth_headers, fake_upstream, path):
    from tests.fake_upstream import JsonReply

    fake_upstream.responder = lambda _path, _body: JsonReply({
        "object": "list", "model": "upstream-model", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
        "choices": [{"index": 0, "text": "hi", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    body = {"model": "paid-model", "user": "carol"} | ({"prompt": "hi"} if "completions" in path else {"input": "hi"})
    answer = client.post(path, json=body, headers={**auth_headers, "X-Gateway-Tags": "batch"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    [row] = committed_rows(client.application)
    assert (row.end_user, row.tags) == ("carol", "batch")


def test_untagged_requests_store_nulls(client, auth_headers):
    assert client.post("/v1/chat/completions", json={"model": "paid-model", "messages": HI},
                       headers=auth_headers).status_code == 200
    [row] = committed_rows(client.application)
    assert (row.end_user, row.tags) == (None, None)


@both_databases
@pytest.mark.parametrize(("path", "headers", "body", "param"), [
    ("/v1/chat/completions", {"X-Gateway-Tags": "no spaces"}, {}, "X-Gateway-Tags"),
    ("/api/v1/chat/completions", {"X-Gateway-Tags": ",".join("abcdefghijk")}, {}, "X-Gateway-Tags"),
    ("/v1/chat/completions", {}, {"metadata": {"team": "a,b"}}, "metadata.team"),
    ("/v1/responses", {"X-Gateway-Tags": "x" * 65}, {}, "X-Gateway-Tags"),
])
def test_bad_tags_are_a_400_with_no_row_and_no_charge(client, auth_headers, path, headers, body, param):
    base = {"input": "hi"} if path.endswith("responses") else {"messages": HI}
    answer = client.post(path, json={"model": "paid-model", **base, **body}, headers={**auth_headers, **headers})
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param in error["message"]
    assert committed_rows(client.application) == [] and charges(client.application) == 0


def test_bad_tags_on_messages_answer_anthropics_error(client, auth_headers):
    answer = client.post("/v1/messages", json={"model": "paid-model", "max_tokens": 5, "messages": HI},
                         headers={**auth_headers, "X-Gateway-Tags": "a|b"})
    assert answer.status_code == 400 and answer.json["type"] == "error"
    assert "X-Gateway-Tags" in answer.json["error"]["message"]
    assert committed_rows(client.application) == []


def test_openai_sdk_sends_tags_and_user(live_server, api_key, app):
    sdk = openai.OpenAI(base_url=f"{live_server}/v1", api_key=api_key, max_retries=0)
    sdk.chat.completions.create(model="paid-model", messages=HI, user="dave", metadata={"team": "ml"},
                                extra_headers={"X-Gateway-Tags": "sdk"})
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="paid-model", messages=HI, extra_headers={"X-Gateway-Tags": "bad tag"})
    assert raised.value.body["param"] == "X-Gateway-Tags"
    [row] = committed_rows(app)
    assert (row.end_user, row.tags) == ("dave", "sdk,team:ml")


def test_a_conversations_metadata_is_not_a_requests_tags(client, auth_headers):
    created = client.post("/v1/conversations", json={"metadata": {"team": "Core Infra, EMEA"}},
                          headers={**auth_headers, "X-Gateway-Tags": "not checked here"})
    assert created.status_code == 200 and created.json["metadata"] == {"team": "Core Infra, EMEA"}


def test_streamed_and_background_responses_keep_them(client, auth_headers):
    """A background response finishes on another thread: the meter took its tags and end user at admission."""
    for extra in ({"stream": True}, {"background": True, "store": True}):
        answer = client.post("/v1/responses", json={"model": "paid-model", "input": "hi", "user": "zed", **extra},
                             headers={**auth_headers, "X-Gateway-Tags": "bg"})
        answer.get_data()
        assert answer.status_code == 200, answer.get_data(as_text=True)
    wait_until(lambda: len(committed_rows(client.application)) == 2, "the background response's row")
    rows = committed_rows(client.application)
    assert [(row.endpoint, row.tags, row.end_user) for row in rows] == [("responses", "bg", "zed")] * 2
