"""Start fixture MCP servers for tests: free loopback ports, HTTP server subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_port

FIXTURES = Path(__file__).resolve().parent
TOOL_SERVER = str(FIXTURES / "tool_server.py")
HANG_SERVER = str(FIXTURES / "hang_server.py")


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until 127.0.0.1:port accepts connections; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fixture server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"fixture server did not listen on {port} within {timeout}s")


@contextmanager
def http_tool_server(mode: str = "http") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run tool_server.py over `http` (streamable, /mcp) or `sse` (/sse); yield its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, TOOL_SERVER, mode, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        path = "/mcp" if mode == "http" else "/sse"
        yield f"http://127.0.0.1:{port}{path}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
