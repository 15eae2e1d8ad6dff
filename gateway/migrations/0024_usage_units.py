"""Usage rows of media endpoints record what they were priced on besides tokens: `unit` (image, audio_second,
speech_character, search_unit, moderation; an image's size/quality qualified) and `units` (how many)."""

from peewee import CharField, DoubleField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("usage_entry", "unit", CharField(max_length=64, null=True)),
        migrator.add_column("usage_entry", "units", DoubleField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(migrator.drop_column("usage_entry", "unit"), migrator.drop_column("usage_entry", "units"))
