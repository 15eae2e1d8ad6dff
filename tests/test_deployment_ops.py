"""What operators see of routing: per-deployment metrics, /readyz per model, GET /admin/deployments and the
dashboard's Deployments page, and the active health checks (gateway.upstream.health_checks)."""

from __future__ import annotations

import datetime
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app, db, lifecycle
from gateway.dashboard import users
from gateway.observability import multiprocess
from gateway.observability.readiness import Readiness, model_readiness
from gateway.upstream.client import UpstreamClient
from gateway.upstream.health_checks import HealthChecks, check_cooldown_s, check_targets, jittered
from gateway.upstream.health_store import health_board
from tests.fake_upstream import FakeUpstream, JsonReply, default_responder
from tests.live_gateway import live_gateway
from tests.polling import wait_until
from tests.ports import free_port

ADMIN_TOKEN = "adm"
LIVE, DEAD = "fake/upstream-model", "dead/upstream-model"  # the deployments' default names
CHAT = {"model": "pooled", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def pooled(make_settings, dead: dict | None = None, routing: str = "ordered", **tables):
    """Settings with a model "pooled" on a dead provider first, then on the fake (ordered: the dead one is tried first)."""
    provider = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 2, "connect_timeout_s": 1,
                **(dead or {})}
    deployments = [{"provider": "dead", "upstream_model": "upstream-model"},
                   {"provider": "fake", "upstream_model": "upstream-model"}]
    return make_settings(providers={"dead": provider},
                         models={"pooled": {"routing": routing, "deployments": deployments}}, **tables)


@pytest.fixture
def pooled_app(make_settings):
    application = create_app(pooled(make_settings))
    db.upgrade()
    yield application
    lifecycle.close(application)


def scrape(client) -> dict:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics", buffered=True).get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def outcomes(found: dict, deployment: str) -> dict[str, float]:
    """gateway_deployment_requests_total of one deployment of "pooled", by outcome (the counters are the
    process's: earlier tests count the same deployment names under other models)."""
    return {dict(labels)["outcome"]: count for (name, labels), count in found.items()
            if name == "gateway_deployment_requests_total"
            and dict(labels)["deployment"] == deployment and dict(labels)["model"] == "pooled"}


def router(app):
    return app.extensions["gateway.router"]


# -- metrics ---------------------------------------------------------------------------------


def test_attempts_retries_latency_and_cooling_are_counted_per_deployment(pooled_app, make_key):
    client = pooled_app.test_client()
    headers = {"Authorization": f"Bearer {make_key()}"}
    for _ in range(3):  # failures_to_cool = 3: the dead deployment cools down after the third
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers, buffered=True).status_code == 200
    found = scrape(client)
    assert outcomes(found, LIVE) == {"ok": 3}
    dead = outcomes(found, DEAD)
    assert "ok" not in dead and sum(dead.values()) == 3
    assert value(found, "gateway_deployment_retries_total", model="pooled", deployment=DEAD) == 3
    assert value(found, "gateway_deployment_request_duration_seconds_count", model="pooled", deployment=LIVE) == 3
    wait_until(lambda: value(scrape(client), "gateway_deployment_cooling", deployment=DEAD) == 1,
               "the dead deployment's cooling gauge")
    assert value(scrape(client), "gateway_deployment_cooling", deployment=LIVE) == 0


def write_gauge(folder: Path, pid: int, deployment: str, cooling: float) -> None:
    values = MmapedDict(str(folder / f"gauge_livemax_{pid}.db"))
    values.write_value(mmap_key("gateway_deployment_cooling", "gateway_deployment_cooling", ["deployment"],
                                [deployment], "Cooling."), cooling, 0.0)
    values.close()


def test_the_cooling_gauge_is_the_highest_view_of_the_live_workers(tmp_path):
    write_gauge(tmp_path, 111, "a", 1)  # one worker's copy already shows the cooldown, the other's not yet
    write_gauge(tmp_path, 222, "a", 0)

    def cooling() -> float:
        return value(scrape_text(multiprocess.collect(str(tmp_path)).decode()), "gateway_deployment_cooling",
                     deployment="a")

    assert cooling() == 1  # not 2, as a sum would say
    multiprocess.archive_worker(str(tmp_path), 111)
    assert cooling() == 0  # a dead worker's stale view goes with it


