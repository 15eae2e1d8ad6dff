"""Which address a request came from: the peer, or what trusted proxies say in X-Forwarded-For (pure).

`X-Forwarded-For` is only believed when the direct peer is a configured trusted proxy, and then
it is read from the right: each trusted proxy appended the address it received from, so the
first entry from the right that is not itself a trusted proxy is the client. Entries left of it
were written by the client and prove nothing. A malformed entry stops the walk at the last
address a trusted proxy vouched for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses ("10.0.0.0/8", "127.0.0.1", "::1") as networks; ValueError names a bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether `address` lies in one of the trusted networks (an unparsable address never does)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == network.version and ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy and X-Forwarded-For names someone else."""
    client = peer or "-"
    if not trusted or not forwarded_for or not is_trusted(client, trusted):
        return client
    for entry in reversed(forwarded_for.split(",")):
        candidate = entry.strip()
        if not _is_address(candidate):
            return client
        client = candidate
        if not is_trusted(candidate, trusted):
            return client
    return client


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
