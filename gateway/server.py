"""gunicorn embedded as `gateway serve`: options from Settings, the database prepared before forking."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from gateway import db, lifecycle
from gateway.accounting.keys import create_key
from gateway.config import EMBEDDED_SCOPE, Settings
from gateway.observability.gunicorn import observability_options
from gateway.tables import ApiKey


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings for this config; `gateway serve` and deploy/gunicorn.conf.py both use them."""
    server = settings.server
    return {
        "bind": f"{server.host}:{server.port}",
        "workers": server.workers,
        "threads": server.threads,
        # gthread whose main loop receives whole requests before a thread serves them (gateway/serving)
        "worker_class": "gateway.serving.worker.GatewayWorker",
        "timeout": 120,  # gthread heartbeats from its main loop, so long streams are unaffected
        "graceful_timeout": server.graceful_timeout_s,
        "max_requests": server.max_requests,  # then the worker is replaced gracefully: bounds memory growth
        "max_requests_jitter": server.max_requests_jitter,
        "keepalive": 5,
        "control_socket_disable": True,  # gunicorn 27 otherwise shares ~/.gunicorn/gunicorn.ctl between instances
        "pidfile": server.pidfile or None,  # a USR2 upgrade's new master writes `<pidfile>.2` until promoted
        "post_worker_init": lifecycle.post_worker_init,
        "worker_exit": lifecycle.worker_exit,
        **observability_options(settings),  # the metrics folder's hooks, JSON logs
    }


def prepare_database(settings: Settings) -> str | None:
    """Migrate before forking; on embedded defaults with no key yet, create one and return its secret."""
    db.migrate(settings.database.url)
    if not settings.embedded:
        return None
    try:
        return create_first_key()
    finally:
        db.database.close_all()  # no pooled connection may cross the fork


def create_first_key() -> str | None:
    """A key named "default" if the database has none yet; its secret, else None.

    Its account's scope may use the embedded profile (`/api/v1/openai/default/default/...`).
    """
    with db.database.connection_context(), db.migration_lock(), db.database.atomic():
        if ApiKey.select().exists():
            return None
        return create_key("default", scope=EMBEDDED_SCOPE)[1]


class GatewayServer(BaseApplication):
    """A gunicorn application whose workers call `create_app()` after forking."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from gateway import create_app

        return create_app()