def scrape_text(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# -- /readyz ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    model_id: str
    deployment: str
    provider: str
    status: str


@pytest.mark.parametrize(("statuses", "reachable", "ready", "ready_count"), [
    (("healthy", "healthy"), {"a": True, "b": True}, True, 2),
    (("healthy", "healthy"), {"a": False, "b": True}, True, 1),
    (("cooling", "healthy"), {"a": True, "b": False}, False, 0),
    (("half_open", "trial"), {"a": True, "b": True}, True, 1),  # a half-open one takes its trial request
    (("cooling", "trial"), {"a": True, "b": True}, False, 0),
    (("healthy", "healthy"), {}, False, 0),  # not probed yet
])
def test_a_model_is_ready_while_one_deployment_is_reachable_and_not_cooling(statuses, reachable, ready, ready_count):
    states = [State("m", "m-a", "a", statuses[0]), State("m", "m-b", "b", statuses[1])]
    assert model_readiness(states, reachable) == {"m": {"ready": ready, "deployments": 2,
                                                        "ready_deployments": ready_count}}


def test_readyz_names_each_model_without_a_ready_deployment(make_settings):
    dead = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout_s": 1}
    settings = make_settings(providers={"dead": dead}, models={"stranded": {"provider": "dead"}})
    app = create_app(settings)
    db.upgrade()
    try:
        response = app.test_client().get("/readyz", buffered=True)
    finally:
        lifecycle.close(app)
    body = response.get_json()
    assert response.status_code == 503 and body["down"] == ["model:stranded"]  # other models do not make up for it
    assert body["models"]["test-model"]["ready"] is True
    assert body["models"]["stranded"] == {"ready": False, "deployments": 1, "ready_deployments": 0}


def test_readyz_counts_a_cooling_deployment_out_and_its_model_in_while_another_serves(make_settings):
    live = {"base_url": make_settings().providers["fake"].base_url}  # a second provider on the same fake
    models = {"pooled": {"deployments": [{"provider": "fake", "upstream_model": "a"},
                                         {"provider": "twin", "upstream_model": "b"}]}}
    app = create_app(make_settings(providers={"twin": live}, models=models))
    db.upgrade()
    states = router(app).deployment_states
    app.extensions[Readiness.EXTENSION] = Readiness(60, states)  # the wiring of gateway.observability.init_app
    client = app.test_client()
    try:
        assert client.get("/readyz").get_json()["models"]["pooled"]["ready_deployments"] == 2
        router(app).health.failed("fake/a", 30)  # cooled, as a 429 with Retry-After: 30 would
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["models"]["pooled"] == {"ready": True, "deployments": 2, "ready_deployments": 1}
        router(app).health.failed("twin/b", 30)
        response = client.get("/readyz")
        assert response.status_code == 503 and response.get_json()["down"] == ["model:pooled"]
        assert response.get_json()["models"]["test-model"]["ready"] is True  # other deployments of the fake
    finally:
        lifecycle.close(app)


# -- admin API and dashboard -----------------------------------------------------------------


def test_admin_deployments_lists_every_deployment_with_its_state(pooled_app, monkeypatch):
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
    client = pooled_app.test_client()
    assert client.get("/admin/deployments").status_code == 401
    cooled = router(pooled_app).health.failed(DEAD, 30)
    answer = client.get("/admin/deployments", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200 and answer.get_json()["object"] == "list"
    rows = answer.get_json()["data"]
    assert [(row["model_id"], row["deployment"]) for row in rows] == [
        ("test-model", LIVE), ("backup-model", "fake/backup-upstream"), ("pooled", DEAD), ("pooled", LIVE)]
    states = {row["deployment"]: row for row in rows}
    until = datetime.datetime.fromtimestamp(cooled.cooling_until, datetime.UTC).isoformat(timespec="milliseconds")
    assert states[DEAD] == {"model_id": "pooled", "deployment": DEAD, "provider": "dead",
                            "upstream_model": "upstream-model", "weight": 1.0, "priority": 0, "status": "cooling",
                            "cooling_until": until.replace("+00:00", "Z"), "failures": cooled.failures, "in_flight": 0,
                            "ttft_ms": None}
    assert states[LIVE]["status"] == "healthy" and states[LIVE]["cooling_until"] is None


def test_the_deployments_page_shows_the_same_to_admins_only(pooled_app):
    with db.database.connection_context():
        users.create_user("root@example.com", "correct horse battery", None, "admin")
        users.create_user("member@example.com", "correct horse battery", None, "member")
    router(pooled_app).health.failed(DEAD, 30)

    def page_for(email: str):
        client = pooled_app.test_client()
        token = CSRF.search(client.get("/dashboard/login").get_data(as_text=True)).group(1)
        client.post("/dashboard/login", data={"email": email, "password": "correct horse battery",
                                              "csrf_token": token})
        return client.get("/dashboard/admin/deployments")

    page = page_for("root@example.com")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'href="/dashboard/admin/deployments"' in html
    row = html[html.index(f'data-deployment="{DEAD}"'):]
    row = row[:row.index("</tr>")]
    assert '<span class="state unavailable">cooling</span>' in row and "<td>1</td>" in row
    assert page_for("member@example.com").status_code == 403


# -- active health checks --------------------------------------------------------------------


class Board:
    """Records what the checks tell the shared health."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def failed(self, name: str, retry_after_s: float | None) -> None:
        self.calls.append(("failed", name, retry_after_s))

    def succeeded(self, name: str) -> None:
        self.calls.append(("succeeded", name, None))


def test_checked_providers_and_their_jittered_waits(make_settings):
    settings = pooled(make_settings, dead={"health_check": "completion", "health_interval_s": 5})
    [target] = check_targets(settings)
    assert (target.provider, target.kind, target.interval_s) == ("dead", "completion", 5)
    assert [deployment.name for deployment in target.deployments] == [DEAD]
    assert check_targets(make_settings()) == []  # no provider sets health_check
    assert jittered(10, 0.0) == 9 and jittered(10, 0.5) == 10 and jittered(10, 0.999) < 11
    assert check_cooldown_s(10) == pytest.approx(11)  # a failed check cools until the latest next check


def test_a_models_check_cools_every_deployment_of_a_provider_that_fails_and_clears_it_once_it_answers(
        make_settings, fake_upstream):
    models = {"pooled": {"deployments": [{"provider": "fake", "upstream_model": "a"},
                                         {"provider": "fake", "upstream_model": "b"}]}}
    settings = make_settings(providers={"fake": {"health_check": "models", "health_interval_s": 7}}, models=models)
    client, board = UpstreamClient(settings.providers, 2), Board()
    checks = HealthChecks(settings, client, board)
    [target] = checks.targets
    try:
        assert checks.check(target) == {"fake/a": True, "fake/b": True, "fake/upstream-model": True,
                                        "fake/backup-upstream": True}
        assert board.calls == []  # nothing to clear: the checks cooled nothing
        fake_upstream.responder = lambda path, body: JsonReply({"error": "down"}, status=503)
        checks.check(target)
        cooled_s = check_cooldown_s(7)  # until the next check
        assert ("failed", "fake/a", cooled_s) in board.calls and ("failed", "fake/b", cooled_s) in board.calls
        board.calls.clear()
        fake_upstream.responder = default_responder
        checks.check(target)
        assert sorted(board.calls) == [("succeeded", name, None) for name in
                                       sorted(["fake/a", "fake/b", "fake/upstream-model", "fake/backup-upstream"])]
    finally:
        client.close()


def test_a_completion_check_asks_each_deployment_for_one_token_and_fails_only_the_deployments_fault(
        make_settings, fake_upstream):
    models = {"pooled": {"deployments": [{"provider": "fake", "upstream_model": "a"},
                                         {"provider": "fake", "upstream_model": "b"}]}}
    settings = make_settings(providers={"fake": {"health_check": "completion", "health_interval_s": 3}},
                             models=models)
    client, board = UpstreamClient(settings.providers, 2), Board()
    checks = HealthChecks(settings, client, board)
    [target] = checks.targets

    def answer(path: str, body: dict):
        if body.get("model") == "a":
            return JsonReply({"error": {"message": "overloaded"}}, status=500)
        if body.get("model") == "b":
            return JsonReply({"error": {"message": "max_tokens too small"}}, status=400)  # the check's own fault
        return default_responder(path, body)

    fake_upstream.responder = answer
    try:
        assert checks.check(target) == {"fake/a": False, "fake/b": True, "fake/upstream-model": True,
                                        "fake/backup-upstream": True}
    finally:
        client.close()
    assert board.calls == [("failed", "fake/a", check_cooldown_s(3))]
    sent = [body for path, body, _ in fake_upstream.requests if path.endswith("/chat/completions")]
    assert {body["model"] for body in sent} == {"a", "b", "upstream-model", "backup-upstream"}
    assert all(body["max_tokens"] == 1 and "stream" not in body for body in sent)


def test_the_checking_thread_cools_a_provider_that_goes_down_and_brings_it_back(make_settings, fake_upstream):
    settings = make_settings(providers={"fake": {"health_check": "models", "health_interval_s": 1}},
                             routing={"state_refresh_s": 0.2})
    app = create_app(settings)
    db.upgrade()
    board = health_board(settings)
    client = UpstreamClient(settings.providers, 2)
    checks = HealthChecks(settings, client, board)
    name = "fake/upstream-model"
    try:
        checks.start()
        checks.start()  # idempotent
        fake_upstream.responder = lambda path, body: JsonReply({"error": "down"}, status=502)
        with app.app_context():
            wait_until(lambda: board.health(name).status(datetime.datetime.now().timestamp()) == "cooling",
                       "a failed check to cool the deployment")
            fake_upstream.responder = default_responder
            wait_until(lambda: board.health(name).failures == 0 and board.health(name).cooling_until == 0,
                       "a passing check to clear it")
    finally:
        checks.close()
        checks.close()
        board.close()
        client.close()
        lifecycle.close(app)
    checks.start()  # refused once closed
    assert "gateway-health-checks" not in [thread.name for thread in threading.enumerate()]


# -- on a live gateway ----------------------------------------------------------------------


def live_config(database_url: str, live_url: str, flaky_url: str) -> str:
    """Two gunicorn workers; "pooled" on the fake and on a flaky fake checked every second (its models list)."""
    return f"""
[server]
workers = 2
[database]
url = "{database_url}"
[routing]
state_refresh_s = 0.2
[providers.fake]
base_url = "{live_url}"
[providers.flaky]
base_url = "{flaky_url}"
health_check = "models"
health_interval_s = 1
[models.pooled]
[[models.pooled.deployments]]
provider = "fake"
upstream_model = "upstream-model"
[[models.pooled.deployments]]
provider = "flaky"
upstream_model = "upstream-model"
"""


def test_every_worker_sees_a_checked_provider_go_down_and_come_back(tmp_path, database_url, fake_upstream):
    flaky = FakeUpstream().start()
    flaky_name = "flaky/upstream-model"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with live_gateway(tmp_path, live_config(database_url, fake_upstream.base_url, flaky.base_url),
                          env={"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}) as served:
            def statuses() -> set[str]:
                """The flaky deployment's status as a few answers (from either worker) give it."""
                return {next(row["status"] for row in requests.get(f"{served.base_url}/admin/deployments",
                                                                    headers=admin, timeout=10).json()["data"]
                             if row["deployment"] == flaky_name) for _ in range(6)}

            def cooling_gauge() -> float:
                text = requests.get(f"{served.base_url}/metrics", timeout=10).text
                return value(scrape_text(text), "gateway_deployment_cooling", deployment=flaky_name)

            wait_until(lambda: statuses() == {"healthy"}, "the flaky deployment healthy on both workers")
            flaky.responder = lambda path, body: JsonReply({"error": "down"}, status=503)
            wait_until(lambda: statuses() == {"cooling"}, "both workers to see it cooling")
            ready = requests.get(f"{served.base_url}/readyz", timeout=10)
            assert ready.status_code == 200  # the fake still serves "pooled"
            assert ready.json()["models"]["pooled"] == {"ready": True, "deployments": 2, "ready_deployments": 1}
            wait_until(lambda: cooling_gauge() == 1, "the cooling gauge")
            flaky.responder = default_responder
            wait_until(lambda: statuses() == {"healthy"}, "both workers to see it healthy again")
            wait_until(lambda: cooling_gauge() == 0, "the cooling gauge back to 0")
    finally:
        flaky.stop()
