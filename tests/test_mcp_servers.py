"""Built-in and remote MCP servers through the bridge, against real servers on real transports."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest

from gateway import errors
from gateway.mcp.bridge import McpBridge
from gateway.mcp.servers import (
    BuiltinServers,
    ServerSpec,
    call_tool,
    close_remote,
    open_remote,
    remote_tools,
)
from gateway.mcp.tools import ToolInfo, ToolOutcome, outcome_from_result, redact, render_content, tool_info
from tests.mcp_fixtures.launch import HANG_SERVER, TOOL_SERVER, free_port, http_tool_server

BOUND_S = 30.0  # upper bound for anything we wait on, so a hang fails instead of blocking
SECRET = "sk-fixture-secret-9f8e7d"
PICTURE_OUTPUT = "a picture\n[image: image/png, 32 bytes]"
EVERYTHING_BIN = (
    os.environ.get("MCP_SERVER_EVERYTHING")
    or shutil.which("mcp-server-everything")
    or "/tmp/mcp-everything/node_modules/.bin/mcp-server-everything"
)


def wait_for(condition: Callable[[], Any], what: str, bound: float = BOUND_S) -> Any:
    """Poll `condition` until it is truthy; fail the test after `bound` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def status_of(servers: BuiltinServers, label: str) -> dict[str, Any]:
    return next(row for row in servers.statuses() if row["label"] == label)


def is_server_process(pid: int) -> bool:
    """Whether a pid runs one of this file's MCP servers (other tests' children may come and go)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"tool_server.py" in command or b"mcp-server-time" in command


def child_pids() -> set[int]:
    """Live (non-zombie) child processes of this test process, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z":
            children.add(int(entry.name))
    return children


def fixture_spec(label: str = "fixture", **extra: Any) -> ServerSpec:
    return ServerSpec(label, command=sys.executable, args=(TOOL_SERVER, "stdio"), **extra)


# --- pure: rendering, outcomes, redaction, specs ---------------------------------------------

TEXT = types.TextContent(type="text", text="hello")
IMAGE = types.ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png")
AUDIO = types.AudioContent(type="audio", data="AAAA", mime_type="audio/wav")
LINK = types.ResourceLink(type="resource_link", uri="file:///a.txt", name="a")
TEXT_RESOURCE = types.EmbeddedResource(
    type="resource", resource=types.TextResourceContents(uri="file:///b.txt", text="inside")
)
BLOB_RESOURCE = types.EmbeddedResource(
    type="resource",
    resource=types.BlobResourceContents(uri="file:///c.bin", blob="AAAAAA==", mime_type="application/zip"),
)


@pytest.mark.parametrize(
    ("blocks", "structured", "expected"),
    [
        ([TEXT, TEXT], None, "hello\nhello"),
        ([TEXT, IMAGE], None, "hello\n[image: image/png, 8 bytes]"),
        ([AUDIO], None, "[audio: audio/wav, 3 bytes]"),
        ([LINK, TEXT_RESOURCE], None, "[resource: file:///a.txt]\ninside"),
        ([BLOB_RESOURCE], None, "[resource: file:///c.bin, application/zip, 4 bytes]"),
        ([], {"a": 1, "b": ["x", "é"]}, '{"a":1,"b":["x","é"]}'),
        ([IMAGE], {"a": 1}, '[image: image/png, 8 bytes]\n{"a":1}'),
        ([TEXT], {"result": "hello"}, "hello"),
        ([], None, ""),
    ],
)
def test_render_content(blocks: list[Any], structured: Any, expected: str) -> None:
    assert render_content(blocks, structured) == expected


