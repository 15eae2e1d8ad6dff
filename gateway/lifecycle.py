"""Owns each worker's services (upstream client, rate limiter, task pool, MCP runtime, model processes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

from flask import Flask

from gateway import guardrails
from gateway.accounting import auth_throttle, budget_alerts, keys, streams
from gateway.accounting import writer as accounting_writer
from gateway.accounting.ratelimit import RateLimiter
from gateway.api.batches import check_line
from gateway.batches import runner as batch_runner
from gateway.cache.store import response_cache
from gateway.config import McpServerSettings, ProviderSettings, Settings
from gateway.db import database
from gateway.mcp.assemble import McpRuntime
from gateway.mcp.bridge import McpBridge
from gateway.mcp.servers import BuiltinServers, ServerSpec
from gateway.mcp.transports import http_timeout
from gateway.observability import close as close_observers
from gateway.responses import background as responses_background
from gateway.serving import trusted_proxies
from gateway.upstream.client import UpstreamClient
from gateway.upstream.health_checks import HealthChecks
from gateway.upstream.health_store import health_board
from gateway.upstream.load import LoadBoard
from gateway.upstream.model_process import ManagedProcess
from gateway.upstream.router import Router


class StartOnce:
    """Runs a start function at most once, however many threads ask at the same time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = False

    def __call__(self, start: Callable[[], None]) -> None:
        if self.started:
            return
        with self._lock:
            if not self.started:
                start()
                self.started = True


def managed_process(name: str, provider: ProviderSettings, state_dir: str, copy: int = 0) -> ManagedProcess:
    """The supervisor of one copy of a provider's `command`: one per state folder and port, elected by a lock file."""
    base_url = provider.copy_base_urls()[copy]
    port = urlparse(base_url).port or 0
    files = Path(state_dir).resolve() / f"provider-{name}-{port}"
    return ManagedProcess(
        command=[argument.replace("{port}", str(port)) for argument in provider.command or []],
        ready_url=base_url.rstrip("/") + "/models",
        lock_path=f"{files}.lock",
        startup_timeout_s=provider.ready_timeout_s,
        log_path=f"{files}.log",
    )


def managed_processes(settings: Settings) -> dict[str, ManagedProcess]:
    """Every copy of every provider `command`, named like the provider (copies after the first: "name-2", ...)."""
    return {
        name if copy == 0 else f"{name}-{copy + 1}": managed_process(name, provider, settings.server.state_dir, copy)
        for name, provider in settings.providers.items()
        if provider.command
        for copy in range(provider.copies)
    }


def server_spec(label: str, server: McpServerSettings) -> ServerSpec:
    """A built-in MCP server's config as the runtime's spec."""
    return ServerSpec(label, command=server.command, args=tuple(server.args), env=server.env, cwd=server.cwd,
                      url=server.url, headers=server.headers)


def init_app(app: Flask, settings: Settings) -> None:
    """Create the services; nothing starts until `start(app)` (after gunicorn forks)."""
    app.extensions["gateway.upstream"] = UpstreamClient(settings.providers, settings.server.threads)
    app.extensions["gateway.router"] = Router(settings, app.extensions["gateway.upstream"], health_board(settings),
                                              LoadBoard(settings.server.workers))
    app.extensions["gateway.health_checks"] = HealthChecks(settings, app.extensions["gateway.upstream"],
                                                           app.extensions["gateway.router"].health)
    app.extensions["gateway.ratelimit"] = RateLimiter.from_settings(settings.limits)
    budget_alerts.init_app(app, settings.budget_alerts)
    app.extensions["gateway.cache"] = response_cache(settings)  # None when [cache] enabled is false
    guardrails.prepare(settings)  # every guardrail's check built now, not by the first request that needs it
    streams.init_app(app, settings)
    keys.init_app(app, settings.auth.key_cache_ttl_s)
    trusted_proxies.init_app(app, settings)
    auth_throttle.init_app(app, settings)
    accounting_writer.init_app(app, database.obj, settings.billing.reservation_ttl_s,
                               app.extensions["gateway.ratelimit"].counts_in_database)
    app.extensions["gateway.tasks"] = ThreadPoolExecutor(settings.server.threads, thread_name_prefix="gateway-task")
    bridge = McpBridge()
    app.extensions["gateway.mcp"] = McpRuntime(
        settings, builtin_servers(settings, bridge), bridge, app.extensions["gateway.tasks"]
    )
    app.extensions[responses_background.EXTENSION] = responses_background.BackgroundRunner(
        settings.responses.background_workers
    )
    app.extensions[batch_runner.EXTENSION] = batch_runner.BatchRunner(app, settings.batches, check_line)
    app.extensions["gateway.processes"] = managed_processes(settings)
    app.extensions["gateway.start_once"] = StartOnce()
    app.before_request(lambda: start(app))


def builtin_servers(settings: Settings, bridge: McpBridge) -> BuiltinServers:
    """The `[mcpServers]` of the config, with the `[mcp]` timeouts."""
    mcp = settings.mcp
    return BuiltinServers(
        [server_spec(label, server) for label, server in settings.mcpServers.items()],
        bridge, mcp.tool_timeout_s, mcp.connect_timeout_s,
        http_timeout=http_timeout(mcp.http_timeout_s, mcp.http_read_timeout_s),
    )


def start(app: Flask) -> None:
    """Start background services once per worker (idempotent, thread-safe)."""
    app.extensions["gateway.start_once"](lambda: start_services(app))


def start_services(app: Flask) -> None:
    """Launch the supervised model processes and connect the built-in MCP servers."""
    for process in app.extensions["gateway.processes"].values():
        process.start()
    if app.extensions["gateway.mcp"].servers.labels:
        app.extensions["gateway.mcp"].servers.start()
    app.extensions["gateway.health_checks"].start()
    budget_alerts.start(app)
    batch_runner.runner(app).start()


def close(app: Flask) -> None:
    """Stop everything this worker owns (idempotent); called from gunicorn's worker_exit."""
    budget_alerts.close(app)
    responses_background.runner(app).close()
    batch_runner.runner(app).close()
    for process in app.extensions["gateway.processes"].values():
        process.close()
    runtime = app.extensions["gateway.mcp"]
    runtime.servers.close()
    runtime.bridge.close()
    app.extensions["gateway.health_checks"].close()
    app.extensions["gateway.tasks"].shutdown(wait=False, cancel_futures=True)
    app.extensions["gateway.upstream"].close()
    app.extensions["gateway.router"].health.close()
    accounting_writer.writer(app).close()
    app.extensions["gateway.ratelimit"].close()
    if app.extensions.get("gateway.cache") is not None:
        app.extensions["gateway.cache"].close()
    close_observers(app)


def post_worker_init(worker) -> None:
    """gunicorn hook: start the worker's services right after the fork."""
    start(worker.wsgi)
    batch_runner.runner(worker.wsgi).stopping = lambda: not worker.alive  # start no batch line once told to stop


def worker_exit(server, worker) -> None:
    """gunicorn hook: close the worker's threads, sessions and child processes."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        close(app)
