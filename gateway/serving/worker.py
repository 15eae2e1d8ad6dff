"""gunicorn's gthread worker, except that a thread gets a connection only once its request is in memory.

Stock gthread (gunicorn 27) hands each new connection to a thread, which waits up to 5 s for a
first byte and then parses the request with blocking reads that have no deadline: a client that
sends its headers or body a byte at a time holds that thread as long as it likes, and a few
dozen such clients hold them all. Here the worker's main loop (the selector gthread already runs
to accept connections and watch kept-alive ones) reads each request without blocking, asks
`RequestFraming` where it ends, and submits the connection to the thread pool only when the
headers and the body are all buffered. A request not complete within `[server] client_timeout_s`
gets 408 from the main loop; it never held a thread. The body limit is the route's
(gateway.serving.body_limits: upload routes take more than `[server] max_body_bytes`); a body past
it gets 413 as soon as the head or the bytes received show it. A body past
`[uploads] spool_threshold_bytes` goes on arriving into a spool file (gateway.serving.spool) rather
than memory, still in the main loop; the thread then reads it from that file, which is deleted when
the request ends. The bytes held in memory this way are capped per worker (`buffer_budget`, see
ClientLimits); past it, the request that overflows gets 503.

While a thread serves the request, a client that takes no byte of the response for
`[server] send_timeout_s` makes the write raise (ProgressSocket: the timeout counts from the last
progress, not from the start of a large write): gunicorn closes the response iterator (a stream's
generator then settles its request as a disconnect, 499) and the connection is reset. A connection that closes lingers (FIN sent, what the client still sends read and
discarded, 2 s at most) in the selector: gunicorn's own `close_graceful` does that with blocking
reads in the main loop, so clients that keep sending after their response could stall the worker.

A worker whose every thread is serving a request stops accepting connections until one is free, so a
new client is accepted by a worker with a free thread (or waits in the kernel's backlog for the first
thread to free up) rather than queued behind long streams; stock gthread accepts up to
`worker_connections` whatever its threads are doing.

This covers plain HTTP/1.x, which is all `gateway serve` configures; with TLS, HTTP/2 or uwsgi
set in gunicorn, requests are read by gunicorn's own code (send timeout still applied). It
overrides ThreadWorker's enqueue_req, murder_keepalived, handle_request and finish_request, and
the `worker_connections` its run loop compares `nr_conns` with, as gunicorn 27 defines them (setup.cfg
requires it).
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from itertools import takewhile
from typing import IO, Any

from gunicorn import http
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from gateway.config import Settings
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
    dialect_of,
    status_in,
)
from gateway.serving.body_limits import body_limit, target_path
from gateway.serving.framing import RequestFraming, Verdict
from gateway.serving.spool import SpooledUnreader, open_spool

RECV_BYTES = 65536
READS_PER_EVENT = 16  # then let other connections have the main loop
BUFFER_BYTES_PER_THREAD = 4 * 1024 * 1024
LINGER_S = 2.0  # as gunicorn's close_graceful
LINGER_BYTES = 65536
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class ClientLimits:
    """What the worker allows a client: time to send a request, time to take a write, bytes buffered."""

    client_timeout_s: float
    send_timeout_s: float
    max_head_bytes: int
    body_limit: Callable[[str], int]  # a request target's largest body (the route's)
    spool_threshold: int  # body bytes held in memory before the rest goes to a spool file
    spool_dir: str
    buffer_budget: int  # bytes all of this worker's unfinished requests may hold in memory together

    @classmethod
    def of(cls, app: Any, cfg: Any) -> ClientLimits:
        """From the app's `[server]` and `[uploads]` settings (defaults for another app) and gunicorn's limits."""
        settings = getattr(app, "extensions", {}).get("gateway.settings") or Settings()
        server, uploads = settings.server, settings.uploads
        # a request holds at most its head, the spool threshold and one event's reads in memory
        held = min(server.max_body_bytes, uploads.spool_threshold_bytes) + READS_PER_EVENT * RECV_BYTES
        budget = max(cfg.threads * BUFFER_BYTES_PER_THREAD, 2 * held)
        return cls(server.client_timeout_s, server.send_timeout_s, max_head_bytes(cfg),
                   lambda target: body_limit(target_path(target), settings),
                   uploads.spool_threshold_bytes, uploads.spool_dir, budget)


def max_head_bytes(cfg: Any) -> int:
    """The largest request head gunicorn's parser accepts with these limits (0 means its maximum)."""
    line = cfg.limit_request_line if cfg.limit_request_line > 0 else 8190
    fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= 32768 else 32768
    field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else 8190
    return line + 2 + fields * (field_size + 2) + 4


