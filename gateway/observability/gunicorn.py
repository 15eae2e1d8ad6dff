"""The gunicorn options observability needs: the metrics folder's hooks and, if asked for, JSON logs."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.observability import multiprocess
from gateway.observability.logs import logging_config


def observability_options(settings: Settings) -> dict[str, Any]:
    """Hooks that own the multiprocess metrics folder; `logconfig_dict` when `log_format = "json"`."""
    options: dict[str, Any] = {
        "on_starting": multiprocess.on_starting,
        "child_exit": multiprocess.child_exit,
        "on_exit": multiprocess.on_exit,
        "pre_exec": multiprocess.pre_exec,
    }
    config = logging_config(settings)
    if config is not None:
        options["logconfig_dict"] = config
    return options
