"""Large bodies under real gunicorn workers: per-route 413s, bodies spooled to disk, slow uploaders hold no thread.

The upload routes themselves need not exist: the worker decides a 413 from the request head or the
bytes received, before any route runs, and spools any body past `[uploads] spool_threshold_bytes`
(here checked end to end through /v1/chat/completions, whose body reaches the fake upstream).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.live_gateway import LiveGateway, rss_kib, start_gateway
from tests.polling import wait_until
from tests.slow_clients import request
from tests.upload_echo import ECHO_PATH, multipart

MIB = 2**20
UPLOAD_BYTES = 30_000_000  # over the default 26 MiB of the audio routes
AUDIO_HEAD = (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer none\r\n"
              b"Content-Type: multipart/form-data; boundary=b0undary\r\n")


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


@pytest.fixture
def serve(tmp_path: Path, database_url: str, fake_upstream: FakeUpstream, spool_dir: Path,
          app) -> Iterator[Callable[..., LiveGateway]]:
    """Starts `gateway serve` (one worker, so its memory is the one measured) spooling into `spool_dir`."""
    started: list[LiveGateway] = []

    def start(threads: int = 4, program: list[str] | None = None, **server: Any) -> LiveGateway:
        tables = {
            "server": {"workers": 1, "threads": threads, **server},
            "database": {"url": database_url},
            "uploads": {"spool_dir": str(spool_dir)},
            "providers": {"fake": {"base_url": fake_upstream.base_url, "timeout_s": 5, "connect_timeout_s": 2}},
            "models": {"test-model": {"provider": "fake", "upstream_model": "upstream-model"}},
        }
        started.append(start_gateway(tmp_path / f"gateway{len(started)}", tables, graceful=False, program=program))
        return started[-1]

    yield start
    for gateway in started:
        gateway.stop()


def read_answer(sock: socket.socket) -> bytes:
    """What the server sends until it closes (or resets) the connection."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return received
        if not chunk:
            return received
        received += chunk


