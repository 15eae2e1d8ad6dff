"""Azure OpenAI: OpenAI's wire at the deployment URL, with `api-version` and the `api-key` header.

`{base_url}/openai/deployments/{upstream_model}/chat/completions?api-version=...`; the upstream
model is the deployment name. Images and audio live under the same scheme (`.../images/generations`,
`.../audio/transcriptions`, ...: gateway.upstream.wire.MEDIA_PATHS). Content-filter refusals stay what they are: a 400 with code
`content_filter` passes through as that 400, and `finish_reason: "content_filter"` (with Azure's
`content_filter_results` and `prompt_filter_results`) reaches the client unchanged.
"""

from __future__ import annotations

from urllib.parse import quote

from gateway.upstream.providers.base import ProviderWire, join_url
from gateway.upstream.providers.openai import OpenAIAdapter

DEFAULT_API_VERSION = "2024-10-21"  # Azure OpenAI's GA data-plane version the docs' examples use


class AzureAdapter(OpenAIAdapter):
    """OpenAI's translation; Azure's URL and key header."""

    name = "azure"

    def headers(self, provider: ProviderWire) -> dict[str, str]:
        """The `api-key` header and the provider's extra headers."""
        auth = {"api-key": provider.api_key} if provider.api_key else {}
        return {**auth, **provider.extra_headers}

    def url(self, upstream_model: str, provider: ProviderWire, path: str = "chat/completions") -> str:
        """The deployment's URL of `path` (chat completions; images and audio too) with its api-version."""
        version = provider.api_version or DEFAULT_API_VERSION
        path = f"openai/deployments/{quote(upstream_model, safe='')}/{path}?api-version={quote(version)}"
        return join_url(provider.base_url, path)


AZURE = AzureAdapter()
