"""Guardrails attached to a key and to an account: `guardrails`, a JSON list of `[guardrails.NAME]` names (NULL: none)."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("api_key", "guardrails", TextField(null=True)),
        migrator.add_column("account", "guardrails", TextField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_column("api_key", "guardrails"), migrator.drop_column("account", "guardrails"))
