"""Provider adapters: the prepared (OpenAI chat-shaped) request in each provider's wire format, and back.

One module per provider (`openai`, `anthropic`, `gemini`, `azure`), all pure; `adapter(type)` picks one.
"""

from __future__ import annotations

from gateway.upstream.providers.anthropic import ANTHROPIC
from gateway.upstream.providers.azure import AZURE
from gateway.upstream.providers.base import (
    ProviderAdapter,
    ProviderWire,
    StreamTranslator,
    WireError,
    WireRequest,
)
from gateway.upstream.providers.gemini import GEMINI
from gateway.upstream.providers.openai import OPENAI

ADAPTERS: dict[str, ProviderAdapter] = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI, "azure": AZURE}
__all__ = ["ADAPTERS", "ProviderAdapter", "ProviderWire", "StreamTranslator", "WireError", "WireRequest", "adapter"]


def adapter(provider_type: str) -> ProviderAdapter:
    """The adapter of a provider `type` (KeyError names an unknown one)."""
    return ADAPTERS[provider_type]
