"""Budget alerts: one signed POST to `[budget_alerts] url` when a budget's spend passes each threshold, per period.

Never on the request path. Each worker runs one daemon thread that scans the budgets every few
seconds (only the accounts charged since its last scan, adding only the new charges; every budget
from scratch every five minutes): a periodic scan needs no hook in the meter or the writer and
catches up by itself after a restart. A crossed
threshold is claimed by inserting a `budget_alert` row (unique on budget, period start and
threshold, migration 0021): the one worker, on whatever host, whose insert succeeds sends it, so
each alert goes out once. The row keeps the body, so a retry (exponential backoff, up to
`retries` more tries) and a worker that takes over a claim whose sender died send the same bytes.

    scan -> budget states (gateway.accounting.budget_spend) -> crossed thresholds -> claim (insert)
         -> POST (HMAC-SHA256 in X-Gateway-Signature when secret_env is set) -> status sent | failed
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import requests
from flask import Flask
from peewee import IntegrityError

from gateway.accounting.budget_spend import BudgetState, SpendTally, newest_ledger_id
from gateway.accounting.money import to_credits
from gateway.config import BudgetAlertSettings
from gateway.db import database, own_connection
from gateway.tables import BudgetAlert, LedgerEntry, utcnow

log = logging.getLogger(__name__)
EXTENSION = "gateway.budget_alerts"
SCAN_INTERVAL_S = 2.0  # how often a worker looks at the accounts charged since its last look
FULL_SCAN_INTERVAL_S = 300.0  # how often it recounts every budget (a lowered amount, a claim whose sender died)
FIRST_BACKOFF_S = 0.5  # wait before the first retry; doubled for each further one
MAX_BACKOFF_S = 30.0
BASIS_POINTS = 10_000  # a threshold is stored in basis points of the budget (0.8 -> 8000), an exact integer
MAX_KNOWN = 100_000  # claimed slots remembered to skip their insert
LIFETIME_START = datetime.datetime(1970, 1, 1)  # the period start of a budget that never resets


def basis_points(threshold: float) -> int:
    """A threshold share (0.8) as whole basis points (8000)."""
    return round(threshold * BASIS_POINTS)


def crossed(state: BudgetState, thresholds: Iterable[float]) -> list[int]:
    """The thresholds (in basis points, ascending) this budget's spend has reached; none for a zero budget."""
    amount = state.budget.amount
    if amount <= 0:
        return []
    return sorted(points for points in {basis_points(share) for share in thresholds}
                  if state.spent * BASIS_POINTS >= points * amount)


def iso(moment: datetime.datetime | None) -> str | None:
    """A naive UTC time as ISO 8601 with a Z, to the second."""
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def alert_body(state: BudgetState, points: int, created_at: datetime.datetime) -> str:
    """The JSON the webhook receives for one crossed threshold (credits as numbers, times in ISO 8601 UTC)."""
    budget = state.budget
    return json.dumps({
        "type": "budget.threshold",
        "id": f"{state.identity}:{iso(state.period_start) or 'lifetime'}:{points}",  # the same on every retry
        "budget": {"id": state.identity, "kind": budget.kind, "target": state.target, "description": budget.describe(),
                   "key_id": budget.key_id, "model": budget.model, "tag": budget.tag,
                   "period": budget.period or "lifetime", "amount": to_credits(budget.amount)},
        "account_id": budget.account_id,
        "period_start": iso(state.period_start),
        "resets_at": iso(state.resets_at),
        "spent": to_credits(state.spent),
        "threshold": points / BASIS_POINTS,
        "created_at": iso(created_at),
    }, separators=(",", ":"))


def signature(secret: str, body: str) -> str:
    """X-Gateway-Signature: `sha256=` and the hex HMAC-SHA256 of the exact body bytes under the secret."""
    return "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def backoff_s(retry: int) -> float:
    """The wait before retry number `retry` (1, 2, ...): doubling from FIRST_BACKOFF_S, capped."""
    return min(FIRST_BACKOFF_S * 2 ** (retry - 1), MAX_BACKOFF_S)


def delivery_bound_s(settings: BudgetAlertSettings) -> float:
    """The longest one delivery may take, every try and wait included: a claim older than it lost its sender."""
    return sum(backoff_s(retry) for retry in range(1, settings.retries + 1)) + \
        (settings.retries + 1) * settings.timeout_s + 30.0


StatesSource = Callable[[set[int] | None, datetime.datetime], Sequence[BudgetState]]


