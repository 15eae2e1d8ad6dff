"""Stored Responses API responses (own input/output items + parent id) and per-database secrets."""

import datetime

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, Model, TextField


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

    class StoredResponse(Base):
        id = CharField(primary_key=True, max_length=64)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        api_key = ForeignKeyField(ApiKey, null=True, on_delete="SET NULL")
        previous_response_id = CharField(max_length=64, null=True)
        status = CharField(max_length=16)
        background = BooleanField(default=False)
        body = TextField()
        input_items = TextField()
        output_items = TextField()
        created_at = DateTimeField(default=datetime.datetime.now, index=True)
        updated_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "stored_response"

    class ServerSecret(Base):
        name = CharField(primary_key=True, max_length=64)
        value = CharField(max_length=128)
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "server_secret"

    db.create_tables([StoredResponse, ServerSecret])


def down(migrator, db):
    db.execute_sql("DROP TABLE server_secret")
    db.execute_sql("DROP TABLE stored_response")
