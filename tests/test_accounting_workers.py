"""Accounting across three gunicorn workers: revocations reach all (a worker killed with -9: tests/faults)."""

from __future__ import annotations

import time

import pytest
import requests

from gateway import db
from gateway.tables import ApiKey
from tests.faults.books import Payer
from tests.faults.load import fund, priced_config
from tests.live_gateway import live_gateway

RESERVATION_TTL_S = 2
KEY_CACHE_TTL_S = 1


@pytest.fixture
def funded(database_url) -> Payer:
    return fund(database_url, 1_000_000)


def test_a_revoked_key_is_refused_by_every_worker_within_the_cache_ttl(tmp_path, database_url, fake_upstream,
                                                                      funded):
    secret = funded.secret
    with db.database.connection_context():
        key_id = ApiKey.get(ApiKey.account == funded.account_id).id
    admin = {"Authorization": "Bearer adm"}
    fresh = {"X-API-Key": secret, "Connection": "close"}  # each request may reach any worker
    # The revoked key's 401s are what this counts: the failed-auth throttle (tests/test_auth_throttle.py) would
    # answer a worker's 21st with 429, so it is off here (the config's last table is [auth]).
    config = priced_config(database_url, fake_upstream.base_url, RESERVATION_TTL_S, KEY_CACHE_TTL_S)
    with live_gateway(tmp_path, config + "failed_attempts_per_address = 0\n", workers=3,
                      env={"GATEWAY_ADMIN_TOKEN": "adm"}) as served:
        models = f"{served.base_url}/v1/models"
        assert {requests.get(models, headers=fresh, timeout=10).status_code for _ in range(30)} == {200}
        assert requests.delete(f"{served.base_url}/admin/keys/{key_id}", headers=admin, timeout=10).ok
        time.sleep(KEY_CACHE_TTL_S + 0.2)  # the documented delay
        assert {requests.get(models, headers=fresh, timeout=10).status_code for _ in range(30)} == {401}
