"""Settings: TOML file + environment -> validated pydantic models; bad config stops startup."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import BadInput
from gateway.serving.client_address import parse_networks
from gateway.url_policy import check_remote_url, remote_headers

ENV_PREFIX = "GATEWAY_"
ENV_SECTIONS = ("server", "database", "admin", "auth", "mcp", "limits", "routing", "cache", "budget_alerts",
                "attribution", "billing", "responses", "tracing", "dashboard", "uploads")
LOCAL_MODEL_PORT = 18081
EMBEDDED_SCOPE = "default"  # the scope of the first key on embedded defaults
EMBEDDED_PROFILE = f"{EMBEDDED_SCOPE}/default"


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the key."""


class Section(BaseModel):
    """Base of every table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="address `gateway serve` binds")
    port: int = Field(8080, ge=1, le=65535, description="port `gateway serve` binds")
    workers: int = Field(2, ge=1, description="gunicorn worker processes")
    threads: int = Field(64, ge=1, description="threads per worker (gthread)")
    max_body_bytes: int = Field(
        10_000_000, ge=1024, description="request bodies larger than this get 413"
    )
    keepalive_interval_s: float = Field(
        15.0, gt=0, description="seconds of stream silence before a `: keep-alive` comment"
    )
    client_timeout_s: float = Field(
        10.0, gt=0, description="seconds a client has to send a whole request (headers and body); then 408"
    )
    send_timeout_s: float = Field(
        30.0, gt=0, description="seconds a client may take no byte of its response; "
        "then it is dropped and settled like a disconnect (499)"
    )
    state_dir: str = Field(
        "gateway-state", description="folder of runtime files (a supervised model's lock file and log), "
        "relative to the working directory like the default database"
    )
    graceful_timeout_s: int = Field(
        30, ge=1, description="seconds a stopping or recycled worker lets in-flight requests and streams finish"
    )
    max_requests: int = Field(
        10000, ge=0, description="a worker is replaced (gracefully) after this many requests, bounding memory "
        "growth; 0 turns recycling off"
    )
    max_requests_jitter: int = Field(
        1000, ge=0, description="up to this many more requests per worker, so workers are not replaced together"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="application logs (gunicorn's included) as plain text or one JSON object per line"
    )
    access_log: str = Field(
        "-", description="where the JSON access log goes: \"-\" for stderr, a file path, or \"\" for none"
    )
    ready_probe_ttl_s: float = Field(
        10.0, gt=0, description="seconds /readyz trusts its last probe of each upstream"
    )
    pidfile: str = Field(
        "", description="file the gunicorn master writes its pid to (a USR2 upgrade's new master writes "
        "`<pidfile>.2` until the old one exits); \"\" for none"
    )
    trusted_proxies: tuple[str, ...] = Field(
        (), description="addresses or CIDRs of proxies whose X-Forwarded-For names the client (for the "
        "failed-authentication bounds and the access log); from any other peer the header is ignored"
    )
    cors_origins: tuple[str, ...] = Field(
        (), description="browser origins allowed to call the API (CORS), e.g. "
        "\"https://app.example.com\", or \"*\" for any; empty: no CORS headers at all"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, specs: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(specs)
        return specs


MIB = 1024 * 1024


class UploadSettings(Section):
    audio_max_bytes: int = Field(
        26 * MIB, ge=1024, description="largest body of /audio/transcriptions and /audio/translations (multipart): "
        "OpenAI's 25 MB file plus 1 MiB for the form's other fields and its framing; larger gets 413"
    )
    image_max_bytes: int = Field(
        50 * MIB, ge=1024, description="largest body of /images/edits and /images/variations (multipart); "
        "larger gets 413"
    )
    file_max_bytes: int = Field(
        200 * MIB, ge=1024, description="largest body of POST /files (a batch's JSONL input: OpenAI's 200 MB); "
        "larger gets 413"
    )
    spool_threshold_bytes: int = Field(
        MIB, ge=65536, description="a request body past this many bytes is received into a temporary file "
        "(in spool_dir), not memory; the thread serving it reads it from there"
    )
    spool_dir: str = Field(
        "", description="folder of the spooled bodies' temporary files (`gateway-body-*`, deleted when their "
        "request ends); \"\" for the system's (TMPDIR, else /tmp)"
    )


class DatabaseSettings(Section):
    url: str = Field(
        "sqlite:///gateway.db", description="sqlite:///PATH or postgresql://user:pw@host:port/db"
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url


class AdminSettings(Section):
    token_env: str = Field(
        "GATEWAY_ADMIN_TOKEN", description="env var holding the admin token; admin API off if unset"
    )


class AuthSettings(Section):
    key_cache_ttl_s: float = Field(
        2.0, ge=0, le=60, description="seconds a worker trusts a looked-up key (a revoke elsewhere takes this long)"
    )
    failed_attempts_per_address: int = Field(
        20, ge=0, description="failed authentications one client address may make per window and worker "
        "process; then 429 until the window passes (0: no bound)"
    )
    failed_attempts_window_s: float = Field(
        60.0, gt=0, description="the sliding window of failed_attempts_per_address, in seconds"
    )


class ProviderSettings(Section):
    type: Literal["openai", "anthropic", "gemini", "azure"] = Field(
        "openai", description="the provider's wire format: openai (OpenAI-compatible chat), anthropic (Messages "
        "API), gemini (generateContent), azure (Azure OpenAI deployments)"
    )
    base_url: str = Field(
        description="the API root as the provider's own SDK takes it (openai: ending in /v1; anthropic: "
        "https://api.anthropic.com; gemini: https://generativelanguage.googleapis.com; azure: "
        "https://RESOURCE.openai.azure.com)"
    )
    api_key_env: str | None = Field(None, description="env var holding the upstream API key")
    api_version: str | None = Field(
        None, description="Azure's `api-version` query parameter (required when type = \"azure\"); "
        "Gemini's path version (default v1beta)"
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="headers sent with every call to this provider (shown masked by `config show`)"
    )
    anthropic_version: str = Field(
        "2023-06-01", description="the `anthropic-version` header (type = \"anthropic\")"
    )
    anthropic_beta: tuple[str, ...] = Field(
        (), description="`anthropic-beta` flags, sent comma-separated (type = \"anthropic\")"
    )
    timeout_s: float = Field(600.0, gt=0, description="read timeout for upstream calls")
    connect_timeout_s: float = Field(5.0, gt=0, description="connect timeout for upstream calls")
    command: list[str] | None = Field(
        None, description="process the gateway launches and supervises (one per host)"
    )
    ready_timeout_s: float = Field(180.0, gt=0, description="how long to wait for `command`")
    copies: int = Field(
        1, ge=1, le=16, description="copies of `command` (its `{port}`: base_url's port, the next ones); "
        "requests take turns"
    )
    text_content: bool = Field(
        False, description="send message content as one string: text parts joined, others as a [type] mark"
    )
    empty_tool_call_content: bool = Field(
        False, description="send content \"\" instead of null on assistant tool-call messages"
    )
    streams_tool_calls: bool = Field(
        True, description="false: tool-loop turns that offer tools are fetched without streaming"
    )
    tool_choice_required: bool = Field(
        True, description="false: `tool_choice: \"required\"` is sent as the one offered tool by name, "
        "or \"auto\" when several are offered (llama-cpp-python accepts only those)"
    )
    health_check: Literal["none", "models", "completion"] = Field(
        "none", description="an active check every `health_interval_s` that feeds its deployments' cooldowns: "
        "none, models (GET the model list), completion (a 1-token chat completion per deployment)"
    )
    health_interval_s: float = Field(30.0, ge=1, description="seconds between active health checks")

    def api_key(self) -> str | None:
        """The upstream API key: the value of `api_key_env` (None when unnamed, unset or empty)."""
        return (os.environ.get(self.api_key_env) or None) if self.api_key_env else None

    def copy_base_urls(self) -> list[str]:
        """The base_url of each copy of `command`: base_url's port, then the next ones (no command: base_url)."""
        if self.copies == 1 or not self.command:
            return [self.base_url]
        url = urlparse(self.base_url)
        host = url.netloc.rsplit(":", 1)[0]
        return [url._replace(netloc=f"{host}:{(url.port or 0) + index}").geturl() for index in range(self.copies)]


