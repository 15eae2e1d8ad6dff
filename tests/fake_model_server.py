"""A stand-in local model server for supervisor tests: answers GET /v1/models on loopback.

Run as ``python tests/fake_model_server.py --port N [options]``. It appends its pid to
``--starts-file`` as soon as it runs (so tests can count launches), sleeps
``--startup-delay`` seconds before listening (like a model loading), exits with
status 3 after ``--exit-after`` seconds, dies on SIGTERM unless ``--ignore-sigterm``,
and with ``--spawn-helper`` starts a sleeping helper process in its own process group.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--starts-file", default=None)
    parser.add_argument("--spawn-helper", action="store_true")
    return parser.parse_args(argv)


class ModelsHandler(BaseHTTPRequestHandler):
    """Serves the model list, plus this server's pid and its helper's pid."""

    def do_GET(self) -> None:
        """Answer /v1/models with 200 and anything else with 404."""
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps(
            {
                "object": "list",
                "data": [{"id": "fake", "object": "model", "owned_by": "tests"}],
                "pid": os.getpid(),
                "helper_pid": self.server.helper_pid,  # type: ignore[attr-defined]
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet."""


def record_start(path: str | None) -> None:
    """Append this process's pid to the starts file."""
    if path:
        with open(path, "a") as starts:
            starts.write(f"{os.getpid()}\n")


def spawn_helper() -> int:
    """Start a sleeping child in this process group; it lives at most two minutes."""
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    return helper.pid


def main(argv: list[str]) -> None:
    """Run the fake server until killed or --exit-after passes."""
    args = parse_args(argv)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record_start(args.starts_file)
    helper_pid = spawn_helper() if args.spawn_helper else None
    time.sleep(args.startup_delay)
    server = ThreadingHTTPServer((args.host, args.port), ModelsHandler)
    server.helper_pid = helper_pid  # type: ignore[attr-defined]
    if args.exit_after is not None:
        threading.Timer(args.exit_after, os._exit, (3,)).start()
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