def upload(port: int, head: bytes, body: Callable[[], Iterator[bytes]]) -> bytes:
    """Send the head, then the body's pieces from a thread (the server may stop reading), and return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        def send() -> None:
            try:
                sock.sendall(head)
                for piece in body():
                    sock.sendall(piece)
            except OSError:
                pass  # answered and closed before the whole body was sent

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = read_answer(sock)
        sender.join(60)
        return answer


def pieces(total: int, size: int = MIB) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"\x01" * min(size, total - start)


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    for piece in pieces(total, size):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def error_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def peak_kib(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize(("prefix", "code"), [(b"/v1", "request_too_large"), (b"/api/v1", 413)])
def test_an_oversized_upload_gets_413_from_its_head_in_each_dialect(serve, prefix: bytes, code: Any) -> None:
    server = serve()
    head = AUDIO_HEAD % (prefix + b"/audio/transcriptions") + b"Content-Length: %d\r\n\r\n" % UPLOAD_BYTES
    status, body = error_of(upload(server.port, head, lambda: iter(())))
    assert status == 413 and set(body) == {"error"}
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"
    assert str(26 * MIB) in body["error"]["message"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_30_mb_audio_upload_gets_413_without_growing_the_worker_by_30_mb(serve, spool_dir: Path,
                                                                          framing: str) -> None:
    server = serve()
    [worker] = server.workers()
    assert request(server.port, "GET", "/healthz") == 200
    before = rss_kib(worker)
    head = AUDIO_HEAD % b"/v1/audio/transcriptions"
    if framing == "chunked":
        answer = upload(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n", lambda: chunks(UPLOAD_BYTES))
    else:
        answer = upload(server.port, head + b"Content-Length: %d\r\n\r\n" % UPLOAD_BYTES,
                        lambda: pieces(UPLOAD_BYTES))
    status, body = error_of(answer)
    growth_mib = (peak_kib(worker) - before) / 1024
    print(f"\n{framing}: worker RSS {before} KiB before, peak {peak_kib(worker)} KiB after, "
          f"now {rss_kib(worker)} KiB (peak growth {growth_mib:.1f} MiB)")
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert growth_mib < 8, "the worker held the upload in memory"
    wait_until(lambda: not list(spool_dir.iterdir()), "the spool file deleted")
    assert request(server.port, "GET", "/healthz") == 200


def test_a_spooled_body_arrives_whole_and_its_file_is_deleted(serve, spool_dir: Path, fake_upstream: FakeUpstream,
                                                              auth_headers: dict[str, str]) -> None:
    server = serve()
    content = "".join(f"{index:08d} " for index in range(300_000))  # 2.7 MB of text
    body = json.dumps({"model": "test-model", "messages": [{"role": "user", "content": content}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (auth_headers["Authorization"].encode(), len(body)))
    behind = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"  # kept alive, pipelined
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[: 2 * MIB])
        wait_until(lambda: [path.name for path in spool_dir.iterdir()], "a spool file while the body arrives")
        [spooled] = list(spool_dir.iterdir())
        assert spooled.name.startswith("gateway-body-")
        sock.sendall(body[2 * MIB :] + behind)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]
    assert fake_upstream.bodies()[-1]["messages"][0]["content"] == content
    wait_until(lambda: not list(spool_dir.iterdir()), "the spool file deleted once the request ended")


def test_slow_uploaders_of_large_bodies_hold_no_thread(serve, spool_dir: Path, auth_headers: dict[str, str]) -> None:
    """Six uploads stall past the spool threshold; a worker of two threads still answers, then drops them (408)."""
    server = serve(threads=2, client_timeout_s=5.0)
    head = AUDIO_HEAD % b"/v1/audio/transcriptions" + b"Content-Length: %d\r\n\r\n" % (8 * MIB)
    uploaders = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(6)]
    try:
        for sock in uploaders:
            sock.sendall(head + b"\x01" * (2 * MIB))
        wait_until(lambda: len(list(spool_dir.iterdir())) == 6, "six bodies spooled, none complete")
        chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            assert request(server.port, "GET", "/healthz") == 200
            assert request(server.port, "POST", "/v1/chat/completions", chat, auth_headers) == 200
        assert len(list(spool_dir.iterdir())) == 6, "the uploads were still arriving while the probes were answered"
        answers = [read_answer(sock) for sock in uploaders]
    finally:
        for sock in uploaders:
            sock.close()
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), [answer[:60] for answer in answers]
    wait_until(lambda: not list(spool_dir.iterdir()), "the dropped uploads' spool files deleted")


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_large_multipart_upload_reaches_the_app_on_disk(serve, spool_dir: Path, framing: str) -> None:
    """20 MiB through the spool, gunicorn's reader and werkzeug's form parser: never whole in the worker's memory."""
    server = serve(threads=8, program=[sys.executable, "-m", "tests.upload_echo"])  # a test-only upload route
    [worker] = server.workers()
    assert request(server.port, "GET", "/healthz") == 200
    before = rss_kib(worker)
    size = 20 * MIB
    body = multipart(size)
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=b0undary\r\n" % ECHO_PATH.encode())
    if framing == "chunked":
        answer = upload(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n",
                        lambda: iter([b"%x\r\n%s\r\n" % (len(body), body), b"0\r\n\r\n"]))
    else:
        answer = upload(server.port, head + b"Content-Length: %d\r\n\r\n" % len(body), lambda: iter([body]))
    growth_mib = (peak_kib(worker) - before) / 1024
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    parsed = json.loads(answer.partition(b"\r\n\r\n")[2])
    print(f"\n{framing}: {size} byte file part; worker peak RSS growth {growth_mib:.1f} MiB, form parser's traced "
          f"peak {parsed['parse_peak']} bytes")
    assert parsed["size"] == size and parsed["on_disk"] and parsed["model"] == "whisper-1"
    assert growth_mib < size / MIB / 2, "the worker held the upload in memory"
    wait_until(lambda: not list(spool_dir.iterdir()), "the spool file deleted")
