"""Fixtures of the fault suite: priced models on three providers (scriptable, raw socket, refused) and a payer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway import db
from gateway.accounting.credits import grant_credits
from gateway.config import Settings
from gateway.tables import ApiKey
from tests.faults.books import Payer
from tests.faults.raw_upstream import RawUpstream
from tests.ports import free_port

GRANT = 10_000_000  # micro-credits: 10 credits
PRICED = {"input_price_per_mtok": 1000, "output_price_per_mtok": 2000, "max_output_tokens": 100}
BACKUP_PRICED = {"input_price_per_mtok": 3000, "output_price_per_mtok": 5000, "max_output_tokens": 100}
RAW_TIMEOUT_S = 0.5  # the raw provider's read timeout: its hangs last longer, its slow answers less


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        yield raw


@pytest.fixture
def settings(make_settings: Callable[..., Settings], raw_upstream: RawUpstream) -> Settings:
    """Priced models: `paid-model` (and `backup-paid`) on the fake, `raw-model` on the raw socket
    server, `refused-model` on a port nobody listens on."""
    return make_settings(
        providers={
            "raw": {"base_url": raw_upstream.base_url, "timeout_s": RAW_TIMEOUT_S, "connect_timeout_s": 1},
            "refused": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "connect_timeout_s": 1},
        },
        models={
            "paid-model": {"provider": "fake", **PRICED},
            "backup-paid": {"provider": "fake", "upstream_model": "backup", **BACKUP_PRICED},
            "raw-model": {"provider": "raw", **PRICED},
            "refused-model": {"provider": "refused", **PRICED},
        },
    )


@pytest.fixture
def payer(make_key: Callable[..., str]) -> Payer:
    """A key whose account holds GRANT micro-credits."""
    secret = make_key("payer")
    with db.database.connection_context():
        account_id = ApiKey.get(ApiKey.name == "payer").account_id
        grant_credits(account_id, GRANT)
    return Payer(secret, account_id, GRANT)
