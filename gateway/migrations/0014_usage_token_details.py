"""Usage rows record cached, cache-write and reasoning tokens (native providers' usage; priced apart)."""

from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("usage_entry", "cached_tokens", IntegerField(default=0)),
        migrator.add_column("usage_entry", "cache_write_tokens", IntegerField(default=0)),
        migrator.add_column("usage_entry", "reasoning_tokens", IntegerField(default=0)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("usage_entry", "cached_tokens"),
        migrator.drop_column("usage_entry", "cache_write_tokens"),
        migrator.drop_column("usage_entry", "reasoning_tokens"),
    )