def test_outcome_from_result_maps_is_error_to_error() -> None:
    ok = types.CallToolResult(content=[TEXT])
    failed = types.CallToolResult(content=[TEXT], is_error=True)
    silent_failure = types.CallToolResult(content=[], is_error=True)

    assert outcome_from_result(ok) == ToolOutcome(output="hello")
    assert outcome_from_result(failed) == ToolOutcome(error="hello")
    assert outcome_from_result(silent_failure) == ToolOutcome(error="the tool reported an error")


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        (f"header was {SECRET}", (SECRET,), "header was [redacted]"),
        ("Authorization: Bearer abc.def", (), "Authorization: Bearer [redacted]"),
        ("GET https://user:pw@host/mcp failed", (), "GET https://[redacted]@host/mcp failed"),
        ("value 1 stays", ("1",), "value 1 stays"),
        ("nothing secret", (SECRET,), "nothing secret"),
        ("failed: token tok-9876; other", ("Bearer tok-9876", None, ""), "failed: token [redacted]; other"),
    ],
)
def test_redact(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_server_spec_needs_exactly_one_transport() -> None:
    assert ServerSpec("a", command="x").transport == "stdio"
    assert ServerSpec("b", url="https://mcp.example.com/mcp").transport == "streamable_http"
    with pytest.raises(ValueError, match="exactly one"):
        ServerSpec("c")
    with pytest.raises(ValueError, match="exactly one"):
        ServerSpec("d", command="x", url="https://mcp.example.com/mcp")


def test_tool_info_reads_the_read_only_hint() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    hinted = types.Tool(name="t", input_schema=schema, annotations=types.ToolAnnotations(read_only_hint=True))
    plain = types.Tool(name="u", description="does u", input_schema=schema)

    assert tool_info(hinted).read_only is True
    assert tool_info(plain) == ToolInfo("u", "does u", schema, False)


# --- live servers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_url() -> Iterator[str]:
    with http_tool_server("http") as (url, _process):
        yield url


@pytest.fixture(scope="module")
def bridge() -> Iterator[McpBridge]:
    bridge = McpBridge()
    yield bridge
    bridge.close()


@pytest.fixture(scope="module")
def servers(bridge: McpBridge, web_url: str) -> Iterator[BuiltinServers]:
    specs = [
        ServerSpec("time", command="mcp-server-time", args=("--local-timezone", "UTC")),
        fixture_spec(env={"FIXTURE_TOKEN": SECRET}),
        ServerSpec("web", url=web_url, headers={"X-Fixture-Tenant": "acme"}),
        ServerSpec("broken", command=sys.executable, args=("-c", "import sys; sys.exit(3)")),
    ]
    servers = BuiltinServers(
        specs, bridge, call_timeout_s=10, connect_timeout_s=20, backoff_initial_s=0.2, backoff_max_s=1
    )
    servers.start()
    wait_for(
        lambda: all(
            status_of(servers, label)["status"] == "available" for label in ("time", "fixture", "web")
        ),
        "the built-in servers to connect",
    )
    yield servers
    servers.close()


def test_statuses_report_every_configured_server(servers: BuiltinServers) -> None:
    rows = {row["label"]: row for row in servers.statuses()}

    assert list(rows) == ["time", "fixture", "web", "broken"]
    assert rows["time"]["transport"] == "stdio" and rows["time"]["tool_count"] == 2
    assert rows["web"]["transport"] == "streamable_http" and rows["web"]["tool_count"] >= 9
    assert rows["fixture"]["status"] == "available" and rows["fixture"]["tool_count"] >= 9
    wait_for(lambda: status_of(servers, "broken")["last_error"], "the broken server's error")
    broken = status_of(servers, "broken")
    assert broken["status"] in ("starting", "unavailable") and broken["tool_count"] == 0
    assert all(SECRET not in str(row) for row in servers.statuses())


def test_tools_lists_the_inventory(servers: BuiltinServers) -> None:
    time_tools = {tool.name for tool in servers.tools("time")}
    fixture_tools = {tool.name: tool for tool in servers.tools("fixture")}

    assert time_tools == {"get_current_time", "convert_time"}
    assert {"echo", "add", "slow", "fail", "structured", "picture", "crash", "rendezvous"} <= set(
        fixture_tools
    )
    assert fixture_tools["echo"].read_only and not fixture_tools["add"].read_only
    assert set(fixture_tools["add"].input_schema["properties"]) == {"a", "b"}
    assert fixture_tools["add"].description == "Add two integers."


def test_tools_errors_carry_their_status(servers: BuiltinServers) -> None:
    with pytest.raises(errors.NotFound) as unknown:
        servers.tools("nope")
    wait_for(lambda: status_of(servers, "broken")["status"] != "available", "broken to be down")
    with pytest.raises(errors.Conflict) as unavailable:
        servers.tools("broken")

    assert unknown.value.status == 404
    assert unavailable.value.status == 409


def test_time_server_answers(servers: BuiltinServers) -> None:
    outcome = servers.call("time", "get_current_time", {"timezone": "UTC"})

    assert outcome.error is None
    assert '"timezone": "UTC"' in (outcome.output or "")


@pytest.mark.parametrize("label", ["fixture", "web"])
@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("echo", {"text": "hi there"}, ToolOutcome(output="hi there")),
        ("add", {"a": 2, "b": 3}, ToolOutcome(output="5")),
        ("picture", {}, ToolOutcome(output=PICTURE_OUTPUT)),
        ("structured", {}, ToolOutcome(output='{"city":"Paris","temps":[12,14]}')),
    ],
)
def test_tool_results_render_for_the_model(
    servers: BuiltinServers, label: str, tool: str, arguments: dict[str, Any], expected: ToolOutcome
) -> None:
    assert servers.call(label, tool, arguments) == expected


