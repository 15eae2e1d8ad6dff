"""Owns each worker's services (upstream client, rate limiter, task pool, MCP runtime, model processes)."""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from flask import Flask

from gateway.config import McpServerSettings, ProviderSettings, Settings
from gateway.mcp.assemble import McpRuntime
from gateway.mcp.bridge import McpBridge
from gateway.mcp.servers import BuiltinServers, ServerSpec
from gateway.metrics import RequestMetrics
from gateway.ratelimit import RateLimiter
from gateway.responses import background as responses_background
from gateway.supervisor import ManagedProcess
from gateway.upstream import UpstreamClient

_START_LOCK = threading.Lock()


def managed_process(name: str, provider: ProviderSettings) -> ManagedProcess:
    """The supervisor of a provider's `command` (one copy per host and port, via a lock file)."""
    port = urlparse(provider.base_url).port or 0
    lock = Path(tempfile.gettempdir()) / f"gateway-provider-{name}-{port}.lock"
    return ManagedProcess(
        command=provider.command or [],
        ready_url=provider.base_url.rstrip("/") + "/models",
        lock_path=str(lock),
        startup_timeout_s=provider.ready_timeout_s,
    )


def server_spec(label: str, server: McpServerSettings) -> ServerSpec:
    """A built-in MCP server's config as the runtime's spec."""
    return ServerSpec(label, command=server.command, args=tuple(server.args), env=server.env, cwd=server.cwd,
                      url=server.url, headers=server.headers)


def init_app(app: Flask, settings: Settings) -> None:
    """Create the services; nothing starts until `start(app)` (after gunicorn forks)."""
    app.extensions["gateway.upstream"] = UpstreamClient(settings.providers, settings.server.threads)
    app.extensions["gateway.metrics"] = RequestMetrics()
    app.extensions["gateway.ratelimit"] = RateLimiter.from_settings(settings.limits)
    app.extensions["gateway.tasks"] = ThreadPoolExecutor(settings.server.threads, thread_name_prefix="gateway-task")
    bridge = McpBridge()
    app.extensions["gateway.mcp"] = McpRuntime(
        settings,
        BuiltinServers(
            [server_spec(label, server) for label, server in settings.mcpServers.items()],
            bridge, settings.mcp.tool_timeout_s, settings.mcp.connect_timeout_s,
        ),
        bridge,
        app.extensions["gateway.tasks"],
    )
    app.extensions["gateway.processes"] = {
        name: managed_process(name, provider)
        for name, provider in settings.providers.items()
        if provider.command
    }
    app.extensions["gateway.started"] = False
    app.before_request(lambda: start(app))


def start(app: Flask) -> None:
    """Start background services once per worker (idempotent, thread-safe)."""
    if app.extensions["gateway.started"]:
        return
    with _START_LOCK:
        if app.extensions["gateway.started"]:
            return
        for process in app.extensions["gateway.processes"].values():
            process.start()
        if app.extensions["gateway.mcp"].servers.labels:
            app.extensions["gateway.mcp"].servers.start()
        app.extensions["gateway.started"] = True


def close(app: Flask) -> None:
    """Stop everything this worker owns (idempotent); called from gunicorn's worker_exit."""
    responses_background.close(app)
    for process in app.extensions["gateway.processes"].values():
        process.close()
    runtime = app.extensions["gateway.mcp"]
    runtime.servers.close()
    runtime.bridge.close()
    app.extensions["gateway.tasks"].shutdown(wait=False, cancel_futures=True)
    app.extensions["gateway.upstream"].close()
    app.extensions["gateway.ratelimit"].close()


def post_worker_init(worker) -> None:
    """gunicorn hook: start the worker's services right after the fork."""
    start(worker.wsgi)


def worker_exit(server, worker) -> None:
    """gunicorn hook: close the worker's threads, sessions and child processes."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        close(app)
