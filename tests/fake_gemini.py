"""A loopback Gemini API (`/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`; `/v1` too).

Written from Google's API reference: the key in `x-goog-api-key` (or `?key=`), `contents` with
`user` / `model` roles, `functionDeclarations` whose schemas must stay in the API's subset (an
unknown keyword such as `additionalProperties` is the API's 400), `functionResponse` after its
`functionCall`. It answers text, a `functionCall` of the first declared function, a thought part
when `thinkingConfig.includeThoughts` is on, and `usageMetadata` with cached and thought tokens.
Field names may come in either spelling (google-genai 3 sends snake_case). Errors use Google's `{"error": {"code", "message", "status"}}` (`error(429, ..., retry_delay="7s")`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fake_anthropic import pieces, tool_input
from tests.provider_fake import Events, Json, ProviderFake, Received, Reply, first_error

PATH = re.compile(r"^/v1(?:beta)?/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)(?:\?(?P<query>.*))?$")
STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "properties", "required", "anyOf",
               "minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength", "pattern",
               "minimum", "maximum", "default", "example", "propertyOrdering"}
TEXT = "Hello from Gemini"


def error(status: int, message: str, retry_delay: str | None = None, reason: str | None = None) -> Json:
    """Google's error body (with a RetryInfo detail for `retry_delay`, an ErrorInfo one for `reason`)."""
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}] if retry_delay else []
    if reason:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                        "domain": "googleapis.com"})
    return Json({"error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN"),
                           **({"details": details} if details else {})}}, status)


def response(parts: list[dict[str, Any]], finish: str | None = "STOP", model: str = "gemini-fake",
             thoughts: int = 0, final: bool = True) -> dict[str, Any]:
    """A GenerateContentResponse (usage on the final one)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": "resp-fake01"}
    usage = {"promptTokenCount": 12, "candidatesTokenCount": 9, "totalTokenCount": 21 + thoughts,
             "cachedContentTokenCount": 4, **({"thoughtsTokenCount": thoughts} if thoughts else {})}
    body["usageMetadata"] = usage if final else {"promptTokenCount": 12, "totalTokenCount": 12}
    return body


def stream_of(answer: dict[str, Any]) -> Events:
    """The SSE stream of an answer: text in two pieces, other parts whole, finish and usage last."""
    candidate = answer["candidates"][0]
    model = answer["modelVersion"]
    thoughts = answer["usageMetadata"].get("thoughtsTokenCount", 0)
    events: list[tuple[str | None, Any]] = []
    for part in candidate["content"]["parts"]:
        split = pieces(part["text"], 2) if "text" in part else [None]
        for piece in split:
            sent = part if piece is None else {**part, "text": piece}
            events.append((None, response([sent], None, model, final=False)))
    events.append((None, response([{"text": ""}], candidate.get("finishReason"), model, thoughts)))
    return Events(events)


def camel_case(value: Any, key: str = "") -> Any:
    """A body with every field name in lowerCamelCase, as the API reads both spellings (map keys kept)."""
    if isinstance(value, list):
        return [camel_case(item) for item in value]
    if not isinstance(value, dict) or key in ("args", "response"):
        return value
    if key == "properties":
        return {name: camel_case(item) for name, item in value.items()}
    return {_camel(name): camel_case(item, _camel(name)) for name, item in value.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def schema_problem(schema: Any) -> str | None:
    """The first keyword outside Gemini's Schema subset."""
    if not isinstance(schema, dict):
        return None
    unknown = sorted(set(schema) - SCHEMA_KEYS)
    if unknown:
        return unknown[0]
    children = [*(schema.get("properties") or {}).values(), schema.get("items"), *(schema.get("anyOf") or [])]
    return next((problem for child in children if (problem := schema_problem(child))), None)


class FakeGemini(ProviderFake):
    """Google's Gemini API on a loopback port."""

    def answer(self, request: Received) -> Reply:
        """Checks, then a GenerateContentResponse (or its stream)."""
        match = PATH.match(request.path)
        body = camel_case(request.body) if isinstance(request.body, dict) else {}
        key = request.header("x-goog-api-key") or dict(re.findall(r"(\w+)=([^&]*)", (match and match["query"]) or "")
                                                        ).get("key")
        refused = self.refusal(match, key, body)
        if refused is not None:
            return refused
        answer = self.response_for(body, match["model"])
        return stream_of(answer) if match["method"] == "streamGenerateContent" else Json(answer)

    def refusal(self, match: re.Match[str] | None, key: str | None, body: dict[str, Any]) -> Reply | None:
        """The error the real API answers first, if any."""
        declarations = [item for tool in body.get("tools") or [] for item in tool.get("functionDeclarations") or []]
        problem = next((found for item in declarations if (found := schema_problem(item.get("parameters")))), None)
        roles = {content.get("role") for content in body.get("contents") or []}
        return first_error([
            (match is None, lambda: error(404, "Not found")),
            (key != self.api_key, lambda: error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")),
            (not body.get("contents"), lambda: error(400, "* GenerateContentRequest.contents: contents is not specified")),
            (not roles <= {"user", "model"}, lambda: error(400, "Please use a valid role: user, model.")),
            (problem is not None, lambda: error(400, f'Invalid JSON payload received. Unknown name "{problem}"')),
        ])

    def response_for(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        """Text, a function call, or the answer to a function response; a thought first when asked."""
        parts = (body["contents"][-1].get("parts") or [])
        answered = [part["functionResponse"] for part in parts if "functionResponse" in part]
        declarations = [item for tool in body.get("tools") or [] for item in tool.get("functionDeclarations") or []]
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        thinking = ((body.get("generationConfig") or {}).get("thinkingConfig") or {}).get("includeThoughts")
        out: list[dict[str, Any]] = [{"text": "Thinking it over.", "thought": True}] if thinking else []
        if answered:
            out.append({"text": f"The tool said: {json.dumps(answered[0].get('response'))}"})
        elif declarations and mode != "NONE":
            declared = declarations[0]
            out.append({"functionCall": {"id": "fc-fake01", "name": declared["name"],
                                         "args": tool_input(declared.get("parameters") or {})},
                        "thoughtSignature": "c2lnLWZha2U="})
        else:
            out.append({"text": TEXT})
        return response(out, "STOP", model, thoughts=5 if thinking else 0)
