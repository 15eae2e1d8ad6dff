"""Server-side dashboard sessions (a row per signed-in cookie) and one-use form tokens."""

import datetime

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db

    class User(Base):
        class Meta:
            table_name = "dashboard_user"

    class DashboardSession(Base):
        digest = CharField(primary_key=True, max_length=64)
        user = ForeignKeyField(User, on_delete="CASCADE")
        created_at = DateTimeField(default=datetime.datetime.now)
        seen_at = DateTimeField(default=datetime.datetime.now, index=True)
        new_key = TextField(null=True)

        class Meta:
            table_name = "dashboard_session"

    class FormToken(Base):
        token = CharField(primary_key=True, max_length=64)
        session = ForeignKeyField(DashboardSession, on_delete="CASCADE")
        created_at = DateTimeField(default=datetime.datetime.now, index=True)

        class Meta:
            table_name = "dashboard_form_token"

    db.create_tables([DashboardSession, FormToken])


def down(migrator, db):
    db.execute_sql("DROP TABLE dashboard_form_token")
    db.execute_sql("DROP TABLE dashboard_session")
