"""How large a request body may be, by route: the one rule the serving worker and Flask both apply.

Upload routes take larger bodies than the JSON API: audio (transcriptions, translations) up to
`[uploads] audio_max_bytes`, image edits and variations up to `image_max_bytes`, batch input files
(`POST /files`) up to `file_max_bytes`; every other route up to `[server] max_body_bytes`. The
routes count under every base path the OpenAI-compatible blueprints are mounted at (`/v1`,
`/api/v1`) and under a profile's `/api/v1/openai/{scope}/{profile}`. The worker applies the rule
to the request line's target before it reads the body (a 413 from the head, or as soon as the
bytes pass the limit); Flask applies it again to `request.path` (`request.max_content_length`),
which covers a server other than `gateway serve`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from flask import Flask, request

from gateway.config import Settings

BASE_PATHS = r"/v1|/api/v1|/api/v1/openai/[^/]+/[^/]+"  # gateway.api.API_PREFIXES and the profile routes
UPLOAD_ROUTE = re.compile(
    rf"(?:{BASE_PATHS})/(?:(?P<audio>audio/(?:transcriptions|translations))"
    r"|(?P<image>images/(?:edits|variations))|(?P<file>files))/?"
)


def body_limit(path: str, settings: Settings) -> int:
    """The largest body, in bytes, a request to this (decoded) path may carry."""
    match = UPLOAD_ROUTE.fullmatch(path)
    uploads = settings.uploads
    if match is None:
        return settings.server.max_body_bytes
    if match["audio"]:
        return uploads.audio_max_bytes
    return uploads.image_max_bytes if match["image"] else uploads.file_max_bytes


def target_path(target: str) -> str:
    """The decoded path of a request line's target (origin form or absolute form), as the WSGI app sees it."""
    return unquote(urlsplit(target).path if "://" in target else target.split("?", 1)[0], errors="replace")


def init_app(app: Flask, settings: Settings) -> None:
    """Give each request its route's body limit (werkzeug answers 413 past it, before a view reads the body)."""

    @app.before_request
    def limit_body() -> None:
        request.max_content_length = body_limit(request.path, settings)
