"""Usage rows record the guardrails that acted on the request (gateway.guardrails): a JSON list of
`{"name", "action", "stage"}` (never the matched text); NULL when none did."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("usage_entry", "guardrails", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("usage_entry", "guardrails"))