DEFAULT_SUPPORTED_PARAMETERS = (
    "temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens", "max_completion_tokens",
    "logit_bias", "logprobs", "top_logprobs", "seed", "response_format", "stop", "tools", "tool_choice",
)


class DefaultParameters(Section):
    """A model's sampling defaults (OpenRouter's `default_parameters`); unset ones are left to the upstream."""

    temperature: float | None = Field(None, ge=0, le=2, description="temperature when a request sets none")
    top_p: float | None = Field(None, gt=0, le=1, description="top_p when a request sets none")
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="frequency_penalty when a request sets none"
    )


class DeploymentSettings(Section):
    """One place a model is served: a provider and its model id there, with its share and its quotas."""

    provider: str = Field(description="name of a [providers.X] table")
    upstream_model: str | None = Field(None, description="model id sent upstream (default: the public model id)")
    name: str | None = Field(
        None, max_length=120, description="the deployment's name in metrics, usage rows and the admin API "
        "(default: provider/upstream_model, with #2, #3 ... where that repeats in the model); models that list "
        "the same name share its health (cooldowns)"
    )
    weight: float = Field(1.0, ge=0, description="`weighted` routing: its share of requests against the others' "
                          "weights (0: only when the others are cooling down or at their limits)")
    priority: int = Field(0, ge=0, description="0 is tried first; a higher number is used only while every "
                          "deployment of a lower number is cooling down or at its limits")
    rpm: int | None = Field(None, ge=1, description="the provider's requests-per-minute quota for it; the gateway "
                            "sends it no more (split evenly among the host's workers), while others have room")
    tpm: int | None = Field(None, ge=1, description="the provider's tokens-per-minute quota for it (counted as "
                            "the held estimate), split like rpm")
    max_concurrency: int | None = Field(None, ge=1, description="requests in flight at once on it, split among "
                                        "the host's workers like rpm")
    timeout_s: float | None = Field(None, gt=0, description="read timeout of calls to it, so a retry can go "
                                    "elsewhere sooner (default: its provider's timeout_s)")


