"""What the dashboard does only once: a form's action (one-use form tokens) and a new key's page (its secret).

A form that creates something (a key, an account, a user, a grant) carries a `form_token`, a row
bound to the session; the POST consumes it in the same transaction as its action, so the same
form sent twice (a reload, a double click, a replay of the request) acts once.

After creating a key the POST redirects (Post/Redirect/Get); the secret waits for that one GET on
the session's row, encrypted (AES-GCM) under a key derived from the cookie's token, which the
database never holds: a reader of the table sees neither the secret nor a way to decrypt it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Response, flash, g, redirect, request, session

from gateway.dashboard.session import idle_cutoff
from gateway.tables import DashboardSession, FormToken, utcnow

FIELD = "form_token"
NEW_KEY_INFO = b"gateway/dashboard/new-key/v1"


def issue_form_token() -> str:
    """A fresh one-use token for a form rendered in this session (old unused ones are dropped)."""
    digest = g.dashboard_session.digest
    FormToken.delete().where(FormToken.session == digest, FormToken.created_at < idle_cutoff(utcnow())).execute()
    token = secrets.token_urlsafe(24)
    FormToken.create(token=token, session=digest)
    return token


def consume_form_token() -> bool:
    """Use up the posted form's token: True once, False when it was used already, expired or missing."""
    token = request.form.get(FIELD, "")
    if not token or len(token) > 64:
        return False
    used = FormToken.delete().where(FormToken.token == token, FormToken.session == g.dashboard_session.digest)
    return used.execute() == 1


def already_done(target: str) -> Response:
    """Where a form sent again goes: back to its page, saying that nothing was done twice."""
    flash("This form was already sent (or it expired), so nothing was done again. Reload the page to send "
          "a new one.", "error")
    return redirect(target, 303)


def _cipher() -> AESGCM:
    token = session["sid"].encode()
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=NEW_KEY_INFO).derive(token))


def stash_new_key(key_id: int, secret: str) -> None:
    """Keep a new key's secret, encrypted, for the one page that shows it."""
    nonce = os.urandom(12)
    sealed = _cipher().encrypt(nonce, secret.encode(), str(key_id).encode())
    value = json.dumps({"key_id": key_id, "sealed": base64.b64encode(nonce + sealed).decode()})
    DashboardSession.update(new_key=value).where(DashboardSession.digest == g.dashboard_session.digest).execute()


def take_new_key() -> tuple[int, str] | None:
    """The stashed key id and secret, removed as they are read (a second read, even a concurrent one, gets None)."""
    row = g.dashboard_session
    stored = DashboardSession.get_or_none(DashboardSession.digest == row.digest)
    if stored is None or stored.new_key is None:
        return None
    taken = (DashboardSession.update(new_key=None)
             .where(DashboardSession.digest == row.digest, DashboardSession.new_key == stored.new_key).execute())
    if taken != 1:
        return None
    value = json.loads(stored.new_key)
    sealed = base64.b64decode(value["sealed"])
    try:
        secret = _cipher().decrypt(sealed[:12], sealed[12:], str(value["key_id"]).encode())
    except InvalidTag:
        return None
    return value["key_id"], secret.decode()

