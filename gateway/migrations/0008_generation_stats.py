"""Generation stats on usage rows: the generation id (indexed), provider, time to first token, finish reason, flags.

`GET /api/v1/generation?id=` reads them. The generation id index is not unique on purpose: a
constraint violation would fail the accounting batch that carries the row's charge.
"""

from peewee import BooleanField, CharField, IntegerField

COLUMNS = {
    "generation_id": CharField(max_length=64, null=True),
    "provider": CharField(null=True),
    "ttft_ms": IntegerField(null=True),
    "finish_reason": CharField(max_length=32, null=True),
    "streamed": BooleanField(default=False),
    "cancelled": BooleanField(default=False),
}


def up(migrator, db):
    migrator.migrate(*(migrator.add_column("usage_entry", name, field) for name, field in COLUMNS.items()))
    db.execute_sql('CREATE INDEX IF NOT EXISTS "usageentry_generation_id" ON "usage_entry" ("generation_id")')


def down(migrator, db):
    db.execute_sql('DROP INDEX IF EXISTS "usageentry_generation_id"')
    migrator.migrate(*(migrator.drop_column("usage_entry", name) for name in COLUMNS))
