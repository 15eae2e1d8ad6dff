"""Reading media requests: multipart uploads (spooled by werkzeug, never held whole) and their checked fields.

Uploads are parsed by werkzeug (`request.files`: parts past 500 KB go to temporary files); the
upstream gets them again as a MultipartBody (gateway.upstream.multipart) that reads them in chunks.
Every problem is an OpenAI-shaped 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from flask import request

from gateway.accounting.media_units import WAV_HEADER_BYTES, wav_seconds
from gateway.api.http import attribute
from gateway.errors import InvalidRequest
from gateway.upstream.multipart import FilePart, MultipartBody

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TEXT_FORMATS = ("text", "srt", "vtt")  # answered as text/plain
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MAX_SPEECH_CHARACTERS = 4096  # OpenAI's limit on `input`
MAX_IMAGES = 10


def upload(file_fields: tuple[str, ...], required: str) -> tuple[dict[str, str], MultipartBody]:
    """The multipart request's text fields (each field's last value) and its body for the upstream.

    `file_fields` are the form fields that may hold files (in order); `required` must hold one.
    """
    if request.mimetype != "multipart/form-data":
        raise InvalidRequest("This endpoint takes a multipart/form-data body (its file as an upload).",
                             code="invalid_content_type")
    pairs = [(name, value) for name, value in request.form.items(multi=True) if isinstance(name, str)]  # a part
    # whose name werkzeug could not read is dropped
    fields = dict(pairs)
    attribute(fields)
    files = [FilePart(name, storage.filename or name, storage.mimetype or "application/octet-stream", storage.stream)
             for name in file_fields for storage in request.files.getlist(name)]
    if not any(part.field in (required, f"{required}[]") for part in files):
        raise InvalidRequest(f"Missing required parameter: {required!r} (a file).", param=required,
                             code="missing_required_parameter")
    return fields, MultipartBody(pairs, files)


def required_text(body: dict[str, Any], name: str, most: int | None = None) -> str:
    """A required non-empty string field (at most `most` characters)."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"Missing required parameter: {name!r} (a non-empty string).", param=name,
                             code="missing_required_parameter")
    if most is not None and len(value) > most:
        raise InvalidRequest(f"{name!r} is longer than {most} characters.", param=name, code="string_above_max_length")
    return value


def one_of(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    """An optional field that must be one of `allowed`."""
    value = body.get(name, default)
    if value not in allowed:
        raise InvalidRequest(f"Invalid value for {name!r}: must be one of {', '.join(allowed)}.", param=name,
                             code="invalid_value")
    return value


def whole_number(body: dict[str, Any], name: str, default: int, least: int, most: int) -> int:
    """An optional integer field (a form field's text too) within [least, most]."""
    value = body.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise InvalidRequest(f"Invalid value for {name!r}: an integer from {least} to {most}.", param=name,
                             code="invalid_value")
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    """An optional boolean field (a form field's `true`/`false` too)."""
    value = body.get(name, False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for {name!r}: true or false.", param=name, code="invalid_value")
    return value


def audio_seconds(body: MultipartBody, most: int) -> float:
    """The upload's duration from its WAV header, else `most` (what its hold assumes)."""
    stream = body.files[0].stream
    head = stream.read(WAV_HEADER_BYTES)
    stream.seek(0)
    seconds = wav_seconds(head)
    return min(seconds, most) if seconds is not None else float(most)


def documents_of(body: dict[str, Any]) -> list[str]:
    """Rerank's `documents`: strings, or objects with a `text` (Cohere v1, Jina); their texts."""
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise InvalidRequest("Missing required parameter: 'documents' (a non-empty list).", param="documents",
                             code="missing_required_parameter")
    texts = []
    for index, document in enumerate(documents):
        text = document.get("text") if isinstance(document, dict) else document
        if not isinstance(text, str):
            raise InvalidRequest("Each document must be a string or an object with a `text` string.",
                                 param=f"documents[{index}]", code="invalid_value")
        texts.append(text)
    return texts