class ModelSettings(Section):
    provider: str | None = Field(
        None, description="name of a [providers.X] table: the one-deployment shorthand (or list `deployments`)"
    )
    upstream_model: str | None = Field(None, description="model id sent upstream (default: same)")
    deployments: tuple[DeploymentSettings, ...] = Field(
        (), description="where the model is served, when more than one place: [[models.X.deployments]] tables"
    )
    routing: Literal["weighted", "least_busy", "latency", "ordered"] = Field(
        "weighted", description="how a request picks among the deployments: weighted (by weight), least_busy "
        "(fewest in flight on this worker), latency (fastest time to first token, with exploration), ordered "
        "(the first available in the listed order)"
    )
    retries: int = Field(2, ge=0, le=10, description="further attempts after a connection failure, a timeout "
                         "before the first byte, a 429 or a 5xx: on another deployment, else the same one")
    retry_budget_s: float = Field(30.0, gt=0, description="no further attempt starts this long after the first "
                                  "(backoff waits included)")
    cache_ttl_s: float | None = Field(None, ge=0, description="seconds its answers stay in the response cache "
                                      "(default: [cache] ttl_s; 0: never cached)")
    input_price_per_mtok: float = Field(0.0, ge=0, description="credits per 1M input tokens")
    output_price_per_mtok: float = Field(0.0, ge=0, description="credits per 1M output tokens")
    cached_input_price_per_mtok: float | None = Field(
        None, ge=0, description="credits per 1M cached input tokens (default: input price)"
    )
    cache_write_price_per_mtok: float | None = Field(
        None, ge=0, description="credits per 1M input tokens written to the provider's prompt cache "
        "(Anthropic's cache_creation_input_tokens; default: input price)"
    )
    max_output_tokens: int = Field(4096, ge=1, description="reservation size when a request sets none")
    image_price: float = Field(0.0, ge=0, description="credits per image made or edited (images routes), for any "
                               "size and quality `image_prices` does not list")
    image_prices: tuple[tuple[str, Annotated[float, Field(ge=0)]], ...] = Field(
        (), description="credits per image by size or size/quality, e.g. {\"1024x1024\" = 0.04, "
        "\"1024x1024/hd\" = 0.08} (size/quality first, then size, then image_price)"
    )
    audio_price_per_minute: float = Field(0.0, ge=0, description="credits per minute of audio transcribed or "
                                          "translated (charged by the second)")
    speech_price_per_kchar: float = Field(0.0, ge=0, description="credits per 1,000 characters of speech input "
                                          "(/audio/speech)")
    search_unit_price: float = Field(0.0, ge=0, description="credits per rerank search unit (a query with up to "
                                     "100 documents, unless the upstream reports its billed units)")
    moderation_price: float = Field(0.0, ge=0, description="credits per moderation request (0: free)")
    max_audio_seconds: int = Field(3600, ge=1, description="seconds of audio an upload is held for when its "
                                   "duration cannot be read from its header (a WAV header gives it)")
    typical_output_tokens: int | None = Field(
        None, ge=1, description="what a streamed request without its own output cap is held for (default: "
        "max_output_tokens); the hold grows by as much again each time the stream passes it (402 ends it)"
    )
    system_prompt: str | None = Field(
        None, description="system message sent first when a chat request starts with none (the model's default)"
    )
    default_parameters: DefaultParameters = Field(
        default_factory=DefaultParameters, description="sampling sent when a request sets none"
    )
    reasoning: bool = Field(False, description="listed under `thinking.models` in /quota")
    name: str | None = Field(None, description="display name in OpenRouter's model list (default: the id)")
    description: str = Field("", description="description in OpenRouter's model list")
    context_length: int | None = Field(None, ge=1, description="context window in tokens (OpenRouter's list)")
    supported_parameters: tuple[str, ...] = Field(
        DEFAULT_SUPPORTED_PARAMETERS,
        description="request parameters the model honours (OpenRouter's list)",
    )
    input_modalities: tuple[str, ...] = Field(("text",), description="e.g. text, image, file")
    output_modalities: tuple[str, ...] = Field(("text",), description="e.g. text, embeddings")
    guardrails: tuple[str, ...] = Field(
        (), description="names of [guardrails.X] tables that apply to every request for this model"
    )

    @field_validator("image_prices", mode="before")
    @classmethod
    def _image_price_table(cls, value: Any) -> Any:
        """A TOML table {size-or-size/quality = price} as sorted pairs (the settings stay hashable)."""
        return sorted(value.items()) if isinstance(value, dict) else value


class McpServerSettings(Section):
    command: str | None = Field(None, description="stdio server executable")
    args: list[str] = Field(default_factory=list, description="stdio server arguments")
    env: dict[str, str] = Field(default_factory=dict, description="extra env for the stdio server")
    cwd: str | None = Field(None, description="working directory of the stdio server")
    url: str | None = Field(None, description="streamable HTTP endpoint (instead of command)")
    headers: dict[str, str] = Field(default_factory=dict, description="headers sent to `url`")
    scopes: list[str] | None = Field(
        None, description="account scopes that may use this server (unset: every key; scope \"*\" sees all)"
    )
    required: bool = Field(False, description="/readyz answers 503 while this server is not connected")
    tool_prices: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="credits one successful call of a tool costs through the MCP hub (/mcp), "
        "by tool name (unlisted tools are free)"
    )

    def allows(self, scope: str | None) -> bool:
        """Whether an account of this scope may use the server (on every route)."""
        return self.scopes is None or scope == "*" or scope in self.scopes


class ProfileSettings(Section):
    mcp_servers: list[str] = Field(default_factory=list, description="built-in MCP server labels")
    tools_by_default: bool = Field(
        False, description="chat on the profile's routes offers and runs its MCP tools without `tools: \"auto\"`: "
        "to requests with no `tools` or only function tools (which the client runs)"
    )
    guardrails: tuple[str, ...] = Field(
        (), description="names of [guardrails.X] tables that apply to every request on the profile's routes"
    )


