"""The README and docs/, run: every shell and Python example, in order, against a live `gateway serve`.

The pages are README.md, then every docs/*.md in file-name order (a new page is picked up as it
is), each page's examples in order, all in one session. Each fenced example follows a marker
comment, and example names are unique across the pages:

    <!-- example: NAME -->               run it (bash, python) or load it (toml), then CHECKS[NAME]
    <!-- example: NAME needs="WHAT" -->  needs what the embedded defaults lack (the internet, an
                                         embedding model): run against a loopback stand-in (REWRITES),
                                         or a program the suite finds when installed (PROGRAMS; else skipped)
    <!-- example: NAME skip="WHY" -->    not run, for the reason given

The gateway is the real `gateway serve` (gunicorn, two workers) started in an empty folder on the
embedded defaults, with a `config.toml` layered over them that points the `local` provider at a
scripted loopback model (deterministic answers and tool calls) and starts no llama.cpp: the time
MCP server, the `default/default` profile, the first key it prints and the state folder are the
embedded ones. Shell examples run in bash with that key in `$KEY`; Python examples share one
namespace, as in a reader's session, so a docs page may use what the README's tour set (`KEY`,
`client`). Only the address changes (8080 -> the test's port). Relative links must point at a
file that exists and, for a page, at one of its headings; every docs page is linked from the README.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.cli import build_parser
from gateway.config import Settings, load_settings
from tests import claude_code
from tests.doc_pages import (
    README,
    REPO,
    Example,
    broken_links,
    documented_examples,
    documented_pages,
    page_name,
    relative_links,
    unmarked_examples,
)
from tests.fake_upstream import FakeUpstream, JsonReply, StreamReply, default_responder
from tests.live_gateway import LiveGateway, live_gateway
from tests.mcp_fixtures.launch import FIXTURES, wait_listening
from tests.ports import free_port
from tests.scripted_model import answer_chunks, tool_call_chunks, usage

KEY_LINE = re.compile(r"gateway: created your first API key \(shown once\): (sk-gw-[A-Za-z0-9_-]{43})$")
CURL_STATUS = 'curl() { command curl -sS -w "%{stderr}@@status %{http_code}\\n" "$@"; }\n'
ADMIN_TOKEN = "readme-admin-token"
DOCS_TOKEN = "readme-docs-token"
START_BOUND_S = 60.0
RUN_BOUND_S = 120.0
# What a `needs` example gets instead of what it needs.
REWRITES = {
    "embeddings-curl": [("my-embedding-model", "smollm2")],  # the scripted upstream embeds
    "embeddings-python": [("my-embedding-model", "smollm2")],
    "mcp-remote-curl": [("https://mcp.example.com/mcp", "{docs_url}")],  # URL checks are off for loopback
    # the scripted upstream serves the media routes too (tests.fake_media.MediaRoutes)
    "images-curl": [("dall-e-3", "smollm2")],
    "audio-curl": [("whisper-1", "smollm2"), ("tts-1", "smollm2")],
    "rerank-curl": [("rerank-v3.5", "smollm2"), ("omni-moderation-latest", "smollm2")],
    "media-python": [(model, "smollm2") for model in ("dall-e-3", "whisper-1", "tts-1", "omni-moderation-latest")],
}
# A `needs` example that runs a program: whether it is installed, why not, and its environment from the session's.
PROGRAMS: dict[str, tuple[bool, str, Callable[[dict[str, str], Path], dict[str, str]]]] = {
    "claude-code-bash": (claude_code.AVAILABLE, claude_code.MISSING, claude_code.claude_environment),
}


# --- the scripted model --------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """A chat message's text, whether a string or a list of parts."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


