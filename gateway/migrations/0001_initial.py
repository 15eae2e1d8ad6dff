"""Accounts, API keys and usage rows."""

import datetime

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db

    class Account(Base):
        name = CharField()
        tier = CharField(default="free")
        scope = CharField(null=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            table_name = "account"

    class ApiKey(Base):
        account = ForeignKeyField(Account, backref="keys", on_delete="CASCADE")
        name = CharField()
        digest = CharField(max_length=64, unique=True)
        prefix = CharField(max_length=16)
        revoked = BooleanField(default=False)
        rpm = IntegerField(null=True)
        tpm = IntegerField(null=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            table_name = "api_key"

    class UsageEntry(Base):
        request_id = CharField(max_length=64, index=True)
        api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
        account = ForeignKeyField(Account, null=True, on_delete="SET NULL")
        endpoint = CharField(max_length=64)
        model = CharField(null=True)
        prompt_tokens = IntegerField(default=0)
        completion_tokens = IntegerField(default=0)
        estimated = BooleanField(default=False)
        status = IntegerField()
        latency_ms = IntegerField()
        created_at = DateTimeField(default=datetime.datetime.utcnow, index=True)

        class Meta:
            table_name = "usage_entry"

    db.create_tables([Account, ApiKey, UsageEntry])


def down(migrator, db):
    db.execute_sql("DROP TABLE usage_entry")
    db.execute_sql("DROP TABLE api_key")
    db.execute_sql("DROP TABLE account")
