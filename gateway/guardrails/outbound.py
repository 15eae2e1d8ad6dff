"""The HTTP calls of the I/O guardrails (webhook, moderation): shared sessions, timeouts, one failure type.

Two module-level `requests` sessions keep connections alive across requests: a plain one (operator-
configured providers, and webhooks with `[mcp] remote_url_checks` off) and a checked one, whose every new
connection resolves the host, refuses it when any address is not public (gateway.url_policy) and dials only
the addresses it checked, so a DNS answer that changes after startup (rebinding) cannot reach the inside;
the lookup counts against the connect timeout (it runs on a daemon thread: getaddrinfo has none of its own).
Neither follows redirects or reads proxy variables. Every failure (timeout, connection, refusal, non-2xx,
a body that is not a JSON object) is one `CallFailed` whose `reason` is a short word for logs and metrics.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util import connection

from gateway.errors import BadInput
from gateway.guardrails.verdicts import ALLOW, BLOCK, Verdict
from gateway.observability import metrics
from gateway.url_policy import check_remote_host, check_remote_url, check_resolved_addresses

log = logging.getLogger(__name__)
Resolver = Callable[[str, int], list[str]]
POOL_SIZE = 32  # connections kept per host and session
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a longer answer is a failure (a redacted text comes back whole)


class CallFailed(Exception):
    """An outbound guardrail call that gave no usable answer; `reason` is one of the words below."""

    REASONS = ("timeout", "connection", "refused", "status", "malformed")

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (getaddrinfo), unique, in order."""
    addresses: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def resolve_within(resolver: Resolver, host: str, port: int, timeout_s: float | None) -> list[str]:
    """`resolver(host, port)` on a daemon thread, waited for at most `timeout_s` (getaddrinfo has no timeout)."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(_attempt(resolver, host, port)), daemon=True,
                              name="guardrail-dns")
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise TimeoutError(f"resolving {host!r} took longer than {timeout_s} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _attempt(resolver: Resolver, host: str, port: int) -> list[str] | OSError:
    try:
        return resolver(host, port)
    except OSError as exc:
        return exc


class _PinnedMixin:
    """A urllib3 connection that dials only addresses the URL policy accepted (resolved per new connection)."""

    resolver: Resolver = staticmethod(system_resolver)
    _dns_host: str
    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def _new_conn(self) -> socket.socket:
        name = check_remote_host(self._dns_host, "url")
        try:
            wait = self.timeout if isinstance(self.timeout, (int, float)) else None
            found = resolve_within(type(self).resolver, name, self.port, wait)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"resolving {name} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"could not resolve {name!r}: {exc}") from exc  # type: ignore[arg-type]
        failure: Exception = NewConnectionError(self, f"no address for {name!r}")  # type: ignore[arg-type]
        for address in check_resolved_addresses(name, found, "url"):
            try:
                return connection.create_connection((address, self.port), self.timeout,
                                                    source_address=self.source_address,
                                                    socket_options=self.socket_options)
            except TimeoutError as exc:
                failure = ConnectTimeoutError(self, f"connection to {name} timed out")
                failure.__cause__ = exc
            except OSError as exc:
                failure = NewConnectionError(self, f"failed to connect to {name}: {exc}")  # type: ignore[arg-type]
        raise failure


class _PinnedAdapter(HTTPAdapter):
    """An HTTPAdapter whose pools use pinned connections."""

    def __init__(self, resolver: Resolver) -> None:
        pinned = {"resolver": staticmethod(resolver)}
        http = type("PinnedHTTPConnection", (_PinnedMixin, HTTPConnection), pinned)
        https = type("PinnedHTTPSConnection", (_PinnedMixin, HTTPSConnection), pinned)
        self._pool_classes = {
            "http": type("PinnedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("PinnedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(pool_connections=4, pool_maxsize=POOL_SIZE)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """The default pool manager, with pinned pool classes."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes


def new_session(checked: bool, resolver: Resolver = system_resolver) -> requests.Session:
    """A session without proxies or redirects; `checked`: it dials only public addresses of the policy."""
    session = requests.Session()
    adapter = _PinnedAdapter(resolver) if checked else HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.trust_env = False
    session.max_redirects = 0
    return session


PLAIN_SESSION = new_session(checked=False)
CHECKED_SESSION = new_session(checked=True)


def post_json(session: requests.Session, url: str, body: dict[str, Any], headers: dict[str, str],
              timeout_s: float, *, checked: bool) -> dict[str, Any]:
    """POST `body` and return the JSON object answered; raises CallFailed (never a requests error).

    `checked`: the URL is held to the policy again here, and the session must be a checked one.
    """
    try:
        if checked:
            check_remote_url(url, "url")
        with session.post(url, json=body, headers=headers, timeout=timeout_s, allow_redirects=False,
                          stream=True) as response:
            if not 200 <= response.status_code < 300:
                raise CallFailed("status", f"answered {response.status_code}")
            data = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
    except BadInput as exc:
        raise CallFailed("refused", exc.message) from None
    except (requests.Timeout, ReadTimeoutError):
        raise CallFailed("timeout", f"no answer within {timeout_s} s") from None
    except requests.ConnectionError as exc:
        timed_out = isinstance(exc.args[0] if exc.args else None, ReadTimeoutError)
        raise CallFailed("timeout" if timed_out else "connection", type(exc).__name__) from None
    except (requests.RequestException, Urllib3Error, OSError) as exc:
        raise CallFailed("connection", type(exc).__name__) from None
    if len(data) > MAX_ANSWER_BYTES:
        raise CallFailed("malformed", f"the answer is longer than {MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(data)
    except ValueError:
        raise CallFailed("malformed", "the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise CallFailed("malformed", "the answer is not a JSON object")
    return answer


def failure_verdict(name: str, kind: str, stage: str, failure: CallFailed, fail_open: bool) -> Verdict:
    """The verdict of a failed call: allow (fail open) or block; logged and counted either way, never the text."""
    outcome = "allowed" if fail_open else "blocked"
    log.warning("guardrail %r (%s) failed at %s, text %s: %s", name, kind, stage, outcome, failure)
    metrics.guardrail_failed(name, failure.reason, outcome)
    if fail_open:
        return ALLOW
    return Verdict(BLOCK, what=("unavailable",), reason=f"{kind} failed ({failure.reason}); fail_open is false")
