"""gunicorn settings for the gateway: gthread workers, per-worker service lifecycle."""

import os

from gateway.lifecycle import post_worker_init, worker_exit  # noqa: F401 - gunicorn reads these hooks

worker_class = "gthread"
workers = int(os.environ.get("GATEWAY_SERVER_WORKERS", "2"))
threads = int(os.environ.get("GATEWAY_SERVER_THREADS", "64"))
bind = f"{os.environ.get('GATEWAY_SERVER_HOST', '127.0.0.1')}:{os.environ.get('GATEWAY_SERVER_PORT', '8080')}"
timeout = 120  # gthread heartbeats from its main loop, so long streams are unaffected
graceful_timeout = 30
keepalive = 5
control_socket_disable = True  # gunicorn 27 otherwise shares ~/.gunicorn/gunicorn.ctl between instances