class McpSettings(Section):
    remote_enabled: bool = Field(True, description="allow per-request remote MCP servers")
    remote_url_checks: bool = Field(True, description="https-only, no internal addresses")
    tool_timeout_s: float = Field(60.0, gt=0, description="timeout of one MCP tool call")
    connect_timeout_s: float = Field(20.0, gt=0, description="timeout to connect and list tools")
    max_loop_turns: int = Field(16, ge=1, description="hard cap on model turns in one tool loop")
    default_profile: str | None = Field(
        None, description="profile whose tools `tools: \"auto\"` uses on /v1/chat/completions"
    )
    http_timeout_s: float = Field(
        30.0, gt=0, description="connect and write timeout of MCP HTTP requests (built-in and remote)"
    )
    http_read_timeout_s: float = Field(
        300.0, gt=0, description="read timeout of MCP HTTP streams (servers hold them open between events)"
    )
    hub_thread_share: float = Field(
        0.5, gt=0, le=1, description="share of a worker's threads the hub's `tools/call` requests may hold "
        "at once, all keys together (429 beyond)"
    )


class RoutingSettings(Section):
    """Retries' backoff and the cooldowns of deployments, shared by every worker and host."""

    failures_to_cool: int = Field(3, ge=1, description="failures (connection, timeout, 429, 5xx) within `window_s` "
                                  "that put a deployment in cooldown, counted over every worker and host")
    window_s: float = Field(60.0, gt=0, description="the window failures are counted in, in seconds")
    cooldown_s: float = Field(30.0, gt=0, description="seconds a failing deployment is skipped (a 429's "
                              "Retry-After instead, when it sends one); then one trial request goes through "
                              "before it takes its full share again")
    max_retry_after_s: float = Field(300.0, gt=0, description="the longest upstream Retry-After honoured as a "
                                     "cooldown")
    backoff_s: float = Field(0.25, ge=0, description="the first backoff before retrying the same deployment; "
                             "it doubles per attempt, with full jitter")
    max_backoff_s: float = Field(4.0, ge=0, description="the cap of one backoff wait (a Retry-After within the "
                                 "model's retry_budget_s is honoured in full)")
    state_refresh_s: float = Field(1.0, gt=0, le=60, description="seconds a worker trusts its copy of the shared "
                                   "deployment states (a cooldown set elsewhere takes this long to reach it)")
    latency_exploration: float = Field(0.05, ge=0, le=1, description="`latency` routing: the share of requests "
                                       "sent to a deployment other than the fastest, so a recovered one is measured "
                                       "again")
    latency_decay: float = Field(0.3, gt=0, le=1, description="`latency` routing: the weight of the newest time "
                                 "to first token in a deployment's moving average")


class LimitSettings(Section):
    rpm: int = Field(600, ge=1, description="requests per minute per key (default)")
    tpm: int = Field(1_000_000, ge=1, description="tokens per minute per key (default)")
    backend: Literal["database", "redis"] = Field("database", description="where windows live")
    url: str | None = Field(None, description="redis://host:port/db when backend = \"redis\"")
    max_streams_per_key: int | None = Field(
        None, ge=1, description="streams a key that sets none may have open at once, per worker process "
        "(429 beyond); unset: bounded by `stream_share` only"
    )
    max_streams_per_account: int | None = Field(
        None, ge=1, description="streams all keys of an account that sets none may have open at once, per "
        "worker process; unset: bounded by `stream_share` only"
    )
    stream_share: float = Field(
        0.75, gt=0, le=1, description="share of a worker's threads a key (or account) without a stream limit of "
        "its own may hold in streams while the gateway serves several tenants; a single tenant may use them all"
    )


class CacheSettings(Section):
    """The exact-match response cache (gateway.cache): off unless enabled."""

    enabled: bool = Field(False, description="answer a repeated identical request from the cache (per account)")
    ttl_s: float = Field(3600.0, gt=0, description="seconds an answer stays fresh (a model's cache_ttl_s wins)")
    backend: Literal["database", "redis"] = Field("database", description="where entries live")
    url: str | None = Field(None, description="redis://host:port/db when backend = \"redis\" (default: [limits] url)")
    max_entries: int = Field(10_000, ge=1, description="entries kept; the least recently used go first beyond it")
    max_entry_bytes: int = Field(1_000_000, ge=1024, description="answers larger than this are not stored")
    hit_price_fraction: float = Field(0.0, ge=0, le=1, description="share of the stored answer's price a hit is "
                                      "charged (0: hits are free)")
    shared_scope: str | None = Field(None, max_length=64, description="entries shared by every account under this "
                                     "name instead of per account (an operator's explicit choice; unset: never "
                                     "shared across accounts)")


class BatchSettings(Section):
    """The Files and Batch APIs (gateway.batches): files stored in the database, batches run by background threads."""

    batch_price_fraction: float = Field(0.5, ge=0, le=1, description="share of the live price a batch line is "
                                        "charged")
    concurrency_per_account: int = Field(4, ge=1, le=256, description="lines of one account's batches in flight "
                                         "at once (one batch per account runs at a time, on one worker)")
    batches_per_worker: int = Field(2, ge=0, le=64, description="batches one worker process runs at once "
                                    "(0: this host runs none; it still accepts them)")
    live_reserve: float = Field(0.2, ge=0, lt=1, description="share of each deployment's rpm, tpm and "
                                "max_concurrency kept for live requests: batch lines wait beyond the rest")
    chunk_bytes: int = Field(1_048_576, ge=1024, le=16_777_216, description="a file is stored in pieces of at "
                             "most this many bytes (upload and download never hold a whole file)")
    max_lines: int = Field(50_000, ge=1, description="lines an input file may have (OpenAI's limit: 50,000)")
    lease_s: float = Field(60.0, ge=5, description="a batch's runner renews its claim this often (x1/3); a batch "
                           "whose runner died is taken over after this long")
    poll_s: float = Field(2.0, gt=0, description="seconds an idle runner waits before it looks for work again")


