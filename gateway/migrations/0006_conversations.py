"""Conversations API: a conversation row per conversation and one row per item, in insertion order."""

import datetime

from peewee import BigAutoField, CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db

    class Account(Base):
        class Meta:
            table_name = "account"

    class Conversation(Base):
        id = CharField(primary_key=True, max_length=64)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        metadata = TextField(default="{}")
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "conversation"

    class ConversationItem(Base):
        seq = BigAutoField()
        conversation = ForeignKeyField(Conversation, on_delete="CASCADE")
        item_id = CharField(max_length=64)
        body = TextField()
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "conversation_item"
            indexes = ((("conversation", "item_id"), True), (("conversation", "seq"), False))

    db.create_tables([Conversation, ConversationItem])


def down(migrator, db):
    db.execute_sql("DROP TABLE conversation_item")
    db.execute_sql("DROP TABLE conversation")