def reads_whole_requests(cfg: Any) -> bool:
    """Plain HTTP/1.x, the only protocol the main loop frames; TLS, HTTP/2, uwsgi and PROXY keep gunicorn's."""
    return (
        not cfg.is_ssl
        and getattr(cfg, "protocol", "http") == "http"
        and list(getattr(cfg, "http_protocols", ["h1"])) == ["h1"]
        and getattr(cfg, "proxy_protocol", "off") in ("off", False, None)
    )


def rejection(error: GatewayError, dialect: str = "openai") -> bytes:
    """A complete `Connection: close` HTTP/1.1 response carrying the error's JSON body in a path's dialect."""
    body = json.dumps(error.body(dialect)).encode()
    status = status_in(error, dialect)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def main_loop_error(status: int, limits: ClientLimits, framing: RequestFraming) -> GatewayError:
    """The error the main loop answers itself with this status (413: with the route's limit)."""
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        return BodyTooLarge(f"The request body is larger than {framing.max_body_bytes} bytes, "
                            "the limit of this route.")
    if status == HTTPStatus.REQUEST_TIMEOUT:
        return InvalidRequest(f"The request did not arrive within {limits.client_timeout_s:g} seconds.",
                              status=408, code="request_timeout")
    if status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        return InvalidRequest("The request headers are too large.", status=431, code="headers_too_large")
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        return ServiceUnavailable("The server is busy receiving other requests; retry shortly.")
    return InvalidRequest("The request is not valid HTTP/1.1.", code="bad_http_request")


def answer_of(status: int, limits: ClientLimits, framing: RequestFraming) -> bytes:
    """The main loop's own answer, in the dialect of the request's path (OpenAI's until the head is in)."""
    return rejection(main_loop_error(status, limits, framing), dialect_of(target_path(framing.target)))


@dataclass
class PendingRequest:
    """A request being received by the main loop."""

    framing: RequestFraming
    deadline: float
    watched: bool = False  # registered with the selector
    continued: bool = False  # `100 Continue` sent
    spool: IO[bytes] | None = None  # where the body goes past the spool threshold


@dataclass
class Lingering:
    """A connection being closed: FIN sent, reading what the client still sends until EOF or the deadline."""

    deadline: float
    drained: int = 0


