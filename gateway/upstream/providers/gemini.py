"""The Gemini API (`{base_url}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`).

System messages become `systemInstruction`; the rest `contents` with `user` / `model` roles
(consecutive same-role turns merged). Images go as `inlineData` (data URLs only: the API does not
fetch http URLs). Tool calls are `functionCall` parts and tool messages `functionResponse` parts,
matched by id and name; a call's `thoughtSignature` travels in `reasoning_details` and is sent
back on its call. Tools are `functionDeclarations` (gateway.upstream.providers.gemini_schema says
what of JSON Schema is kept). `cache_control` and `parallel_tool_calls` have no equivalent and are
dropped. The answer side is gateway.upstream.providers.gemini_answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from gateway.upstream.providers import gemini_answer
from gateway.upstream.providers.base import ProviderWire, WireError, WireRequest, join_url, refuse
from gateway.upstream.providers.chat_parts import (
    content_parts,
    data_url,
    function_tools,
    image_url,
    max_output_tokens,
    reasoning_effort,
    refuse_no_equivalent,
    stop_sequences,
    text_of,
    tool_arguments,
)
from gateway.upstream.providers.gemini_schema import gemini_schema

THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
DEFAULT_API_VERSION = "v1beta"  # the path version (`api_version` overrides it; google-genai 3 uses v1)
MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def translate_request(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent body of a prepared chat body."""
    refuse_no_equivalent(body, "Gemini")
    system, contents = split_contents(body.get("messages") or [])
    wire: dict[str, Any] = {"contents": contents}
    if system:
        wire["systemInstruction"] = {"parts": [{"text": system}]}
    functions = function_tools(body)
    if functions:
        wire["tools"] = [{"functionDeclarations": [declaration(tool, index) for index, tool in enumerate(functions)]}]
    if (choice := tool_config(body.get("tool_choice"))) is not None:
        wire["toolConfig"] = {"functionCallingConfig": choice}
    wire["generationConfig"] = generation_config(body)
    return wire


def split_contents(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """(system instruction, contents) of chat messages."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for functionResponse
    signatures: dict[str, str] = {}  # tool call id -> thoughtSignature
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text_of(message.get("content")))
            continue
        role, parts = content_of(message, f"messages[{index}]", names, signatures)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return "\n\n".join(system), contents


def content_of(message: dict[str, Any], param: str, names: dict[str, str],
               signatures: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """(role, parts) of one chat message."""
    role = message.get("role")
    if role == "tool":
        call_id = str(message.get("tool_call_id") or "")
        if call_id not in names:
            raise refuse(f"{param}.tool_call_id", "no earlier assistant tool call has this id.")
        response = {"id": call_id, "name": names[call_id], "response": {"result": text_of(message.get("content"))}}
        return "user", [{"functionResponse": response}]
    if role == "user":
        return "user", [user_part(part, f"{param}.content[{number}]")
                        for number, part in enumerate(content_parts(message.get("content")))]
    if role == "assistant":
        signatures.update(gemini_answer.signatures_of(message.get("reasoning_details")))
        return "model", model_parts(message, param, names, signatures)
    raise refuse(f"{param}.role", f"Gemini has no {role!r} role.")


def user_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    """A text or inline image part."""
    if part.get("type") == "text":
        return {"text": str(part.get("text", ""))}
    if part.get("type") == "image_url":
        inline = data_url(image_url(part))
        if inline is None:
            raise refuse(param, "Gemini takes images inline: send a base64 data URL.")
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    raise refuse(param, f"Gemini cannot take a {part.get('type')!r} part.")


def model_parts(message: dict[str, Any], param: str, names: dict[str, str],
                signatures: dict[str, str]) -> list[dict[str, Any]]:
    """The model turn's text, then its function calls (with their thought signatures)."""
    text = text_of(message.get("content"))
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    for number, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        call_id = str(call.get("id") or "")
        names[call_id] = str(function.get("name"))
        args = tool_arguments(function.get("arguments"), f"{param}.tool_calls[{number}].function.arguments")
        part: dict[str, Any] = {"functionCall": {"id": call_id, "name": names[call_id], "args": args}}
        if call_id in signatures:
            part["thoughtSignature"] = signatures[call_id]
        parts.append(part)
    return parts


def declaration(tool: dict[str, Any], index: int) -> dict[str, Any]:
    """One functionDeclaration."""
    declared: dict[str, Any] = {"name": tool.get("name")}
    if tool.get("description"):
        declared["description"] = tool["description"]
    if tool.get("parameters") and (tool["parameters"].get("properties") or tool["parameters"].get("$ref")):
        declared["parameters"] = gemini_schema(tool["parameters"], f"tools[{index}].function.parameters")
    return declared


def tool_config(choice: Any) -> dict[str, Any] | None:
    """OpenAI's tool_choice as functionCallingConfig."""
    if choice is None:
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"mode": "ANY", "allowedFunctionNames": [(choice.get("function") or {}).get("name")]}
    if choice not in MODES:
        raise refuse("tool_choice", "must be auto, required, none or a named function.")
    return {"mode": MODES[choice]}


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """maxOutputTokens, temperature, topP, stopSequences, the JSON mode and thinking."""
    config: dict[str, Any] = {}
    if (cap := max_output_tokens(body)) is not None:
        config["maxOutputTokens"] = cap
    config.update({wire: body[name] for name, wire in (("temperature", "temperature"), ("top_p", "topP"))
                   if body.get(name) is not None})
    if (stops := stop_sequences(body.get("stop"))) is not None:
        config["stopSequences"] = stops
    config.update(json_mode(body.get("response_format")))
    if (effort := reasoning_effort(body)) is not None:
        budget = THINKING_BUDGETS[effort]
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def json_mode(response_format: Any) -> dict[str, Any]:
    """responseMimeType (and responseSchema for json_schema)."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return {"responseMimeType": "application/json",
                "responseSchema": gemini_schema(schema, "response_format.json_schema.schema")}
    raise refuse("response_format", f"Gemini has no {kind!r} mode.")


class GeminiAdapter:
    """Google's Gemini API."""

    name = "gemini"

    def build_request(self, body: dict[str, Any], upstream_model: str, provider: ProviderWire) -> WireRequest:
        """POST generateContent (or streamGenerateContent?alt=sse) with x-goog-api-key."""
        stream = bool(body.get("stream"))
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        version = provider.api_version or DEFAULT_API_VERSION
        url = join_url(provider.base_url, f"{version}/models/{quote(upstream_model, safe='')}:{method}")
        headers = {"content-type": "application/json"}
        if provider.api_key:
            headers["x-goog-api-key"] = provider.api_key
        return WireRequest("POST", url, {**headers, **provider.extra_headers}, translate_request(body), stream)

    def parse_response(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """The canonical completion of a GenerateContentResponse."""
        return gemini_answer.completion_of(body, str(body.get("modelVersion") or ""))

    def stream_translator(self, model: str) -> gemini_answer.GeminiStream:
        """A fresh translator of streamed GenerateContentResponses."""
        return gemini_answer.GeminiStream(model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: Any) -> WireError:
        """Google's `{"error": {"code", "status", "message"}}`."""
        return gemini_answer.error_of(status, headers, body)


GEMINI = GeminiAdapter()
