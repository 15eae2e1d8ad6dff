"""UpstreamClient: pooled `requests` sessions per provider, timeouts, error translation, streaming."""

from __future__ import annotations

import contextvars
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError

from gateway.config import ProviderSettings
from gateway.errors import (
    GatewayError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.observability.outgoing import UpstreamCall
from gateway.upstream import wire
from gateway.upstream.copies import CopyBalancer
from gateway.upstream.multipart import MultipartBody
from gateway.upstream.providers import StreamTranslator, WireRequest
from gateway.upstream.sse import SseDecoder, SseEvent
from gateway.upstream.wire import rejected_error  # noqa: F401 (its home was here: importers keep working)

log = logging.getLogger(__name__)
_END = object()
# Events read ahead of the client. Past this the reader waits, so a client that does not read
# holds at most this many events in memory and TCP back-pressure slows the upstream down.
STREAM_QUEUE_EVENTS = 64
PUT_WAIT_S = 0.5  # how often a waiting reader checks whether the stream was closed
PROBE_TIMEOUT_S = 3.0  # of a readiness probe (GET models)
STREAM_READ_BYTES = 65536  # the most one read of a stream body delimited by its connection's close takes


@dataclass(frozen=True)
class Timeout:
    """Connect and read timeouts for one provider, in seconds."""

    connect: float
    read: float

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


def translate_exception(exc: requests.RequestException, provider: str) -> GatewayError:
    """Map a `requests` failure to UpstreamTimeout / UpstreamUnavailable / UpstreamError."""
    # requests wraps a read timeout while streaming a body in a ConnectionError
    if isinstance(exc, requests.Timeout) or isinstance(exc.args[0] if exc.args else None, ReadTimeoutError):
        return UpstreamTimeout(f"Upstream {provider!r} timed out.")
    if isinstance(exc, requests.ConnectionError):
        return UpstreamUnavailable(f"Upstream {provider!r} is unreachable.")
    return UpstreamError(f"Upstream {provider!r} failed: {type(exc).__name__}.")


def body_pieces(response: requests.Response) -> Iterator[bytes]:
    """A streamed body as it arrives: chunk by chunk, or read by read when the connection's close delimits it."""
    if response.raw.chunked:
        yield from response.iter_content(chunk_size=None)
        return
    try:  # iter_content(None) would wait for the whole body: urllib3 reads it in one read(None)
        while piece := response.raw.read1(STREAM_READ_BYTES, decode_content=True):
            yield piece
    except Urllib3Error as exc:
        raise requests.ConnectionError(exc) from exc


class UpstreamStream:
    """An upstream SSE response read on a pool thread into a bounded queue the caller drains."""

    def __init__(self, response: requests.Response, provider: str, executor: ThreadPoolExecutor,
                 call: UpstreamCall | None = None, translate: StreamTranslator | None = None):
        self._response = response
        self._translate = translate  # a provider's events -> OpenAI chunk events (None: they are already)
        self._provider = provider
        self._call = call
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=STREAM_QUEUE_EVENTS)
        self._closed = threading.Event()
        self._first: list[Any] = []  # the first item, when wait_first_event took it off the queue
        self._on_close: list[Callable[[], None]] = []
        executor.submit(self._read)

    def _read(self) -> None:
        last_data = ""
        try:
            for event in self._events():
                last_data = event.data if event.data != "[DONE]" else last_data
                if not self._put(event):
                    return
        except requests.RequestException as exc:
            if not self._closed.is_set():
                self._failed(translate_exception(exc, self._provider))
        except GatewayError as error:  # a translated provider's error event, or its stream cut short
            if not self._closed.is_set():
                self._failed(error)
        except Exception as exc:  # noqa: BLE001 - surfaced to the consumer, never lost
            if not self._closed.is_set():
                log.warning("stream reader for %s failed: %r", self._provider, exc)
                self._failed(UpstreamError(f"Upstream {self._provider!r} stream broke."))
        finally:
            if self._call is not None:
                self._call.finished(last_data)  # its usage, when traced
            self._put(_END)

    def _events(self) -> Iterator[SseEvent]:
        """The upstream's SSE events as OpenAI chunk events."""
        decoder = SseDecoder()
        events = (event for chunk in body_pieces(self._response) for event in decoder.feed(chunk))
        return events if self._translate is None else wire.translated_events(self._translate, events)

    def _failed(self, error: GatewayError) -> None:
        if self._call is not None:
            self._call.failed(error, answered=True)
        self._put(error)

    def _put(self, item: Any) -> bool:
        """Queue an item, waiting while the queue is full; False once the stream is closed."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=PUT_WAIT_S)
            except queue.Full:
                continue
            return True
        return False

    def wait_first_event(self, wait_s: float) -> None:
        """Wait up to `wait_s` for the first event; raise (and close) when the stream failed before it.

        The router calls it before anything reaches the client, so a stream that breaks before its
        first event is retried elsewhere; after `wait_s` the stream is the client's (keep-alives start).
        """
        try:
            item = self._queue.get(timeout=wait_s)
        except queue.Empty:
            return
        if isinstance(item, GatewayError):
            self.close()
            raise item
        self._first.append(item)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback` once when the stream is closed (the router's in-flight count)."""
        self._on_close.append(callback)

    def events(self, idle_timeout: float) -> Iterator[SseEvent | None]:
        """Yield events as they arrive; None after `idle_timeout` seconds of silence."""
        while True:
            try:
                item = self._first.pop() if self._first else self._queue.get(timeout=idle_timeout)
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
        for callback in self._on_close:
            callback()
        # urllib3's HTTPResponse.connection: None once the connection went back to the pool.
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._response.close()


