"""Shared fixtures: settings builders, the app, a live threaded server, a fake upstream."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import settings as hypothesis_settings
from werkzeug.serving import make_server

from gateway import create_app, db, lifecycle
from gateway.accounting.keys import create_key
from gateway.config import Settings, build_settings, merge
from gateway.observability import access_log
from tests import live_gateway
from tests.fake_upstream import FakeUpstream

TEST_DATABASE_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")
FIRST_LAUNCH = pytest.StashKey[int]()

# Property tests draw the same examples on every run, so CI is repeatable; HYPOTHESIS_PROFILE=explore
# draws new ones (and more of them) for a bug hunt.
hypothesis_settings.register_profile("repeatable", derandomize=True)
hypothesis_settings.register_profile("explore", max_examples=1000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Note which live gateways a test may have used: those it launches, and those still running."""
    item.stash[FIRST_LAUNCH] = len(live_gateway.LAUNCHED)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test shows the logs of the live gateways it used (they never print into pytest's output)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.extend(live_gateway.failure_logs(item.stash.get(FIRST_LAUNCH, 0)))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEWAY_* / VR_* variable or ./config.toml leaks into a test."""
    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "VR_MCP_")):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


def reset_postgres(url: str) -> None:
    """Drop every table of the test database."""
    database = db.open_database(url)
    with database.connection_context():
        database.execute_sql("DROP SCHEMA public CASCADE")
        database.execute_sql("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh SQLite file; tests that parametrize with "postgres" also get PostgreSQL."""
    if request.param == "postgres":
        if not TEST_DATABASE_URL:
            pytest.skip("GATEWAY_TEST_DATABASE_URL is not set")
        reset_postgres(TEST_DATABASE_URL)
        return TEST_DATABASE_URL
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def make_settings(database_url: str, fake_upstream: FakeUpstream) -> Callable[..., Settings]:
    """Build Settings pointing at the fake upstream; keyword tables merge over the base."""

    def build(**tables: Any) -> Settings:
        base = {
            "database": {"url": database_url},
            "providers": {
                "fake": {"base_url": fake_upstream.base_url, "timeout_s": 5, "connect_timeout_s": 2},
            },
            "models": {
                "test-model": {"provider": "fake", "upstream_model": "upstream-model"},
                "backup-model": {"provider": "fake", "upstream_model": "backup-upstream"},
            },
        }
        return build_settings(merge(base, tables))

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    """create_app for a test with its own settings; every app made is closed at teardown, so no worker thread of
    one (health refresh, accounting writer) outlives its test and works on the next test's database."""
    made: list[Flask] = []

    def build(settings: Settings) -> Flask:
        made.append(create_app(settings))
        return made[-1]

    yield build
    for application in made:
        lifecycle.close(application)


@pytest.fixture
def app(settings: Settings, make_app: Callable[[Settings], Flask]) -> Flask:
    application = make_app(settings)
    db.upgrade()  # create_app only binds the database; `gateway serve` migrates before forking
    return application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_key(app) -> Callable[..., str]:
    """Create a key (new account unless `account` is given) and return its secret."""

    def build(name: str = "tester", **options: Any) -> str:
        with db.database.connection_context(), db.database.atomic():
            _, secret = create_key(name, **options)
        return secret

    return build


@pytest.fixture
def api_key(make_key: Callable[..., str]) -> str:
    return make_key()


@pytest.fixture
def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def live_server(app, tmp_path) -> Iterator[str]:
    """The app on a real threaded WSGI server; yields its base URL.

    Its access log goes to a file: a request thread may write its line after the test's call
    phase, when pytest captures no output and the line would land in pytest's own.
    """
    access_log.of(app).close()
    access_log.init_app(app, str(tmp_path / "live_server_access.log"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
