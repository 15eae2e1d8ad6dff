"""Wait until the README's first command serves, then check one real completion; exit 1 if it never does.

Usage: first_command_answers.py LOG PID. The command installs, then runs `gateway serve` on the
embedded defaults (port 8080), which prints its first API key once; the check uses that key.
Standard library only: it runs while the command is still installing into a fresh venv.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_URL = "http://127.0.0.1:8080"
DEADLINE_S = 1800  # a cold pip cache compiles llama-cpp-python: ~10 CPU-minutes
KEY_LINE = re.compile(r"created your first API key \(shown once\): (sk-gw-\S+)")


def alive(pid: int) -> bool:
    """Whether the command's process still runs."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def get(path: str, key: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    """One request to the gateway: its status and JSON body (0 when nothing answers)."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE_URL + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (urllib.error.URLError, OSError):
        return 0, {}


def main(log: Path, pid: int) -> int:
    """Poll until ready with a key, then ask for a completion."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if not alive(pid):
            print("the first command ended before it answered", file=sys.stderr)
            return 1
        found = KEY_LINE.search(log.read_text(errors="replace"))
        if found and get("/readyz")[0] == 200:
            status, answer = get("/v1/chat/completions", found.group(1), {
                "model": "smollm2", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]})
            text = answer.get("choices", [{}])[0].get("message", {}).get("content") if status == 200 else None
            print(f"first command: /v1/chat/completions answered {status}: {text!r}")
            return 0 if text else 1
        time.sleep(2)
    print(f"the first command did not answer within {DEADLINE_S} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