class BudgetAlertSettings(Section):
    """One POST when a budget passes 80% and when it reaches 100%, per period (never on the request path)."""

    url: str | None = Field(None, description="the webhook URL; unset: no alerts")
    thresholds: tuple[float, ...] = Field((0.8, 1.0), description="shares of a budget that send an alert")
    timeout_s: float = Field(5.0, gt=0, description="timeout of one POST")
    retries: int = Field(5, ge=0, le=20, description="further tries of a failed POST, with exponential backoff")
    secret_env: str | None = Field(None, description="env var whose value signs each POST "
                                   "(X-Gateway-Signature: sha256 HMAC of the body)")


class AttributionSettings(Section):
    """Tags and end users recorded on usage rows (GET /api/v1/usage groups by them)."""

    max_tags: int = Field(10, ge=0, le=64, description="tags one request may carry (X-Gateway-Tags and metadata)")
    max_tag_length: int = Field(64, ge=1, le=256, description="characters one tag may have")
    metadata_keys: tuple[str, ...] = Field(
        (), description="keys of OpenAI's `metadata` object recorded as tags `key:value` (e.g. [\"team\", "
        "\"feature\"])"
    )


class BillingSettings(Section):
    reservation_ttl_s: int = Field(
        900, ge=1, description="open reservations older than this are swept (crashed workers)"
    )
    thinking_default_budget: int = Field(16000, ge=0, description="`thinking.default_budget` in /quota")
    debt_bound_ratio: float = Field(
        1.0, ge=0, description="how far a request may run past its hold, as a multiple of the hold: a run whose "
        "cost passes hold + ratio x hold is stopped at its next turn or stream chunk (402 debt_bound_reached)"
    )


class ResponsesSettings(Section):
    secret_env: str = Field(
        "GATEWAY_SECRET", description="env var with the key that seals compaction blobs"
    )
    background_workers: int = Field(
        8, ge=1, description="threads per worker process that run `background: true` responses"
    )
    websocket_max_age_s: float = Field(
        3600.0, gt=0, description="WebSocket mode: a connection closes after this long with "
        "`websocket_connection_limit_reached` (a turn in flight finishes first)"
    )
    websocket_idle_timeout_s: float = Field(
        600.0, gt=0, description="WebSocket mode: seconds a connection may wait for its next `response.create`"
    )
    websocket_turn_timeout_s: float = Field(
        1800.0, gt=0, description="WebSocket mode: a turn still running after this fails with `response_timeout`"
    )
    websocket_ping_interval_s: float = Field(
        25.0, gt=0, description="WebSocket mode: seconds between pings; a client that misses a pong is dropped"
    )
    websocket_max_connections: int | None = Field(
        None, ge=1, description="WebSocket mode: open sockets per worker process, each holding one of "
        "`[server] threads` (default: half of them); further upgrades get 503"
    )


class TracingSettings(Section):
    enabled: bool = Field(False, description="OpenTelemetry traces (needs the `otel` extra)")
    exporter: Literal["otlp", "console", "none"] = Field(
        "otlp", description="where spans go: OTLP over HTTP, stdout, or nowhere (an SDK already set up)"
    )
    endpoint: str | None = Field(
        None, description="OTLP traces URL, e.g. http://collector:4318/v1/traces (default: OTEL_EXPORTER_OTLP_*)"
    )
    service_name: str = Field("llm-gateway", description="`service.name` of the spans (OTEL_SERVICE_NAME wins)")


class DashboardSettings(Section):
    enabled: bool = Field(True, description="the web dashboard at /dashboard (nobody can sign in before "
                          "`gateway users create`)")
    signup: bool = Field(False, description="anyone may sign up: a new free-tier account and its member user")
    signup_credits: float = Field(0.0, ge=0, description="credits granted to an account made by sign-up")
    secure_cookies: bool = Field(False, description="mark the session cookie `Secure` (set it behind HTTPS)")
    idle_timeout_s: int = Field(3600, ge=60, description="a session unused this long is signed out")
    sign_in_attempts: int = Field(5, ge=1, description="sign-ins allowed per (address, email) pair within "
                                  "`sign_in_window_s` (counted before the password is checked; a success clears "
                                  "the pair's); then 429 until the oldest leaves the window")
    sign_in_attempts_per_email: int = Field(20, ge=1, description="failed sign-ins allowed per email from all "
                                            "addresses together within `sign_in_window_s`; then 429")
    sign_in_window_s: int = Field(900, ge=1, description="seconds over which failed sign-ins are counted")

GUARDRAIL_STAGES = ("input", "output", "tool_input", "tool_output")
PII_DETECTORS = ("email", "phone", "card", "iban", "us_ssn", "ip", "secret")
GuardrailAction = Literal["block", "redact", "log"]


class GuardrailPattern(Section):
    """One pattern of a `regex` guardrail's deny list."""

    name: str = Field(description="the name recorded when it matches (never the matched text)")
    pattern: str = Field(description="a Python regular expression")
    action: GuardrailAction | None = Field(None, description="block, redact or log (default: the guardrail's)")


