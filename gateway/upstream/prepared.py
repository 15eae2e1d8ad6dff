"""The one prepared upstream request: the exact body a route's upstream gets, computed once.

`prepare(route, path, body, provider, stream)` is pure: the client's body (or a tool-loop turn's)
with the model's defaults and system prompt (gateway.upstream.model_defaults), the output cap the
hold assumes (gateway.accounting.output_cap), the upstream model id, usage asked for on streams,
content flattened and `tool_choice` translated where the provider needs it. The meter holds what it
estimates (`PreparedRequest.estimate()`), and the relay or the loop sends `body` as it is; nothing
downstream re-derives it. A provider adapter translates a PreparedRequest into its wire format.
A fallback list (OpenRouter's `models`) is prepared per candidate (`prepare_candidates`): each
model has its own settings, and the hold covers the costliest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.accounting.meter import Estimate
from gateway.accounting.money import Price
from gateway.accounting.output_cap import (
    NO_OUTPUT_ENDPOINTS,
    choices,
    output_cap,
    requested_cap,
    with_output_cap,
)
from gateway.accounting.tokens import estimate_prompt_tokens, hold_prompt_tokens
from gateway.config import ProviderSettings
from gateway.upstream.model_defaults import with_model_defaults
from gateway.upstream.routing import Route


@dataclass(frozen=True)
class PreparedRequest:
    """One request as its upstream will receive it (`body` is never changed after preparing)."""

    route: Route
    path: str  # "chat/completions", "completions", "embeddings"
    body: dict[str, Any]
    stream: bool
    input_tokens: int  # the usage estimate of its input (rows without upstream usage, rate limits)
    held_input_tokens: int  # its input as a hold assumes it (gateway.accounting.tokens)
    output_tokens: int  # the most output it may produce: the cap sent times `n` (0: embeddings)
    held_output_tokens: int  # the output admission holds: output_tokens, or a stream's typical output
    # prepares the same source body for another route (None: only this one); set by whoever prepared it
    remake: Callable[[Route, ProviderSettings], PreparedRequest] | None = field(default=None, compare=False,
                                                                               repr=False)
    unit: str | None = None  # a media request's priced unit and how many its hold covers (gateway.upstream.media)
    held_units: float = 0.0

    @property
    def provider(self) -> str:
        """The provider table the request goes to."""
        return self.route.provider

    @property
    def read_timeout_s(self) -> float | None:
        """Its deployment's own read timeout (None: the provider's)."""
        return self.route.deployment.settings.timeout_s

    def on(self, route: Route, providers: Mapping[str, ProviderSettings]) -> PreparedRequest:
        """The same request prepared for another deployment of its model (the router's retries and choices).

        When both deployments' providers prepare a body alike (PREPARATION), only the upstream model id
        differs (the estimates never count it): the body is copied with it; else it is prepared again.
        """
        if route is self.route:
            return self
        if self.remake is None:
            raise ValueError("this request cannot be prepared for another deployment")
        provider = providers[route.provider]
        if "model" in self.body and preparation(provider) == preparation(providers[self.route.provider]):
            return PreparedRequest(route, self.path, {**self.body, "model": route.upstream_model}, self.stream,
                                   self.input_tokens, self.held_input_tokens, self.output_tokens,
                                   self.held_output_tokens, self.remake, self.unit, self.held_units)
        return self.remake(route, provider)

    def estimate(self) -> Estimate:
        """What the meter holds and counts for this request."""
        return Estimate(self.route.model_id, Price.of(self.route.settings), self.input_tokens,
                        self.held_input_tokens, self.output_tokens, self.held_output_tokens, self.unit,
                        self.held_units)


def prepare(
    route: Route, path: str, body: Mapping[str, Any], provider: ProviderSettings, stream: bool
) -> PreparedRequest:
    """The exact request `route`'s upstream gets for this client (or loop-turn) body."""
    capped = with_output_cap(dict(body), route.settings, path)
    sent = {key: value for key, value in with_model_defaults(capped, route.settings).items() if key != "models"}
    sent["model"] = route.upstream_model
    if stream or "stream" in sent:
        sent["stream"] = stream
    if stream:
        sent["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    if "messages" in sent:
        sent["messages"] = provider_messages(sent["messages"], provider)
    if not provider.tool_choice_required and sent.get("tool_choice") == "required":
        sent["tool_choice"] = required_as_accepted(sent.get("tools"))
    output = 0 if path in NO_OUTPUT_ENDPOINTS else output_cap(capped, route.settings, path) * choices(body)
    typical = route.settings.typical_output_tokens
    # a stream without its own cap is held for the model's typical output, and its hold grows as its output
    # passes it (gateway.accounting.meter.Meter.cover_output); a JSON answer cannot be stopped: its whole cap
    grows = stream and typical is not None and requested_cap(dict(body)) is None
    held_output = min(output, typical * choices(body)) if grows else output
    return PreparedRequest(route, path, sent, stream, estimate_prompt_tokens(sent), hold_prompt_tokens(sent), output,
                           held_output, lambda other, settings: prepare(other, path, body, settings, stream))


def prepare_candidates(
    routes: list[Route], path: str, body: Mapping[str, Any], providers: Mapping[str, ProviderSettings], stream: bool
) -> list[PreparedRequest]:
    """One prepared request per candidate route (the model, then its fallbacks), in order."""
    return [prepare(route, path, body, providers[route.provider], stream) for route in routes]


def preparation(provider: ProviderSettings) -> tuple[bool, ...]:
    """The provider settings that change how a body is prepared for it (here and for loop turns)."""
    return (provider.text_content, provider.empty_tool_call_content, provider.tool_choice_required,
            provider.streams_tool_calls)


def provider_messages(messages: Any, provider: ProviderSettings) -> Any:
    """Messages as this provider accepts them: tool-call content not null, content as one string."""
    if not isinstance(messages, list):
        return messages
    if provider.empty_tool_call_content:
        messages = [_content_not_null(message) for message in messages]
    if provider.text_content:
        messages = [_content_as_text(message) for message in messages]
    return messages


def required_as_accepted(tools: Any) -> Any:
    """`tool_choice: "required"` for upstreams without it: the one offered tool by name, else "auto"."""
    functions = [tool for tool in tools or [] if isinstance(tool, dict) and tool.get("type") == "function"]
    if len(functions) == 1 and len(tools) == 1:
        return {"type": "function", "function": {"name": (functions[0].get("function") or {}).get("name")}}
    return "auto"


def _content_as_text(message: Any) -> Any:
    """A message whose content list is one string: text parts as they are, any other part as `[its type]`."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    parts = [part for part in message["content"] if isinstance(part, dict)]
    text = "\n".join(part["text"] if isinstance(part.get("text"), str) else f"[{part.get('type')}]" for part in parts)
    return {**message, "content": text}


def _content_not_null(message: Any) -> Any:
    if isinstance(message, dict) and message.get("tool_calls") and message.get("content") is None:
        return {**message, "content": ""}
    return message
