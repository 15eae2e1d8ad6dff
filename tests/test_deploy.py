"""deploy/nginx.conf under a real nginx: valid, streams unbuffered, forwards ids, caps bodies."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fake_upstream import chat_chunk
from tests.ports import free_port

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).is_file()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")

NGINX_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
BOUND_S = 15.0  # upper bound for anything to happen; never a timing assertion



def local_copy(folder: Path, listen_port: int, upstream_port: int) -> Path:
    """deploy/nginx.conf with ports, user and file paths moved into `folder`."""
    text = NGINX_CONF.read_text()
    temp_paths = "".join(
        f"    {kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    for old, new in (
        ("user www-data;", f"user {getpass.getuser()};"),
        ("pid /run/nginx.pid;", f"pid {folder / 'nginx.pid'};"),
        ("/var/log/nginx/error.log", str(folder / "error.log")),
        ("/var/log/nginx/gateway.access.log", str(folder / "access.log")),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
        ("http {\n", "http {\n" + temp_paths),
    ):
        assert text.count(old) == 1, f"deploy/nginx.conf no longer contains {old!r} once"
        text = text.replace(old, new)
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def nginx_command(conf: Path, *extra: str) -> list[str]:
    """nginx run on `conf` with every file under its folder."""
    folder = str(conf.parent)
    return [NGINX, "-p", folder, "-e", f"{folder}/error.log", "-c", str(conf), *extra]  # type: ignore[list-item]


def accepts(port: int) -> bool:
    """Whether something listens on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Starts nginx on deploy/nginx.conf in front of a port; stops it afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream_port: int) -> str:
        port = free_port()
        conf = local_copy(tmp_path, port, upstream_port)
        started.append(subprocess.Popen(nginx_command(conf, "-g", "daemon off;"), stderr=subprocess.PIPE))
        deadline = time.monotonic() + BOUND_S
        while not accepts(port):
            assert started[-1].poll() is None, started[-1].stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
        proc.wait(BOUND_S)
        proc.stderr.close()  # type: ignore[union-attr]


class GatedOrigin:
    """An upstream that streams one chat chunk, then holds the rest until `release` is set.

    It sends no X-Accel-Buffering header, so only nginx's own configuration decides
    whether the first chunk reaches the client while the origin is still waiting.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.released_while_streaming = threading.Event()
        self.request_ids: list[str | None] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        """Stop serving."""
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                origin.request_ids.append(self.headers.get("X-Request-ID"))
                # Like gunicorn: chunked for HTTP/1.1, delimited by closing for HTTP/1.0.
                self.chunked = self.request_version == "HTTP/1.1"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if self.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._send(chat_chunk("first", role="assistant"))
                if origin.release.wait(BOUND_S):
                    origin.released_while_streaming.set()
                self._send(chat_chunk(" second"))
                self._send(chat_chunk(finish="stop"))
                self._send("[DONE]")
                if self.chunked:
                    self.wfile.write(b"0\r\n\r\n")
                self.close_connection = True

            def _send(self, data: dict[str, Any] | str) -> None:
                event = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
                framed = f"{len(event):x}\r\n".encode() + event + b"\r\n" if self.chunked else event
                self.wfile.write(framed)
                self.wfile.flush()

        return Handler


@pytest.fixture
def origin() -> Iterator[GatedOrigin]:
    server = GatedOrigin()
    yield server
    server.close()


@pytest.fixture
def settings(make_settings: Callable[..., Any], origin: GatedOrigin) -> Any:
    """The gateway's test settings, with its upstream replaced by the gated origin."""
    return make_settings(providers={"fake": {"base_url": origin.base_url}})


def read_stream(response: requests.Response, origin: GatedOrigin) -> list[str]:
    """The data lines of an SSE response; releases the origin once the first one arrives."""
    lines = []
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if line.startswith("data: "):
            lines.append(line[len("data: "):])
            origin.release.set()
    return lines


def test_config_is_valid(tmp_path: Path) -> None:
    conf = local_copy(tmp_path, free_port(), 8080)
    result = subprocess.run(nginx_command(conf, "-t"), capture_output=True, text=True, timeout=BOUND_S,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_stream_passes_through_unbuffered(start_nginx: Callable[[int], str], origin: GatedOrigin) -> None:
    base = start_nginx(origin.port)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with requests.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=(2, 30)) as response:
        assert response.status_code == 200
        lines = read_stream(response, origin)
    assert origin.released_while_streaming.is_set(), "nginx held the first event back"
    assert lines[-1] == "[DONE]" and len(lines) == 4


def test_gateway_stream_and_request_id_through_nginx(
    start_nginx: Callable[[int], str], live_server: str, origin: GatedOrigin, auth_headers: dict[str, str]
) -> None:
    base = start_nginx(int(live_server.rsplit(":", 1)[1]))
    body = {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {**auth_headers, "X-Request-ID": "nginx-e2e-1"}
    with requests.post(f"{base}/v1/chat/completions", json=body, headers=headers, stream=True,
                       timeout=(2, 30)) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "nginx-e2e-1"
        lines = read_stream(response, origin)
    assert origin.released_while_streaming.is_set(), "the first event was held back"
    texts = [json.loads(line)["choices"][0]["delta"].get("content") for line in lines[:-1]]
    assert "".join(text for text in texts if text) == "first second"


def test_oversized_body_gets_an_openai_shaped_413(start_nginx: Callable[[int], str], origin: GatedOrigin) -> None:
    base = start_nginx(origin.port)
    headers = {"Content-Type": "application/json"}
    response = requests.post(f"{base}/v1/chat/completions", data=b" " * 10_000_001, headers=headers,
                             timeout=(2, 30))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert origin.request_ids == []
