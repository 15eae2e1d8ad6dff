"""The per-route body limit (gateway.serving.body_limits): the table, request targets, and Flask's 413 by dialect."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from gateway.config import Settings
from gateway.serving.body_limits import body_limit, target_path
from tests.upload_echo import ECHO_PATH, multipart, with_echo

LIMITS = {"server": {"max_body_bytes": 5000},
          "uploads": {"audio_max_bytes": 3000, "image_max_bytes": 7000, "file_max_bytes": 9000}}

ROUTES = [
    ("/v1/audio/transcriptions", 3000),
    ("/v1/audio/translations", 3000),
    ("/api/v1/audio/transcriptions", 3000),
    ("/api/v1/openai/acme/default/audio/translations", 3000),
    ("/v1/images/edits", 7000),
    ("/api/v1/images/variations", 7000),
    ("/v1/files", 9000),
    ("/api/v1/files/", 9000),
    ("/v1/files/file-abc", 5000),  # a file by id: no upload
    ("/v1/images/generations", 5000),  # JSON
    ("/v1/audio/speech", 5000),  # JSON
    ("/v1/chat/completions", 5000),
    ("/v2/audio/transcriptions", 5000),  # no such base path
    ("/v1/audio/transcriptions/x", 5000),
    ("/healthz", 5000),
]


@pytest.mark.parametrize(("path", "limit"), ROUTES)
def test_each_route_has_its_limit(make_settings: Callable[..., Settings], path: str, limit: int) -> None:
    assert body_limit(path, make_settings(**LIMITS)) == limit


@pytest.mark.parametrize(("target", "path"), [
    ("/v1/audio/transcriptions?x=1", "/v1/audio/transcriptions"),
    ("/v1/audio%2Ftranscriptions", "/v1/audio/transcriptions"),  # as gunicorn decodes PATH_INFO
    ("http://gateway.example/api/v1/files?purpose=batch", "/api/v1/files"),
    ("*", "*"),
    ("", ""),
])
def test_request_targets_become_the_path_the_app_sees(target: str, path: str) -> None:
    assert target_path(target) == path


def test_defaults_are_openai_sizes(make_settings: Callable[..., Settings]) -> None:
    uploads = make_settings().uploads
    assert uploads.audio_max_bytes == 26 * 2**20 and uploads.image_max_bytes == 50 * 2**20
    assert uploads.file_max_bytes == 200 * 2**20 and uploads.spool_threshold_bytes == 2**20


@pytest.fixture
def upload_app(make_settings: Callable[..., Settings], make_app: Callable[[Settings], Flask]) -> Flask:
    app = make_app(make_settings(**LIMITS))
    for prefix in ("/v1", "/api/v1"):  # the real upload routes, once they exist, win over these: same 413
        with_echo(app, prefix)
    return app


@pytest.mark.parametrize(("prefix", "code"), [("/v1", "request_too_large"), ("/api/v1", 413)])
def test_flask_answers_413_past_the_route_limit_in_each_dialect(upload_app: Flask, auth_headers: dict[str, str],
                                                               prefix: str, code: Any) -> None:
    body = multipart(3500)  # over audio's 3000, under the server's 5000
    answer = upload_app.test_client().post(f"{prefix}/audio/transcriptions", data=body, headers=auth_headers,
                                           content_type="multipart/form-data; boundary=b0undary")
    assert answer.status_code == 413
    assert answer.json["error"]["code"] == code
    assert answer.json["error"]["type"] == "invalid_request_error"
    assert set(answer.json) == {"error"}


def test_a_route_without_its_own_limit_keeps_the_server_limit(upload_app: Flask, auth_headers: dict[str, str]) -> None:
    answer = upload_app.test_client().post("/v1/chat/completions", data=b"{" + b" " * 6000 + b"}",
                                           headers=auth_headers, content_type="application/json")
    assert answer.status_code == 413 and answer.json["error"]["code"] == "request_too_large"


def test_a_large_file_part_is_parsed_to_disk(make_settings: Callable[..., Settings],
                                             make_app: Callable[[Settings], Flask]) -> None:
    """werkzeug's form parser puts a file part past 500 KB in a temporary file, reading the body in pieces."""
    app = with_echo(make_app(make_settings(uploads={"audio_max_bytes": 8 * 2**20})))
    size = 6 * 2**20
    body = multipart(size)
    answer = app.test_client().post(ECHO_PATH, input_stream=io.BytesIO(body),
                                    content_length=len(body), content_type="multipart/form-data; boundary=b0undary")
    assert answer.status_code == 200, answer.json
    assert answer.json["size"] == size and answer.json["on_disk"] and answer.json["model"] == "whisper-1"
    print(f"\nform parsing of a {size} byte file part: peak {answer.json['parse_peak']} bytes traced")
    assert answer.json["parse_peak"] < size // 4
