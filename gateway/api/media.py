"""Images, audio, moderations and rerank: OpenAI's (and Cohere's rerank) request and answer shapes, relayed.

Each route is routed to the model's deployment, retried and metered as chat is (gateway.api.chat.admitted,
gateway.upstream.media); what it is priced on besides tokens is gateway.accounting.media_units'. The text a
model reads (an image or transcription prompt, speech input, rerank's query and documents) goes through the
input guardrails first, as a chat message does; a moderation's input is not checked (it is there to be judged). Answers
go back as the upstream sent them (JSON with the public model id where it names one, text formats as
text/plain, speech as audio streamed while it arrives).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from gateway import services
from gateway.accounting import media_units as units
from gateway.accounting.meter import Meter
from gateway.accounting.usage import Usage
from gateway.api import guarded
from gateway.api import media_forms as forms
from gateway.api.chat import admitted
from gateway.api.http import authenticated_blueprint, json_object, with_headers
from gateway.config import ModelSettings
from gateway.errors import InvalidRequest
from gateway.upstream import routing
from gateway.upstream.media import Priced, open_audio, prepare_media, relay_answer, relay_audio
from gateway.upstream.multipart import MultipartBody
from gateway.upstream.prepared import PreparedRequest
from gateway.upstream.routing import Route

bp = authenticated_blueprint("media", __name__)
DEFAULT_MODEL = ModelSettings()


@bp.post("/images/generations")
def image_generations() -> Response:
    """Images from a prompt (JSON), priced per image by size and quality, plus the tokens the upstream reports."""
    body = checked_json("images/generations")
    prompt = forms.required_text(body, "prompt")
    count = forms.whole_number(body, "n", 1, 1, forms.MAX_IMAGES)
    return images("images/generations", body, None, prompt, count)


@bp.post("/images/edits")
def image_edits() -> Response:
    """Images edited from uploads (multipart `image` or `image[]`, optional `mask`) and a prompt."""
    fields, upload = checked_upload("images/edits", ("image", "image[]", "mask", "markup"), "image")
    prompt = forms.required_text(fields, "prompt")
    return images("images/edits", fields, upload, prompt, forms.whole_number(fields, "n", 1, 1, forms.MAX_IMAGES))


@bp.post("/images/variations")
def image_variations() -> Response:
    """Variations of one uploaded image (multipart `image`)."""
    fields, upload = forms.upload(("image",), "image")
    return images("images/variations", fields, upload, "", forms.whole_number(fields, "n", 1, 1, forms.MAX_IMAGES))


def images(path: str, body: dict[str, Any], upload: MultipartBody | None, prompt: str, count: int) -> Response:
    """Relay an images request held for `count` images of its size and quality (and their output tokens)."""
    if forms.flag(body, "stream"):
        raise InvalidRequest("Streamed images (partial images) are not supported by this gateway; omit `stream`.",
                             param="stream", code="unsupported_parameter")
    unit = units.image_unit(body.get("size"), body.get("quality"))
    return relayed(path, body, upload, unit, count, prompt, count,
                   lambda content, _: units.image_usage(_json(content), unit))


@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    """Speech to text in its language (multipart `file`); json, text, srt, vtt or verbose_json."""
    return heard("audio/transcriptions")


@bp.post("/audio/translations")
def translations() -> Response:
    """Speech to English text (multipart `file`); json, text, srt, vtt or verbose_json."""
    return heard("audio/translations")


def heard(path: str) -> Response:
    """Relay a transcription or translation, held for the upload's duration (a WAV header's, else the most)."""
    fields, upload = checked_upload(path, ("file",), "file")
    answer_format = forms.one_of(fields, "response_format", forms.TRANSCRIPTION_FORMATS, "json")
    if forms.flag(fields, "stream"):
        raise InvalidRequest("Streamed transcriptions are not supported by this gateway; omit `stream`.",
                             param="stream", code="unsupported_parameter")
    model = services.settings().models.get(fields.get("model"))  # an unknown one is refused at admission, with its row
    seconds = forms.audio_seconds(upload, (model or DEFAULT_MODEL).max_audio_seconds)
    return relayed(path, fields, upload, units.AUDIO_SECOND, seconds, fields.get("prompt", ""), 1,
                   lambda content, kind: units.audio_usage(
                       None if answer_format in forms.TEXT_FORMATS else _json(content), seconds))


@bp.post("/audio/speech")
def speech() -> Response:
    """Text to speech (JSON in); the audio is streamed to the client as the upstream sends it."""
    body = checked_json("audio/speech")
    text = forms.required_text(body, "input", forms.MAX_SPEECH_CHARACTERS)
    forms.required_text(body, "voice")
    forms.one_of(body, "response_format", forms.SPEECH_FORMATS, "mp3")
    candidates, meter = _admitted("audio/speech", body, units.SPEECH_CHARACTER, len(text), text, 0)
    route, answer = open_audio(services.router(), candidates, meter)
    used = units.with_units(Usage(), units.SPEECH_CHARACTER, len(text))  # charged per character of its input
    response = Response(relay_audio(answer, route, meter, used), mimetype=answer.content_type)
    return with_headers(response, meter)


@bp.post("/moderations")
def moderations() -> Response:
    """Classify text or images as OpenAI's moderation models do; free unless the model sets `moderation_price`."""
    body = json_object()
    given = body.get("input")
    if not given or not isinstance(given, (str, list)):
        raise InvalidRequest("Missing required parameter: 'input' (a string or a list).", param="input",
                             code="missing_required_parameter")
    text = given if isinstance(given, str) else json.dumps(given)
    return relayed("moderations", body, None, units.MODERATION, 1, text, 0,
                   lambda content, _: units.with_units(units.token_usage(_json(content).get("usage")),
                                                       units.MODERATION, 1))


