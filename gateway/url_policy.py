"""Outbound URL policy: which operator- or client-supplied URLs, hosts and resolved addresses may be reached (pure).

The one rule for every URL the gateway dials on someone's say-so: a remote MCP server_url (gateway.mcp.policy
re-exports it with "server_url" as the parameter name) and a guardrail webhook (gateway.guardrails.webhook).
https only, a public-looking DNS name (no IP literal, no local name), no credentials, a host every HTTP client
the gateway uses (httpx2 for MCP, requests/urllib3 for webhooks) reads the same way; at call time each resolved
address must be public (checked again on every new connection, so DNS rebinding cannot reach the inside).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2
import idna
import urllib3

from gateway.errors import BadInput

MAX_URL_LENGTH = 2048

# Special-use names that only ever resolve to the gateway itself or its own network.
_DENIED_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_DENIED_SUFFIXES = ("localhost", "local", "localdomain", "internal", "arpa")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
# WHATWG: a host whose last label is a number is parsed as IPv4 (127.1, 0x7f.1, 2130706433).
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
_BEARER_TOKEN = re.compile(r"^[\x21-\x7e]+$")
# Framing, routing and MCP session headers belong to the client, not to the request.
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "mcp-session-id",
        "mcp-protocol-version",
    }
)

_V4_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_DENIED: tuple[tuple[str, str], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local (cloud metadata)"),
    ("fc00::/7", "private"),
    ("fec0::/10", "private (site-local)"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "private (local NAT64)"),
    ("2001::/23", "reserved"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("3fff::/20", "reserved (documentation)"),
)
_V4_NETWORKS = tuple((ipaddress.IPv4Network(net), why) for net, why in _V4_DENIED)
_V6_NETWORKS = tuple((ipaddress.IPv6Network(net), why) for net, why in _V6_DENIED)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class RemoteTarget:
    """A URL that passed the policy: https, a public-looking DNS name, a port."""

    scheme: str
    host: str
    port: int
    url: str


def check_remote_url(url: str, param: str | None = "url") -> RemoteTarget:
    """Validate a remote URL; raise BadInput naming the parameter and the rule it breaks."""
    if not isinstance(url, str) or not url:
        raise _bad(param, "must be a non-empty string")
    if len(url) > MAX_URL_LENGTH or _UNSAFE_CHARS.search(url):
        raise _bad(param, "must be a URL without spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad(param, "is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise _bad(param, "must use https")
    if "@" in parts.netloc:
        raise _bad(param, "must not contain credentials (userinfo)")
    if "[" in parts.netloc or "]" in parts.netloc:
        raise _bad(param, "must not use an IP address literal (IPv6)")
    host = check_remote_host(parts.hostname or "", param)
    if port == 0:
        raise _bad(param, "has an invalid port")
    _require_same_host_as_client(url, host, param)
    return RemoteTarget(scheme="https", host=host, port=port or 443, url=url)


def check_remote_host(host: str, param: str | None = "url") -> str:
    """Normalise a host name (IDNA, lowercase, no trailing dot) and refuse non-public ones."""
    if not host:
        raise _bad(param, "must name a host")
    if "%" in host or ":" in host:
        raise _bad(param, "host must not be percent-encoded, a zone id or an IP literal")
    name = _normalise_host(host, param)
    if _is_ip_literal(name):
        raise _bad(param, f"must not use an IP address literal ({name!r})")
    if name in _DENIED_HOSTS or name.rsplit(".", 1)[-1] in _DENIED_SUFFIXES or name.endswith(".home.arpa"):
        raise _bad(param, f"host {name!r} is a local name and is not allowed")
    if not _HOSTNAME.match(name) or len(name) > 253:
        raise _bad(param, f"host {name!r} must be a fully qualified DNS name")
    return name


def check_resolved_addresses(host: str, addresses: list[str], param: str | None = "url") -> list[str]:
    """Return the addresses `host` resolved to, refusing the host if any is not public."""
    allowed: list[str] = []
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            # No address in the message: that would make the gateway a DNS oracle.
            raise _bad(param, f"host {host!r} resolves to a {reason} address")
        if address not in allowed:
            allowed.append(address)
    if not allowed:
        raise _bad(param, f"host {host!r} did not resolve to any address")
    return allowed


def address_refusal(address: str) -> str | None:
    """Why an IP address must not be dialled (e.g. "loopback"), or None when it is public."""
    if "%" in address:
        return "link-local (scoped)"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "malformed"
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_refusal(ip)
    return _ipv6_refusal(ip)


def remote_headers(
    headers: dict[str, str] | None,
    authorization: str | None,
    param: str = "headers",
) -> dict[str, str]:
    """The headers to send: validated user headers plus `Authorization: Bearer <token>`."""
    result: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise _bad(param, "has an invalid header name")
        if name.lower() in _FORBIDDEN_HEADERS:
            raise _bad(param, f"must not set the {name!r} header")
        if not isinstance(value, str) or not _HEADER_VALUE.match(value):
            # The value may be a secret, so only the name is quoted.
            raise _bad(param, f"value of {name!r} is invalid")
        result[name] = value
    if authorization is not None:
        if any(name.lower() == "authorization" for name in result):
            raise _bad(param, "must not repeat authorization")
        result["Authorization"] = bearer_value(authorization)
    return result


def bearer_value(authorization: str) -> str:
    """`Bearer <token>` from a raw token or a value already prefixed with "Bearer "."""
    token = strip_bearer(authorization) if isinstance(authorization, str) else ""
    if not _BEARER_TOKEN.match(token):
        raise BadInput("authorization must be a single bearer token", param="authorization")
    return f"Bearer {token}"


def strip_bearer(authorization: str) -> str:
    """The token of an authorization value, with an optional "Bearer " prefix removed."""
    value = authorization.strip()
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value


def _bad(param: str | None, detail: str) -> BadInput:
    """A BadInput whose message starts with the offending parameter's name."""
    return BadInput(f"{param or 'url'} {detail}", param=param)


