"""Claude Code (`@anthropic-ai/claude-code`, print mode) with `ANTHROPIC_BASE_URL` set to the gateway.

It runs against the fake upstream: a plain answer, and a turn that calls Claude Code's own `Read` tool
on a file in a temp folder, then answers from the tool's result. Every request it makes is recorded
(method, path, headers) and must have been answered with a 2xx: a `HEAD /` probe, then
`POST /v1/messages?beta=true` with `x-api-key` (or `Authorization: Bearer`), `anthropic-version`,
`anthropic-beta` (claude-code, context-management, mid-conversation-system, ...), `x-app: cli`,
`x-claude-code-session-id` and the SDK's `x-stainless-*`. Runs when CLAUDE_CODE_NODE_MODULES names a
node_modules folder that holds it (else skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway import db
from gateway.tables import UsageEntry
from tests.claude_code import AVAILABLE, CLAUDE, MISSING, claude_environment
from tests.fake_upstream import JsonReply, StreamReply, chat_completion, usage_chunk
from tests.scripted_model import answer_chunks, tool_call_chunks

SECRET = "The password is swordfish."
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=MISSING)


class Recorder:
    """WSGI middleware: (method, path, lower-cased headers, status) of every request the gateway answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls: list[tuple[str, str, dict[str, str], str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}

        def record(status: str, response_headers: Any, *args: Any) -> Any:
            self.calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], headers, status))
            return start_response(status, response_headers, *args)

        return self.app(environ, record)


def tool_results(body: dict[str, Any]) -> list[str]:
    """The contents of the tool messages in a chat body."""
    found = []
    for message in body.get("messages") or []:
        if message.get("role") == "tool":
            content = message["content"]
            found.append(content if isinstance(content, str) else json.dumps(content))
    return found


class ClaudeModel:
    """Calls `Read` on `path` when offered it and no result is in; then "Read: <result>"; else "Hello from the gateway."."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, path: str, body: dict[str, Any]) -> StreamReply | JsonReply:
        self.bodies.append(body)
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        results = tool_results(body)
        if self.path and "Read" in offered and not results:
            events = tool_call_chunks([("Read", {"file_path": str(self.path)})])
        else:
            events = answer_chunks("Read: " + results[-1] if results else "Hello from the gateway.")
        if not body.get("stream"):
            return JsonReply(chat_completion("Hello from the gateway."))
        return StreamReply([*events, (0, usage_chunk(30, 6))])


@pytest.fixture
def recorder(app) -> Recorder:
    app.wsgi_app = Recorder(app.wsgi_app)
    return app.wsgi_app


def claude(live_server: str, key: str, prompt: str, folder: Path, auth: str = "ANTHROPIC_API_KEY",
           *options: str) -> dict[str, Any]:
    """`claude -p PROMPT --output-format json` in `folder` with a temp HOME, the key in `auth`; its JSON result."""
    env = claude_environment(dict(os.environ), folder / "home")
    env.update(ANTHROPIC_BASE_URL=live_server, ANTHROPIC_MODEL="test-model", ANTHROPIC_SMALL_FAST_MODEL="test-model",
               ANTHROPIC_DEFAULT_HAIKU_MODEL="test-model")
    env[auth] = key
    done = subprocess.run([CLAUDE, "-p", prompt, "--output-format", "json", *options], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, f"claude exited {done.returncode}: {done.stdout[:800]} {done.stderr[-800:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def usage_rows() -> list[tuple[str, int, int, int]]:
    """(endpoint, status, prompt tokens, completion tokens) of each usage row."""
    with db.database.connection_context():
        return [(row.endpoint, row.status, row.prompt_tokens, row.completion_tokens)
                for row in UsageEntry.select().order_by(UsageEntry.id)]


def assert_every_call_answered(recorder: Recorder, auth_header: str, key: str) -> int:
    """Each call was the root probe or a Messages call with the key and Anthropic's headers, answered 2xx.

    Returns the number of Messages calls.
    """
    assert {(method, path) for method, path, _, _ in recorder.calls} <= {
        ("HEAD", "/"), ("POST", "/v1/messages"), ("HEAD", "/api"), ("POST", "/api/v1/messages")}
    assert all(status.startswith("2") for _, _, _, status in recorder.calls), recorder.calls
    posts = [headers for method, _, headers, _ in recorder.calls if method == "POST"]
    for headers in posts:
        assert headers[auth_header] in (key, f"Bearer {key}")
        assert headers["anthropic-version"] == "2023-06-01" and "claude-code" in headers["anthropic-beta"]
    return len(posts)


@pytest.mark.parametrize(("auth", "header", "prefix"), [("ANTHROPIC_API_KEY", "x-api-key", ""),
                                                        ("ANTHROPIC_AUTH_TOKEN", "authorization", "/api")])
def test_claude_code_gets_its_answer(live_server, api_key, fake_upstream, recorder, tmp_path, auth, header, prefix):
    """On `/` or, as OpenRouter documents it, on `/api`, with the key as either variable."""
    fake_upstream.responder = ClaudeModel(None)
    result = claude(live_server + prefix, api_key, "Say hello.", tmp_path, auth)
    assert (result["is_error"], result["result"]) == (False, "Hello from the gateway."), result
    calls = assert_every_call_answered(recorder, header, api_key)
    assert {(method, path) for method, path, _, _ in recorder.calls} == {
        ("HEAD", prefix or "/"), ("POST", prefix + "/v1/messages")}
    assert usage_rows() == [("messages", 200, 30, 6)] * calls


def test_claude_code_reads_a_file_with_its_own_tool(live_server, api_key, fake_upstream, recorder, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    model = ClaudeModel(secret)
    fake_upstream.responder = model
    result = claude(live_server, api_key, "What does secret.txt say?", tmp_path, "ANTHROPIC_API_KEY",
                    "--allowedTools", "Read")
    assert result["is_error"] is False and result["result"].startswith("Read: ") and SECRET in result["result"]
    assert result["num_turns"] == 2, result
    calls = assert_every_call_answered(recorder, "x-api-key", api_key)
    [first, second] = [body for body in model.bodies if body.get("stream")]
    assert "Read" in {tool["function"]["name"] for tool in first["tools"]}
    assert SECRET in tool_results(second)[-1]
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "Read"
    assert usage_rows() == [("messages", 200, 30, 6)] * calls == [("messages", 200, 30, 6)] * 2
