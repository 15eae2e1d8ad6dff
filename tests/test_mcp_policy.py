"""Table tests for the remote MCP URL, address and header policy."""

from __future__ import annotations

import asyncio
from typing import Any

import httpcore2
import pytest

from gateway.errors import BadInput
from gateway.mcp import remote
from gateway.mcp.policy import (
    RemoteTarget,
    address_refusal,
    bearer_value,
    check_remote_host,
    check_remote_url,
    check_resolved_addresses,
    remote_headers,
)
from gateway.mcp.remote import PinnedAddresses, remote_http_client

IP_LITERAL = "IP address literal"
LOCAL_NAME = "local name"

HOSTILE_URLS: list[tuple[str, str]] = [
    ("http://mcp.example.com/mcp", "must use https"),
    ("ftp://mcp.example.com/", "must use https"),
    ("javascript:alert(1)", "must use https"),
    ("file:///etc/passwd", "must use https"),
    ("//mcp.example.com/mcp", "must use https"),
    ("", "non-empty string"),
    ("https:///mcp", "must name a host"),
    ("https://user:pw@mcp.example.com/", "credentials"),
    ("https://@mcp.example.com/", "credentials"),
    ("https://mcp.example.com:443@127.0.0.1/", "credentials"),
    ("https://localhost/mcp", LOCAL_NAME),
    ("https://LOCALHOST./mcp", LOCAL_NAME),
    ("https://api.localhost/", LOCAL_NAME),
    ("https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", LOCAL_NAME),
    ("https://localhost.localdomain/", LOCAL_NAME),
    ("https://metadata.google.internal/", LOCAL_NAME),
    ("https://printer.local/", LOCAL_NAME),
    ("https://1.0.0.127.in-addr.arpa/", LOCAL_NAME),
    ("https://127.0.0.1/mcp", IP_LITERAL),
    ("https://127.0.0.1:8443/mcp", IP_LITERAL),
    ("https://169.254.169.254/latest/meta-data/", IP_LITERAL),
    ("https://8.8.8.8/", IP_LITERAL),
    ("https://2130706433/", IP_LITERAL),
    ("https://0x7f000001/", IP_LITERAL),
    ("https://0X7F000001/", IP_LITERAL),
    ("https://0177.0.0.1/", IP_LITERAL),
    ("https://0177.0.0.01/", IP_LITERAL),
    ("https://127.1/", IP_LITERAL),
    ("https://127.0.1/", IP_LITERAL),
    ("https://0x7f.1/", IP_LITERAL),
    ("https://0x7f.0.0.0x1/", IP_LITERAL),
    ("https://0/", IP_LITERAL),
    ("https://127.0.0.1./", IP_LITERAL),
    ("https://１２７.０.０.１/", IP_LITERAL),
    ("https://127。0。0。1/", IP_LITERAL),
    ("https://mcp.example.123/", IP_LITERAL),
    ("https://[::1]/", IP_LITERAL),
    ("https://[::]/", IP_LITERAL),
    ("https://[0:0:0:0:0:0:0:1]/", IP_LITERAL),
    ("https://[::ffff:127.0.0.1]/", IP_LITERAL),
    ("https://[::ffff:7f00:1]/", IP_LITERAL),
    ("https://[fe80::1%25eth0]/", IP_LITERAL),
    ("https://[fd00:ec2::254]/", IP_LITERAL),
    ("https://%31%32%37.0.0.1/", "percent-encoded"),
    ("https://mcp%2eexample.com/", "percent-encoded"),
    ("https://mcp.example.com\\@127.0.0.1/", "backslashes"),
    ("https:/\\mcp.example.com/", "backslashes"),
    ("https://mcp.example.com /", "spaces"),
    (" https://mcp.example.com/", "spaces"),
    ("https://mcp.example.com\r\nHost: x/", "control characters"),
    ("https://127.0.0.1#@mcp.example.com/", IP_LITERAL),
    ("https://intranet/mcp", "fully qualified"),
    ("https://mcp..example.com/", "fully qualified"),
    ("https://mcp.exa*mple.com/", "fully qualified"),
    ("https://mcp.example.com:0/", "invalid port"),
    ("https://mcp.example.com:99999/", "not a valid URL"),
    ("https://mcp.example.com:abc/", "not a valid URL"),
    ("https://[mcp.example.com/", "not a valid URL"),
    ("https://" + "a" * 2100 + ".example.com/", "spaces, control characters"),
]

