"""Files and batches (gateway.batches) through the official openai SDK against a live gateway."""

from __future__ import annotations

import io
import json
import threading

import openai
import pytest

from gateway import db
from gateway.accounting import credits
from gateway.tables import ApiKey, Batch, FileChunk, LedgerEntry, Reservation, UsageEntry
from tests.fake_upstream import JsonReply, default_responder
from tests.live_gateway import accepting, children, live_gateway, start_gateway
from tests.polling import wait_until

PRICE_PER_TOKEN = 1000  # micro-credits per output token
PAID_MODEL = {"paid-model": {"provider": "fake", "output_price_per_mtok": PRICE_PER_TOKEN, "max_output_tokens": 50}}
BATCHES = {"poll_s": 0.05, "lease_s": 5, "chunk_bytes": 1024}
FINISHED = ("completed", "failed", "expired", "cancelled")


GUARDRAILS = {"no-secrets": {"type": "regex", "default": True, "stages": ["input"],
                             "patterns": [{"name": "secret", "pattern": "top-secret"}]}}


@pytest.fixture
def settings(make_settings):
    return make_settings(models=PAID_MODEL, batches=BATCHES, guardrails=GUARDRAILS)


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def chat_line(number: int, model: str = "test-model", **body) -> dict:
    return {"custom_id": f"request-{number}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {number}"}], **body}}


def sdk(base_url: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=secret, max_retries=0)


def finished(client: openai.OpenAI, batch_id: str, bound_s: float = 60.0):
    """Poll the batch until it reaches a final status; answers it."""
    seen = {}

    def done() -> bool:
        seen["batch"] = client.batches.retrieve(batch_id)
        return seen["batch"].status in FINISHED

    wait_until(done, f"batch {batch_id} to finish", bound_s)
    return seen["batch"]