def _normalise_host(host: str, param: str | None) -> str:
    """Lowercase and IDNA-encode (UTS 46, so full-width digits and dots map to ASCII)."""
    try:
        name = host.lower() if host.isascii() else idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise _bad(param, "host is not a valid internationalised domain name") from None
    return name.removesuffix(".")


def _is_ip_literal(name: str) -> bool:
    """Any IPv4/IPv6 spelling: dotted, integer, hex, octal, short forms, or a numeric last label."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return bool(_NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]))


def _require_same_host_as_client(url: str, host: str, param: str | None) -> None:
    """Refuse URLs that an HTTP client which may send the request (httpx2, urllib3) reads differently."""
    try:
        parsed = httpx2.URL(url)
        read_by_urllib3 = urllib3.util.parse_url(url)
    except (httpx2.InvalidURL, urllib3.exceptions.LocationParseError, ValueError):
        raise _bad(param, "is not a valid URL") from None
    client_hosts = {parsed.raw_host.decode("ascii").removesuffix("."), (read_by_urllib3.host or "").removesuffix(".")}
    if client_hosts != {host} or parsed.userinfo or read_by_urllib3.auth:
        raise _bad(param, "has an ambiguous host")


def _ipv4_refusal(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_NETWORKS:
        if ip in network:
            return reason
    if ip.is_multicast or ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def _ipv6_refusal(ip: ipaddress.IPv6Address) -> str | None:
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _ipv4_refusal(embedded)
    if ip.sixtofour is not None:
        # 6to4 is deprecated (RFC 7526); name what it hides when that is worse.
        return _ipv4_refusal(ip.sixtofour) or "reserved (6to4)"
    for network, reason in _V6_NETWORKS:
        if ip in network:
            return reason
    if ip not in _V6_GLOBAL_UNICAST or ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped or well-known NAT64 IPv6 address stands for."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None
