"""The batch store's rules without a server (gateway.batches.store, gateway.batches.lines): the lease, the
per-line record, the pages and the line checks."""

from __future__ import annotations

import json
import time

import pytest

from gateway import db
from gateway.batches import files, store
from gateway.batches.lines import LineError, output_line, parse_line, unanswered_line
from gateway.tables import Account, ApiKey, Batch, BatchFile, FileChunk


@pytest.fixture
def account(app, make_key):
    make_key("owner")
    with db.database.connection_context():
        key = ApiKey.get(ApiKey.name == "owner")
        yield key.account_id, key.id


def new_batch(account_id: int, key_id: int) -> Batch:
    upload = files.store(account_id, "batch", "in.jsonl", [b'{"x": 1}\n'])
    return store.create(account_id, key_id, "/v1/chat/completions", upload.id, "24h", None)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_one_runner_holds_a_batch_until_its_lease_ends_or_it_releases_it(account):
    batch = new_batch(*account)
    first = store.claim("host-a", 60)
    assert first is not None and first.id == batch.id
    assert store.claim("host-b", 60) is None  # held
    assert store.renew(batch.id, "host-a", 60) and not store.renew(batch.id, "host-b", 60)
    Batch.update(lease_until=0).where(Batch.id == batch.id).execute()  # host-a died: its lease ran out
    assert store.claim("host-b", 60).id == batch.id
    assert not store.renew(batch.id, "host-a", 60)  # host-a, back, learns it lost the batch and stops
    store.release(batch.id, "host-b")
    assert store.claim("host-a", 60).id == batch.id


def test_one_account_has_one_batch_running_at_a_time(account, make_key):
    first, second = new_batch(*account), new_batch(*account)
    make_key("other")
    other_key = ApiKey.get(ApiKey.name == "other")
    third = new_batch(other_key.account_id, other_key.id)
    assert store.claim("a", 60).id == first.id
    assert store.claim("b", 60).id == third.id  # the first account's second batch waits for its first
    assert store.claim("c", 60) is None
    store.finalize(Batch.get_by_id(first.id), "completed", "completed_at", 1024)
    assert store.claim("c", 60).id == second.id


def test_two_runners_claiming_two_batches_of_one_account_at_once_leave_one_running(account):
    """Both picked a batch before either lease was written; the runner of the newer one gives it back."""
    first, second = new_batch(*account), new_batch(*account)
    Batch.update(lease_owner="a", lease_until=time.time() + 60).where(Batch.id == first.id).execute()
    Batch.update(lease_owner="b", lease_until=time.time() + 60).where(Batch.id == second.id).execute()
    assert store.older_batch_held(Batch.get_by_id(second.id), time.time())
    assert not store.older_batch_held(Batch.get_by_id(first.id), time.time())


def test_a_line_is_recorded_and_counted_once(account):
    batch = new_batch(*account)
    store.record_line(batch.id, 0, True, "{}")
    store.record_line(batch.id, 0, True, "{}")  # a second runner's late write of the same line changes nothing
    store.record_line(batch.id, 1, False, "{}")
    row = Batch.get_by_id(batch.id)
    assert (row.completed, row.failed) == (1, 1) and store.done_lines(batch.id) == {0, 1}


def test_results_are_written_in_input_order_in_chunks(account):
    batch = new_batch(*account)
    for number in (3, 0, 2, 1):
        store.record_line(batch.id, number, True, json.dumps({"line": number, "pad": "x" * 500}))
    store.finalize(Batch.get_by_id(batch.id), "completed", "completed_at", 1024)
    row = Batch.get_by_id(batch.id)
    text = b"".join(files.chunks(row.output_file_id))
    assert [json.loads(line)["line"] for line in text.splitlines()] == [0, 1, 2, 3]
    assert row.error_file_id is None and row.lease_owner is None
    assert files.load(row.output_file_id, row.account_id).bytes == len(text)


@pytest.mark.parametrize(("raw", "code", "param"), [
    (b"not json", "invalid_json_line", None),
    (b"[1]", "invalid_json_line", None),
    (b'{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}', "missing_required_parameter",
     "custom_id"),
    (b'{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {"model": "m"}}',
     "invalid_method", "method"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}', "invalid_url", "url"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": []}', "invalid_request", "body"),
    (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
     "missing_required_parameter", "body.model"),
])
def test_an_invalid_line_says_why_as_openai_does(raw, code, param):
    with pytest.raises(LineError) as raised:
        parse_line(raw, 4, "/v1/chat/completions")
    assert raised.value.as_json() == {"code": code, "message": raised.value.message, "param": param, "line": 5}


def test_output_and_error_lines_have_openais_shape():
    assert json.loads(output_line("batch_req_1", "a", 200, "r", {"ok": 1})) == {
        "id": "batch_req_1", "custom_id": "a", "response": {"status_code": 200, "request_id": "r", "body": {"ok": 1}},
        "error": None}
    assert json.loads(unanswered_line("batch_req_2", "b", "batch_expired", "late")) == {
        "id": "batch_req_2", "custom_id": "b", "response": None, "error": {"code": "batch_expired", "message": "late"}}


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_deleting_an_account_deletes_its_files_and_batches(account):
    batch = new_batch(*account)
    ApiKey.delete().where(ApiKey.account == account[0]).execute()
    Account.delete().where(Account.id == account[0]).execute()
    assert Batch.get_or_none(Batch.id == batch.id) is None
    assert BatchFile.get_or_none(BatchFile.id == batch.input_file_id) is None
    assert FileChunk.select().where(FileChunk.file == batch.input_file_id).count() == 0
