"""The server secret and the keys derived from it, one per purpose.

The secret is the env var named by `[responses] secret_env` (default GATEWAY_SECRET), or, when
that is unset, a random secret generated once per database and kept in `server_secret`, so every
worker and host sharing the database agrees with nothing to configure (set the env var to keep it
out of the database; changing it invalidates what was sealed or signed with it). Each user of it
(compaction blobs, dashboard sessions) derives its own key with HKDF-SHA256 and its own label.
"""

from __future__ import annotations

import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import Settings
from gateway.tables import ServerSecret

SECRET_NAME = "responses.compaction"  # the row's name predates the other users of the secret


def server_secret(settings: Settings) -> bytes:
    """The env secret, else this database's own random secret (created once, race-free)."""
    value = os.environ.get(settings.responses.secret_env, "")
    if value:
        return value.encode()
    ServerSecret.insert(name=SECRET_NAME, value=secrets.token_urlsafe(48)).on_conflict_ignore().execute()
    return ServerSecret.get_by_id(SECRET_NAME).value.encode()


def derived_key(settings: Settings, label: bytes) -> bytes:
    """The 256-bit key for one purpose (`label`) derived from this server's secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(server_secret(settings))
