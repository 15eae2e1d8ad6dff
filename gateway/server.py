"""gunicorn embedded as `gateway serve`: gthread workers, each building its own app."""

from __future__ import annotations

from gunicorn.app.base import BaseApplication

from gateway import lifecycle


class GatewayServer(BaseApplication):
    """A gunicorn application whose workers call `create_app()` after forking."""

    def __init__(self, host: str, port: int, workers: int, threads: int) -> None:
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 120,
            "graceful_timeout": 30,
            "keepalive": 5,
            "control_socket_disable": True,  # gunicorn 27 shares one per user otherwise
            "post_worker_init": lifecycle.post_worker_init,
            "worker_exit": lifecycle.worker_exit,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from gateway import create_app

        return create_app()