class ReadmeModel:
    """A deterministic SmolLM2 stand-in: calls the time (and docs) tools when offered, then reports them."""

    def __call__(self, path: str, body: dict[str, Any]) -> JsonReply | StreamReply:
        if "messages" not in body:
            return default_responder(path, body)
        content, calls = self.reply(body)
        if body.get("stream"):
            events = tool_call_chunks(calls) if calls else answer_chunks(content or "")
            return StreamReply([*events, (0, usage(20, 5))])
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = [{"id": f"call_{index}", "type": "function",
                                      "function": {"name": name, "arguments": json.dumps(arguments)}}
                                     for index, (name, arguments) in enumerate(calls)]
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        return JsonReply({"id": "chatcmpl-readme", "object": "chat.completion", "created": 1700000000,
                          "model": body.get("model"), "choices": [choice],
                          "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})

    def reply(self, body: dict[str, Any]) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        """The answer text, or the tool calls, for this turn."""
        messages = body["messages"]
        results = [text_of(message.get("content")) for message in messages if message.get("role") == "tool"]
        if results:
            return "The tools said: " + " | ".join(results), []
        said = [text_of(message.get("content")) for message in messages if message.get("role") == "user"]
        asked = said[-1] if said else ""
        offered = {tool["function"]["name"] for tool in body.get("tools") or []}
        calls = []
        if "mcp__time__get_current_time" in offered:
            calls.append(("mcp__time__get_current_time", {"timezone": "Asia/Tokyo" if "Tokyo" in asked else "UTC"}))
        if "mcp__docs__search_docs" in offered:
            calls.append(("mcp__docs__search_docs", {"query": asked}))
        if calls and body.get("tool_choice") != "none":
            return None, calls
        name = re.search(r"My name is (\w+)", " ".join(said))
        if name and "my name" in asked.lower():
            return f"Your name is {name.group(1)}.", []
        return "Hello! I am a scripted stand-in for SmolLM2.", []


# --- the live gateway ----------------------------------------------------------------------------


@dataclass
class Session:
    """The running gateway and what the examples share."""

    folder: Path
    port: int
    key: str
    env: dict[str, str]
    upstream: FakeUpstream
    docs_url: str
    namespace: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rewritten(self, example: Example) -> str:
        """The example's code with the test's address (and, for `needs` examples, the stand-in)."""
        code = example.code.replace("127.0.0.1:8080", f"127.0.0.1:{self.port}")
        code = code.replace("localhost:8080", f"localhost:{self.port}").replace("sk-gw-...", self.key)
        for old, new in REWRITES.get(example.name, []):
            code = code.replace(old, new.format(docs_url=self.docs_url))
        return code


@contextlib.contextmanager
def docs_server(env: dict[str, str]) -> Iterator[str]:
    """The loopback stand-in for the README's remote docs server; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FIXTURES / "docs_server.py"), str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def gateway_command() -> list[str]:
    """`gateway` as installed, or the same module when the console script is not on PATH."""
    script = shutil.which("gateway")
    return [script] if script else [sys.executable, "-m", "gateway.cli"]


def wait_until(probe: Callable[[], bool], bound_s: float, what: str) -> None:
    """Poll until probe() holds, else fail naming what was awaited."""
    deadline = time.monotonic() + bound_s
    while not probe():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def time_server_available(base_url: str, key: str) -> bool:
    """Whether discovery says the time server is available (asked on a fresh connection each time)."""
    try:
        listed = requests.get(f"{base_url}/v1/mcp/servers", headers={"X-API-Key": key}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return [server["status"] for server in listed.get("data", []) if server["label"] == "time"] == ["available"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    missing = [tool for tool in ("bash", "curl", "python3") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the README's examples need {', '.join(missing)} on the PATH")
    folder = tmp_path_factory.mktemp("readme")
    upstream = FakeUpstream().start()
    upstream.responder = ReadmeModel()
    (folder / "config.toml").write_text(f'[providers.local]\nbase_url = "{upstream.base_url}"\ncommand = []\n')
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "VR_MCP_"))}
    env.update(GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN, DOCS_TOKEN=DOCS_TOKEN, VR_MCP_REQUEST_REMOTE_URL_CHECKS="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    previous_key = os.environ.get("KEY")
    try:
        with docs_server(env) as docs_url, live_gateway(folder, None, env=env, program=gateway_command()) as gateway:
            wait_until(lambda: first_key(gateway) is not None, START_BOUND_S, "the first key")
            key = first_key(gateway)
            # every worker has connected its own time server once several fresh connections agree
            wait_until(lambda: all(time_server_available(gateway.base_url, key) for _ in range(10)), START_BOUND_S,
                       "the time MCP server")
            os.environ["KEY"] = env["KEY"] = key
            yield Session(folder, gateway.port, key, env, upstream, docs_url)
    finally:
        os.environ.pop("KEY", None)
        if previous_key is not None:
            os.environ["KEY"] = previous_key
        upstream.stop()


def first_key(gateway: LiveGateway) -> str | None:
    """The first key `gateway serve` printed on its first start, once it has."""
    return next((match.group(1) for match in map(KEY_LINE.search, gateway.log_text().splitlines()) if match), None)


# --- running one example -------------------------------------------------------------------------


@dataclass
class ShellRun:
    """What a shell example printed, and the HTTP status of each curl call in order."""

    returncode: int
    output: str
    statuses: list[int]

    def documents(self) -> list[Any]:
        """Every JSON document in the output (whole bodies and SSE `data:` payloads alike)."""
        decoder, found, position = json.JSONDecoder(), [], 0
        while position < len(self.output):
            if self.output[position] in "{[":
                try:
                    document, position = decoder.raw_decode(self.output, position)
                except ValueError:
                    position += 1
                else:
                    found.append(document)
                    continue
            position += 1
        return found

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """The documents whose `object` is `kind`."""
        return [doc for doc in self.documents() if isinstance(doc, dict) and doc.get("object") == kind]


@dataclass
class PythonRun:
    """A Python example's shared namespace and what it printed."""

    namespace: dict[str, Any]
    output: str


def run_shell(session: Session, code: str, env: dict[str, str] | None = None) -> ShellRun:
    """Run a shell example in bash, in the gateway's folder, with $KEY set (in `env`, else the session's)."""
    done = subprocess.run(["bash", "-c", CURL_STATUS + code], cwd=session.folder, env=env or session.env,
                          capture_output=True, text=True, timeout=RUN_BOUND_S, check=False)
    statuses = [int(status) for status in re.findall(r"@@status (\d+)", done.stderr)]
    assert done.returncode == 0, done.stderr
    return ShellRun(done.returncode, done.stdout, statuses)


def run_python(session: Session, code: str, example: Example) -> PythonRun:
    """Run a Python example in the session's namespace, capturing what it prints."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{example.page}:{example.line}", "exec"), session.namespace)
    return PythonRun(session.namespace, printed.getvalue())


def load_snippet(session: Session, example: Example) -> Settings:
    """A TOML example as a config file of its own (layered over the defaults unless it declares [models])."""
    path = session.folder / f"{example.name}.toml"
    path.write_text(example.code)
    return load_settings(str(path), environ={})


def run_synopsis(code: str) -> list[tuple[list[str], list[str], str]]:
    """Each `gateway ...` command of a synopsis with its options, and the `--help` the CLI prints for it."""
    commands: list[tuple[list[str], list[str]]] = []
    for line in code.splitlines():
        words = line.split()
        if words and words[0] == "gateway":
            commands.append(([word for word in words[1:] if re.fullmatch(r"[a-z]+", word)][:2], []))
        commands[-1][1].extend(re.findall(r"--[a-z-]+", line))
    helped = []
    for path, options in commands:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*path, "--help"])
        assert exited.value.code == 0, path
        helped.append((path, options, printed.getvalue()))
    return helped


# --- what each example promises ------------------------------------------------------------------


def completion_text(run: ShellRun) -> str:
    [completion] = run.objects("chat.completion")
    return completion["choices"][0]["message"]["content"]


def streamed_text(run: ShellRun) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or ""
                   for chunk in run.objects("chat.completion.chunk") if chunk["choices"])


def check_first_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] and completion_text(run).startswith("Hello!")


def check_chat_stream_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] and run.output.rstrip().endswith("data: [DONE]")
    assert streamed_text(run).startswith("Hello!")


def check_chat_python(session: Session, run: PythonRun) -> None:
    assert run.namespace["reply"].choices[0].message.content.startswith("Hello!")
    assert run.output.count("Hello!") == 2  # the reply, then the story streamed


def check_legacy_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200, 200]
    assert run.objects("text_completion")[0]["choices"][0]["text"]
    assert "smollm2" in [model["id"] for model in run.objects("list")[0]["data"]]


def check_embeddings_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] and run.objects("list")[0]["data"][0]["object"] == "embedding"


def check_batches_python(session: Session, run: PythonRun) -> None:
    batch = run.namespace["batch"]
    assert batch.status == "completed" and batch.request_counts.completed == 3
    assert [line.split()[0] for line in run.output.splitlines()[1:]] == ["question-0", "question-1", "question-2"]


def check_batches_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200, 200, 200]
    assert run.objects("batch")[0]["endpoint"] == "/v1/chat/completions"
    assert run.objects("list")[0]["data"][0]["object"] == "batch"


def check_openapi_curl(session: Session, run: ShellRun) -> None:
    version, paths, _ = run.output.split()
    assert run.statuses == [200] and version.startswith("3.1") and int(paths) > 40


def check_fallback_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200]
    assert run.objects("chat.completion")[0]["model"] == "smollm2"  # gpt-4o-mini is not served: skipped


def check_openrouter_python(session: Session, run: PythonRun) -> None:
    assert run.namespace["reply"].choices[0].message.content.startswith("Hello!")
    assert isinstance(run.namespace["reply"].usage.cost, float | int)
    assert run.namespace["stats"].id == run.namespace["reply"].id and run.namespace["stats"].model == "smollm2"


def check_responses_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] * 6
    created, *_ = run.objects("response")
    assert created["status"] == "completed" and created["output"][-1]["type"] == "message"
    assert "event: response.completed" in run.output and "data: [DONE]" in run.output
    assert any(isinstance(doc, dict) and doc.get("deleted") is True for doc in run.documents())


def check_responses_python(session: Session, run: PythonRun) -> None:
    assert run.namespace["second"].output_text == "Your name is Ada."
    assert run.output.startswith("Your name is Ada.")


def check_websocket_python(session: Session, run: PythonRun) -> None:
    assert "Your name is Ada." in run.output


def check_conversations_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] * 4
    [answer] = [doc for doc in run.objects("response")]
    assert answer["output"][-1]["content"][0]["text"] == "Your name is Ada."


def check_conversations_python(session: Session, run: PythonRun) -> None:
    assert run.output.strip()


def mcp_calls(run: ShellRun) -> list[dict[str, Any]]:
    [response] = run.objects("response")
    assert response["status"] == "completed", response
    return [item for item in response["output"] if item["type"] == "mcp_call"]


def check_mcp_time_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200]
    [call] = mcp_calls(run)
    assert (call["server_label"], call["name"], call["error"]) == ("time", "get_current_time", None)
    assert json.loads(call["output"])["timezone"] == "Asia/Tokyo"


def check_mcp_remote_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200]
    docs = [call for call in mcp_calls(run) if call["server_label"] == "docs"]
    assert docs and "for tenant acme (authorized: True)" in docs[0]["output"]
    assert DOCS_TOKEN not in run.output  # the token is never echoed


def check_agents_python(session: Session, run: PythonRun) -> None:
    assert run.output.startswith("The tools said:") and '"timezone": "UTC"' in run.output


def check_mcp_config(session: Session, settings: Settings) -> None:
    assert settings.embedded and "smollm2" in settings.models
    assert {"time", "docs"} <= set(settings.mcpServers) and {"acme/default", "default/default"} <= set(settings.profiles)


def check_tools_auto_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200, 200, 200]
    profile_answer, required_answer = run.objects("chat.completion")
    for answer in (profile_answer, required_answer):
        message = answer["choices"][0]["message"]
        assert message["tool_calls"][0]["function"]["name"] == "mcp__time__get_current_time"
        assert message["content"].startswith("The tools said:") and answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] <= 100
    [first_turn] = [body for body in session.upstream.bodies() if "Tokyo" in json.dumps(body.get("messages"))
                    and body.get("tools") and not any(m["role"] == "tool" for m in body["messages"])
                    and "max_tokens" in body and body["max_tokens"] == 100]
    assert first_turn["tool_choice"] == "auto"  # "required" with two tools, as llama-cpp-python accepts


def check_tools_auto_python(session: Session, run: PythonRun) -> None:
    assert run.output.startswith("Tools were used\nThe tools said:")


def check_discovery_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200, 200]
    servers, tools = run.objects("list")
    assert [(s["label"], s["status"], s["tool_count"]) for s in servers["data"]] == [("time", "available", 2)]
    assert {tool["name"] for tool in tools["data"]} == {"get_current_time", "convert_time"}


def check_mcp_hub_python(session: Session, run: PythonRun) -> None:
    listed, called = run.output.split("\n", 1)
    assert listed == "['time__get_current_time', 'time__convert_time']"
    assert json.loads(called)["timezone"] == "UTC"


def check_mcp_hub_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200]
    (listed,) = run.documents()
    assert {tool["name"] for tool in listed["result"]["tools"]} == {"time__get_current_time", "time__convert_time"}


def check_balance_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200] * 4
    quota, balance, key, credits = run.documents()
    assert {"username", "balance", "remaining_quota", "used_quota", "thinking"} <= set(quota)
    assert {"user_id", "current_balance", "total_earned", "total_spent", "tier", "expiring_credits",
            "next_expiration"} <= set(balance)
    assert "data" in key and "total_credits" in credits["data"]


def check_balance_python(session: Session, run: PythonRun) -> None:
    assert run.output.split() == [str(run.namespace["balance"]["current_balance"]), "free"]


def check_config_show(session: Session, run: ShellRun) -> None:
    shown = tomllib.loads((session.folder / "my-gateway.toml").read_text())
    assert shown["providers"]["local"]["base_url"] == session.upstream.base_url
    assert "smollm2" in shown["models"] and shown["profiles"]["default/default"]["mcp_servers"] == ["time"]
    assert run.output.startswith("# Effective configuration: ") and len(run.output.splitlines()) == 3


def check_upstreams_config(session: Session, settings: Settings) -> None:
    assert not settings.embedded and set(settings.models) == {"llama-3.1-8b", "gpt-4o-mini", "claude-sonnet"}


def check_llama_cpp_config(session: Session, settings: Settings) -> None:
    provider = settings.providers["my-llama"]
    assert provider.empty_tool_call_content and not provider.streams_tool_calls and not provider.tool_choice_required


def check_cli_synopsis(session: Session, helped: list[tuple[list[str], list[str], str]]) -> None:
    assert [" ".join(path) for path, _, _ in helped] == ["serve", "keys create", "keys update", "keys list", "keys revoke",
                                                         "credits grant", "users create", "users list",
                                                         "users delete", "users password", "db upgrade", "config show"]
    for path, options, text in helped:
        assert all(option in text for option in options), (path, options)


def check_messages_python(session: Session, run: PythonRun) -> None:
    assert run.namespace["message"].content[0].text.startswith("Hello!")


def check_claude_code_bash(session: Session, run: ShellRun) -> None:
    assert run.output.strip() == "Hello! I am a scripted stand-in for SmolLM2."


def check_admin_curl(session: Session, run: ShellRun) -> None:
    assert all(200 <= status < 300 for status in run.statuses) and len(run.statuses) == 9
    created = run.documents()[0]
    assert created["key"].startswith("sk-gw-")


def check_routing_deployments_curl(session: Session, run: ShellRun) -> None:
    assert run.statuses == [200]
    [listed] = run.objects("list")
    assert [(row["model_id"], row["deployment"], row["status"]) for row in listed["data"]] == [
        ("smollm2", "local/smollm2", "healthy")]


CHECKS: dict[str, Callable[..., None]] = {
    name.removeprefix("check_").replace("_", "-"): check
    for name, check in dict(globals()).items() if name.startswith("check_")
}


# --- the tests -----------------------------------------------------------------------------------


def test_every_example_is_marked_and_every_check_has_its_example() -> None:
    unmarked = unmarked_examples()
    assert not unmarked, f"examples without an <!-- example: NAME --> marker (see {__name__}): {unmarked}"
    names = [example.name for example in documented_examples()]
    repeated = {name for name in names if names.count(name) > 1}
    assert not repeated, f"example names must be unique across README.md and docs/: {repeated}"
    assert set(CHECKS) <= set(names), f"checks without an example: {set(CHECKS) - set(names)}"
    assert set(REWRITES) | set(PROGRAMS) <= {example.name for example in documented_examples() if example.needs}


def test_every_relative_link_resolves() -> None:
    broken = broken_links()
    assert not broken, f"links to a missing file or heading: {broken}"


def test_the_readme_links_every_docs_page() -> None:
    linked = {target for _, target, _ in relative_links(README)}
    unlinked = [page_name(page) for page in documented_pages()[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README's Documentation list does not link: {unlinked}"


@pytest.mark.parametrize("example", documented_examples(), ids=lambda example: f"{example.page}:{example.name}")
def test_readme_example(example: Example, session: Session) -> None:
    if example.skip:
        pytest.skip(example.skip)
    installed, missing, environment = PROGRAMS.get(example.name, (True, "", None))
    if not installed:
        pytest.skip(missing)
    code = session.rewritten(example)
    check = CHECKS.get(example.name)
    if example.name == "cli-synopsis":
        result: Any = run_synopsis(code)
    elif example.language == "toml":
        result = load_snippet(session, example)
    elif example.language == "python":
        result = run_python(session, code, example)
    else:
        env = environment(session.env, session.folder / example.name) if environment else None
        result = run_shell(session, code, env)
        assert all(status < 400 for status in result.statuses), (result.statuses, result.output[-2000:])
    if check is not None:
        check(session, result)
