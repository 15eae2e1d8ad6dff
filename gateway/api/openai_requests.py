"""The core fields of OpenAI's chat, completions and embeddings requests, validated as OpenAI does.

Only the fields the gateway or every upstream relies on are checked, with OpenAI's ranges; any
other field passes through to the upstream untouched (`extra="allow"`). The models validate and
are then discarded: the body is forwarded as the client sent it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Loose(BaseModel):
    """Strict types for the fields named, any other field allowed."""

    model_config = ConfigDict(strict=True, extra="allow", hide_input_in_errors=True)


class Message(Loose):
    role: Role
    content: str | list[dict[str, Any]] | None = None


class Sampling(Loose):
    """Fields chat and legacy completions share."""

    model: str | None = None
    models: list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class ChatRequest(Sampling):
    """POST /chat/completions."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | Literal["auto"] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None


class CompletionRequest(Sampling):
    """POST /completions (legacy)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None


class EmbeddingRequest(Loose):
    """POST /embeddings."""

    model: str | None = None
    models: list[str] | None = None
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None
