"""The accounting writer thread: group commit, failures isolated, sweeps, an explicit close."""

from __future__ import annotations

import datetime
import time

import pytest

from gateway import db
from gateway.accounting import credits
from gateway.accounting import writer as writer_module
from gateway.accounting.keys import create_key
from gateway.accounting.operations import Admission, Settlement, UsageRow
from gateway.accounting.writelock import WriteLock, lock_path
from gateway.accounting.writer import AccountingWriter, sweep_interval
from gateway.errors import ServiceUnavailable
from gateway.tables import Reservation, UsageEntry, utcnow


@pytest.fixture
def key(database_url):
    db.bind(database_url)
    db.upgrade()
    with db.database.connection_context():
        created, _ = create_key("w")
        credits.grant_credits(created.account_id, 10_000)
    return created


@pytest.fixture
def accounting(key):
    built = AccountingWriter(db.database.obj, reservation_ttl_s=1, sweeps_windows=True)
    yield built
    built.close()


def hold(key, amount: int = 10) -> Admission:
    return Admission(key.account_id, key.id, None, amount, "r", 60)


def usage(account_id: int) -> Settlement:
    return Settlement(account_id, None, None, 0, "u", UsageRow("u", "chat/completions", "m", 1, 1, False, 200, 1))


@pytest.mark.parametrize(("ttl_s", "every_s"), [(900, 30.0), (10, 5.0), (2, 1.0), (1, 0.5), (0.2, 0.5)])
def test_sweep_interval(ttl_s, every_s):
    assert sweep_interval(ttl_s) == every_s


def test_operations_queued_during_a_commit_share_the_next_one(key, accounting, monkeypatch):
    sizes: list[int] = []
    real = writer_module.apply_batch
    monkeypatch.setattr(writer_module, "apply_batch", lambda st, ops, now: sizes.append(len(ops)) or real(st, ops, now))
    with WriteLock(lock_path(db.database.obj)):  # like another process's batch: the writer waits for it
        queued = [accounting.submit(hold(key)) for _ in range(21)]
        time.sleep(0.05)
    answers = [pending.wait() for pending in queued]
    assert all(answer.reservation_id for answer in answers)
    assert sum(sizes) == 21 and len(sizes) <= 2


def test_a_failing_operation_fails_alone(key, accounting):
    with WriteLock(lock_path(db.database.obj)):
        good, bad, also_good = (accounting.submit(op) for op in (hold(key), usage(999_999), usage(key.account_id)))
        time.sleep(0.05)
    assert good.wait().reservation_id
    with pytest.raises(ServiceUnavailable):
        bad.wait()  # a usage row for an account that does not exist
    assert also_good.wait() == 0
    with db.database.connection_context():
        assert UsageEntry.select().count() == 1


def test_close_commits_what_is_queued_then_refuses(key, accounting):
    queued = [accounting.submit(hold(key)) for _ in range(5)]
    accounting.close()
    accounting.close()
    assert all(pending.wait().reservation_id for pending in queued)
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        accounting.submit(hold(key))


def test_expired_holds_are_swept_without_traffic(key, accounting):
    with db.database.connection_context():
        credits.reserve(key, 100, "killed", ttl_s=1, now=utcnow() - datetime.timedelta(seconds=5))
    accounting.call(hold(key))  # starts the writer; then it sweeps on its own every 0.5 s
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.database.connection_context():
            if Reservation.get(Reservation.request_id == "killed").status == "swept":
                return
        time.sleep(0.05)
    raise AssertionError("the expired hold was not swept")
