"""A deployment's cooldown is shared: a 429 with `Retry-After: 2` seen by one worker is skipped by every worker,
on one host, and on two gateway hosts sharing PostgreSQL or Redis ([limits] backend = "redis").

One fake of three answers one request 429 with Retry-After: 2, on host A. Then, with no traffic
that could start its trial, every worker of every host shows it cooling down (its own
/admin/deployments, the worker found through /proc) until one instant, 2 s after the 429; requests
that every host answered before that instant never reach it; after it, each host sends it traffic again.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.config import merge
from tests.faults.books import Payer
from tests.faults.load import fund
from tests.live_gateway import LiveGateway, live_gateway
from tests.polling import wait_until
from tests.routing_fakes import ROUTED_MODEL, RoutingFake, routing_config, routing_fakes
from tests.test_routing_failover import ADMIN_ENV, GRANT, HEALTHY, WORKERS, deployment_views

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
RETRY_AFTER_S = 2
# Long failure cooldowns and a short state refresh: only the Retry-After cools the fake, and every worker
# reads the shared state often.
ROUTING = {"failures_to_cool": 3, "cooldown_s": 30, "max_retry_after_s": 300, "state_refresh_s": 0.2}
CLOCK_SLACK_S = 0.002  # a millisecond's rounding of a shown instant
PROBES_PER_HOST = 40  # requests a host may take before the recovered fake answers one of its own


def probe(host: LiveGateway, payer: Payer) -> tuple[str, float]:
    """One JSON chat carrying a unique marker (found in the body a fake received); (marker, when it ended)."""
    marker = uuid.uuid4().hex
    body = {"model": ROUTED_MODEL, "messages": [{"role": "user", "content": f"probe {marker}"}], "max_tokens": 20}
    answer = requests.post(f"{host.base_url}/v1/chat/completions", json=body, headers=payer.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return marker, time.time()


def reached(fake: RoutingFake, marker: str) -> bool:
    return any(marker in json.dumps(body) for body in list(fake.bodies))


def epoch(iso: str) -> tuple[float, float]:
    """An ISO 8601 instant as (epoch seconds, its resolution): cut to whole seconds when it shows no fraction."""
    moment = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    return moment, 0.001 if "." in iso else 1.0


def views_everywhere(hosts: list[LiveGateway], name: str) -> list[dict[str, Any]]:
    """Every worker's view of the deployment, on every host."""
    return [view for host in hosts for view in deployment_views(host, name).values()]


def cooled_everywhere(hosts: list[LiveGateway], name: str, untils: set[str]) -> bool:
    """Whether every worker of every host skips the deployment (cooling, or past it awaiting a trial);
    adds the instants they show it cooling until (null once passed) to `untils`."""
    views = views_everywhere(hosts, name)
    untils.update(view["cooling_until"] for view in views if view["cooling_until"])
    return all(view["status"] != HEALTHY for view in views)


def hit_with_a_429(fake: RoutingFake, host: LiveGateway, payer: Payer) -> tuple[float, float]:
    """Send JSON chats to `host` until one reached the fake (answered 429, retried elsewhere): (sent, ended)."""
    fake.fail(429, retry_after=RETRY_AFTER_S, count=1)
    for _ in range(50):
        sent = time.time()
        _, ended = probe(host, payer)
        if fake.received:
            return sent, ended
    raise AssertionError("50 requests and none reached the fake")


def skipped_until_then_used_again(hosts: list[LiveGateway], a: RoutingFake, name: str, payer: Payer) -> None:
    """The scenario of the module docstring: fake `a` (deployment `name`) answers the 429, host A = hosts[0]."""
    sent, ended = hit_with_a_429(a, hosts[0], payer)
    untils: set[str] = set()
    wait_until(lambda: cooled_everywhere(hosts, name, untils), "every worker cooling the fake")
    assert len(untils) == 1, untils  # one shared cooldown, seen before it ended
    shown, resolution = epoch(untils.pop())  # the cooldown ends in [shown, shown + resolution)
    assert sent + RETRY_AFTER_S - resolution - CLOCK_SLACK_S < shown <= ended + RETRY_AFTER_S + CLOCK_SLACK_S

    during = [probe(host, payer) for _ in range(20) for host in hosts if time.time() < shown - 0.1]
    inside = [marker for marker, finished in during if finished < shown]
    assert not [marker for marker in inside if reached(a, marker)], "a cooling fake got traffic"

    time.sleep(max(0.0, shown + resolution - time.time()))
    for host in hosts:
        assert any(reached(a, probe(host, payer)[0]) for _ in range(PROBES_PER_HOST)), \
            f"{PROBES_PER_HOST} requests to {host.base_url} after the cooldown and none reached the fake"
    wait_until(lambda: {view["status"] for view in views_everywhere(hosts, name)} == {HEALTHY},
               "the fake healthy on every worker of every host")
    print(f"\n429 Retry-After {RETRY_AFTER_S}: cooling until {shown - sent:.2f} s (+{resolution:g}) after the request; "
          f"{len(inside)} requests on {len(hosts)} host(s) inside the window, none to the fake")


@pytest.fixture
def fakes() -> Any:
    started = routing_fakes(3)
    yield started
    for fake in started:
        fake.stop()


@contextlib.contextmanager
def serving(tmp_path, database_url: str, fakes: list[RoutingFake], hosts: int, tables: dict[str, Any],
            names: list[str] | None = None) -> Iterator[list[LiveGateway]]:
    """`hosts` gateways on one database (each its own gunicorn master and workers), stopped when the block ends."""
    deployments = [{"name": name} for name in names or []]
    config = routing_config(database_url, fakes, deployments=deployments, tables=merge({"routing": ROUTING}, tables))
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(live_gateway(tmp_path / f"host-{index}", config, workers=WORKERS, threads=16,
                                                env=ADMIN_ENV)) for index in range(hosts)]


def test_a_429_with_retry_after_is_skipped_by_every_worker_of_one_host(tmp_path, database_url, fakes):
    payer = fund(database_url, GRANT)
    with serving(tmp_path, database_url, fakes, 1, {}) as hosts:
        skipped_until_then_used_again(hosts, fakes[0], fakes[0].name, payer)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_hosts_sharing_postgresql_both_skip_a_429_one_of_them_saw(tmp_path, database_url, fakes):
    payer = fund(database_url, GRANT)
    with serving(tmp_path, database_url, fakes, 2, {}) as hosts:
        skipped_until_then_used_again(hosts, fakes[0], fakes[0].name, payer)


def test_two_hosts_sharing_redis_both_skip_a_429_one_of_them_saw(tmp_path, database_url, fakes):
    if not REDIS_URL:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set")
    payer = fund(database_url, GRANT)  # the keys and the books in one SQLite file; the cooldowns in Redis
    run = uuid.uuid4().hex[:8]  # other tests may share the Redis database: deployment names of this run only
    names = [f"{fake.name}-{run}" for fake in fakes]
    with serving(tmp_path, database_url, fakes, 2, {"limits": {"backend": "redis", "url": REDIS_URL}}, names) as hosts:
        skipped_until_then_used_again(hosts, fakes[0], names[0], payer)
