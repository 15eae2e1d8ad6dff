"""Usage rows record the deployment that answered and the attempts the request made (routing, retries)."""

from peewee import CharField, IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("usage_entry", "deployment", CharField(max_length=200, null=True)),
        migrator.add_column("usage_entry", "attempts", IntegerField(default=0)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("usage_entry", "deployment"),
        migrator.drop_column("usage_entry", "attempts"),
    )