ALLOWED_URLS: list[tuple[str, RemoteTarget]] = [
    (
        "https://mcp.example.com/sse",
        RemoteTarget("https", "mcp.example.com", 443, "https://mcp.example.com/sse"),
    ),
    (
        "HTTPS://MCP.Example.COM./mcp?tenant=acme",
        RemoteTarget("https", "mcp.example.com", 443, "HTTPS://MCP.Example.COM./mcp?tenant=acme"),
    ),
    (
        "https://mcp.example.com:8443/mcp",
        RemoteTarget("https", "mcp.example.com", 8443, "https://mcp.example.com:8443/mcp"),
    ),
    (
        "https://bücher.example/mcp",
        RemoteTarget("https", "xn--bcher-kva.example", 443, "https://bücher.example/mcp"),
    ),
    (
        "https://xn--bcher-kva.example/",
        RemoteTarget("https", "xn--bcher-kva.example", 443, "https://xn--bcher-kva.example/"),
    ),
    (
        "https://0x7f.example.com/",
        RemoteTarget("https", "0x7f.example.com", 443, "https://0x7f.example.com/"),
    ),
    (
        "https://my_svc.example.com/mcp#frag",
        RemoteTarget("https", "my_svc.example.com", 443, "https://my_svc.example.com/mcp#frag"),
    ),
]

REFUSED_ADDRESSES: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.7", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("100.64.0.1", "shared address space"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved (documentation)"),
    ("198.18.0.1", "reserved (benchmarking)"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local (cloud metadata)"),
    ("fe80::1%eth0", "link-local (scoped)"),
    ("fd00:ec2::254", "private"),
    ("fc00::1", "private"),
    ("fec0::1", "private (site-local)"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "reserved"),
    ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),
    ("64:ff9b:1::1", "private (local NAT64)"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::1", "link-local (cloud metadata)"),
    ("2002:808:808::1", "reserved (6to4)"),
    ("2001::1", "reserved"),
    ("2001:db8::1", "reserved (documentation)"),
    ("100::1", "reserved"),
    ("not-an-ip", "malformed"),
]

PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("url", "expected"), HOSTILE_URLS)
def test_hostile_urls_are_refused(url: str, expected: str) -> None:
    with pytest.raises(BadInput) as caught:
        check_remote_url(url, param="tools[2].server_url")
    assert expected in caught.value.message
    assert caught.value.param == "tools[2].server_url"
    assert caught.value.status == 422 and caught.value.code == "bad_input"


def test_hostile_table_is_large_enough() -> None:
    assert len(HOSTILE_URLS) >= 30


@pytest.mark.parametrize(("url", "target"), ALLOWED_URLS)
def test_allowed_urls_normalise_host_and_port(url: str, target: RemoteTarget) -> None:
    assert check_remote_url(url) == target


def test_error_message_does_not_echo_query_secrets() -> None:
    with pytest.raises(BadInput) as caught:
        check_remote_url("http://mcp.example.com/mcp?token=s3cr3t-query")
    assert "s3cr3t-query" not in caught.value.message
    assert caught.value.param == "server_url"


def test_check_remote_host_normalises_what_the_dialer_sees() -> None:
    assert check_remote_host("MCP.Example.com.") == "mcp.example.com"
    with pytest.raises(BadInput):
        check_remote_host("127.0.0.1")


@pytest.mark.parametrize(("address", "reason"), REFUSED_ADDRESSES)
def test_refused_addresses(address: str, reason: str) -> None:
    assert address_refusal(address) == reason
    with pytest.raises(BadInput) as caught:
        check_resolved_addresses("mcp.example.com", ["8.8.8.8", address])
    assert reason in caught.value.message
    assert address not in caught.value.message  # no DNS oracle


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(address) is None


def test_resolved_addresses_are_deduplicated_in_order() -> None:
    found = ["8.8.8.8", "2606:4700::1111", "8.8.8.8"]
    assert check_resolved_addresses("h.example", found) == ["8.8.8.8", "2606:4700::1111"]


def test_no_addresses_is_refused() -> None:
    with pytest.raises(BadInput, match="did not resolve"):
        check_resolved_addresses("h.example", [], param="tools[0].server_url")


@pytest.mark.parametrize("value", ["tok-123", "Bearer tok-123", "bearer  tok-123 "])
def test_bearer_value_accepts_raw_or_prefixed_token(value: str) -> None:
    assert bearer_value(value) == "Bearer tok-123"


@pytest.mark.parametrize("value", ["", "Bearer ", "tok\r\nX-Evil: 1", "two words", "tab\ttoken"])
def test_bearer_value_refuses_malformed_tokens_without_echo(value: str) -> None:
    with pytest.raises(BadInput) as caught:
        bearer_value(value)
    assert caught.value.param == "authorization"
    assert value.strip() == "" or value not in caught.value.message


def test_remote_headers_adds_bearer_and_keeps_user_headers() -> None:
    sent = remote_headers({"X-Docs-Tenant": "acme"}, "Bearer tok-1")
    assert sent == {"X-Docs-Tenant": "acme", "Authorization": "Bearer tok-1"}
    assert remote_headers(None, None) == {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": "internal.example"}, "'Host' header"),
        ({"Content-Length": "0"}, "'Content-Length' header"),
        ({"Transfer-Encoding": "chunked"}, "'Transfer-Encoding' header"),
        ({"Mcp-Session-Id": "abc"}, "'Mcp-Session-Id' header"),
        ({"Bad Name": "x"}, "invalid header name"),
        ({"X-Secret": "s3cr3t\r\nHost: evil"}, "value of 'X-Secret' is invalid"),
    ],
)
def test_remote_headers_refuses_unsafe_headers(headers: dict[str, str], expected: str) -> None:
    with pytest.raises(BadInput) as caught:
        remote_headers(headers, None)
    assert expected in caught.value.message
    assert "s3cr3t" not in caught.value.message


