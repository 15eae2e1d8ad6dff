"""The shared health board on SQLite, PostgreSQL and Redis: two "hosts" on one store, exact counts, one trial."""

from __future__ import annotations

import importlib.util
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from playhouse.migrations import Runner

from gateway import db
from gateway.config import build_settings
from gateway.tables import DeploymentHealth
from gateway.upstream import health_store
from gateway.upstream.cooldown import HEALTHY, CoolPolicy, Health
from gateway.upstream.health_store import DatabaseHealth, HealthBoard, HealthStore, RedisHealth, health_board
from tests.polling import wait_until

TEST_DATABASE_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
POLICY = CoolPolicy(failures_to_cool=3, window_s=60.0, cooldown_s=30.0, max_retry_after_s=300.0)
START = 1_700_000_000.0
NAME = "fake/model"
KEEP_S = 3600


class Clock:
    """A settable wall clock shared by the boards of one test."""

    def __init__(self) -> None:
        self.value = START

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def new_store(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[], HealthStore]]:
    """Builds stores on one shared backend (each board gets its own, as each host would)."""
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
        redis = pytest.importorskip("redis")
        prefix = f"test-routing-{uuid.uuid4().hex}:"
        yield lambda: RedisHealth(REDIS_URL, KEEP_S, prefix=prefix)
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()
        return
    if request.param == "postgres" and not TEST_DATABASE_URL:
        pytest.skip("GATEWAY_TEST_DATABASE_URL is not set")
    pool = db.bind(TEST_DATABASE_URL if request.param == "postgres" else f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    with db.database.connection_context():
        DeploymentHealth.delete().execute()
    yield DatabaseHealth
    pool.close_all()


def boards(new_store: Callable[[], HealthStore], clock: Clock, count: int = 2,
           policy: CoolPolicy = POLICY) -> list[HealthBoard]:
    """`count` boards ("hosts") on one store; their threads barely refresh, so the tests call refresh()."""
    return [HealthBoard(new_store(), policy, 3600, [NAME], clock) for _ in range(count)]


def test_two_hosts_see_each_others_cooldown_after_a_refresh(new_store, clock: Clock) -> None:
    first, second = boards(new_store, clock)
    for _ in range(POLICY.failures_to_cool):
        cooled = first.failed(NAME, None)
    assert cooled.status(clock()) == "cooling" and first.health(NAME) == cooled  # the copy, at once
    assert second.refresh()
    assert second.health(NAME) == cooled and second.snapshot() == {NAME: cooled}
    clock.value += POLICY.cooldown_s
    assert second.health(NAME).status(clock()) == "half_open"
    assert second.claim_trial(NAME, 10.0)
    assert first.refresh() and first.health(NAME).status(clock()) == "trial"
    assert not first.claim_trial(NAME, 10.0)
    second.succeeded(NAME)
    assert first.refresh() and first.health(NAME) == HEALTHY
    assert first.claim_trial(NAME, 10.0)  # healthy: nothing to claim
    for board in (first, second):
        board.close()


def test_a_retry_after_cools_every_host_for_that_long(new_store, clock: Clock) -> None:
    first, second = boards(new_store, clock)
    assert first.failed(NAME, 2.0) == Health(cooling_until=START + 2, half_open=True)
    assert second.refresh() and second.health(NAME).status(START + 1.9) == "cooling"
    assert second.health(NAME).status(START + 2) == "half_open"
    for board in (first, second):
        board.close()


def at_once(board_list: list[HealthBoard], threads_each: int, action: Callable[[HealthBoard], object]) -> list:
    """Every board's threads call `action` once, released together; their answers."""
    barrier = threading.Barrier(len(board_list) * threads_each)
    answers: list = []

    def act(board: HealthBoard) -> None:
        barrier.wait()
        answers.append(action(board))

    workers = [threading.Thread(target=act, args=(board,)) for board in board_list for _ in range(threads_each)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def fail_at_once(board_list: list[HealthBoard], threads_each: int) -> None:
    """Every board's threads report one failure each, released together."""
    at_once(board_list, threads_each, lambda board: board.failed(NAME, None))


def test_concurrent_failures_from_two_hosts_are_all_counted(new_store, clock: Clock) -> None:
    policy = CoolPolicy(failures_to_cool=16, window_s=60.0, cooldown_s=30.0, max_retry_after_s=300.0)
    first, second = boards(new_store, clock, policy=policy)
    fail_at_once([first, second], threads_each=8)
    stored = first.store.load()[NAME]
    assert stored.status(clock()) == "cooling" and stored.failures == 0  # the 16th cooled it
    clock.value += 60
    assert second.refresh()
    second.succeeded(NAME)
    assert first.store.load().get(NAME, HEALTHY) == HEALTHY
    fail_at_once([first, second], threads_each=7)
    fail_at_once([first], threads_each=1)
    assert first.store.load()[NAME] == Health(failures=15, window_start=clock())  # 15 of 16: still healthy
    first.failed(NAME, None)
    assert first.store.load()[NAME].status(clock()) == "cooling"
    for board in (first, second):
        board.close()


def test_exactly_one_of_many_concurrent_trial_claims_wins(new_store, clock: Clock) -> None:
    hosts = boards(new_store, clock)
    hosts[0].failed(NAME, 1.0)
    clock.value += 1
    for attempt in range(2):
        assert all(board.refresh() for board in hosts)  # each copy says half-open, as the router's would
        wins = at_once(hosts, 8, lambda board: board.claim_trial(NAME, 30.0))
        assert wins.count(True) == 1, f"attempt {attempt}"
        # the trial fails: cooling again at once, then another single trial
        assert hosts[1].failed(NAME, None).status(clock()) == "cooling"
        clock.value += POLICY.cooldown_s
    for board in hosts:
        board.close()


def test_the_thread_refreshes_on_its_own_and_reports_statuses(new_store, clock: Clock,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[tuple[str, str]] = []
    monkeypatch.setattr(health_store.metrics, "deployment_status", lambda name, status: reported.append((name, status)))
    writer = HealthBoard(new_store(), POLICY, 3600, [NAME], clock)
    reader = HealthBoard(new_store(), POLICY, 0.05, [NAME, "other"], clock)
    assert reader.health("other") == HEALTHY  # starts the thread
    wait_until(lambda: ("other", "healthy") in reported, "the first refresh's report")
    writer.failed(NAME, 5.0)
    wait_until(lambda: reader.health(NAME).status(clock()) == "cooling", "the reader's copy to show the cooldown")
    wait_until(lambda: (NAME, "cooling") in reported, "the cooldown's report")
    assert reported.count(("other", "healthy")) == 1  # only changes are reported
    reader.close()
    reader.close()  # idempotent
    writer.close()


def test_a_refresh_keeps_a_local_change_made_while_it_read(new_store, clock: Clock) -> None:
    store = new_store()
    board = HealthBoard(store, POLICY, 3600, [NAME], clock)
    load = store.load

    def racing_load() -> dict[str, Health]:
        stored = load()
        board.failed(NAME, 9.0)  # lands after the read: the read is older than the copy
        return stored

    store.load = racing_load  # type: ignore[method-assign]
    assert board.refresh()
    assert board.health(NAME).status(clock()) == "cooling"
    store.load = load  # type: ignore[method-assign]
    assert board.refresh() and board.health(NAME).status(clock()) == "cooling"
    board.close()


def test_a_closed_board_keeps_changes_in_its_copy(new_store, clock: Clock) -> None:
    board = HealthBoard(new_store(), POLICY, 3600, [NAME], clock)
    other = HealthBoard(new_store(), POLICY, 3600, [NAME], clock)
    board.close()
    assert board.failed(NAME, 5.0).status(clock()) == "cooling"
    assert other.refresh() and other.health(NAME) == HEALTHY
    other.close()


def assert_outage_is_survived(board: HealthBoard, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing raises; changes live in the board's copy; warnings are logged."""
    for _ in range(POLICY.failures_to_cool):
        health = board.failed(NAME, None)
    assert health.status(clock()) == "cooling" and board.health(NAME) == health
    assert not board.refresh() and board.health(NAME) == health
    clock.value += POLICY.cooldown_s
    assert board.claim_trial(NAME, 5.0)
    assert board.health(NAME).status(clock()) == "trial"
    assert board.claim_trial(NAME, 5.0)  # the store cannot say who won: the request goes
    board.succeeded(NAME)
    assert board.health(NAME) == HEALTHY
    assert "deployment health store unreachable" in caplog.text
    board.close()


def test_a_database_outage_never_raises(tmp_path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    pool = db.bind(f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    with db.database.connection_context():
        db.database.execute_sql("DROP TABLE deployment_health")
    assert_outage_is_survived(HealthBoard(DatabaseHealth(), POLICY, 3600, [NAME], clock), clock, caplog)
    pool.close_all()


def test_a_redis_outage_never_raises(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    store = RedisHealth("redis://:hunter2@127.0.0.1:1/0", KEEP_S, timeout_s=1)
    assert_outage_is_survived(HealthBoard(store, POLICY, 3600, [NAME], clock), clock, caplog)
    assert "hunter2" not in caplog.text


def test_redis_hashes_expire_and_a_healthy_one_is_deleted(clock: Clock) -> None:
    if not REDIS_URL:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
    redis = pytest.importorskip("redis")
    prefix = f"test-routing-{uuid.uuid4().hex}:"
    board = HealthBoard(RedisHealth(REDIS_URL, KEEP_S, prefix=prefix), POLICY, 3600, [NAME], clock)
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    board.failed(NAME, None)
    assert 0 < client.ttl(prefix + NAME) <= KEEP_S
    board.succeeded(NAME)  # one failure in the window: it stays counted, nothing is written
    assert client.exists(prefix + NAME)
    board.failed(NAME, 5.0)  # a Retry-After cools it
    board.succeeded(NAME)  # the success ends the cooldown: healthy, so the hash goes
    assert not client.exists(prefix + NAME)
    board.close()
    client.close()


def test_health_board_builds_the_configured_store_and_knows_every_deployment(tmp_path) -> None:
    tables = {
        "database": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
        "providers": {"a": {"base_url": "http://127.0.0.1:9/v1"}, "b": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {
            "one": {"provider": "a", "upstream_model": "m"},
            "two": {"deployments": [{"provider": "a"}, {"provider": "b", "name": "east"}]},
        },
        "routing": {"failures_to_cool": 5, "state_refresh_s": 2},
    }
    board = health_board(build_settings(tables))
    assert isinstance(board.store, DatabaseHealth) and board.policy.failures_to_cool == 5
    assert set(board.snapshot()) == {"a/m", "a/two", "east"}
    board.close()
    if REDIS_URL and importlib.util.find_spec("redis"):
        redis_board = health_board(build_settings({**tables, "limits": {"backend": "redis", "url": REDIS_URL}}))
        assert isinstance(redis_board.store, RedisHealth)
        redis_board.close()


def test_migration_down_drops_and_up_recreates_the_table(tmp_path) -> None:
    pool = db.bind(f"sqlite:///{tmp_path / 'gateway.db'}")
    db.upgrade()
    with db.database.connection_context():
        runner = Runner(db.database.obj, str(db.MIGRATIONS_DIR))
        assert "0015_deployment_health" in runner.down("0015_deployment_health")
        assert not DeploymentHealth.table_exists()
        assert "0015_deployment_health" in runner.up()
        assert DeploymentHealth.table_exists()
    pool.close_all()
