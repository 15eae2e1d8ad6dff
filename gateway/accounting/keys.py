"""API keys: generation, SHA-256 digests, lookup from Bearer / X-API-Key (cached per worker), the admin token."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from flask import Flask, current_app, g, has_app_context, request

from gateway.accounting import auth_throttle
from gateway.accounting.guardrail_names import decode_names
from gateway.accounting.keycache import KeyCache
from gateway.accounting.mcp_allow_list import decode_allow_list
from gateway.errors import AuthenticationFailed, NotFound
from gateway.tables import Account, ApiKey

CACHE = "gateway.key_cache"
KEY_PREFIX = "sk-gw-"
DISPLAY_PREFIX_LENGTH = 12
LIMITS = ("rpm", "tpm", "spend_limit", "max_streams")


@dataclass(frozen=True)
class Caller:
    """Who made this request: the key and its account."""

    key: ApiKey
    account: Account

    @property
    def mcp_allow_list(self) -> list[str] | None:
        """The key's own MCP allow-list (None: every server its scope allows)."""
        return decode_allow_list(self.key.mcp_servers)

    @property
    def key_guardrails(self) -> tuple[str, ...]:
        """The guardrails attached to the key (names of `[guardrails.NAME]` tables)."""
        return decode_names(self.key.guardrails)

    @property
    def account_guardrails(self) -> tuple[str, ...]:
        """The guardrails attached to the key's account."""
        return decode_names(self.account.guardrails)


def generate_key() -> str:
    """A new secret: `sk-gw-` + 32 random bytes, urlsafe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer_token(headers) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, if any."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def presented_key(headers) -> str | None:
    """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY`, if any."""
    return bearer_token(headers) or headers.get("X-API-Key", "").strip() or None


def create_key(
    name: str,
    account: Account | None = None,
    *,
    tier: str = "free",
    scope: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    spend_limit: int | None = None,
) -> tuple[ApiKey, str]:
    """Create a key (and a new account named `name` unless one is given); return it and its secret."""
    if account is None:
        account = create_account(name, tier=tier, scope=scope)
    secret = generate_key()
    key = ApiKey.create(
        account=account,
        name=name,
        digest=digest(secret),
        prefix=secret[:DISPLAY_PREFIX_LENGTH],
        rpm=rpm,
        tpm=tpm,
        spend_limit=spend_limit,
    )
    return key, secret


def find_caller(secret: str | None) -> Caller:
    """The live key for `secret`, or 401."""
    if not secret:
        raise AuthenticationFailed(
            "Missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
        )
    return _caller_by_digest(digest(secret))


def _caller_by_digest(hashed: str) -> Caller:
    key = ApiKey.select(ApiKey, Account).join(Account).where(ApiKey.digest == hashed).first()
    if key is None or key.revoked:
        raise AuthenticationFailed("Invalid API key.")
    return Caller(key=key, account=key.account)


def current_caller() -> Caller:
    """Authenticate the current request once (through the worker's key cache) and remember it on `g`."""
    if "caller" not in g:
        with auth_throttle.guarded():
            g.caller = cached_caller(presented_key(request.headers))
    return g.caller


def cached_caller(secret: str | None) -> Caller:
    """find_caller, answered from the app's key cache while the entry is young."""
    cache: KeyCache[Caller] | None = current_app.extensions.get(CACHE)
    if cache is None or not secret:
        return find_caller(secret)
    hashed = digest(secret)
    caller = cache.get(hashed)
    if caller is None:
        caller = _caller_by_digest(hashed)
        cache.put(hashed, caller)
    return caller


def forget_key(key_id: int) -> None:
    """Drop a key from this process's cache (after a revoke or change through this process)."""
    if has_app_context() and CACHE in current_app.extensions:
        current_app.extensions[CACHE].forget(lambda caller: caller.key.id == key_id)


def forget_account(account_id: int) -> None:
    """Drop an account's keys from this process's cache (after a change of the account)."""
    if has_app_context() and CACHE in current_app.extensions:
        current_app.extensions[CACHE].forget(lambda caller: caller.account.id == account_id)


def init_app(app: Flask, ttl_s: float) -> None:
    """Give the app its key cache (entries live `ttl_s` seconds; 0 turns caching off)."""
    app.extensions[CACHE] = KeyCache(ttl_s)


def find_key(key_id: int) -> ApiKey:
    """A key by id, or 404."""
    key = ApiKey.get_or_none(ApiKey.id == key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.", param="id")
    return key


def revoke_key(key_id: int) -> ApiKey:
    """Mark a key revoked; 404 if it does not exist."""
    key = find_key(key_id)
    key.revoked = True
    key.save()
    forget_key(key_id)
    return key


def update_limits(key: ApiKey, changes: dict[str, int | None]) -> ApiKey:
    """Set some of a key's `rpm`, `tpm`, `spend_limit` (micro-credits), `max_streams` (None clears one); at once here."""
    for name, value in changes.items():
        if name not in LIMITS:
            raise ValueError(f"not a key limit: {name}")
        setattr(key, name, value)
    key.save()
    forget_key(key.id)
    return key


def set_mcp_servers(key: ApiKey, stored: str | None) -> ApiKey:
    """Set a key's MCP allow-list (as gateway.accounting.mcp_allow_list.encode_allow_list stores it; None clears it)."""
    key.mcp_servers = stored
    key.save()
    forget_key(key.id)
    return key


def set_guardrails(key: ApiKey, stored: str | None) -> ApiKey:
    """Set a key's guardrails (as gateway.accounting.guardrail_names.encode_names stores them; None: none)."""
    key.guardrails = stored
    key.save()
    forget_key(key.id)
    return key


def require_admin(token_env: str) -> None:
    """Check the admin token (`Authorization: Bearer` only); the admin API is off (404) when unset."""
    expected = os.environ.get(token_env, "")
    if not expected:
        raise NotFound("The admin API is disabled.")
    with auth_throttle.guarded():
        # bytes: compare_digest refuses non-ASCII str (a header may carry latin-1)
        if not hmac.compare_digest((bearer_token(request.headers) or "").encode(), expected.encode()):
            raise AuthenticationFailed("Invalid admin token.")


def create_account(name: str, *, tier: str = "free", scope: str | None = None) -> Account:
    """A new account (a tenant) with no keys and no credits."""
    return Account.create(name=name, tier=tier, scope=scope)


def update_account(account: Account, changes: dict[str, str | None]) -> Account:
    """Change some of an account's fields (gateway.accounting.admin_service checks them); its keys' cached copies go."""
    for name, value in changes.items():
        if name not in ("name", "tier", "scope", "max_streams", "key_limits", "guardrails"):
            raise ValueError(f"not an account field: {name}")
        setattr(account, name, value)
    account.save()
    forget_account(account.id)
    return account


def find_account(account_id: int) -> Account:
    """An account by id, or 404."""
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise NotFound(f"No account with id {account_id}.", param="account_id")
    return account