def content_lines(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def submit(client: openai.OpenAI, lines: list[dict], endpoint: str = "/v1/chat/completions"):
    upload = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")


def held_upstream(fake_upstream) -> threading.Event:
    """Make the fake hold every answer until the returned event is set (30 s at most)."""
    release = threading.Event()

    def held(path, body):
        release.wait(30)
        return default_responder(path, body)

    fake_upstream.responder = held
    return release


def failing_on(text: str):
    """The default fake, with a 400 for the chat request whose last message is `text`."""
    def responder(path, body):
        if (body.get("messages") or [{}])[-1].get("content") == text:
            return JsonReply({"error": {"message": "bad request upstream", "type": "invalid_request_error"}}, 400)
        return default_responder(path, body)
    return responder


def test_the_fake_answers_the_sdk_directly(fake_upstream):
    """The fake upstream is an OpenAI-compatible server as the SDK sees it."""
    answer = openai.OpenAI(base_url=fake_upstream.base_url, api_key="x").chat.completions.create(
        model="upstream-model", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Hello from upstream"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_100_line_batch_completes_with_every_custom_id(live_server, api_key, fake_upstream):
    client = sdk(live_server, api_key)
    fake_upstream.responder = failing_on("question 42")
    batch = submit(client, [chat_line(number) for number in range(100)])
    assert batch.status == "validating" and batch.endpoint == "/v1/chat/completions"
    batch = finished(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.model_dump() == {"total": 100, "completed": 99, "failed": 1}
    output = content_lines(client, batch.output_file_id)
    assert [line["custom_id"] for line in output] == [f"request-{n}" for n in range(100) if n != 42]
    first = output[0]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Hello from upstream"
    errors = content_lines(client, batch.error_file_id)
    assert [line["custom_id"] for line in errors] == ["request-42"]
    assert errors[0]["response"]["status_code"] == 400
    assert set(errors[0]["response"]["body"]["error"]) == {"message", "type", "param", "code"}
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_embeddings_and_completions_batches(live_server, api_key):
    client = sdk(live_server, api_key)
    embeddings = submit(client, [{"custom_id": f"e{n}", "method": "POST", "url": "/v1/embeddings",
                                  "body": {"model": "test-model", "input": "text"}} for n in range(3)],
                        "/v1/embeddings")
    legacy = submit(client, [{"custom_id": "c", "method": "POST", "url": "/v1/completions",
                              "body": {"model": "test-model", "prompt": "once upon"}}], "/v1/completions")
    embeddings, legacy = finished(client, embeddings.id), finished(client, legacy.id)
    assert embeddings.status == legacy.status == "completed"
    vectors = content_lines(client, embeddings.output_file_id)
    assert [line["response"]["body"]["data"][0]["embedding"] for line in vectors] == [[0.1, 0.2, 0.3]] * 3
    assert content_lines(client, legacy.output_file_id)[0]["response"]["body"]["choices"][0]["text"] == "legacy text"


def test_a_line_with_a_bad_body_unknown_model_or_blocked_input_fails_alone(live_server, api_key, fake_upstream):
    client = sdk(live_server, api_key)
    blocked = chat_line(3, messages=[{"role": "user", "content": "the top-secret plan"}])
    batch = finished(client, submit(client, [chat_line(0), chat_line(1, temperature=9), chat_line(2, "no-such"),
                                             blocked]).id)
    assert batch.status == "completed" and batch.request_counts.failed == 3
    errors = {line["custom_id"]: line["response"] for line in content_lines(client, batch.error_file_id)}
    assert errors["request-1"]["status_code"] == 400
    assert errors["request-1"]["body"]["error"]["param"] == "temperature"
    assert errors["request-2"]["status_code"] == 404
    assert errors["request-3"]["status_code"] == 400  # the input guardrail applies to batch lines too
    assert errors["request-3"]["body"]["error"]["code"] == "content_policy_violation"
    assert not any("top-secret" in json.dumps(body) for body in fake_upstream.bodies())


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_lines_are_charged_the_batch_fraction_and_the_ledger_adds_up(live_server, make_key, fake_upstream):
    secret = make_key("payer")
    with db.database.connection_context():
        account_id = ApiKey.get(ApiKey.name == "payer").account_id
        credits.grant_credits(account_id, 5 * 7 * PRICE_PER_TOKEN)  # 5 live answers of 7 output tokens
    client = sdk(live_server, secret)
    batch = finished(client, submit(client, [chat_line(n, "paid-model", max_tokens=7) for n in range(20)]).id)
    with db.database.connection_context():
        rows = list(UsageEntry.select().where(UsageEntry.account == account_id))
        charged = -sum(entry.amount for entry in LedgerEntry.select().where(
            (LedgerEntry.account == account_id) & (LedgerEntry.kind == "charge")))
        balance = credits.balance_of(account_id)
        open_holds = Reservation.select().where(Reservation.status == "open").count()
    paid = [row for row in rows if row.status == 200]
    assert len(paid) == 10 and all(row.batch and row.cost == 7 * PRICE_PER_TOKEN // 2 for row in paid)
    wait_until(lambda: refused_rows(account_id) == 10, "the refused lines' usage rows (queued, not waited for)")
    assert batch.request_counts.completed == 10 and batch.request_counts.failed == 10
    assert balance == 0 and open_holds == 0
    assert sum(row.cost for row in rows) == 5 * 7 * PRICE_PER_TOKEN == abs(charged)
    errors = content_lines(client, batch.error_file_id)
    assert {line["response"]["status_code"] for line in errors} == {402}


def refused_rows(account_id: int) -> int:
    with db.database.connection_context():
        return UsageEntry.select().where((UsageEntry.account == account_id) & (UsageEntry.status == 402)
                                         & (UsageEntry.cost == 0)).count()


def test_cancel_stops_the_batch_with_the_lines_done(live_server, api_key, fake_upstream):
    client = sdk(live_server, api_key)
    release = held_upstream(fake_upstream)
    batch = submit(client, [chat_line(n) for n in range(50)])
    wait_until(lambda: fake_upstream.requests, "the first line to reach the upstream")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    release.set()
    batch = finished(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    assert batch.request_counts.completed < 50
    assert client.batches.cancel(batch.id).status == "cancelled"


def test_list_pages_like_openai(live_server, api_key):
    client = sdk(live_server, api_key)
    upload = client.files.create(file=("input.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch")
    made = [client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h").id for _ in range(5)]
    first = client.batches.list(limit=2)
    assert first.has_more and len(first.data) == 2
    assert [batch.id for batch in client.batches.list(limit=2)] == made[::-1]  # the SDK follows `after`
    second = client.batches.list(limit=3, after=first.data[-1].id)
    assert [batch.id for batch in second.data] == made[::-1][2:] and not second.has_more
    files_page = client.files.list()
    assert upload.id in [item.id for item in files_page.data]


def test_another_account_sees_a_404(live_server, make_key):
    owner, other = sdk(live_server, make_key("owner")), sdk(live_server, make_key("other"))
    batch = submit(owner, [chat_line(0)])
    for call in (lambda: other.files.retrieve(batch.input_file_id), lambda: other.files.content(batch.input_file_id),
                 lambda: other.files.delete(batch.input_file_id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                                              completion_window="24h")):
        with pytest.raises(openai.NotFoundError) as raised:
            call()
        assert raised.value.body["type"] == "invalid_request_error"
    assert other.batches.list().data == [] and other.files.list().data == []


def test_delete_removes_the_file_and_its_chunks(live_server, api_key):
    client = sdk(live_server, api_key)
    content = jsonl([chat_line(n) for n in range(40)])  # several 1 KiB chunks
    upload = client.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
    assert upload.bytes == len(content) and upload.status == "processed"
    assert client.files.content(upload.id).content == content
    deleted = client.files.delete(upload.id)
    assert deleted.deleted and deleted.id == upload.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(upload.id)
    with db.database.connection_context():
        assert FileChunk.select().where(FileChunk.file == upload.id).count() == 0


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_bad_input_files_fail_the_batch_with_errors(live_server, api_key):
    client = sdk(live_server, api_key)
    duplicate = [chat_line(0), chat_line(0)]
    wrong_url = [{**chat_line(0), "url": "/v1/embeddings"}]

    def failed_with(content: bytes) -> list:
        upload = client.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
        batch = finished(client, client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                       completion_window="24h").id)
        assert batch.status == "failed" and batch.failed_at and batch.output_file_id is None
        return [(error.code, error.line) for error in batch.errors.data]

    assert failed_with(b"this is not json\n") == [("invalid_json_line", 1)]
    assert failed_with(jsonl(wrong_url)) == [("invalid_url", 1)]
    assert failed_with(jsonl(duplicate)) == [("duplicate_custom_id", 2)]


def test_bad_requests_are_a_400_as_openai_does(live_server, api_key):
    client = sdk(live_server, api_key)
    upload = client.files.create(file=("input.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/images/generations", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("input.jsonl", io.BytesIO(b"{}")), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


def test_a_batch_past_its_window_expires(live_server, api_key, fake_upstream):
    client = sdk(live_server, api_key)
    release = held_upstream(fake_upstream)
    batch = submit(client, [chat_line(n) for n in range(20)])
    wait_until(lambda: fake_upstream.requests, "the first line to reach the upstream")
    with db.database.connection_context():
        Batch.update(expires_at=0).where(Batch.id == batch.id).execute()
    release.set()
    batch = finished(client, batch.id)
    assert batch.status == "expired" and batch.expired_at
    assert batch.request_counts.completed + batch.request_counts.failed == 20
    errors = content_lines(client, batch.error_file_id)
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert all(line["response"] is None for line in errors)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_batch_survives_a_gateway_restart(tmp_path, database_url, fake_upstream, make_key):
    """A real gunicorn stopped midway and started again on the same database resumes where it stopped;
    the lines in flight when it stops finish and are recorded, and no line is sent twice."""
    secret = make_key("restart")
    release = threading.Event()
    answered = []

    def slow(path, body):
        answered.append(body["messages"][-1]["content"])
        if len(answered) > 10:
            release.wait(30)
        return failing_on("question 7")(path, body)

    fake_upstream.responder = slow
    config = (f'[database]\nurl = "{database_url}"\n[providers.fake]\nbase_url = "{fake_upstream.base_url}"\n'
              '[models.test-model]\nprovider = "fake"\n'
              '[batches]\nconcurrency_per_account = 2\nlease_s = 5\npoll_s = 0.1\n')
    served = start_gateway(tmp_path / "first", config, workers=1, threads=4)
    try:
        batch = submit(sdk(served.base_url, secret), [chat_line(n) for n in range(40)])
        wait_until(lambda: len(answered) >= 12, "two lines held by the upstream")
        worker = children(served.process.pid)[0]
        stopping = threading.Thread(target=served.stop)
        stopping.start()
        wait_until(lambda: not accepting(worker, served.port), "the worker to begin its shutdown")
        release.set()  # the lines in flight finish while the gateway stops
        stopping.join()
    finally:
        release.set()
        served.stop()
    with db.database.connection_context():
        stopped = Batch.get_by_id(batch.id)
    assert stopped.status == "in_progress" and stopped.completed + stopped.failed == len(answered) < 40
    release.clear()
    with live_gateway(tmp_path / "second", config, workers=1, threads=4) as served:
        client = sdk(served.base_url, secret)
        release.set()
        batch = finished(client, batch.id)
        output = content_lines(client, batch.output_file_id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 40, "completed": 39, "failed": 1}
    assert [line["custom_id"] for line in output] == [f"request-{n}" for n in range(40) if n != 7]
    assert sorted(answered) == sorted(f"question {n}" for n in range(40))  # each line sent once


def test_batch_lines_leave_the_keys_rate_limits_to_its_live_requests(live_server, make_key):
    """A key with rpm 5 runs a 20-line batch, and its live requests still have their 5 a minute."""
    client = sdk(live_server, make_key("limited", rpm=5))
    batch = finished(client, submit(client, [chat_line(n) for n in range(20)]).id)
    assert batch.status == "completed" and batch.request_counts.completed == 20
    for _ in range(5):
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "live"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "one too many"}])


def test_metadata_is_kept_and_bounded_as_openai_does(live_server, api_key):
    client = sdk(live_server, api_key)
    upload = client.files.create(file=("input.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"job": "nightly"})
    assert client.batches.retrieve(batch.id).metadata == {"job": "nightly"}
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                              metadata={f"k{n}": "v" for n in range(17)})


def test_a_line_charged_before_its_worker_died_is_sent_again_free(app, make_key, fake_upstream):
    """A worker killed between a line's charge and its recorded result: the next runner sends the line again
    (its answer was lost) and charges nothing more."""
    from gateway.accounting import keys
    from gateway.batches.execute import line_request_id, send

    secret = make_key("payer")
    with db.database.connection_context():
        account_id = ApiKey.get(ApiKey.name == "payer").account_id
        credits.grant_credits(account_id, 100 * PRICE_PER_TOKEN)
    body = {"model": "paid-model", "max_tokens": 7, "messages": [{"role": "user", "content": "question"}]}
    request_id = line_request_id("batch_crashed", 3)
    with app.test_request_context(headers={"Authorization": f"Bearer {secret}"}), db.database.connection_context():
        caller = keys.cached_caller(secret)
        answers = [send(caller, "/v1/chat/completions", body, request_id, threading.Event()) for _ in range(2)]
    assert [answer.status for answer in answers] == [200, 200] and len(fake_upstream.requests) == 2
    with db.database.connection_context():
        rows = list(UsageEntry.select().where(UsageEntry.request_id == request_id).order_by(UsageEntry.id))
        balance = credits.balance_of(account_id)
    assert [row.cost for row in rows] == [7 * PRICE_PER_TOKEN // 2, 0] and all(row.batch for row in rows)
    assert balance == 100 * PRICE_PER_TOKEN - 7 * PRICE_PER_TOKEN // 2
