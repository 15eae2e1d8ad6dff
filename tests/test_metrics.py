"""Prometheus metrics in one process, and the multiprocess folder's compaction (gateway.observability)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.observability import multiprocess
from tests.fake_upstream import JsonReply
from tests.mcp_fixtures.launch import TOOL_SERVER
from tests.scripted_model import ScriptedModel

CHAT = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics", buffered=True)
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


@pytest.fixture
def settings(make_settings):
    return make_settings(
        models={"test-model": {"provider": "fake", "upstream_model": "upstream-model", "retries": 0,
                               "input_price_per_mtok": 1_000_000, "output_price_per_mtok": 2_000_000},
                "backup-model": {"retries": 0}},  # one upstream error per failed attempt, no retries
        mcpServers={"tools": {"command": sys.executable, "args": [TOOL_SERVER]}},
    )


def funded_key(credit: int) -> str:
    with db.database.connection_context(), db.database.atomic():
        key, secret = create_key("metered")
        if credit:
            credits.grant_credits(key.account_id, credits.to_micro(credit))
    return secret


def test_requests_tokens_credits_streams_and_refusals_are_counted(app, client, fake_upstream):
    headers = {"Authorization": f"Bearer {funded_key(1000)}"}
    before = scrape(client)
    assert client.post("/v1/chat/completions", json=CHAT, headers=headers, buffered=True).status_code == 200
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
    assert b"[DONE]" in streamed.get_data()
    streamed.close()
    poor = {"Authorization": f"Bearer {funded_key(0)}"}
    assert client.post("/v1/chat/completions", json=CHAT, headers=poor, buffered=True).status_code == 402
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/v1/chat/completions", "method": "POST"}
    assert grew("gateway_requests_total", **route, status="200", model="test-model") == 2
    assert grew("gateway_requests_total", **route, status="402", model="") == 1
    assert grew("gateway_request_duration_seconds_count", route=route["route"], model="test-model") == 2
    assert grew("gateway_tokens_total", model="test-model", type="input") == 22
    assert grew("gateway_tokens_total", model="test-model", type="output") == 14
    assert grew("gateway_credits_charged_total", model="test-model") == pytest.approx(2 * (11 + 14))
    assert grew("gateway_time_to_first_token_seconds_count", model="test-model") == 1
    assert grew("gateway_upstream_request_duration_seconds_count", provider="fake") == 2
    assert grew("gateway_refusals_total", reason="insufficient_balance") == 1
    assert grew("gateway_db_write_batch_size_count") >= 4  # two holds, two settlements (some may share)
    assert grew("gateway_open_streams") == 0  # this test's stream closed (the gauge is per process)


def test_upstream_errors_fallbacks_and_mcp_calls_are_counted(app, client, fake_upstream):
    # funded for the Responses turn's hold, which covers the MCP tool definitions the gateway adds
    auth_headers = {"Authorization": f"Bearer {funded_key(10_000)}"}
    before = scrape(client)
    fake_upstream.responder = lambda path, body: JsonReply({"error": {"message": "down"}}, status=503)
    failed = client.post("/v1/chat/completions", json={**CHAT, "models": ["backup-model"]}, headers=auth_headers,
                         buffered=True)
    assert failed.status_code == 502
    model = ScriptedModel([("mcp__tools__echo", {"text": "a"})])
    fake_upstream.responder = model
    tool = {"type": "mcp", "server_label": "tools", "require_approval": "never"}
    answer = client.post("/v1/responses", json={"model": "test-model", "input": "go", "tools": [tool],
                                                            "max_output_tokens": 50},
                         headers=auth_headers, buffered=True)
    assert answer.status_code == 200
    after = scrape(client)
    assert value(after, "gateway_upstream_errors_total", provider="fake", kind="http_503") \
        - value(before, "gateway_upstream_errors_total", provider="fake", kind="http_503") == 2
    assert value(after, "gateway_fallbacks_total", from_model="test-model", to_model="backup-model") \
        - value(before, "gateway_fallbacks_total", from_model="test-model", to_model="backup-model") == 1
    assert value(after, "gateway_mcp_tool_calls_total", server="tools", outcome="ok") \
        - value(before, "gateway_mcp_tool_calls_total", server="tools", outcome="ok") == 1
    assert value(after, "gateway_mcp_server_up", server="tools") == 1


def write_counter(folder: Path, file_name: str, count: float, name: str = "gateway_requests") -> None:
    values = MmapedDict(str(folder / file_name))
    values.write_value(mmap_key(name, f"{name}_total", ["route"], ["/x"], "Requests."), count, 0.0)
    values.close()


def total(folder: Path) -> float:
    text = multiprocess.collect(str(folder)).decode()
    return value(samples(text), "gateway_requests_total", route="/x")


def test_a_dead_workers_counts_are_archived_without_changing_totals(tmp_path):
    write_counter(tmp_path, "counter_111.db", 3)
    write_counter(tmp_path, "counter_222.db", 4)
    write_counter(tmp_path, "gauge_livesum_111.db", 1, name="gateway_open_streams")
    assert total(tmp_path) == 7
    multiprocess.archive_worker(str(tmp_path), 111)
    assert total(tmp_path) == 7
    multiprocess.archive_worker(str(tmp_path), 222)
    assert total(tmp_path) == 7
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_archive.db"]


def test_a_fresh_master_empties_the_folder_and_a_usr2_master_keeps_it(tmp_path, monkeypatch):
    write_counter(tmp_path, "counter_111.db", 3)
    monkeypatch.setenv(multiprocess.ENVIRONMENT, str(tmp_path))

    class Arbiter:
        master_pid = 4242  # set for a master started by USR2
        reexec_pid = 0

    multiprocess.on_starting(Arbiter())
    assert total(tmp_path) == 3
    Arbiter.master_pid = 0
    multiprocess.on_starting(Arbiter())
    assert total(tmp_path) == 0
    multiprocess.on_exit(Arbiter())
    assert tmp_path.is_dir()  # the operator's folder is never removed


def test_without_a_folder_the_master_makes_a_private_one_and_removes_it(monkeypatch):
    monkeypatch.setenv(multiprocess.ENVIRONMENT, "")  # restored (unset) after the test, like the next line
    monkeypatch.delenv(multiprocess.ENVIRONMENT)

    class Arbiter:
        master_pid = 0
        reexec_pid = 0

    multiprocess.on_starting(Arbiter())
    folder = os.environ[multiprocess.ENVIRONMENT]
    assert Path(folder).is_dir()
    Arbiter.reexec_pid = 99  # a USR2 master took over: it keeps using the folder
    multiprocess.on_exit(Arbiter())
    assert Path(folder).is_dir()
    Arbiter.reexec_pid = 0
    multiprocess.on_exit(Arbiter())
    assert not Path(folder).exists()


def test_the_grafana_dashboard_only_uses_exported_metrics(app, client):
    dashboard = (Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "gateway-dashboard.json").read_text()
    exported = {family.name for family in text_string_to_metric_families(
        client.get("/metrics", buffered=True).get_data(as_text=True))}
    used = set(re.findall(r"gateway_[a-z_]+", dashboard)) - {"gateway_"}
    suffixes = ("_total", "_bucket", "_sum", "_count")
    assert used and all(name.removesuffix(next((s for s in suffixes if name.endswith(s)), "")) in exported
                        for name in used), used