class BudgetAlerts:
    """One worker's alert thread: scans, claims and sends; `close()` stops it (idempotent)."""

    def __init__(self, settings: BudgetAlertSettings, states: StatesSource | None = None,
                 clock: Callable[[], datetime.datetime] = utcnow, scan_interval_s: float = SCAN_INTERVAL_S,
                 full_scan_interval_s: float = FULL_SCAN_INTERVAL_S) -> None:
        self.settings = settings
        self.states = states or SpendTally()  # (account ids, or None for all; now) -> the budgets' states
        self.clock = clock
        self.scan_interval_s = scan_interval_s
        self.full_scan_interval_s = full_scan_interval_s
        self.secret = os.environ.get(settings.secret_env, "") if settings.secret_env else ""
        self.session = requests.Session()
        self.known: set[tuple[str, datetime.datetime, int]] = set()  # claimed, by this worker or another
        self.last_ledger_id: int | None = None
        self.last_full_scan = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the scanning thread (once)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="gateway-budget-alerts", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop scanning and sending; an alert being retried is left to another worker's takeover."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.timeout_s + 1.0)
        self.session.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # a database hiccup: log it and look again at the next tick
                log.warning("budget alert scan failed", exc_info=True)
            self._stop.wait(self.scan_interval_s)

    def scan(self) -> int:
        """One look: claim and send every newly crossed threshold; the number of alerts this worker sent."""
        full = time.monotonic() - self.last_full_scan >= self.full_scan_interval_s
        with own_connection():
            charged = self.charged_accounts()
            if not full and not charged:
                return 0
            now = self.clock()
            claimed = [self.claim(state, points, now) for state in self.states(None if full else charged, now)
                       for points in crossed(state, self.settings.thresholds)]
            if full:
                self.last_full_scan = time.monotonic()
                claimed += self.abandoned(now)
        return sum(self.deliver(alert) for alert in claimed if alert is not None)

    def charged_accounts(self) -> set[int]:
        """The accounts charged since the last look (every charge is a ledger row; ids only grow)."""
        newest = newest_ledger_id()
        since, self.last_ledger_id = self.last_ledger_id, newest
        if since is None or newest == since:
            return set()
        rows = (LedgerEntry.select(LedgerEntry.account).distinct()
                .where(LedgerEntry.id > since, LedgerEntry.id <= newest, LedgerEntry.kind == "charge"))
        return {row.account_id for row in rows}

    def claim(self, state: BudgetState, points: int, now: datetime.datetime) -> BudgetAlert | None:
        """Insert this alert's row, or None when another worker (or an earlier scan) already has it."""
        slot = (state.identity, state.period_start or LIFETIME_START, points)
        if slot in self.known:
            return None
        try:
            with database.atomic():
                alert = BudgetAlert.create(budget=slot[0], period_start=slot[1], threshold=points,
                                           account_id=state.budget.account_id, body=alert_body(state, points, now),
                                           claimed_at=now)
        except IntegrityError:
            alert = None
        if len(self.known) >= MAX_KNOWN:  # old periods' slots: the unique index still guards them
            self.known.clear()
        self.known.add(slot)
        return alert

    def abandoned(self, now: datetime.datetime) -> list[BudgetAlert]:
        """Claims still sending past the delivery bound (their worker died): taken over, each by one worker."""
        stale = now - datetime.timedelta(seconds=delivery_bound_s(self.settings))
        taken = []
        for alert in BudgetAlert.select().where(BudgetAlert.status == "sending", BudgetAlert.claimed_at < stale):
            moved = (BudgetAlert.update(claimed_at=now)
                     .where(BudgetAlert.id == alert.id, BudgetAlert.claimed_at == alert.claimed_at).execute())
            if moved:
                taken.append(alert)
        return taken

    def deliver(self, alert: BudgetAlert) -> bool:
        """POST the alert, retrying with backoff; record sent or failed; whether it was delivered."""
        error = None
        for attempt in range(self.settings.retries + 1):
            if attempt and self._stop.wait(backoff_s(attempt)):
                break  # closing: the claim goes stale and another worker takes it over
            error = self.post(alert.body)
            self.record(alert, attempt + 1, error)
            if error is None:
                return True
        log.warning("budget alert %s not delivered: %s", alert.id, error)
        return False

    def post(self, body: str) -> str | None:
        """One try: None when the receiver answered 2xx, else what went wrong."""
        headers = {"Content-Type": "application/json", "User-Agent": "gateway-budget-alerts"}
        if self.secret:
            headers["X-Gateway-Signature"] = signature(self.secret, body)
        try:
            response = self.session.post(self.settings.url, data=body.encode(), headers=headers,
                                         timeout=self.settings.timeout_s, allow_redirects=False)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        response.close()
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def record(self, alert: BudgetAlert, attempts: int, error: str | None) -> None:
        """The outcome of a try on the alert's row (sent, still sending, or failed after the last try)."""
        status = "sent" if error is None else "failed" if attempts > self.settings.retries else "sending"
        with own_connection():
            BudgetAlert.update(status=status, attempts=attempts, last_error=error,
                               sent_at=self.clock() if error is None else None).where(
                BudgetAlert.id == alert.id).execute()


def init_app(app: Flask, settings: BudgetAlertSettings) -> None:
    """Create the worker's alerts (None when no url is set); `start(app)` runs them after the fork."""
    app.extensions[EXTENSION] = BudgetAlerts(settings) if settings.url else None


def start(app: Flask) -> None:
    """Start the worker's alert thread, if alerts are configured."""
    if app.extensions.get(EXTENSION) is not None:
        app.extensions[EXTENSION].start()


def close(app: Flask) -> None:
    """Stop the worker's alert thread (idempotent)."""
    if app.extensions.get(EXTENSION) is not None:
        app.extensions[EXTENSION].close()
