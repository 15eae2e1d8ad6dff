"""The gateway's tables as Peewee models (schema changes go through gateway/migrations)."""

from __future__ import annotations

import datetime

from peewee import (
    BigAutoField,
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    CompositeKey,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from gateway.db import database


def utcnow() -> datetime.datetime:
    """Naive UTC now, the one clock every row uses."""
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database


class Account(BaseModel):
    """A tenant: its keys share its balance."""

    name = CharField()
    tier = CharField(default="free")
    scope = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    max_streams = IntegerField(null=True)  # open streams of all its keys, per worker (0012); None: from capacity
    key_limits = TextField(null=True)  # JSON {limit: value} an operator set for every key: their ceilings (0013)
    guardrails = TextField(null=True)  # JSON list of [guardrails.NAME] names applied to its keys' requests (0023)

    class Meta:
        table_name = "account"


class ApiKey(BaseModel):
    """An API key; only its SHA-256 digest and a display prefix are stored."""

    account = ForeignKeyField(Account, backref="keys", on_delete="CASCADE")
    name = CharField()
    digest = CharField(max_length=64, unique=True)
    prefix = CharField(max_length=16)
    revoked = BooleanField(default=False)
    rpm = IntegerField(null=True)
    tpm = IntegerField(null=True)
    spend_limit = BigIntegerField(null=True)  # micro-credits; None = no per-key cap
    created_at = DateTimeField(default=utcnow)
    mcp_servers = TextField(null=True)  # JSON list of built-in MCP server labels this key may use (0009); None: all
    max_streams = IntegerField(null=True)  # open streams per worker (0012); None: the account's or capacity's
    operator_limits = TextField(null=True)  # JSON {limit: value} an operator set: a member's ceiling (0012)
    limit_reset = CharField(max_length=16, null=True)  # spend_limit's period: daily | weekly | monthly; None: lifetime (0019)
    guardrails = TextField(null=True)  # JSON list of [guardrails.NAME] names applied to its requests (0023); None: none

    class Meta:
        table_name = "api_key"


class UsageEntry(BaseModel):
    """One request's token counts, latency and status."""

    request_id = CharField(max_length=64, index=True)
    api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
    account = ForeignKeyField(Account, null=True, on_delete="SET NULL")
    endpoint = CharField(max_length=64)
    model = CharField(null=True)
    prompt_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)
    estimated = BooleanField(default=False)
    status = IntegerField()
    latency_ms = IntegerField()
    cost = BigIntegerField(default=0)  # micro-credits charged
    created_at = DateTimeField(default=utcnow, index=True)
    # generation stats (migration 0008), read by GET /api/v1/generation
    generation_id = CharField(max_length=64, null=True, index=True)  # the answer's `id` and X-Generation-Id
    provider = CharField(null=True)
    ttft_ms = IntegerField(null=True)  # time to the first generated token of a stream
    finish_reason = CharField(max_length=32, null=True)
    streamed = BooleanField(default=False)
    cancelled = BooleanField(default=False)  # the client disconnected (status 499)
    cached_tokens = IntegerField(default=0)  # of prompt_tokens: read from a prompt cache (0014)
    cache_write_tokens = IntegerField(default=0)  # of prompt_tokens: written to a prompt cache (0014)
    reasoning_tokens = IntegerField(default=0)  # of completion_tokens (0014)
    deployment = CharField(max_length=200, null=True)  # the deployment that answered (0016)
    attempts = IntegerField(default=0)  # upstream attempts, retries included (0016)
    cache_hit = BooleanField(default=False)  # answered from the response cache (0017)
    end_user = CharField(max_length=256, null=True)  # OpenAI's `user` / Anthropic's metadata.user_id (0017)
    tags = CharField(max_length=2048, null=True)  # the request's tags, comma-separated (0017)
    guardrails = TextField(null=True)  # JSON [{"name", "action", "stage"}] of the guardrails that acted (0022)
    unit = CharField(max_length=64, null=True)  # what `units` counts on a media endpoint (0024)
    units = DoubleField(null=True)  # images, audio seconds, characters, search units or requests priced (0024)
    batch = BooleanField(default=False)  # a line of a batch, charged [batches] batch_price_fraction (0025)

    class Meta:
        table_name = "usage_entry"


