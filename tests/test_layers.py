"""The layers contract (.importlinter): gateway's imports point down, and one pointing up breaks it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.api import read_configuration
from importlinter.contracts.layers import LayersContract
from importlinter.domain.contract import ContractCheck

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / ".importlinter"

# Imports that pointed up before the rooms were layered, and a few more: each must break the contract.
UPWARD = [
    ("gateway.accounting.meter", "gateway.loop.events"),  # where Usage lived
    ("gateway.accounting.keys", "gateway.mcp.access"),
    ("gateway.accounting.meter", "gateway.upstream.routing"),
    ("gateway.observability.wsgi_middleware", "gateway.accounting.money"),
    ("gateway.dashboard.forms", "gateway.api.admin"),
    ("gateway.config", "gateway.upstream.model_process"),
    ("gateway.mcp.toolset", "gateway.loop.events"),
    ("gateway.loop.run", "gateway.responses.builder"),
    ("gateway.errors", "gateway.accounting.keys"),
    ("gateway.api.chat", "gateway.mcp_hub.views"),
    ("gateway.mcp_hub.views", "gateway.api.http"),  # faces are independent
    ("gateway.dashboard.admin_views", "gateway.api.admin"),
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("gateway", cache_dir=None)


def layers_contract() -> LayersContract:
    """The contract as lint-imports reads it from .importlinter."""
    config = read_configuration(str(CONFIG))
    (options,) = [options for options in config["contracts_options"] if options["type"] == "layers"]
    return LayersContract(name=options["name"], session_options=config["session_options"], contract_options=options)


def broken_imports(check: ContractCheck) -> list[str]:
    """Each illegal import as `importer -> imported` (modules, as the contract's report chains them)."""
    return [f"{link['importer']} -> {link['imported']}"
            for dependency in check.metadata.get("invalid_dependencies", [])
            for route in dependency["routes"] for link in route["chain"]]


def test_imports_point_down(graph):
    check = layers_contract().check(copy.deepcopy(graph), verbose=False)
    assert check.kept, broken_imports(check)


@pytest.mark.parametrize(("importer", "imported"), UPWARD)
def test_an_import_pointing_up_breaks_the_contract(graph, importer, imported):
    assert {importer, imported} <= graph.modules  # real modules, so the contract can only break on the import
    upward = copy.deepcopy(graph)
    upward.add_import(importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}")
    check = layers_contract().check(upward, verbose=False)
    assert not check.kept
    assert f"{importer} -> {imported}" in broken_imports(check)


def test_a_room_without_a_floor_breaks_the_contract(graph):
    """`exhaustive`: a new top-level package fails until .importlinter gives it a floor."""
    grown = copy.deepcopy(graph)
    grown.add_module("gateway.unplaced_room")
    assert not layers_contract().check(grown, verbose=False).kept


def test_lint_imports_command_keeps_the_contract():
    """The command CI runs, from the repository's root."""
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"  # = lint-imports
    done = subprocess.run([sys.executable, "-c", command, "--no-cache", "--no-logo", str(CONFIG)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout
