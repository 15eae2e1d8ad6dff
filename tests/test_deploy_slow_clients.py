"""deploy/nginx.conf in front of `gateway serve`: slow clients cost nginx connections, not gateway threads.

The attack comes from 127.0.0.1 and the probes from 127.0.0.2, as an attacker and the other
users have different addresses: the per-address connection limit applies to each separately.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable

from tests import test_deploy, test_serving_worker
from tests.polling import wait_until
from tests.slow_clients import (
    SLOW_BODY,
    SLOW_HEADER,
    Probes,
    SlowSenders,
    answered_ratio,
    percentile,
    request,
)

pytestmark = test_deploy.pytestmark
start_nginx = test_deploy.start_nginx  # fixtures, shared
serve = test_serving_worker.serve
CHAT = test_serving_worker.CHAT
ATTACK_S = 10.0  # the 30 s, shortened for CI; the attack is steady after its first seconds
PROBES_FROM = "127.0.0.2"
LIMIT_CONN = 64  # deploy/nginx.conf: limit_conn per_address


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def test_slow_heads_and_bodies_leave_requests_answered_under_a_second(
    start_nginx: Callable[[int], str], serve, auth_headers: dict[str, str]
) -> None:
    gateway = serve()
    port = port_of(start_nginx(gateway.port))
    probes = Probes([
        lambda: request(port, "GET", "/healthz", source=PROBES_FROM),
        lambda: request(port, "POST", "/v1/chat/completions", CHAT, auth_headers, source=PROBES_FROM),
    ], pause_s=0.05)
    with SlowSenders(port, SLOW_HEADER, count=200) as heads, SlowSenders(port, SLOW_BODY, count=50) as bodies:
        wait_until(lambda: heads.connects >= 200 and bodies.connects >= 50, "every attacker connected")
        results = probes.run_for(ATTACK_S)
    p99 = percentile(results, 0.99)
    print(f"\nbehind nginx, {heads.connects} slow-head and {bodies.connects} slow-body connections: "
          f"{len(results)} probes, {answered_ratio(results):.0%} answered, p99 {p99:.3f} s")
    assert answered_ratio(results) == 1.0
    assert p99 < 1.0


def test_connections_past_the_per_address_limit_get_429(start_nginx: Callable[[int], str], serve) -> None:
    gateway = serve()
    port = port_of(start_nginx(gateway.port))

    def hold() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.3", 0))
        sock.sendall(SLOW_BODY)
        return sock

    def refused_past_the_limit() -> bool:
        # A probe sent while nginx is still reading the held heads may take a slot first, and the
        # held connection refused in its place is answered and closed: hold another in its stead.
        answered = select.select(held, [], [], 0)[0]
        for sock in answered:
            sock.close()
            held[held.index(sock)] = hold()
        return not answered and request(port, "GET", "/healthz", source="127.0.0.3") == 429

    held = [hold() for _ in range(LIMIT_CONN)]
    try:
        # once nginx has read every head, one more connection from that address is refused
        wait_until(refused_past_the_limit, "a 429 past the limit")
        assert request(port, "GET", "/healthz", source="127.0.0.4") == 200
    finally:
        for sock in held:
            sock.close()