def test_authorization_twice_is_refused() -> None:
    with pytest.raises(BadInput, match="authorization"):
        remote_headers({"authorization": "Basic abc"}, "tok")




# -- DNS names that resolve to addresses the gateway must never dial ----------------------------

HOSTILE_DNS: list[tuple[str, list[str], str]] = [
    # (name, what the resolver answers, the reason in the refusal)
    ("localtest.me", ["127.0.0.1"], "loopback"),
    ("127.0.0.1.nip.io", ["127.0.0.1"], "loopback"),
    ("v6.rebind.example", ["::1"], "loopback"),
    ("metadata.rebind.example", ["169.254.169.254"], "link-local (cloud metadata)"),
    ("ec2-v6.rebind.example", ["fd00:ec2::254"], "private"),
    ("mixed.rebind.example", ["93.184.216.34", "10.0.0.5"], "private"),  # one bad address is enough
    ("mixed6.rebind.example", ["2606:4700::1111", "fe80::1"], "link-local (cloud metadata)"),
    ("docker.rebind.example", ["172.17.0.1"], "private"),
    ("lan.rebind.example", ["192.168.0.1"], "private"),
    ("k8s.rebind.example", ["10.96.0.1"], "private"),
    ("cgnat.rebind.example", ["100.64.0.1"], "shared address space"),
    ("zero.rebind.example", ["0.0.0.0"], "unspecified"),
    ("mapped.rebind.example", ["::ffff:127.0.0.1"], "loopback"),
    ("mapped-meta.rebind.example", ["::ffff:a9fe:a9fe"], "link-local (cloud metadata)"),
    ("nat64.rebind.example", ["64:ff9b::a9fe:a9fe"], "link-local (cloud metadata)"),
    ("6to4.rebind.example", ["2002:7f00:1::1"], "loopback"),
    ("ula.rebind.example", ["fd12:3456::1"], "private"),
    ("scoped.rebind.example", ["fe80::1%eth0"], "link-local (scoped)"),
    ("mdns.rebind.example", ["224.0.0.251"], "multicast"),
    ("broadcast.rebind.example", ["255.255.255.255"], "reserved"),
    ("bench.rebind.example", ["198.18.0.5"], "reserved (benchmarking)"),
    ("teredo.rebind.example", ["2001::1"], "reserved"),
    ("nothing.rebind.example", [], "did not resolve"),
]


class TableResolver:
    """A test resolver answering from HOSTILE_DNS (and one public name); records each lookup."""

    def __init__(self) -> None:
        self.table = {name: addresses for name, addresses, _ in HOSTILE_DNS} | {"mcp.example.com": ["8.8.8.8"]}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.table[host]


class NoDialer(httpcore2.AsyncNetworkBackend):
    """Fails the test if anything is dialled."""

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"dialled {host}")


@pytest.mark.parametrize(("name", "addresses", "reason"), HOSTILE_DNS)
def test_names_resolving_to_internal_addresses_are_refused_before_any_connection(
    name: str, addresses: list[str], reason: str
) -> None:
    resolver = TableResolver()
    client = remote_http_client(f"https://{name}/mcp", None, "tok-SECRET", True, 5.0, param="tools[0].server_url",
                                resolver=resolver, dialer=NoDialer())

    async def enter() -> None:
        async with client:
            raise AssertionError(f"entered a client for {name}")

    with pytest.raises(BadInput) as caught:
        asyncio.run(enter())
    assert reason in caught.value.message and caught.value.param == "tools[0].server_url"
    shown = caught.value.message.replace(name, "")
    assert not any(address in shown for address in addresses)  # no DNS oracle
    assert "tok-SECRET" not in caught.value.message and resolver.calls == [name]


def test_a_public_name_passes_the_same_resolver() -> None:
    pins = PinnedAddresses(TableResolver(), 5.0, "server_url")
    assert asyncio.run(pins.addresses("MCP.example.com.", 443)) == ["8.8.8.8"]


@pytest.mark.parametrize(("name", "addresses", "reason"), [HOSTILE_DNS[3], HOSTILE_DNS[5], HOSTILE_DNS[13]])
def test_responses_refuse_a_rebinding_server_url_with_422(client, auth_headers, monkeypatch, name, addresses, reason):
    monkeypatch.setattr(remote, "system_resolver", TableResolver())  # the gateway's own DNS seam
    tool = {"type": "mcp", "server_label": "docs", "server_url": f"https://{name}/mcp", "require_approval": "never"}
    answer = client.post("/v1/responses", json={"model": "test-model", "input": "hi", "tools": [tool]},
                         headers=auth_headers)
    assert answer.status_code == 422, answer.json
    error = answer.json["error"]
    assert error["type"] == "bad_input" and error["param"] == "tools[0].server_url" and reason in error["message"]
    assert not any(address in answer.get_data(as_text=True).replace(name, "") for address in addresses)
