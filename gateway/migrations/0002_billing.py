"""Credits: grants, ledger, reservations; key spend limits; cost on usage rows."""

import datetime

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, Model


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

    class CreditGrant(Base):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        amount = BigIntegerField()
        remaining = BigIntegerField()
        source = CharField(default="grant")
        expires_at = DateTimeField(null=True, index=True)
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "credit_grant"

    class LedgerEntry(Base):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
        kind = CharField(max_length=16)
        amount = BigIntegerField()
        request_id = CharField(max_length=64, null=True)
        note = CharField(null=True)
        created_at = DateTimeField(default=datetime.datetime.now, index=True)

        class Meta:
            table_name = "ledger_entry"
            indexes = ((("account", "kind"), False), (("api_key", "kind"), False))

    class Reservation(Base):
        account = ForeignKeyField(Account, on_delete="CASCADE")
        api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
        amount = BigIntegerField()
        status = CharField(max_length=16, default="open")
        request_id = CharField(max_length=64)
        created_at = DateTimeField(default=datetime.datetime.now)
        expires_at = DateTimeField()

        class Meta:
            table_name = "reservation"
            indexes = ((("account", "status"), False),)

    db.create_tables([CreditGrant, LedgerEntry, Reservation])
    migrator.migrate(
        migrator.add_column("api_key", "spend_limit", BigIntegerField(null=True)),
        migrator.add_column("usage_entry", "cost", BigIntegerField(default=0)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("api_key", "spend_limit"),
        migrator.drop_column("usage_entry", "cost"),
    )
    for table in ("reservation", "ledger_entry", "credit_grant"):
        db.execute_sql(f"DROP TABLE {table}")