@pytest.mark.parametrize("label", ["fixture", "web"])
def test_tool_failures_are_item_level_errors(servers: BuiltinServers, label: str) -> None:
    raised = servers.call(label, "fail", {"message": "no such city"})
    unknown = servers.call(label, "no_such_tool", {})

    assert raised.output is None and "no such city" in (raised.error or "")
    assert unknown.output is None and "no_such_tool" in (unknown.error or "")


def test_unknown_label_raises_and_unavailable_server_is_an_item_error(servers: BuiltinServers) -> None:
    with pytest.raises(errors.NotFound):
        servers.call("nope", "echo", {})
    wait_for(lambda: status_of(servers, "broken")["status"] != "available", "broken to be down")

    outcome = servers.call("broken", "echo", {"text": "x"})

    assert outcome.output is None and "broken" in (outcome.error or "")


def test_configured_headers_reach_an_http_server(servers: BuiltinServers) -> None:
    assert servers.call("web", "header", {"name": "x-fixture-tenant"}) == ToolOutcome(output="acme")


def test_hanging_tool_times_out_and_the_bridge_stays_usable(servers: BuiltinServers) -> None:
    outcome = servers.call("fixture", "slow", {"seconds": 60}, timeout=0.5)

    assert outcome.output is None and "timed out" in (outcome.error or "")
    assert servers.call("fixture", "echo", {"text": "still here"}) == ToolOutcome(output="still here")
    assert status_of(servers, "fixture")["status"] == "available"


def test_twenty_threads_call_tools_at_once(servers: BuiltinServers) -> None:
    barrier = threading.Barrier(20)

    def worker(n: int) -> ToolOutcome:
        barrier.wait(BOUND_S)
        return servers.call("fixture" if n % 2 else "web", "add", {"a": n, "b": n})

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(worker, range(20)))

    assert outcomes == [ToolOutcome(output=str(2 * n)) for n in range(20)]


def test_calls_on_one_server_run_concurrently(servers: BuiltinServers) -> None:
    # Each call returns only once all 20 are in flight on the server at the same time.
    def worker(_: int) -> ToolOutcome:
        return servers.call("fixture", "rendezvous", {"group": "twenty", "count": 20}, timeout=BOUND_S)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(worker, range(20)))

    assert outcomes == [ToolOutcome(output="met")] * 20


def test_tool_list_changed_refreshes_the_inventory(servers: BuiltinServers) -> None:
    assert servers.call("fixture", "grow", {}) == ToolOutcome(output="grown")

    wait_for(lambda: "added" in {tool.name for tool in servers.tools("fixture")}, "the refreshed tool list")
    assert servers.call("fixture", "added", {}) == ToolOutcome(output="added")


def test_remote_server_over_streamable_http(bridge: McpBridge, web_url: str) -> None:
    connection = open_remote(bridge, web_url, {"X-Fixture-Tenant": "remote-tenant"}, timeout=BOUND_S)
    try:
        assert connection.transport_kind == "streamable_http"
        assert {"echo", "header"} <= {tool.name for tool in remote_tools(connection)}
        outcome = call_tool(bridge, connection, "header", {"name": "x-fixture-tenant"}, BOUND_S)
        assert outcome == ToolOutcome(output="remote-tenant")
    finally:
        close_remote(bridge, connection)
    assert connection.ended
    assert "closed" in (call_tool(bridge, connection, "echo", {"text": "x"}, BOUND_S).error or "")


def test_remote_client_factory_and_sse_fallback(bridge: McpBridge) -> None:
    built: list[httpx2.AsyncClient] = []

    def factory() -> httpx2.AsyncClient:
        built.append(httpx2.AsyncClient(headers={"X-From-Factory": "yes"}, timeout=httpx2.Timeout(BOUND_S)))
        return built[-1]

    with http_tool_server("sse") as (sse_url, _process):
        connection = open_remote(bridge, sse_url, {}, factory, timeout=BOUND_S)
        try:
            assert connection.transport_kind == "sse"
            assert len(built) == 2  # streamable HTTP was tried first, then SSE
            outcome = call_tool(bridge, connection, "header", {"name": "x-from-factory"}, BOUND_S)
            assert outcome == ToolOutcome(output="yes")
            assert call_tool(bridge, connection, "grow", {}, BOUND_S) == ToolOutcome(output="grown")
            wait_for(lambda: "added" in {t.name for t in remote_tools(connection)}, "legacy list_changed")
        finally:
            close_remote(bridge, connection)


