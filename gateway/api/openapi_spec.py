"""The routes of the OpenAPI document as data: one row per operation, and the objects they answer.

Request bodies are the pydantic models the views validate with (`openapi.py` turns them into JSON
Schema); answers are hand-written here, loose where the gateway relays an upstream's object and
exact where the gateway builds the object itself. SHARED rows are served under both /v1 and
/api/v1; ROOT rows at their own path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from gateway.api import admin, batches, conversations, files, generations, responses, usage
from gateway.api.openai_requests import ChatRequest, CompletionRequest, EmbeddingRequest
from gateway.responses.schema import CreateResponseRequest

KEY, ADMIN, PUBLIC = "key", "admin", "public"  # who may call an operation
CLIENT = (401, 429, 500, 503)  # any route behind a key: no or bad key, too many tries or requests, DB down
BODY = (400, 413)  # any route that reads a body through the gate
RELAYED = (402, 404, 409, 422, 502, 504, "4XX")  # metered routes: balance, model, MCP, upstream faults


@dataclass(frozen=True)
class Operation:
    """One method on one path: what it takes and what it answers."""

    method: str
    path: str
    summary: str
    ok: str | dict[str, str] | None  # a schema name below, one per dialect ("openai", "openrouter"), or none
    errors: tuple[int | str, ...] = ()
    body: type[BaseModel] | str | None = None  # a request model, or a schema name below
    query: type[BaseModel] | dict[str, Any] | None = None  # a query model, or {name: schema}
    auth: str = KEY
    ok_statuses: tuple[int, ...] = (200,)
    streams: bool = False
    also_as: tuple[str, ...] = ()  # media types the success may take besides JSON (and SSE, for streams)
    body_type: str = "application/json"  # the request body's media type (uploads: multipart/form-data)


def obj(required: tuple[str, ...] = (), **properties: Any) -> dict[str, Any]:
    """An object schema with these properties; other properties allowed."""
    return {"type": "object", "required": list(required), "properties": properties}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NULLABLE_STRING, NULLABLE_INTEGER, NULLABLE_NUMBER = (
    {"type": ["string", "null"]}, {"type": ["integer", "null"]}, {"type": ["number", "null"]})
ANY_OBJECT = {"type": "object"}
NAMES = {"type": "array", "items": {"type": "string"}}


def const(value: str) -> dict[str, str]:
    return {"type": "string", "const": value}


def page(item: dict[str, Any]) -> dict[str, Any]:
    """A cursor page: OpenAI's list with first_id, last_id and has_more."""
    return obj(("object", "data", "has_more"), object=const("list"), data={"type": "array", "items": item},
               first_id=NULLABLE_STRING, last_id=NULLABLE_STRING, has_more=BOOLEAN)


