"""The client address: the peer, or X-Forwarded-For read from the right behind trusted proxies."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, build_settings
from gateway.serving.client_address import client_address, is_trusted, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])

CASES: list[tuple[str, str | None, str]] = [
    # (peer, X-Forwarded-For, the client address)
    ("203.0.113.7", None, "203.0.113.7"),
    ("203.0.113.7", "1.2.3.4", "203.0.113.7"),  # an untrusted peer's header is ignored
    ("203.0.113.7", "10.0.0.1, 127.0.0.1", "203.0.113.7"),
    ("127.0.0.1", None, "127.0.0.1"),  # a trusted proxy that says nothing is the client
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "198.51.100.9", "198.51.100.9"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.9", "198.51.100.9"),  # the client's own entry is not believed
    ("127.0.0.1", "6.6.6.6, 198.51.100.9, 10.1.2.3", "198.51.100.9"),  # a chain of trusted proxies
    ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: the leftmost
    ("127.0.0.1", "198.51.100.9, not-an-ip", "127.0.0.1"),  # malformed: stop at the last vouched one
    ("127.0.0.1", "6.6.6.6, not-an-ip, 10.1.2.3", "10.1.2.3"),
    ("127.0.0.1", "2001:db8::5", "2001:db8::5"),
    ("fd00::1", "198.51.100.9", "198.51.100.9"),
    ("::ffff:127.0.0.1", "198.51.100.9", "198.51.100.9"),  # an IPv4-mapped peer
    ("127.0.0.2", "198.51.100.9", "127.0.0.2"),  # a /32 trusts one address only
    (None, "198.51.100.9", "-"),
]


@pytest.mark.parametrize(("peer", "forwarded", "expected"), CASES)
def test_client_address(peer: str | None, forwarded: str | None, expected: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_header_is_never_read() -> None:
    assert client_address("127.0.0.1", "198.51.100.9", ()) == "127.0.0.1"


def test_versions_never_match_across_families() -> None:
    assert not is_trusted("0.0.0.1", parse_networks(["::/127"]))
    assert not is_trusted("garbage", TRUSTED)


def test_a_bad_trusted_proxy_stops_startup() -> None:
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        build_settings({"server": {"trusted_proxies": ["10.0.0.0/33"]}})
    assert build_settings({"server": {"trusted_proxies": ["10.0.0.1/8"]}}).server.trusted_proxies == ("10.0.0.1/8",)