class GuardrailSettings(Section):
    """One named check on what goes in and comes out (gateway.guardrails); `type` says which fields it reads."""

    type: Literal["pii", "regex", "moderation", "webhook", "max_size"] = Field(
        description="pii | regex | moderation | webhook | max_size"
    )
    stages: tuple[Literal["input", "output", "tool_input", "tool_output"], ...] = Field(
        ("input",), min_length=1, description="where it runs: input, output, tool_input, tool_output"
    )
    action: GuardrailAction = Field("block", description="block (refuse with a 400), redact (replace matches with "
                                    "a placeholder and go on) or log (record only)")
    default: bool = Field(False, description="applies to every request (the global default list)")
    on_tool_block: Literal["error", "fail"] = Field(
        "error", description="tool stages: \"error\" = a blocked tool call or result becomes the tool's error "
        "output, \"fail\" = the run fails with the block error"
    )
    detectors: tuple[Literal["email", "phone", "card", "iban", "us_ssn", "ip", "secret"], ...] = Field(
        PII_DETECTORS, description="pii: the detectors that are on"
    )
    patterns: tuple[GuardrailPattern, ...] = Field(
        (), description="regex: the deny list, [{name, pattern, action}] (a pattern's action defaults to the "
        "guardrail's)"
    )
    max_chars: int | None = Field(None, ge=1, description="max_size: the most characters a text may have")
    max_tokens: int | None = Field(None, ge=1, description="max_size: the most estimated tokens (4 characters "
                                   "each) a text may have")
    url: str | None = Field(None, description="webhook: the URL the text is POSTed to (the remote-MCP URL "
                            "policy applies)")
    timeout_s: float = Field(2.0, gt=0, description="webhook and moderation: timeout of one call")
    fail_open: bool = Field(True, description="webhook and moderation: a failed or timed-out call allows the "
                            "text (false: blocks it)")
    headers: dict[str, str] = Field(default_factory=dict, description="webhook: headers sent with each POST")
    model: str | None = Field(None, description="moderation: a configured [models.X] whose provider answers "
                              "/v1/moderations")
    chat_model: str | None = Field(None, description="moderation: a configured chat model asked with a "
                                   "classification prompt (instead of `model`)")
    categories: tuple[str, ...] = Field(
        (), description="moderation: the categories that block (default: any flagged category)"
    )


class Settings(Section):
    """The whole configuration."""

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    admin: AdminSettings = AdminSettings()
    auth: AuthSettings = AuthSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    mcpServers: dict[str, McpServerSettings] = Field(default_factory=dict)
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    mcp: McpSettings = McpSettings()
    limits: LimitSettings = LimitSettings()
    routing: RoutingSettings = RoutingSettings()
    cache: CacheSettings = CacheSettings()
    budget_alerts: BudgetAlertSettings = BudgetAlertSettings()
    attribution: AttributionSettings = AttributionSettings()
    billing: BillingSettings = BillingSettings()
    responses: ResponsesSettings = ResponsesSettings()
    batches: BatchSettings = BatchSettings()
    tracing: TracingSettings = TracingSettings()
    dashboard: DashboardSettings = DashboardSettings()
    uploads: UploadSettings = UploadSettings()
    guardrails: dict[str, GuardrailSettings] = Field(default_factory=dict)
    embedded: bool = Field(False, exclude=True, description="the embedded defaults are part of it")

    def cross_check(self) -> Settings:
        """Check references between tables; raise ConfigError naming the key."""
        for check in (check_providers, check_models, check_mcp_servers, check_profiles, check_mcp, check_limits,
                      check_tracing, check_guardrails, check_uploads):
            check(self)
        return self


def check_providers(settings: Settings) -> None:
    """Azure needs its api_version; several copies of a command need `{port}` in it and a port in base_url."""
    for name, provider in settings.providers.items():
        if provider.type == "azure" and not provider.api_version:
            raise ConfigError(f"providers.{name}.api_version: required when type = \"azure\" (e.g. \"2024-10-21\")")
        if provider.copies == 1 or not provider.command:
            continue  # without a command there is nothing to copy: requests go to base_url
        if not any("{port}" in argument for argument in provider.command):
            raise ConfigError(f"providers.{name}.copies: {provider.copies} copies need {{port}} in `command` "
                              "(or set copies = 1)")
        if urlparse(provider.base_url).port is None:
            raise ConfigError(f"providers.{name}.copies: needs a port in base_url")


def check_models(settings: Settings) -> None:
    """Each model has `provider` or `deployments` (not both), each naming a configured provider."""
    for model_id, model in settings.models.items():
        if (model.provider is None) == (not model.deployments):
            raise ConfigError(f"models.{model_id}: set exactly one of provider (one deployment) or deployments")
        if model.deployments and model.upstream_model is not None:
            raise ConfigError(f"models.{model_id}.upstream_model: set it on each of its deployments")
        for index, deployment in enumerate(model.deployments):
            if deployment.provider not in settings.providers:
                raise ConfigError(f"models.{model_id}.deployments.{index}.provider: no provider named "
                                  f"{deployment.provider!r}")
        if model.provider is not None and model.provider not in settings.providers:
            raise ConfigError(f"models.{model_id}.provider: no provider named {model.provider!r}")


def model_deployments(model_id: str, model: ModelSettings) -> tuple[DeploymentSettings, ...]:
    """A model's deployments: its `deployments`, or the one its `provider` and `upstream_model` describe."""
    if model.deployments:
        return model.deployments
    return (DeploymentSettings(provider=model.provider or "", upstream_model=model.upstream_model),)


