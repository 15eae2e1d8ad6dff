"""Budgets with periods: a key's limit may reset (daily, weekly, monthly in UTC); budgets per account, per key and
model, or per tag (gateway.accounting.budgets); holds and charges carry their model and tags so budgets count them.

The ledger's (account, kind) and (key, kind) indexes gain created_at: a period's charges are a range of them.
"""

import datetime

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, Model

LEDGER_INDEXES = (("ledgerentry_account_id_kind", "account_id"), ("ledgerentry_api_key_id_kind", "api_key_id"))


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db

    class Account(Base):
        class Meta:
            table_name = "account"

    class ApiKey(Base):
        class Meta:
            table_name = "api_key"

    class Budget(Base):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        api_key = ForeignKeyField(ApiKey, null=True, on_delete="CASCADE")
        model = CharField(null=True)
        tag = CharField(max_length=64, null=True)
        period = CharField(max_length=16, null=True)
        amount = BigIntegerField()
        created_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            table_name = "budget"

    db.create_tables([Budget])
    migrator.migrate(
        migrator.add_column("api_key", "limit_reset", CharField(max_length=16, null=True)),
        migrator.add_column("reservation", "model", CharField(null=True)),
        migrator.add_column("reservation", "tags", CharField(max_length=2048, null=True)),
        migrator.add_column("ledger_entry", "model", CharField(null=True)),
        migrator.add_column("ledger_entry", "tags", CharField(max_length=2048, null=True)),
    )
    for name, column in LEDGER_INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
        db.execute_sql(f'CREATE INDEX "{name}_created_at" ON "ledger_entry" ("{column}", "kind", "created_at")')


def down(migrator, db):
    for name, column in LEDGER_INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}_created_at"')
        db.execute_sql(f'CREATE INDEX "{name}" ON "ledger_entry" ("{column}", "kind")')
    migrator.migrate(
        migrator.drop_column("api_key", "limit_reset"),
        migrator.drop_column("reservation", "model"),
        migrator.drop_column("reservation", "tags"),
        migrator.drop_column("ledger_entry", "model"),
        migrator.drop_column("ledger_entry", "tags"),
    )
    db.execute_sql("DROP TABLE budget")
