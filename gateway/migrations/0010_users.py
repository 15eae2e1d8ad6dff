"""Dashboard users (email, password hash, account, role) and failed sign-ins, counted to slow guessing."""

import datetime

from peewee import CharField, DateTimeField, ForeignKeyField, Model


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db

    class Account(Base):
        class Meta:
            table_name = "account"

    class User(Base):
        email = CharField(max_length=254, unique=True)
        password_hash = CharField(max_length=255)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        role = CharField(max_length=16, default="member")
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "dashboard_user"

    class SignInFailure(Base):
        address = CharField(max_length=64, index=True)
        email = CharField(max_length=254, index=True)
        created_at = DateTimeField(default=datetime.datetime.now, index=True)

        class Meta:
            table_name = "sign_in_failure"

    db.create_tables([User, SignInFailure])


def down(migrator, db):
    db.execute_sql("DROP TABLE sign_in_failure")
    db.execute_sql("DROP TABLE dashboard_user")