def deployment_names(model_id: str, model: ModelSettings) -> list[str]:
    """Each deployment's name: its own, else provider/upstream_model (#2, #3 ... where that repeats in the model)."""
    names: list[str] = []
    for deployment in model_deployments(model_id, model):
        base = deployment.name or f"{deployment.provider}/{deployment.upstream_model or model_id}"
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}#{count}"
        names.append(name)
    return names


def check_mcp_servers(settings: Settings) -> None:
    """Each built-in MCP server is either a stdio command or a URL."""
    for label, server in settings.mcpServers.items():
        if bool(server.command) == bool(server.url):
            raise ConfigError(f"mcpServers.{label}: set exactly one of command or url")


def check_profiles(settings: Settings) -> None:
    """Profile names are "scope/profile" and list only configured MCP servers."""
    for name, profile in settings.profiles.items():
        if name.count("/") != 1:
            raise ConfigError(f"profiles.{name}: name must be \"scope/profile\"")
        for label in profile.mcp_servers:
            if label not in settings.mcpServers:
                raise ConfigError(f"profiles.{name}.mcp_servers: no mcpServers.{label}")


def check_mcp(settings: Settings) -> None:
    """`[mcp] default_profile` names a configured profile."""
    profile = settings.mcp.default_profile
    if profile is not None and profile not in settings.profiles:
        raise ConfigError(f"mcp.default_profile: no profile named {profile!r}")


def check_limits(settings: Settings) -> None:
    """The redis backends need their URL."""
    if settings.limits.backend == "redis" and not settings.limits.url:
        raise ConfigError('limits.url: required when backend = "redis"')
    if settings.cache.enabled and settings.cache.backend == "redis" and not (settings.cache.url or settings.limits.url):
        raise ConfigError('cache.url: required when backend = "redis" (or set [limits] url)')


def check_uploads(settings: Settings) -> None:
    """The spool folder, when set, is a folder the server can write to."""
    folder = settings.uploads.spool_dir
    if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
        raise ConfigError(f"uploads.spool_dir: {folder!r} is not a folder this process can write to")


def check_tracing(settings: Settings) -> None:
    """Traces need the `otel` extra."""
    installed = importlib.util.find_spec("opentelemetry") and importlib.util.find_spec("opentelemetry.sdk")
    if settings.tracing.enabled and not installed:
        raise ConfigError('tracing.enabled: needs OpenTelemetry (pip install "llm-gateway[otel]")')


def check_guardrails(settings: Settings) -> None:
    """Each guardrail has its type's fields and valid patterns; models and profiles name configured ones."""
    for name, guardrail in settings.guardrails.items():
        check_guardrail(f"guardrails.{name}", guardrail, settings)
    attached = [(f"models.{model_id}", model.guardrails) for model_id, model in settings.models.items()]
    attached += [(f"profiles.{name}", profile.guardrails) for name, profile in settings.profiles.items()]
    for key, names in attached:
        for guardrail_name in names:
            if guardrail_name not in settings.guardrails:
                raise ConfigError(f"{key}.guardrails: no guardrail named {guardrail_name!r} ([guardrails.NAME])")


def check_guardrail(key: str, guardrail: GuardrailSettings, settings: Settings) -> None:
    """One guardrail's type-specific fields (the generic ones pydantic has checked)."""
    if guardrail.type == "regex":
        if not guardrail.patterns:
            raise ConfigError(f"{key}.patterns: required when type = \"regex\"")
        for index, pattern in enumerate(guardrail.patterns):
            try:
                re.compile(pattern.pattern)
            except re.error as exc:
                raise ConfigError(f"{key}.patterns.{index}.pattern: not a valid regular expression ({exc})") from None
    elif guardrail.type == "max_size":
        if guardrail.max_chars is None and guardrail.max_tokens is None:
            raise ConfigError(f"{key}.max_chars: set max_chars or max_tokens (or both) when type = \"max_size\"")
    elif guardrail.type == "webhook":
        if not guardrail.url or urlparse(guardrail.url).scheme not in ("http", "https"):
            raise ConfigError(f"{key}.url: an http(s) URL is required when type = \"webhook\"")
        webhook_headers(key, guardrail, settings.mcp.remote_url_checks)
    elif guardrail.type == "moderation":
        if (guardrail.model is None) == (guardrail.chat_model is None):
            raise ConfigError(f"{key}.model: set exactly one of model or chat_model when type = \"moderation\"")
        field, model_id = ("model", guardrail.model) if guardrail.model else ("chat_model", guardrail.chat_model)
        if model_id not in settings.models:
            raise ConfigError(f"{key}.{field}: no model named {model_id!r}")
        moderation_deployment(f"{key}.{field}", model_id, settings)


def webhook_headers(key: str, guardrail: GuardrailSettings, url_checks: bool) -> dict[str, str]:
    """A webhook guardrail's headers, once the outbound URL policy (gateway.url_policy) passed its URL (when
    `[mcp] remote_url_checks` is on: https, a public host) and headers; else ConfigError naming the key."""
    try:
        if url_checks:
            check_remote_url(guardrail.url or "", f"{key}.url")
        return remote_headers(guardrail.headers, None, f"{key}.headers")
    except BadInput as exc:
        raise ConfigError(exc.message) from None


