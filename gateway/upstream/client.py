"""UpstreamClient: pooled `requests` sessions per provider, timeouts, error translation, streaming."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from gateway.config import ProviderSettings
from gateway.errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.sse import SseDecoder, SseEvent

log = logging.getLogger(__name__)
_END = object()


@dataclass(frozen=True)
class Timeout:
    """Connect and read timeouts for one provider, in seconds."""

    connect: float
    read: float

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


def rejected_error(response: requests.Response, provider: str) -> GatewayError:
    """Translate a non-2xx upstream answer into the gateway's error tree."""
    message, kind, code, param = _upstream_error_fields(response)
    status = response.status_code
    if status in (401, 403):
        return UpstreamError(f"Upstream {provider!r} rejected the gateway's credentials: {message}")
    if 400 <= status < 500:
        headers = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else {}
        error = UpstreamRejected(message, status=status, param=param, code=code, headers=headers)
        if kind:
            error.type = kind
        return error
    return UpstreamError(f"Upstream {provider!r} failed with {status}: {message}")


def _upstream_error_fields(response: requests.Response) -> tuple[str, str | None, str | None, str | None]:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = error.get("code")
        return (
            str(error.get("message") or response.reason),
            error.get("type") if isinstance(error.get("type"), str) else None,
            str(code) if code is not None else None,
            error.get("param") if isinstance(error.get("param"), str) else None,
        )
    if isinstance(error, str):
        return error, None, None, None
    return (response.text[:500] or str(response.reason)), None, None, None


def translate_exception(exc: requests.RequestException, provider: str) -> GatewayError:
    """Map a `requests` failure to UpstreamTimeout / UpstreamUnavailable / UpstreamError."""
    if isinstance(exc, requests.Timeout):
        return UpstreamTimeout(f"Upstream {provider!r} timed out.")
    if isinstance(exc, requests.ConnectionError):
        return UpstreamUnavailable(f"Upstream {provider!r} is unreachable.")
    return UpstreamError(f"Upstream {provider!r} failed: {type(exc).__name__}.")


class UpstreamStream:
    """An upstream SSE response read on a pool thread into a queue the caller drains."""

    def __init__(self, response: requests.Response, provider: str, executor: ThreadPoolExecutor):
        self._response = response
        self._provider = provider
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = threading.Event()
        executor.submit(self._read)

    def _read(self) -> None:
        decoder = SseDecoder()
        try:
            for chunk in self._response.iter_content(chunk_size=None):
                for event in decoder.feed(chunk):
                    self._queue.put(event)
        except requests.RequestException as exc:
            if not self._closed.is_set():
                self._queue.put(translate_exception(exc, self._provider))
        except Exception as exc:  # noqa: BLE001 - surfaced to the consumer, never lost
            if not self._closed.is_set():
                log.warning("stream reader for %s failed: %r", self._provider, exc)
                self._queue.put(UpstreamError(f"Upstream {self._provider!r} stream broke."))
        finally:
            self._queue.put(_END)

    def events(self, idle_timeout: float) -> Iterator[SseEvent | None]:
        """Yield events as they arrive; None after `idle_timeout` seconds of silence."""
        while True:
            try:
                item = self._queue.get(timeout=idle_timeout)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, GatewayError):
                raise item
            yield item

    def close(self) -> None:
        """Abort the upstream connection (idempotent); unblocks the reader thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        # urllib3's HTTPResponse.connection: None once the connection went back to the pool.
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._response.close()


class UpstreamClient:
    """One keep-alive session per provider; every call has explicit timeouts."""

    def __init__(self, providers: dict[str, ProviderSettings], pool_size: int) -> None:
        self._providers = providers
        self._pool_size = pool_size
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="upstream")
        self._closed = False

    def _session(self, provider: str) -> requests.Session:
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("The gateway is shutting down.")
            session = self._sessions.get(provider)
            if session is None:
                session = requests.Session()
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers.update(self._auth_headers(provider))
                # Proxy variables are read once here, not on every request (requests' default).
                session.proxies = requests.utils.get_environ_proxies(self._providers[provider].base_url)
                session.trust_env = False
                self._sessions[provider] = session
            return session

    def _auth_headers(self, provider: str) -> dict[str, str]:
        env_name = self._providers[provider].api_key_env
        secret = os.environ.get(env_name, "") if env_name else ""
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def _timeout(self, provider: str) -> Timeout:
        settings = self._providers[provider]
        return Timeout(settings.connect_timeout_s, settings.timeout_s)

    def _url(self, provider: str, path: str) -> str:
        return self._providers[provider].base_url.rstrip("/") + "/" + path.lstrip("/")

    def _send(self, provider: str, method: str, path: str, body: Any, stream: bool) -> requests.Response:
        try:
            response = self._session(provider).request(
                method,
                self._url(provider, path),
                json=body,
                stream=stream,
                timeout=self._timeout(provider).as_requests(),
            )
        except requests.RequestException as exc:
            raise translate_exception(exc, provider) from exc
        if response.status_code >= 400:
            error = rejected_error(response, provider)
            response.close()
            raise error
        return response

    def post_json(self, provider: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a JSON body and return the decoded JSON answer."""
        return self._decode(self._send(provider, "POST", path, body, stream=False), provider)

    def submit_json(self, provider: str, path: str, body: dict[str, Any]) -> Future[dict[str, Any]]:
        """post_json on the reader pool, so the caller can wait with keep-alives."""
        return self._executor.submit(self.post_json, provider, path, body)

    def open_stream(self, provider: str, path: str, body: dict[str, Any]) -> UpstreamStream:
        """POST and return the SSE answer as an UpstreamStream (errors before the body raise)."""
        response = self._send(provider, "POST", path, body, stream=True)
        return UpstreamStream(response, provider, self._executor)

    @staticmethod
    def _decode(response: requests.Response, provider: str) -> dict[str, Any]:
        try:
            data = response.json()
        except (ValueError, requests.RequestException) as exc:
            raise UpstreamError(f"Upstream {provider!r} sent an invalid JSON body.") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"Upstream {provider!r} sent a non-object JSON body.")
        return data

    def close(self) -> None:
        """Close sessions and the reader pool (idempotent); later calls get 503."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