@bp.post("/rerank")
def rerank() -> Response:
    """Rerank documents for a query (Cohere, Jina and vLLM's shape), priced per search unit."""
    body = checked_json("rerank")
    query = forms.required_text(body, "query")
    documents = forms.documents_of(body)
    if "top_n" in body:
        forms.whole_number(body, "top_n", 1, 1, len(documents))
    return relayed("rerank", body, None, units.SEARCH_UNIT, units.search_units(len(documents)),
                   query + "".join(documents), 0,
                   lambda content, _: units.rerank_usage(_json(content), len(documents)))


def checked_json(path: str) -> dict[str, Any]:
    """The JSON body through the input guardrails (redacted, or a block raised) before anything reads it."""
    body = json_object()
    return guarded.checked_input(path, body, body.get("model"))


def checked_upload(path: str, file_fields: tuple[str, ...], required: str) -> tuple[dict[str, str], MultipartBody]:
    """The multipart request's fields through the input guardrails, the upstream's body carrying what they
    redacted (files are not checked)."""
    fields, upload = forms.upload(file_fields, required)
    checked = guarded.checked_input(path, fields, fields.get("model"))
    for name, value in checked.items():
        if value is not fields.get(name):
            upload = upload.with_field(name, value)
    return checked, upload


def relayed(path: str, body: dict[str, Any], upload: MultipartBody | None, unit: str, held_units: float,
            input_text: str, outputs: int, priced: Priced) -> Response:
    """Admit, route and relay one JSON or text answer, charged with what `priced` reads from it."""
    candidates, meter = _admitted(path, body, unit, held_units, input_text, outputs)
    route, content, kind = relay_answer(services.router(), candidates, meter, priced, upload)
    if kind != "application/json":
        return with_headers(Response(content, mimetype=kind if kind.startswith("text/") else "text/plain"), meter)
    return with_headers(Response(_public(content, route), mimetype="application/json"), meter)


def _admitted(path: str, body: dict[str, Any], unit: str, held_units: float, input_text: str,
              outputs: int) -> tuple[list[PreparedRequest], Meter]:
    """The prepared candidates and the admitted meter (the chat rule: gateway.api.chat.admitted)."""
    fields = {key: value for key, value in body.items() if key != "models"}

    def prepared() -> list[PreparedRequest]:
        routes = routing.candidates(services.settings(), body)
        # output tokens are held (and counted against the key's tpm) only where a model prices them (gpt-image-1)
        held_output = max(route.settings.max_output_tokens if route.settings.output_price_per_mtok else 0
                          for route in routes) * outputs
        return prepare_media(routes, path, fields, services.settings().providers, unit, held_units, input_text,
                             held_output)

    return admitted(path, body, False, prepared=prepared)


def _json(content: bytes) -> dict[str, Any]:
    """A JSON answer's object ({} when it is not one: nothing is read from it)."""
    try:
        answer = json.loads(content)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _public(content: bytes, route: Route) -> bytes:
    """A JSON answer with the public model id where it names a model (moderations, rerank); else as sent."""
    answer = _json(content)
    if "model" not in answer:
        return content
    answer["model"] = route.model_id
    return json.dumps(answer, separators=(",", ":")).encode()