class CreditGrant(BaseModel):
    """Credits added to an account (top-up or promotion), drawn down soonest-expiring first.

    `remaining` is negative only for a debt: a charge that exceeded what was left (never cut);
    the next grant repays it first.
    """

    account = ForeignKeyField(Account, backref="grants", on_delete="CASCADE")
    amount = BigIntegerField()  # micro-credits granted
    remaining = BigIntegerField()  # micro-credits not yet spent or expired
    source = CharField(default="grant")
    expires_at = DateTimeField(null=True, index=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "credit_grant"


class LedgerEntry(BaseModel):
    """One movement of credits: `grant` (+), `charge` (-) or `expiry` (-), in micro-credits."""

    account = ForeignKeyField(Account, backref="ledger", on_delete="CASCADE", index=False)
    api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL", index=False)
    kind = CharField(max_length=16)
    amount = BigIntegerField()
    request_id = CharField(max_length=64, null=True)
    note = CharField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    model = CharField(null=True)  # a charge's public model, for model budgets (0019)
    tags = CharField(max_length=2048, null=True)  # a charge's request tags, comma-separated, for tag budgets (0019)

    class Meta:
        table_name = "ledger_entry"
        # they lead, so no FK indexes; created_at last: a budget period's charges are a range (0019)
        indexes = ((("account", "kind", "created_at"), False), (("api_key", "kind", "created_at"), False))


class Reservation(BaseModel):
    """Credits held for a request in flight: `open` until settled, released or swept."""

    account = ForeignKeyField(Account, on_delete="CASCADE")
    api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
    amount = BigIntegerField()
    status = CharField(max_length=16, default="open")
    request_id = CharField(max_length=64)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    model = CharField(null=True)  # the requested public model, for model budgets (0019)
    tags = CharField(max_length=2048, null=True)  # the request's tags, comma-separated, for tag budgets (0019)

    class Meta:
        table_name = "reservation"  # + a partial index of open holds (migration 0007)


class Budget(BaseModel):
    """A cap on an account's spend per period (0019; gateway.accounting.budgets): what it counts is every charge and
    open hold of the account that matches all of its set filters (a key, a model, a tag).

    The shapes the gateway offers: the account's (no filter), a key's per-model budget (key and model), a tag's
    (tag: every key of the account that sends it). A key's own spend limit lives on the key (spend_limit, limit_reset).
    """

    account = ForeignKeyField(Account, backref="budgets", on_delete="CASCADE")
    api_key = ForeignKeyField(ApiKey, null=True, backref="budgets", on_delete="CASCADE")
    model = CharField(null=True)  # a public model id
    tag = CharField(max_length=64, null=True)
    period = CharField(max_length=16, null=True)  # daily | weekly | monthly (UTC, weeks from Monday); None: lifetime
    amount = BigIntegerField()  # micro-credits
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "budget"


class RateWindow(BaseModel):
    """One key's request and token counts in one minute (table from migration 0003)."""

    key_id = IntegerField()
    window_start = BigIntegerField()
    requests = IntegerField(default=0)
    tokens = BigIntegerField(default=0)

    class Meta:
        table_name = "rate_window"
        primary_key = CompositeKey("key_id", "window_start")


class StoredResponse(BaseModel):
    """A stored Responses API response: its own input and output items and its parent's id."""

    id = CharField(primary_key=True, max_length=64)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
    previous_response_id = CharField(max_length=64, null=True)
    status = CharField(max_length=16)
    background = BooleanField(default=False)
    body = TextField()  # the response object as JSON, without `output`
    input_items = TextField()  # this turn's own input items (JSON list), never the chain's history
    output_items = TextField()  # this turn's output items (JSON list)
    created_at = DateTimeField(default=utcnow, index=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "stored_response"


class ServerSecret(BaseModel):
    """A random secret generated once per database (e.g. the compaction key when no env secret is set)."""

    name = CharField(primary_key=True, max_length=64)
    value = CharField(max_length=128)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "server_secret"


class Conversation(BaseModel):
    """A Conversations API conversation: its metadata (its items are ConversationItem rows)."""

    id = CharField(primary_key=True, max_length=64)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    metadata = TextField(default="{}")  # JSON object of strings
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "conversation"


class ConversationItem(BaseModel):
    """One item of a conversation; `seq` orders a conversation's items as they were added."""

    seq = BigAutoField()
    conversation = ForeignKeyField(Conversation, on_delete="CASCADE")
    item_id = CharField(max_length=64)
    body = TextField()  # the item as JSON
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "conversation_item"
        indexes = ((("conversation", "item_id"), True), (("conversation", "seq"), False))


class User(BaseModel):
    """A dashboard user: signs in with an email and password, sees one account (all of them as an admin)."""

    email = CharField(max_length=254, unique=True)  # stored lower-cased
    password_hash = CharField(max_length=255)  # werkzeug's scrypt hash, never the password
    account = ForeignKeyField(Account, backref="users", on_delete="CASCADE")
    role = CharField(max_length=16, default="member")  # "member" or "admin"
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "dashboard_user"


class SignInFailure(BaseModel):
    """A dashboard sign-in attempt, recorded before its password is checked and kept unless it succeeds.

    Counted per (address, email) pair and per email to slow password guessing (gateway.dashboard.signin_limit).
    """

    address = CharField(max_length=64, index=True)
    email = CharField(max_length=254, index=True)
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "sign_in_failure"


class DashboardSession(BaseModel):
    """A signed-in dashboard session (0011): the cookie holds its token, this row the token's digest.

    Deleting the row (sign-out, password change, the user's deletion) ends every copy of the cookie.
    """

    digest = CharField(primary_key=True, max_length=64)  # SHA-256 of the cookie's token, never the token
    user = ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow)
    seen_at = DateTimeField(default=utcnow, index=True)
    new_key = TextField(null=True)  # a new key's secret for its one page, encrypted under the cookie's token

    class Meta:
        table_name = "dashboard_session"


class FormToken(BaseModel):
    """A dashboard form's one-use token (0011): a POST that brings it back consumes it, so a repeat does nothing."""

    token = CharField(primary_key=True, max_length=64)
    session = ForeignKeyField(DashboardSession, on_delete="CASCADE")
    created_at = DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "dashboard_form_token"


class DeploymentHealth(BaseModel):
    """A deployment's health shared by every worker and host (0015; gateway.upstream.health_store).

    Times are epoch seconds. A row is written only when the state changes (a failure, a trial, the
    success that ends them); a deployment without a row is healthy.
    """

    name = CharField(primary_key=True, max_length=200)
    failures = IntegerField(default=0)  # failures counted in the window that started at window_start
    window_start = DoubleField(default=0.0)
    cooling_until = DoubleField(default=0.0)
    half_open = BooleanField(default=False)
    trial_until = DoubleField(default=0.0)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "deployment_health"


class BudgetAlert(BaseModel):
    """A budget alert claimed for sending (0021; gateway.accounting.budget_alerts): once per budget, period, threshold.

    The unique index is the claim across workers and hosts; `body` is the exact JSON every try sends.
    """

    budget = CharField(max_length=200)  # the budget's identity, e.g. "budget:17" or "key:12"
    period_start = DateTimeField()  # naive UTC; 1970-01-01 for a budget that never resets
    threshold = IntegerField()  # basis points of the budget's amount (0.8 -> 8000)
    account_id = IntegerField(index=True)
    status = CharField(max_length=16, default="sending")  # sending | sent | failed
    attempts = IntegerField(default=0)
    body = TextField()
    last_error = CharField(max_length=500, null=True)
    claimed_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "budget_alert"
        indexes = ((("budget", "period_start", "threshold"), True),)


class ResponseCacheEntry(BaseModel):
    """One cached answer (0018; gateway.cache.database_cache), filed under the hash of its request.

    Times are epoch seconds. A lookup is one primary-key SELECT; an expired row is a miss, overwritten by
    the next answer stored under its key or deleted by the next eviction pass, which also keeps at most
    `[cache] max_entries` rows (the least recently used go first).
    """

    key = CharField(primary_key=True, max_length=64)  # sha256 hex (gateway.cache.key.cache_key)
    scope = CharField(max_length=100, null=True)  # "account:ID" or "shared:NAME": who may hit it
    model = CharField(max_length=200)  # the public model id
    endpoint = CharField(max_length=32)
    answer = TextField()  # the answer's JSON, as the client got it
    usage = TextField()  # JSON of the original answer's Usage fields
    bytes = IntegerField()
    created_at = DoubleField()
    expires_at = DoubleField(index=True)
    last_used_at = DoubleField(index=True)

    class Meta:
        table_name = "response_cache"


class BatchFile(BaseModel):
    """A file of the Files API (0025): its metadata; its bytes are FileChunk rows, in order."""

    id = CharField(primary_key=True, max_length=64)  # file-...
    account = ForeignKeyField(Account, on_delete="CASCADE")
    purpose = CharField(max_length=32)  # batch (uploaded), batch_output (written by a batch)
    filename = CharField(max_length=255)
    bytes = BigIntegerField(default=0)
    created_at = BigIntegerField()  # Unix seconds, as OpenAI's `created_at`
    status = CharField(max_length=16, default="processed")  # uploading: its chunks are still being written

    class Meta:
        table_name = "batch_file"
        indexes = ((("account", "created_at"), False),)


class FileChunk(BaseModel):
    """One piece (at most [batches] chunk_bytes) of a file's contents (0025)."""

    file = ForeignKeyField(BatchFile, column_name="file_id", on_delete="CASCADE")
    seq = IntegerField()
    data = BlobField()

    class Meta:
        table_name = "file_chunk"
        primary_key = CompositeKey("file", "seq")


class Batch(BaseModel):
    """A batch of the Batch API (0025): the object's fields, its progress and the lease of the worker running it."""

    id = CharField(primary_key=True, max_length=64)  # batch_...
    account = ForeignKeyField(Account, on_delete="CASCADE")
    api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")  # the key its lines are metered on
    endpoint = CharField(max_length=64)
    input_file_id = CharField(max_length=64)
    completion_window = CharField(max_length=8)
    status = CharField(max_length=16, index=True)
    output_file_id = CharField(max_length=64, null=True)
    error_file_id = CharField(max_length=64, null=True)
    errors = TextField(null=True)  # JSON list of {code, message, param, line} (validation)
    metadata = TextField(null=True)  # JSON object of strings
    total = IntegerField(default=0)
    completed = IntegerField(default=0)
    failed = IntegerField(default=0)
    created_at = BigIntegerField()
    expires_at = BigIntegerField()
    in_progress_at = BigIntegerField(null=True)
    finalizing_at = BigIntegerField(null=True)
    completed_at = BigIntegerField(null=True)
    failed_at = BigIntegerField(null=True)
    expired_at = BigIntegerField(null=True)
    cancelling_at = BigIntegerField(null=True)
    cancelled_at = BigIntegerField(null=True)
    lease_owner = CharField(max_length=64, null=True)  # the runner that holds it (host:pid:random)
    lease_until = DoubleField(default=0.0)  # Unix time its lease ends unless renewed

    class Meta:
        table_name = "batch"
        indexes = ((("account", "created_at"), False),)


class BatchLine(BaseModel):
    """The result of one line of a batch (0025): written once the line is done, so a resumed batch skips it."""

    batch_id = CharField(max_length=64)
    line = IntegerField()  # 0-based position in the input file
    ok = BooleanField()  # True: the output file; False: the error file
    result = TextField()  # the output or error line as JSON

    class Meta:
        table_name = "batch_line"
        primary_key = CompositeKey("batch_id", "line")
