"""A model's own defaults, added to the chat bodies sent upstream when the request leaves them out.

Two settings of `[models.X]`: `system_prompt`, a system message put first when the messages start
with none (what many models' own chat templates do, and what llama-cpp-python's generic chat
formats drop: SmolLM2 rambles for hundreds of tokens without its default system prompt), and
`default_parameters` (OpenRouter's name), `temperature`, `top_p` and `frequency_penalty` sent when
the request does not set them (the model card's sampling instead of the upstream server's defaults).
The client's own system (or developer) message and parameters always win; a `null` parameter counts
as unset.
"""

from __future__ import annotations

import functools
from typing import Any

from gateway.config import DefaultParameters, ModelSettings


def with_model_defaults(body: dict[str, Any], model: ModelSettings) -> dict[str, Any]:
    """A chat body (one with `messages`) with the model's system prompt and sampling defaults filled in."""
    defaults = _set_parameters(model.default_parameters)
    if not isinstance(body.get("messages"), list) or not (defaults or model.system_prompt):
        return body
    unset = {name: value for name, value in defaults if body.get(name) is None}
    filled = {**body, **unset}
    if model.system_prompt and not _starts_with_system(body["messages"]):
        filled["messages"] = [{"role": "system", "content": model.system_prompt}, *body["messages"]]
    return filled


@functools.cache
def _set_parameters(parameters: DefaultParameters) -> tuple[tuple[str, Any], ...]:
    """The parameters a model sets, once per settings object (this runs for every prepared request)."""
    return tuple(parameters.model_dump(exclude_none=True).items())


def _starts_with_system(messages: list[Any]) -> bool:
    first = messages[0] if messages else None
    return isinstance(first, dict) and first.get("role") in ("system", "developer")