def test_remote_failure_is_bad_input_without_secrets(bridge: McpBridge) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"

    with pytest.raises(errors.BadInput) as caught:
        open_remote(bridge, url, {"Authorization": f"Bearer {SECRET}"}, timeout=5, secrets=(SECRET,))

    assert caught.value.status == 422
    assert "could not list" in caught.value.message
    assert SECRET not in caught.value.message


def test_crashed_server_is_restarted(bridge: McpBridge) -> None:
    servers = BuiltinServers([fixture_spec("crashy")], bridge, connect_timeout_s=20, backoff_initial_s=0.1)
    try:
        servers.start()
        wait_for(lambda: status_of(servers, "crashy")["status"] == "available", "crashy to connect")

        crashed = servers.call("crashy", "crash", {})
        wait_for(lambda: status_of(servers, "crashy")["restarts"] >= 1, "a restart")
        wait_for(lambda: status_of(servers, "crashy")["status"] == "available", "crashy to come back")

        assert crashed.output is None and crashed.error
        assert "closed" in status_of(servers, "crashy")["last_error"].lower()
        assert servers.call("crashy", "echo", {"text": "back"}) == ToolOutcome(output="back")
    finally:
        servers.close()


def test_hung_server_is_unavailable_after_the_connect_timeout(bridge: McpBridge) -> None:
    spec = ServerSpec("hung", command=sys.executable, args=(HANG_SERVER,))
    servers = BuiltinServers([spec], bridge, connect_timeout_s=0.5, backoff_initial_s=0.1)
    try:
        servers.start()
        row = wait_for(
            lambda: (r := status_of(servers, "hung"))["last_error"] and r,
            "the connect timeout to be reported",
        )
        assert "timed out" in row["last_error"]
        assert servers.call("hung", "anything", {}).error
    finally:
        servers.close()


def test_close_is_idempotent_and_leaves_no_processes_or_threads() -> None:
    before = child_pids()
    bridge = McpBridge()
    servers = BuiltinServers([fixture_spec(), ServerSpec("time", command="mcp-server-time")], bridge)
    servers.start()
    wait_for(lambda: all(row["status"] == "available" for row in servers.statuses()), "servers to connect")
    spawned = {pid for pid in child_pids() - before if is_server_process(pid)}
    assert len(spawned) == 2

    servers.close()
    servers.close()
    bridge.close()
    bridge.close()

    assert bridge.thread is not None and not bridge.thread.is_alive()
    wait_for(lambda: not (child_pids() & spawned), "the server processes to exit")
    assert all(row["status"] == "unavailable" for row in servers.statuses())
    with pytest.raises(errors.ServiceUnavailable) as caught:
        servers.tools("fixture")
    assert caught.value.status == 503
    assert servers.call("fixture", "echo", {"text": "x"}).error


def test_closing_only_the_bridge_still_stops_stdio_servers() -> None:
    before = child_pids()
    bridge = McpBridge()
    servers = BuiltinServers([fixture_spec()], bridge)
    servers.start()
    wait_for(lambda: status_of(servers, "fixture")["status"] == "available", "fixture to connect")
    spawned = child_pids() - before

    bridge.close()

    wait_for(lambda: not (child_pids() & spawned), "the server process to exit")
    with pytest.raises(errors.ServiceUnavailable):
        servers.tools("fixture")
    servers.close()


@pytest.mark.skipif(
    not os.access(EVERYTHING_BIN, os.X_OK), reason="@modelcontextprotocol/server-everything absent"
)
def test_reference_server_everything(bridge: McpBridge) -> None:
    spec = ServerSpec("everything", command=EVERYTHING_BIN, args=("stdio",))
    servers = BuiltinServers([spec], bridge, connect_timeout_s=20)
    try:
        servers.start()
        wait_for(lambda: status_of(servers, "everything")["status"] == "available", "server-everything")
        tools = {tool.name: tool for tool in servers.tools("everything")}

        assert tools["echo"].read_only
        assert servers.call("everything", "echo", {"message": "hi"}) == ToolOutcome(output="Echo: hi")
        image = servers.call("everything", "get-tiny-image", {})
        assert "[image: image/png, " in (image.output or "")
    finally:
        servers.close()
