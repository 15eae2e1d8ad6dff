"""What a media request is priced on besides tokens, estimated from the request and read from the answer: pure.

Each endpoint has one unit (gateway.accounting.money prices it): images made (`image:SIZE/QUALITY`),
audio seconds transcribed or translated (`audio_second`), characters of speech input (`speech_character`),
rerank search units (`search_unit`) and moderation requests (`moderation`). Holds are estimated from the
request (the image count, a WAV header's duration, else the model's `max_audio_seconds`); charges are
read from the upstream's answer where it reports them (`usage` tokens or seconds, verbose_json's
`duration`, Cohere's billed search units), else from the estimate.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

from gateway.accounting.usage import Usage

IMAGE, AUDIO_SECOND, SPEECH_CHARACTER, SEARCH_UNIT, MODERATION = (
    "image", "audio_second", "speech_character", "search_unit", "moderation")
DOCUMENTS_PER_SEARCH_UNIT = 100  # Cohere's search unit: one query over up to 100 documents
QUALIFIER = re.compile(r"[A-Za-z0-9_.-]{1,24}")  # a size or quality that may name a price
WAV_HEADER_BYTES = 4096  # how much of an upload is read to find a WAV header's format and data chunks


def image_unit(size: Any, quality: Any) -> str:
    """The unit of one image of this size and quality: `image:SIZE/QUALITY`, `image:SIZE` or `image`.

    Only sizes and qualities of the shape OpenAI names them (`1024x1024`, `hd`) qualify the unit: the
    usage row's column stays short, whatever a client sends.
    """
    if not _qualifier(size):
        return IMAGE
    return f"{IMAGE}:{size}/{quality}" if _qualifier(quality) else f"{IMAGE}:{size}"


def _qualifier(value: Any) -> bool:
    """Whether a size or quality names one (not `auto`, not empty, short and plain)."""
    return isinstance(value, str) and value != "auto" and QUALIFIER.fullmatch(value) is not None


def wav_seconds(head: bytes) -> float | None:
    """The duration a WAV file's header tells (its data chunk's size over its byte rate), or None if it is not one."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, byte_rate = 12, None
    while position + 8 <= len(head):
        chunk_id, size = head[position:position + 4], struct.unpack_from("<I", head, position + 4)[0]
        if chunk_id == b"fmt " and position + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, position + 16)[0]
        elif chunk_id == b"data":
            return size / byte_rate if byte_rate else None
        position += 8 + size + (size & 1)
    return None


def token_usage(usage: Any) -> Usage:
    """The tokens an answer's `usage` reports (`input_tokens`/`output_tokens`, or `prompt_tokens`/`total_tokens`)."""
    if not isinstance(usage, dict):
        return Usage()
    given = {key: value for key, value in usage.items() if isinstance(value, int) and not isinstance(value, bool)}
    input_tokens = given.get("input_tokens", given.get("prompt_tokens", 0))
    output_tokens = given.get("output_tokens", given.get("completion_tokens", 0))
    if not input_tokens and not output_tokens:
        input_tokens = given.get("total_tokens", 0)  # vLLM's and Jina's rerank usage
    return Usage(input_tokens, output_tokens)


def with_units(tokens: Usage, unit: str, units: float, estimated: bool = False) -> Usage:
    """Token usage with the units it is also priced on."""
    return Usage(tokens.input_tokens, tokens.output_tokens, estimated=estimated, unit=unit, units=units)


def image_usage(answer: Any, unit: str) -> Usage:
    """An images answer's usage: one unit per image returned, plus the tokens it reports (gpt-image-1)."""
    answer = answer if isinstance(answer, dict) else {}
    images = answer.get("data") if isinstance(answer.get("data"), list) else []
    return with_units(token_usage(answer.get("usage")), unit, len(images))


def audio_usage(answer: Any, estimated_seconds: float) -> Usage:
    """A transcription's or translation's usage: the seconds or tokens its `usage` reports, verbose_json's
    `duration`, else the estimate (a text, srt or vtt answer reports neither)."""
    answer = answer if isinstance(answer, dict) else {}
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    seconds = usage.get("seconds") if usage.get("type") == "duration" else answer.get("duration")
    tokens = token_usage(usage) if usage.get("type") == "tokens" else Usage()
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
        return with_units(tokens, AUDIO_SECOND, float(seconds))
    if tokens.total_tokens:
        return with_units(tokens, AUDIO_SECOND, 0.0)
    return with_units(tokens, AUDIO_SECOND, estimated_seconds, estimated=True)


def search_units(documents: int) -> int:
    """The search units of one query over this many documents (at least one)."""
    return max(1, math.ceil(documents / DOCUMENTS_PER_SEARCH_UNIT))


def rerank_usage(answer: Any, documents: int) -> Usage:
    """A rerank answer's usage: Cohere's `meta.billed_units.search_units`, else the documents' search units,
    plus the tokens it reports (vLLM and Jina)."""
    answer = answer if isinstance(answer, dict) else {}
    meta = answer.get("meta") if isinstance(answer.get("meta"), dict) else {}
    billed = meta.get("billed_units") if isinstance(meta.get("billed_units"), dict) else {}
    reported = billed.get("search_units")
    units = reported if isinstance(reported, (int, float)) and not isinstance(reported, bool) else None
    return with_units(token_usage(answer.get("usage")), SEARCH_UNIT, search_units(documents) if units is None
                      else float(units))
