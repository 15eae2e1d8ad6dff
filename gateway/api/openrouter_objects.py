"""OpenRouter's model, key and generation objects, built from config and usage rows (pure functions).

Prices: the gateway's prices are credits per million tokens; OpenRouter's `pricing` is the price
of one token as a decimal string, so a price of 2.5 per million tokens is "0.0000025".

Generation times, as the SDK's schema defines them: `latency` is the total in milliseconds (from
admission to settlement), `generation_time` the part after the first token (streams only), so a
stream's time to first token is `latency - generation_time`.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from gateway.accounting.money import to_credits
from gateway.config import ModelSettings
from gateway.tables import UsageEntry

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
API_TYPES = {"chat/completions": "completions", "completions": "completions", "responses": "completions",
             "responses/compact": "completions", "embeddings": "embeddings"}


def per_token(price_per_mtok: float) -> str:
    """A per-million price as OpenRouter's per-token decimal string."""
    value = Decimal(str(price_per_mtok)) / TOKENS_PER_PRICE_UNIT
    return format(value.normalize(), "f") if value else "0"


def model_object(model_id: str, model: ModelSettings, created: int) -> dict[str, Any]:
    """One entry of OpenRouter's `GET /api/v1/models`."""
    pricing = {"prompt": per_token(model.input_price_per_mtok), "completion": per_token(model.output_price_per_mtok)}
    if model.cached_input_price_per_mtok is not None:
        pricing["input_cache_read"] = per_token(model.cached_input_price_per_mtok)
    inputs, outputs = model.input_modalities, model.output_modalities
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "name": model.name or model_id,
        "created": created,
        "description": model.description,
        "context_length": model.context_length,
        "architecture": {
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": pricing,
        "top_provider": {"context_length": model.context_length, "max_completion_tokens": model.max_output_tokens,
                         "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": model.supported_parameters,
        "supported_voices": None,
        "default_parameters": None,
        "links": {"details": f"/api/v1/models/{model_id}/endpoints"},
    }


def models_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """OpenRouter's model list envelope."""
    return {"data": objects, "total_count": len(objects), "links": {"next": None}}


def period_starts(now: datetime.datetime) -> dict[str, datetime.datetime]:
    """Starts (UTC) of the day, ISO week and month holding `now`, as OpenRouter's usage windows."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"daily": day, "weekly": day - datetime.timedelta(days=day.weekday()), "monthly": day.replace(day=1)}


def key_object(
    *, label: str, limit: float | None, usage: float, usage_by_period: dict[str, float], is_free_tier: bool,
    rpm: int, expires_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """OpenRouter's `GET /api/v1/key` data (no BYOK, budgets, workspaces or management keys here)."""
    return {
        "label": label,
        "limit": limit,
        "limit_remaining": None if limit is None else max(limit - usage, 0.0),
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": usage,
        "usage_daily": usage_by_period["daily"],
        "usage_weekly": usage_by_period["weekly"],
        "usage_monthly": usage_by_period["monthly"],
        "byok_usage": 0.0, "byok_usage_daily": 0.0, "byok_usage_weekly": 0.0, "byok_usage_monthly": 0.0,
        "is_free_tier": is_free_tier,
        "is_management_key": False,
        "is_provisioning_key": False,
        "rate_limit": {"requests": rpm, "interval": "1m", "note": "per key, in fixed one-minute windows"},
        "expires_at": expires_at.isoformat() + "Z" if expires_at else None,
        "allowed_data_regions": ["global"],
        "budgets": [],
        "effective_budget": None,
        "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},  # no free-model quota here
        "creator_user_id": None,
        "organization_id": None,
        "workspace_id": None,
    }


def generation_object(row: UsageEntry) -> dict[str, Any]:
    """OpenRouter's `GET /api/v1/generation` data from a usage row (no BYOK, media, search or apps here)."""
    cost = to_credits(row.cost)
    return {
        "id": row.generation_id,
        "request_id": row.request_id,
        "api_type": API_TYPES.get(row.endpoint),
        "model": row.model or "",
        "provider_name": row.provider,
        "created_at": row.created_at.isoformat() + "Z",
        "streamed": row.streamed,
        "cancelled": row.cancelled,
        "finish_reason": row.finish_reason,
        "native_finish_reason": row.finish_reason,
        "tokens_prompt": row.prompt_tokens,
        "tokens_completion": row.completion_tokens,
        "native_tokens_prompt": row.prompt_tokens,
        "native_tokens_completion": row.completion_tokens,
        "native_tokens_cached": row.cached_tokens, "native_tokens_reasoning": row.reasoning_tokens,
        "native_tokens_cache_write": row.cache_write_tokens, "native_tokens_completion_images": None,
        "total_cost": cost,
        "usage": cost,
        "cache_discount": None, "upstream_inference_cost": None, "is_byok": False,
        "latency": row.latency_ms,
        "generation_time": None if row.ttft_ms is None else max(row.latency_ms - row.ttft_ms, 0),
        "moderation_latency": None,
        "upstream_id": None, "provider_responses": None, "router": None, "service_tier": None,
        "data_region": "global", "origin": "", "http_referer": None, "user_agent": None, "external_user": None,
        "app_id": None, "preset_id": None, "workspace_id": None, "web_search_engine": None,
        "num_fetches": None, "num_input_audio_prompt": None, "num_media_completion": None, "num_media_prompt": None,
        "num_search_results": None,
    }