def listing(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return obj(("object", "data"), object=const("list"), data={"type": "array", "items": item}, **extra)


ACCOUNT = obj(("id", "name", "tier", "balance", "reserved", "total_earned", "total_spent"),
              id=INTEGER, name=STRING, tier=STRING, scope=NULLABLE_STRING, balance=NUMBER, reserved=NUMBER,
              total_earned=NUMBER, total_spent=NUMBER, max_streams=NULLABLE_INTEGER, key_limits=ANY_OBJECT,
              guardrails=NAMES)
KEY_OBJECT = obj(("id", "name", "prefix", "account_id", "revoked", "created_at"),
                 id=INTEGER, name=STRING, prefix=STRING, account_id=INTEGER, revoked=BOOLEAN,
                 rpm=NULLABLE_INTEGER, tpm=NULLABLE_INTEGER, spend_limit=NULLABLE_NUMBER, created_at=STRING,
                 max_streams=NULLABLE_INTEGER, operator_limits=ANY_OBJECT,
                 limit_reset={"enum": ["daily", "weekly", "monthly", None]}, guardrails=NAMES)
BUDGET = obj(("id", "object", "account_id", "period", "kind", "amount", "spent", "remaining", "resets_at"),
             id=INTEGER, object=const("budget"), account_id=INTEGER, key_id=NULLABLE_INTEGER, model=NULLABLE_STRING,
             tag=NULLABLE_STRING, period={"enum": ["daily", "weekly", "monthly", None]},
             kind={"enum": ["account", "model", "tag"]}, description=STRING, amount=NUMBER, spent=NUMBER,
             remaining=NUMBER, period_start=NULLABLE_STRING, resets_at=NULLABLE_STRING, created_at=STRING)
ITEM = obj(("type",), type=STRING, id=STRING)
BINARY = {"type": "string", "format": "binary"}
IMAGE_FIELDS = {"model": STRING, "n": {"type": "integer", "minimum": 1, "maximum": 10}, "size": STRING,
                "quality": STRING, "response_format": STRING, "user": STRING}
AUDIO_FORM = obj(("model", "file"), model=STRING, file=BINARY, language=STRING, prompt=STRING,
                 response_format={"enum": ["json", "text", "srt", "vtt", "verbose_json"]},
                 temperature=NUMBER)
MEDIA_SCHEMAS: dict[str, dict[str, Any]] = {  # images, audio, moderations, rerank (gateway.api.media)
    "ImageGenerationRequest": obj(("model", "prompt"), prompt=STRING, **IMAGE_FIELDS),
    "ImageEditRequest": obj(("model", "image", "prompt"), image=BINARY, mask=BINARY, prompt=STRING, **IMAGE_FIELDS),
    "ImageVariationRequest": obj(("model", "image"), image=BINARY, **IMAGE_FIELDS),
    "TranscriptionRequest": AUDIO_FORM,
    "TranslationRequest": AUDIO_FORM,
    "SpeechRequest": obj(("model", "input", "voice"), model=STRING, input={"type": "string", "minLength": 1,
                         "maxLength": 4096}, voice=STRING, instructions=STRING, speed=NUMBER,
                         response_format={"enum": ["mp3", "opus", "aac", "flac", "wav", "pcm"]}),
    "ModerationRequest": obj(("model", "input"), model=STRING, input={"type": ["string", "array"]}),
    "RerankRequest": obj(("model", "query", "documents"), model=STRING, query={"type": "string", "minLength": 1},
                         documents={"type": "array", "minItems": 1, "items": {"type": ["string", "object"]}},
                         top_n={"type": "integer", "minimum": 1}, return_documents=BOOLEAN),
    "ImagesResponse": obj((), created=INTEGER, data={"type": "array", "items": ANY_OBJECT}, usage=ANY_OBJECT),
    "Transcription": obj((), text=STRING, duration=NUMBER, usage=ANY_OBJECT),
    "ModerationResult": obj((), id=STRING, model=STRING, results={"type": "array", "items": ANY_OBJECT}),
    "RerankResult": obj((), id=STRING, results={"type": "array", "items": ANY_OBJECT}, meta=ANY_OBJECT,
                        usage=ANY_OBJECT),
}
FILE = obj(("id", "object", "bytes", "created_at", "filename", "purpose", "status"), id=STRING, object=const("file"),
           bytes=INTEGER, created_at=INTEGER, filename=STRING, purpose=STRING, status=STRING,
           status_details=NULLABLE_STRING, expires_at=NULLABLE_INTEGER)
BATCH = obj(("id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at",
             "request_counts"), id=STRING, object=const("batch"), endpoint=STRING, input_file_id=STRING,
            completion_window=STRING, status={"enum": ["validating", "failed", "in_progress", "finalizing",
                                                       "completed", "expired", "cancelling", "cancelled"]},
            output_file_id=NULLABLE_STRING, error_file_id=NULLABLE_STRING, created_at=INTEGER,
            errors={"type": ["object", "null"]}, metadata={"type": ["object", "null"]},
            request_counts=obj(("total", "completed", "failed"), total=INTEGER, completed=INTEGER, failed=INTEGER),
            **{name: NULLABLE_INTEGER for name in ("in_progress_at", "expires_at", "finalizing_at", "completed_at",
                                                   "failed_at", "expired_at", "cancelling_at", "cancelled_at")})

SCHEMAS: dict[str, dict[str, Any]] = {
    "ChatCompletion": obj(("choices",), id=STRING, object=STRING, created=INTEGER, model=STRING,
                          choices={"type": "array", "items": ANY_OBJECT}, usage={"type": ["object", "null"]}),
    "Completion": obj(("choices",), id=STRING, object=STRING, created=INTEGER, model=STRING,
                      choices={"type": "array", "items": ANY_OBJECT}, usage={"type": ["object", "null"]}),
    "EmbeddingList": obj(("data",), object=STRING, model=STRING, data={"type": "array", "items": ANY_OBJECT},
                         usage={"type": ["object", "null"]}),
    "ModelList": listing(obj(("id", "object", "created", "owned_by"), id=STRING, object=const("model"),
                             created=INTEGER, owned_by=STRING)),
    "OpenRouterModelList": obj(("data",), data={"type": "array", "items": obj(
        ("id", "name", "pricing"), id=STRING, name=STRING, pricing=ANY_OBJECT, context_length=NULLABLE_INTEGER)},
        total_count=INTEGER),
    "Response": obj(("id", "object", "created_at", "status", "model", "output"),
                    id=STRING, object=const("response"), created_at=INTEGER, status=STRING, model=STRING,
                    output={"type": "array", "items": ITEM}, usage={"type": ["object", "null"]},
                    error={"type": ["object", "null"]}),
    "ResponseDeleted": obj(("id", "object", "deleted"), id=STRING, object=const("response"),
                           deleted={"const": True}),
    "Compaction": obj(("id", "object", "output", "created_at"), id=STRING, object=const("response.compaction"),
                      output={"type": "array", "items": ITEM}, created_at=INTEGER, usage=ANY_OBJECT),
    "ItemPage": page(ITEM),
    "Item": ITEM,
    "Conversation": obj(("id", "object", "created_at", "metadata"), id=STRING, object=const("conversation"),
                        created_at=INTEGER, metadata={"type": "object", "additionalProperties": STRING}),
    "ConversationDeleted": obj(("id", "object", "deleted"), id=STRING, object=const("conversation.deleted"),
                               deleted={"const": True}),
    "McpServerList": listing(obj(("label", "status"), label=STRING, transport=STRING, status=STRING,
                                 tool_count=NULLABLE_INTEGER)),
    "McpToolList": listing(obj(("name", "input_schema"), name=STRING, description=NULLABLE_STRING,
                               input_schema=ANY_OBJECT), server_label=STRING),
    "Quota": obj(("username", "balance", "remaining_quota", "used_quota"), username=STRING, balance=NUMBER,
                 remaining_quota=NUMBER, used_quota=NUMBER, thinking=ANY_OBJECT),
    "CreditBalance": obj(("user_id", "current_balance", "total_earned", "total_spent", "tier"),
                         user_id=STRING, current_balance=NUMBER, total_earned=NUMBER, total_spent=NUMBER,
                         tier=STRING, expiring_credits=NUMBER, next_expiration=STRING),
    "OpenRouterKey": obj(("data",), data=obj(("label", "usage", "limit", "is_free_tier"), label=STRING,
                                             usage=NUMBER, limit=NULLABLE_NUMBER, limit_remaining=NULLABLE_NUMBER,
                                             is_free_tier=BOOLEAN, rate_limit=ANY_OBJECT,
                                             stream_limit=ANY_OBJECT, limit_reset=NULLABLE_STRING,
                                             budgets={"type": "array", "items": ANY_OBJECT},
                                             effective_budget={"type": ["object", "null"]})),
    "OpenRouterCredits": obj(("data",), data=obj(("total_credits", "total_usage"), total_credits=NUMBER,
                                                 total_usage=NUMBER)),
    "Generation": obj(("data",), data=obj(("id", "model", "total_cost", "tokens_prompt", "tokens_completion"),
                                          id=STRING, model=STRING, total_cost=NUMBER, tokens_prompt=INTEGER,
                                          tokens_completion=INTEGER, streamed=BOOLEAN, latency=NULLABLE_INTEGER)),
    "Key": KEY_OBJECT,
    "CreatedKey": {**KEY_OBJECT, "required": [*KEY_OBJECT["required"], "key"],
                   "properties": {**KEY_OBJECT["properties"], "key": STRING}},
    "KeyList": listing(ref("Key")),
    "Budget": BUDGET,
    "BudgetList": listing(ref("Budget")),
    "BudgetDeleted": obj(("id", "object", "deleted"), id=INTEGER, object=const("budget"), deleted={"const": True}),
    "DeploymentList": listing(obj(
        ("model_id", "deployment", "provider", "upstream_model", "weight", "priority", "status", "cooling_until",
         "failures", "in_flight", "ttft_ms"),
        model_id=STRING, deployment=STRING, provider=STRING, upstream_model=STRING, weight=NUMBER, priority=INTEGER,
        status={"enum": ["healthy", "cooling", "half_open", "trial"]}, cooling_until=NULLABLE_STRING,
        failures=INTEGER, in_flight=INTEGER, ttft_ms=NULLABLE_NUMBER)),
    "GuardrailList": listing(obj(  # GET /admin/guardrails: those that would apply, in the order they run
        ("name", "type", "stages", "action", "sources"), name=STRING, type=STRING, stages=NAMES, action=STRING,
        sources={"type": "array", "items": {"enum": ["default", "model", "profile", "account", "key"]}})),
    "Account": ACCOUNT,
    "GrantedAccount": {**ACCOUNT, "required": [*ACCOUNT["required"], "grant_id"],
              "properties": {**ACCOUNT["properties"], "grant_id": INTEGER}},
    "Ledger": listing(obj(("id", "kind", "amount", "created_at"), id=INTEGER, kind=STRING, amount=NUMBER,
                          api_key_id=NULLABLE_INTEGER, request_id=NULLABLE_STRING, note=NULLABLE_STRING,
                          created_at=STRING)),
    "Health": obj(("status",), status=STRING),
    "UsageReport": obj(  # GET /api/v1/usage: the group's value under the `group_by` name (`day`, `model`, ...)
        ("object", "group_by", "from", "to", "data", "total"), object=const("usage_report"), group_by=STRING,
        **{"from": STRING, "to": STRING}, account_id=NULLABLE_INTEGER,
        data={"type": "array", "items": obj(("requests", "spend", "input_tokens", "output_tokens"),
                                            requests=INTEGER, spend=NUMBER, input_tokens=INTEGER,
                                            output_tokens=INTEGER)},
        total=obj(("requests", "spend", "input_tokens", "output_tokens"), requests=INTEGER, spend=NUMBER,
                  input_tokens=INTEGER, output_tokens=INTEGER)),
    "Readiness": obj(("status", "checks", "down"), status={"enum": ["ready", "unavailable"]}, checks=ANY_OBJECT,
                     down={"type": "array", "items": STRING}),
    "OpenApiDocument": obj(("openapi", "info", "paths"), openapi=STRING, info=ANY_OBJECT, paths=ANY_OBJECT),
    "MessagesRequest": obj(("model", "max_tokens", "messages"), model=STRING, max_tokens={"type": "integer",
                           "minimum": 1}, messages={"type": "array", "minItems": 1, "items": ANY_OBJECT},
                           system={"type": ["string", "array"]}, stream=BOOLEAN),
    "CountTokensRequest": obj(("model", "messages"), model=STRING,
                              messages={"type": "array", "minItems": 1, "items": ANY_OBJECT}),
    "AnthropicMessage": obj(("id", "type", "role", "content", "model", "stop_reason", "usage"), id=STRING,
                            type=const("message"), role=const("assistant"), content={"type": "array",
                            "items": ANY_OBJECT}, model=STRING, stop_reason=NULLABLE_STRING,
                            stop_sequence=NULLABLE_STRING, usage=obj(("input_tokens", "output_tokens"),
                            input_tokens=INTEGER, output_tokens=INTEGER)),
    "MessageTokenCount": obj(("input_tokens",), input_tokens=INTEGER),
    **MEDIA_SCHEMAS,
    "FileUpload": obj(("file", "purpose"), file=BINARY, purpose={"enum": ["batch"]}),
    "File": FILE,
    "FileList": page(ref("File")),
    "FileDeleted": obj(("id", "object", "deleted"), id=STRING, object=const("file"), deleted={"const": True}),
    "Batch": BATCH,
    "BatchList": page(ref("Batch")),
}
MULTIPART = "multipart/form-data"
SHARED = [
    Operation("post", "/chat/completions", "Chat completion, JSON or SSE; `tools: \"auto\"` runs MCP tools",
              "ChatCompletion", BODY + RELAYED, ChatRequest, streams=True),
    Operation("post", "/completions", "Legacy text completion, JSON or SSE", "Completion", BODY + RELAYED,
              CompletionRequest, streams=True),
    Operation("post", "/embeddings", "Embeddings", "EmbeddingList", BODY + RELAYED, EmbeddingRequest),
    Operation("post", "/messages", "Anthropic's Messages API on any model, JSON or SSE (errors in Anthropic's shape)",
              "AnthropicMessage", BODY + RELAYED, "MessagesRequest", streams=True),
    Operation("post", "/messages/count_tokens", "The gateway's estimate of a Messages request's input tokens",
              "MessageTokenCount", (*BODY, 404), "CountTokensRequest"),
    Operation("post", "/images/generations", "Images from a prompt (priced per image by size and quality)",
              "ImagesResponse", BODY + RELAYED, "ImageGenerationRequest"),
    Operation("post", "/images/edits", "Images edited from uploads and a prompt (priced per image)",
              "ImagesResponse", BODY + RELAYED, "ImageEditRequest", body_type=MULTIPART),
    Operation("post", "/images/variations", "Variations of an uploaded image (priced per image)",
              "ImagesResponse", BODY + RELAYED, "ImageVariationRequest", body_type=MULTIPART),
    Operation("post", "/audio/transcriptions", "Speech to text (priced per audio second)", "Transcription",
              BODY + RELAYED, "TranscriptionRequest", body_type=MULTIPART, also_as=("text/plain",)),
    Operation("post", "/audio/translations", "Speech to English text (priced per audio second)", "Transcription",
              BODY + RELAYED, "TranslationRequest", body_type=MULTIPART, also_as=("text/plain",)),
    Operation("post", "/audio/speech", "Text to speech, streamed audio (priced per 1,000 characters)", None,
              BODY + RELAYED, "SpeechRequest"),
    Operation("post", "/moderations", "Moderation (free unless the model sets a price per request)",
              "ModerationResult", BODY + RELAYED, "ModerationRequest"),
    Operation("post", "/rerank", "Rerank documents for a query (Cohere, Jina and vLLM's shape; per search unit)",
              "RerankResult", BODY + RELAYED, "RerankRequest"),
    Operation("get", "/models", "The configured models",
              {"openai": "ModelList", "openrouter": "OpenRouterModelList"}),
    Operation("get", "/mcp/servers", "Built-in MCP servers and their state", "McpServerList"),
    Operation("get", "/mcp/servers/{label}/tools", "A built-in MCP server's tools", "McpToolList", (404, 409)),
    Operation("post", "/responses", "Create a response: JSON, SSE, or queued in the background", "Response",
              BODY + RELAYED, CreateResponseRequest, streams=True),
    Operation("get", "/responses", "Responses WebSocket mode (answers 426 without an Upgrade header)",
              None, (400, 426), ok_statuses=(101,)),
    Operation("post", "/responses/compact", "Compact a conversation into one sealed item", "Compaction",
              BODY + RELAYED, "CompactRequest"),
    Operation("get", "/responses/{response_id}", "A stored response", "Response", (404,)),
    Operation("delete", "/responses/{response_id}", "Delete a stored response", "ResponseDeleted", (404,)),
    Operation("get", "/responses/{response_id}/input_items", "A stored response's input items", "ItemPage",
              (400, 404), query=responses.InputItemsQuery),
    Operation("post", "/responses/{response_id}/cancel", "Cancel a background response", "Response", (404, 409)),
    Operation("post", "/conversations", "Create a conversation", "Conversation", BODY,
              conversations.CreateBody),
    Operation("get", "/conversations/{conversation_id}", "A conversation", "Conversation", (404,)),
    Operation("post", "/conversations/{conversation_id}", "Replace a conversation's metadata", "Conversation",
              (*BODY, 404), conversations.UpdateBody),
    Operation("delete", "/conversations/{conversation_id}", "Delete a conversation", "ConversationDeleted",
              (404,)),
    Operation("post", "/conversations/{conversation_id}/items", "Add items", "ItemPage", (*BODY, 404),
              conversations.ItemsBody),
    Operation("get", "/conversations/{conversation_id}/items", "A page of a conversation's items", "ItemPage",
              (400, 404), query=conversations.ItemsQuery),
    Operation("get", "/conversations/{conversation_id}/items/{item_id}", "One item", "Item", (404,)),
    Operation("delete", "/conversations/{conversation_id}/items/{item_id}", "Delete one item", "Conversation",
              (404,)),
    Operation("post", "/files", "Upload a JSONL file for a batch (multipart: `file`, `purpose: batch`)", "File",
              BODY, "FileUpload", body_type="multipart/form-data"),
    Operation("get", "/files", "A page of the account's files", "FileList", (400, 404), query=files.ListQuery),
    Operation("get", "/files/{file_id}", "A file's object", "File", (404,)),
    Operation("get", "/files/{file_id}/content", "A file's contents (streamed)", None, (404,),
              also_as=("application/octet-stream",)),
    Operation("delete", "/files/{file_id}", "Delete a file", "FileDeleted", (404,)),
    Operation("post", "/batches", "Create a batch from an uploaded file (run in the background)", "Batch",
              (*BODY, 404), batches.CreateBody),
    Operation("get", "/batches", "A page of the account's batches, newest first", "BatchList", (400,),
              query=batches.ListQuery),
    Operation("get", "/batches/{batch_id}", "A batch", "Batch", (404,)),
    Operation("post", "/batches/{batch_id}/cancel", "Cancel a batch (cancelling, then cancelled)", "Batch", (404,)),
]

PROFILE = "/api/v1/openai/{scope}/{profile}"
PROFILE_RESPONSES = [  # the Responses routes again under a profile, whose servers are offered as `mcp` tools
    replace(op, path=PROFILE + op.path, summary=f"{op.summary} (in a profile)", errors=tuple(dict.fromkeys(
        (*op.errors, 404)))) for op in SHARED if op.path.startswith("/responses")]
ROOT = [
    Operation("post", f"{PROFILE}/chat/completions", "Chat in an mcp.run-style profile",
              "ChatCompletion", BODY + RELAYED, ChatRequest, streams=True),
    Operation("get", f"{PROFILE}/models", "The models a profile can use", "ModelList",
              (404,)),
    *PROFILE_RESPONSES,
    Operation("get", "/quota", "Balance overview (MCPHub)", "Quota"),
    Operation("get", "/api/v3/auth/credit-balance", "Detailed balance (MCPHub)", "CreditBalance"),
    Operation("get", "/api/v1/key", "OpenRouter's key object", "OpenRouterKey"),
    Operation("get", "/api/v1/auth/key", "OpenRouter's key object (older path)", "OpenRouterKey"),
    Operation("get", "/api/v1/credits", "OpenRouter's account credits", "OpenRouterCredits"),
    Operation("get", "/api/v1/generation", "OpenRouter's stats of one generation of the caller's account",
              "Generation", (400, 404), query=generations.GenerationQuery),
    Operation("get", "/api/v1/usage", "The account's spend, requests and tokens grouped by day, model, key, tag or "
              "user (JSON, or CSV with format=csv)", "UsageReport", (400,), query=usage.UsageArgs,
              also_as=(usage.CSV_TYPE,)),
    Operation("post", "/admin/keys", "Create a key", "CreatedKey", (*BODY, 404), admin.CreateKey,
              auth=ADMIN, ok_statuses=(201,)),
    Operation("get", "/admin/keys", "Every key", "KeyList", (404,), auth=ADMIN),
    Operation("patch", "/admin/keys/{key_id}", "Change a key's limits", "Key", (*BODY, 404), admin.UpdateKey,
              auth=ADMIN),
    Operation("delete", "/admin/keys/{key_id}", "Revoke a key", "Key", (400, 404), auth=ADMIN),
    Operation("get", "/admin/accounts/{account_id}", "An account and its balances", "Account", (400, 404),
              auth=ADMIN),
    Operation("patch", "/admin/accounts/{account_id}", "Change an account", "Account", (*BODY, 404),
              admin.UpdateAccount, auth=ADMIN),
    Operation("post", "/admin/accounts/{account_id}/credits", "Grant credits", "GrantedAccount", (*BODY, 404),
              admin.Grant, auth=ADMIN, ok_statuses=(201,)),
    Operation("get", "/admin/accounts/{account_id}/ledger", "An account's credit movements", "Ledger",
              (400, 404), query={"limit": {"type": "integer", "description": "clamped to 1..1000"}}, auth=ADMIN),
    Operation("get", "/admin/budgets", "Every budget with its spend this period", "BudgetList", (404,),
              query={"account_id": {"type": "integer", "description": "only this account's"}}, auth=ADMIN),
    Operation("post", "/admin/budgets", "Set a budget: an account's, a key's for one model, or a tag's", "Budget",
              (*BODY, 404, 409), admin.CreateBudget, auth=ADMIN, ok_statuses=(201,)),
    Operation("get", "/admin/budgets/{budget_id}", "A budget with its spend this period", "Budget", (400, 404),
              auth=ADMIN),
    Operation("patch", "/admin/budgets/{budget_id}", "Change a budget's amount or period", "Budget", (*BODY, 404),
              admin.UpdateBudget, auth=ADMIN),
    Operation("delete", "/admin/budgets/{budget_id}", "Remove a budget", "BudgetDeleted", (400, 404), auth=ADMIN),
    Operation("get", "/admin/deployments", "Every deployment's routing state (shared health, this worker's load)",
              "DeploymentList", (404,), auth=ADMIN),
    Operation("get", "/admin/guardrails", "The guardrails that would apply to a request, in order, with where each "
              "comes from", "GuardrailList", (400, 404), query=admin.GuardrailsQuery, auth=ADMIN),
    Operation("get", "/admin/usage", "Any account's spend, requests and tokens, grouped (JSON or CSV)",
              "UsageReport", (400, 404), query=usage.AdminUsageArgs, auth=ADMIN, also_as=(usage.CSV_TYPE,)),
    Operation("get", "/healthz", "Liveness", "Health", auth=PUBLIC),
    Operation("get", "/readyz", "Readiness (503 names what is down)", "Readiness", auth=PUBLIC,
              ok_statuses=(200, 503)),
    Operation("get", "/openapi.json", "This document", "OpenApiDocument", auth=PUBLIC),
]
INTEGER_PARAMS = {"key_id", "account_id", "budget_id"}  # `<int:...>` in the Flask rule