class GatewayWorker(ThreadWorker):
    """gthread whose main loop receives whole requests, with deadlines, before threads serve them."""

    busy_threads = 0  # requests handed to the thread pool and not finished (counted in the main loop only)
    _most_connections = 1000

    @property
    def worker_connections(self) -> int:
        """What gthread's run loop accepts connections below: none more while every thread is busy."""
        return self.nr_conns if self.busy_threads >= self.cfg.threads else self._most_connections

    @worker_connections.setter
    def worker_connections(self, most: int) -> None:
        self._most_connections = most

    def run(self) -> None:
        self.limits = ClientLimits.of(self.wsgi, self.cfg)
        self.frames_requests = reads_whole_requests(self.cfg)
        self.receiving: dict[TConn, PendingRequest] = {}  # by deadline: insertion order
        self.lingering: dict[socket.socket, Lingering] = {}  # likewise
        self.buffered = 0
        super().run()

    # -- receiving requests in the main loop ------------------------------------------------

    def enqueue_req(self, conn: TConn) -> None:
        """Receive the connection's next request in the main loop; submit it once it is whole."""
        if not self.frames_requests:
            self.to_thread(conn)
            return
        framing = RequestFraming(self.limits.max_head_bytes, self.limits.body_limit)
        pending = PendingRequest(framing, time.monotonic() + self.limits.client_timeout_s)
        self.receiving[conn] = pending
        conn.sock.setblocking(False)
        read_ahead = b""
        if conn.parser is not None:  # bytes the previous request's reads took from the socket
            read_ahead = conn.parser.unreader.take_buffered()
        if read_ahead and self.take(conn, read_ahead):
            return
        self.receive(conn)
        if conn in self.receiving:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_request_bytes, conn))
            pending.watched = True

    def to_thread(self, conn: TConn) -> None:
        """gthread's submission to the thread pool, counted busy until finish_request (the loop's next check
        of whether to accept sees it at once)."""
        self.busy_threads += 1
        ThreadWorker.enqueue_req(self, conn)

    def on_request_bytes(self, conn: TConn, _sock: socket.socket) -> None:
        self.receive(conn)

    def receive(self, conn: TConn) -> None:
        """Read what the socket holds, without blocking, and act on each verdict."""
        for _ in range(READS_PER_EVENT):
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.drop(conn, None)  # the client went away
                return
            if self.take(conn, data):
                return

    def take(self, conn: TConn, data: bytes) -> bool:
        """Add received bytes; True once the request left the main loop (submitted or rejected)."""
        pending = self.receiving[conn]
        if self.buffered + len(data) > self.limits.buffer_budget:
            self.drop(conn, HTTPStatus.SERVICE_UNAVAILABLE)
            return True
        self.buffered += len(data)
        verdict = pending.framing.feed(data)
        if verdict in (Verdict.INCOMPLETE, Verdict.COMPLETE) and not self.spool_body(pending):
            self.drop(conn, None)  # the spool file cannot be written: logged; nothing to tell the client
            return True
        if verdict is Verdict.COMPLETE:
            self.submit(conn)
            return True
        if verdict is not Verdict.INCOMPLETE:
            self.drop(conn, verdict.value)
            return True
        if pending.framing.expects_continue and not pending.continued:
            pending.continued = True
            send_quietly(conn.sock, CONTINUE)
        return False

    def spool_body(self, pending: PendingRequest) -> bool:
        """Move the body's checked bytes to the spool file once it holds more than the threshold; False on failure."""
        framing = pending.framing
        if pending.spool is None and framing.body_bytes_held() <= self.limits.spool_threshold:
            return True
        try:
            if pending.spool is None:
                pending.spool = open_spool(self.limits.spool_dir)
            released = framing.release_body()
            self.buffered -= len(released)
            pending.spool.write(released)
        except OSError as exc:
            self.log.error("cannot spool a request body in %r: %s", self.limits.spool_dir or "the temp folder", exc)
            return False
        return True

    def forget(self, conn: TConn) -> PendingRequest:
        pending = self.receiving.pop(conn)
        self.buffered -= len(pending.framing.data)
        if pending.watched:
            self.poller.unregister(conn.sock)
        return pending

    def submit(self, conn: TConn) -> None:
        """Hand a whole request to the thread pool; gunicorn's parser reads it from memory (and the spool file)."""
        pending = self.forget(conn)
        conn.sock.setblocking(True)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        if pending.spool is None:
            conn.parser.unreader.unread(pending.framing.request_bytes())
        else:
            try:
                pending.spool.write(pending.framing.body_bytes())
                pending.spool.flush()
                pending.spool.seek(0)
            except OSError as exc:
                self.log.error("cannot spool a request body: %s", exc)
                pending.spool.close()
                self.nr_conns -= 1
                conn.sock.close()
                return
            conn.parser.unreader = SpooledUnreader(conn.sock, pending.spool)
            conn.parser.unreader.unread(pending.framing.head_bytes())
        conn.data_ready = True  # so gunicorn's thread does not wait for bytes already here
        self.to_thread(conn)

    def drop(self, conn: TConn, status: int | None) -> None:
        """Give up on a request: answer `status` if any, then close the connection (and delete its spool file)."""
        pending = self.forget(conn)
        if pending.spool is not None:
            pending.spool.close()
        self.nr_conns -= 1
        if status is None:
            conn.sock.close()
            return
        send_quietly(conn.sock, answer_of(status, self.limits, pending.framing))
        self.linger(conn.sock)

    def murder_keepalived(self, *args: Any, **kwargs: Any) -> None:
        """gunicorn's sweep of idle kept-alive connections, then of late requests and lingering closes."""
        super().murder_keepalived(*args, **kwargs)
        now = time.monotonic()
        for conn in list(takewhile(lambda late: self.receiving[late].deadline <= now, self.receiving)):
            self.drop(conn, HTTPStatus.REQUEST_TIMEOUT if self.receiving[conn].framing.data else None)
        for sock in list(takewhile(lambda late: self.lingering[late].deadline <= now, self.lingering)):
            self.close_lingering(sock)

    # -- serving and closing ------------------------------------------------------------------

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """gunicorn's request handling, where a client that takes no response bytes for the send timeout is dropped."""
        client_socket = conn.sock
        client_socket.settimeout(self.limits.send_timeout_s)
        conn.sock = ProgressSocket(client_socket)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            self.log.info("dropped %s: it took no response bytes for %g s", conn.client, self.limits.send_timeout_s)
            reset(client_socket)
            return False
        finally:
            conn.sock = client_socket

    def finish_request(self, conn: TConn, fs: Future) -> None:
        """As gunicorn's, except that a closing connection lingers in the selector, not in a blocking read.

        A spooled request's file is deleted here, whatever the outcome; on a kept-alive connection
        what followed the request in it goes back to the socket's reader as read-ahead.
        """
        self.busy_threads -= 1
        keeps_alive = not fs.cancelled() and fs.exception() is None and bool(fs.result())
        if conn.parser is not None and isinstance(conn.parser.unreader, SpooledUnreader):
            read_ahead = conn.parser.unreader.close_spool(keep_rest=keeps_alive)
            conn.parser.unreader = SocketUnreader(conn.sock)
            conn.parser.unreader.unread(read_ahead)
        if self.frames_requests and not fs.cancelled() and fs.exception() is None and not fs.result():
            self.nr_conns -= 1
            self.linger(conn.sock)
            return
        super().finish_request(conn, fs)

    def linger(self, sock: socket.socket) -> None:
        """Send FIN now; close once the client has sent EOF, LINGER_BYTES or LINGER_S have passed."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self.on_linger_bytes)
        except (OSError, ValueError):
            sock.close()
            return
        self.lingering[sock] = Lingering(time.monotonic() + LINGER_S)

    def on_linger_bytes(self, sock: socket.socket) -> None:
        lingering = self.lingering[sock]
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        lingering.drained += len(data)
        if not data or lingering.drained >= LINGER_BYTES:
            self.close_lingering(sock)

    def close_lingering(self, sock: socket.socket) -> None:
        del self.lingering[sock]
        self.poller.unregister(sock)
        sock.close()


class ProgressSocket:
    """A client socket whose `sendall` times out only when a whole socket timeout passes with no byte taken.

    Python's own sendall applies the timeout to the whole call, which would cut a large answer to a
    slow client that does read; here each `send` waits at most the timeout (nginx's send_timeout).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def sendall(self, data: bytes) -> None:
        pending = memoryview(data).cast("B")
        while pending:
            pending = pending[self._sock.send(pending) :]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Best-effort send on a non-blocking socket (a short answer to a client that may be gone)."""
    try:
        sock.send(data)
    except OSError:
        pass


def reset(sock: socket.socket) -> None:
    """Make the coming close a reset: drop unsent bytes and end reads at once (a client that stopped reading)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