def moderation_deployment(key: str, model_id: str, settings: Settings) -> tuple[ProviderSettings, str]:
    """The provider and upstream model id a moderation guardrail calls: its model's first deployment, whose
    provider must be OpenAI-compatible (it answers /moderations and plain chat completions)."""
    deployment = model_deployments(model_id, settings.models[model_id])[0]
    provider = settings.providers.get(deployment.provider)
    if provider is None or provider.type != "openai":
        kind = "missing" if provider is None else f"of type {provider.type!r}"
        raise ConfigError(f"{key}: model {model_id!r} is served by provider {deployment.provider!r} ({kind}); "
                          "moderation needs an OpenAI-compatible provider (type = \"openai\")")
    return provider, deployment.upstream_model or model_id


def embedded_defaults() -> dict[str, Any]:
    """The configuration files layer over: the packaged SmolLM2 model, the time MCP server, a profile."""
    from gateway.embedded_model import (
        SMOLLM2_COPIES,
        SMOLLM2_SAMPLING,
        SMOLLM2_SYSTEM_PROMPT,
        find_smollm2_model,
        llama_server_command,
    )

    model_path = find_smollm2_model()
    provider: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{LOCAL_MODEL_PORT}/v1",
        "empty_tool_call_content": True,  # llama-cpp-python answers 500 to tool-call messages with null content
        "text_content": True,  # its chat format prints a content list as a Python list (an image: its base64)
        "streams_tool_calls": False,  # it cannot stream automatic tool choice
        "tool_choice_required": False,  # it accepts only "auto", "none" or a named tool
    }
    if model_path:
        provider["command"] = llama_server_command(model_path, "{port}")
        provider["copies"] = SMOLLM2_COPIES
    servers = embedded_mcp_servers()
    return {
        "providers": {"local": provider},
        "models": {"smollm2": {"provider": "local", "max_output_tokens": 512,
                               "system_prompt": SMOLLM2_SYSTEM_PROMPT, "default_parameters": SMOLLM2_SAMPLING}},
        "mcpServers": servers,
        "profiles": {EMBEDDED_PROFILE: {"mcp_servers": list(servers)}},
        "mcp": {"default_profile": EMBEDDED_PROFILE, "max_loop_turns": 2},  # a tiny model: one tool round
    }


def embedded_mcp_servers() -> dict[str, Any]:
    """The built-in MCP servers of the embedded defaults that are installed (the `local` extra brings them)."""
    if importlib.util.find_spec("mcp_server_time") is None:
        return {}
    return {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}}


def secret_variables(raw: dict[str, Any]) -> set[str]:
    """The variables `*_env` settings name (the admin token, ...): secrets, never read as overrides."""
    admin = raw.get("admin", {}).get("token_env", AdminSettings.model_fields["token_env"].default)
    sealing = raw.get("responses", {}).get("secret_env", ResponsesSettings.model_fields["secret_env"].default)
    providers = [provider.get("api_key_env") for provider in raw.get("providers", {}).values()]
    return {name for name in (admin, sealing, *providers) if isinstance(name, str)}


def env_overrides(environ: dict[str, str], secrets: set[str] = frozenset()) -> dict[str, dict[str, str]]:
    """`GATEWAY_<SECTION>_<KEY>` variables as a nested dict (values parsed by pydantic), secrets skipped."""
    found: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if name in secrets:
            continue
        for section in ENV_SECTIONS:
            prefix = f"{ENV_PREFIX}{section.upper()}_"
            if name.startswith(prefix):
                found.setdefault(section, {})[name[len(prefix) :].lower()] = value
    mcp = found.setdefault("mcp", {})
    for key in ("remote_enabled", "remote_url_checks"):
        name = f"VR_MCP_REQUEST_{key.upper()}"
        value = environ.get(name, "").strip().lower()
        if value:
            mcp[key] = switch_value(name, value)
    return {section: values for section, values in found.items() if values}


def switch_value(name: str, value: str) -> bool:
    """A boolean environment switch: true/false, 1/0, yes/no; anything else names the variable."""
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name}: must be true/false, 1/0 or yes/no, not {value!r}")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def find_config_file(explicit: str | None, environ: dict[str, str]) -> Path | None:
    """--config, else $GATEWAY_CONFIG, else ./config.toml if present, else None."""
    chosen = explicit or environ.get("GATEWAY_CONFIG")
    if chosen:
        return Path(chosen)
    local = Path("config.toml")
    return local if local.is_file() else None


def build_settings(raw: dict[str, Any], *, embedded: bool = False) -> Settings:
    """Validate a raw dict; the first problem becomes a one-line ConfigError."""
    try:
        settings = Settings.model_validate({**raw, "embedded": embedded})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = "unknown setting" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{key}: {message}") from None
    return settings.cross_check()


def load_settings(path: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    """The embedded defaults, the config file merged over them key by key, then environment overrides.

    A file that declares `[models]` describes a whole deployment: the embedded defaults are left out.
    """
    environ = dict(os.environ if environ is None else environ)
    config_file = find_config_file(path, environ)
    raw = {} if config_file is None else read_config_file(config_file)
    embedded = "models" not in raw
    if embedded:
        raw = merge(embedded_defaults(), raw)
    return build_settings(merge(raw, env_overrides(environ, secret_variables(raw))), embedded=embedded)


def read_config_file(config_file: Path) -> dict[str, Any]:
    """The TOML file as a dict; an unreadable or malformed file is a one-line ConfigError."""
    try:
        return tomllib.loads(config_file.read_text())
    except OSError as exc:
        raise ConfigError(f"{config_file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: {exc}") from None
