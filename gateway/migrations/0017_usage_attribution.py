"""Usage rows record cache hits, the end user and the request's tags (cost controls)."""

from peewee import BooleanField, CharField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("usage_entry", "cache_hit", BooleanField(default=False)),
        migrator.add_column("usage_entry", "end_user", CharField(max_length=256, null=True)),
        migrator.add_column("usage_entry", "tags", CharField(max_length=2048, null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("usage_entry", "cache_hit"),
        migrator.drop_column("usage_entry", "end_user"),
        migrator.drop_column("usage_entry", "tags"),
    )
