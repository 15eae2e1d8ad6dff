"""Accounting indexes for batched writes: a partial index of open holds; no index a composite one covers.

Every page an index adds is written at each accounting commit, so: the open holds (what a batch
sums per account and what the sweeps look for) get a small partial index instead of one over
every hold ever taken, and the single-column ledger indexes that lead a composite one go.
"""

OPEN_HOLDS = ('CREATE INDEX IF NOT EXISTS "reservation_open" ON "reservation" ("account_id", "expires_at") '
              "WHERE status = 'open'")


def up(migrator, db):
    db.execute_sql(OPEN_HOLDS)
    for name in ("reservation_account_id_status", "reservation_status_expires_at", "ledgerentry_account_id",
                 "ledgerentry_api_key_id"):
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


def down(migrator, db):
    db.execute_sql('CREATE INDEX IF NOT EXISTS "reservation_account_id_status" ON "reservation" ("account_id", "status")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "ledgerentry_account_id" ON "ledger_entry" ("account_id")')
    db.execute_sql('CREATE INDEX IF NOT EXISTS "ledgerentry_api_key_id" ON "ledger_entry" ("api_key_id")')
    db.execute_sql('DROP INDEX IF EXISTS "reservation_open"')