class MediaResponse:
    """A media endpoint's upstream answer, its body unread: read as JSON, as text, or piece by piece."""

    def __init__(self, response: requests.Response, provider: str, call: UpstreamCall) -> None:
        self.response = response
        self._provider = provider
        self._call = call

    @property
    def content_type(self) -> str:
        """The answer's Content-Type (its media type only)."""
        return self.response.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()

    def content(self) -> bytes:
        """The whole body (JSON and text answers), read through the client's error translation."""
        try:
            return self.response.content
        except requests.RequestException as exc:
            raise translate_exception(exc, self._provider) from exc
        finally:
            self.close()

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives (a speech answer), read through the client's error translation."""
        try:
            yield from body_pieces(self.response)
        except requests.RequestException as exc:
            raise translate_exception(exc, self._provider) from exc
        finally:
            self.close()

    def close(self) -> None:
        """Release the connection and end the call (idempotent)."""
        self.response.close()
        self._call.end()


class UpstreamClient:
    """One keep-alive session per provider; every call has explicit timeouts."""

    def __init__(self, providers: dict[str, ProviderSettings], pool_size: int) -> None:
        self._providers = providers
        self._pool_size = pool_size
        self._sessions: dict[str, requests.Session] = {}
        self._copies = {name: CopyBalancer(provider.copy_base_urls()) for name, provider in providers.items()}
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
        """Bearer auth of an OpenAI-compatible provider, and its extra headers (others authenticate per request)."""
        settings = self._providers[provider]
        secret = settings.api_key()
        auth = {"Authorization": f"Bearer {secret}"} if secret and settings.type == "openai" else {}
        return {**auth, **settings.extra_headers}

    def _timeout(self, provider: str, read_timeout_s: float | None = None) -> Timeout:
        settings = self._providers[provider]
        return Timeout(settings.connect_timeout_s, read_timeout_s or settings.timeout_s)

    def in_flight(self, provider: str) -> list[int]:
        """Calls this worker has in flight on each copy of the provider (one number without copies)."""
        return self._copies[provider].in_flight()

    @staticmethod
    def _url(base_url: str, path: str) -> str:
        return base_url.rstrip("/") + "/" + path.lstrip("/")

    def _send(self, provider: str, sent: WireRequest, stream: bool, call: UpstreamCall,
              read_timeout_s: float | None = None, upload: MultipartBody | None = None) -> requests.Response:
        headers = {**sent.headers, **call.headers}  # `traceparent` when the request is traced
        # an upload is streamed from its parts (gateway.upstream.multipart), with its length
        payload: dict[str, Any] = {"json": sent.json} if upload is None else {"data": upload}
        if upload is not None:
            headers["Content-Type"] = upload.content_type
        try:
            response = self._session(provider).request(
                sent.method,
                sent.url,
                stream=stream,
                timeout=self._timeout(provider, read_timeout_s).as_requests(),
                headers=headers,
                **payload,
            )
        except requests.RequestException as exc:
            error = translate_exception(exc, provider)
            call.failed(error)
            raise error from exc
        except GatewayError as error:
            call.failed(error)
            raise
        if response.status_code >= 400:
            error = wire.rejected(self._providers[provider], response, provider)
            response.close()
            call.failed(error, status=response.status_code)
            raise error
        call.answered(response.status_code)
        return response

    def _call(self, provider: str, path: str, body: Any, beta: tuple[str, ...] = ()) -> tuple[WireRequest, UpstreamCall]:
        """The provider's request for a prepared body, and its call on the least busy copy (held until it ends)."""
        base_url, release = self._copies[provider].acquire()
        try:
            sent = wire.wire_request(self._providers[provider], base_url, path, body, beta)
        except GatewayError:
            release()
            raise
        call = UpstreamCall(provider, path, body, sent.url)
        call.on_end = release
        return sent, call

    def post_json(self, provider: str, path: str, body: dict[str, Any], beta: tuple[str, ...] = (),
                  read_timeout_s: float | None = None) -> dict[str, Any]:
        """POST a JSON body and return the decoded JSON answer (a chat completion in OpenAI's shape).

        `beta`: a client's `anthropic-beta` flags, for the native Messages paths (gateway.upstream.wire);
        `read_timeout_s`: a deployment's own read timeout (default: the provider's).
        """
        sent, call = self._call(provider, path, body, beta)
        response = self._send(provider, sent, False, call, read_timeout_s)
        try:
            answer = wire.parse_answer(self._providers[provider], path, self._decode(response, provider), provider)
        except GatewayError as error:
            call.failed(error, answered=True)
            raise
        call.finished(answer)
        return answer

    def submit_json(self, provider: str, path: str, body: dict[str, Any],
                    read_timeout_s: float | None = None) -> Future[dict[str, Any]]:
        """post_json on the reader pool, so the caller can wait with keep-alives (in the caller's trace)."""
        return self._executor.submit(contextvars.copy_context().run, self.post_json, provider, path, body, (),
                                     read_timeout_s)

    def open_stream(self, provider: str, path: str, body: dict[str, Any], beta: tuple[str, ...] = (),
                    read_timeout_s: float | None = None) -> UpstreamStream:
        """POST and return the SSE answer as an UpstreamStream (errors before the body raise; others as post_json)."""
        sent, call = self._call(provider, path, body, beta)
        response = self._send(provider, sent, True, call, read_timeout_s)
        translate = wire.translator(self._providers[provider], path, body)
        return UpstreamStream(response, provider, self._executor, call, translate)

    def open_response(self, provider: str, path: str, body: dict[str, Any], upload: MultipartBody | None = None,
                      read_timeout_s: float | None = None) -> MediaResponse:
        """POST a media request (JSON `body`, or the `upload` with `body`'s fields) and return its answer unread.

        The answer's body is the caller's to read (JSON, text or audio bytes); `MediaResponse.close()` ends it.
        """
        sent, call = self._call(provider, path, body)
        if upload is not None:
            upload = upload.with_field("model", str(body.get("model")))
        return MediaResponse(self._send(provider, sent, True, call, read_timeout_s, upload), provider, call)

    def probe(self, provider: str) -> bool:
        """Whether the provider answers HTTP below 500 (GET models, short timeouts): for /readyz."""
        connect = min(self._providers[provider].connect_timeout_s, PROBE_TIMEOUT_S)
        try:
            url = self._url(self._copies[provider].base_urls[0], "models")
            response = self._session(provider).get(url, timeout=(connect, PROBE_TIMEOUT_S))
        except (requests.RequestException, GatewayError):
            return False
        response.close()
        return response.status_code < 500

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
