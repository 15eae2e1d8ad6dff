"""The limits an operator set for every key of an account (a JSON object): its keys' ceilings."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("account", "key_limits", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("account", "key_limits"))
