"""Stream limits of keys and accounts, and the limits an operator set on a key (a member's ceiling)."""

from peewee import IntegerField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("api_key", "max_streams", IntegerField(null=True)),
        migrator.add_column("api_key", "operator_limits", TextField(null=True)),
        migrator.add_column("account", "max_streams", IntegerField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("api_key", "max_streams"),
        migrator.drop_column("api_key", "operator_limits"),
        migrator.drop_column("account", "max_streams"),
    )
