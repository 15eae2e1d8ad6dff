"""Where the tests find Claude Code (`@anthropic-ai/claude-code` under CLAUDE_CODE_NODE_MODULES) and how they quiet it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NODE_MODULES = os.environ.get("CLAUDE_CODE_NODE_MODULES", "")
CLAUDE = os.path.join(NODE_MODULES, ".bin", "claude")
AVAILABLE = bool(shutil.which("node") and NODE_MODULES and os.path.exists(CLAUDE))
MISSING = "node with @anthropic-ai/claude-code is not available (set CLAUDE_CODE_NODE_MODULES)"
# Claude Code's documented switches: no telemetry, error reports, update checks or other non-essential calls
QUIET = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
         "DISABLE_ERROR_REPORTING": "1", "DISABLE_BUG_COMMAND": "1", "DISABLE_COST_WARNINGS": "1"}


def claude_environment(environ: dict[str, str], home: Path) -> dict[str, str]:
    """`environ` without ANTHROPIC_* / CLAUDE_* variables, quieted, `claude` on the PATH and `home` as HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {name: value for name, value in environ.items() if not name.startswith(("ANTHROPIC_", "CLAUDE_"))}
    path = os.pathsep.join(filter(None, [os.path.dirname(CLAUDE), environ.get("PATH")]))
    return {**env, **QUIET, "HOME": str(home), "PATH": path}
