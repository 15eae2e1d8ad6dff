"""Application logs as one JSON object per line (`[server] log_format = "json"`), gunicorn's included."""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

from gateway.config import Settings


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "pid", "request_id"?, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        from gateway.observability.wsgi_middleware import current

        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        request = current()
        if request is not None and request.request_id:
            entry["request_id"] = request.request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(settings: Settings) -> dict[str, Any] | None:
    """gunicorn's `logconfig_dict` for JSON logs (root, gunicorn.error, gunicorn.access), or None for text."""
    if settings.server.log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    quiet = {"level": "INFO", "handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": quiet, "gunicorn.access": quiet},
    }
