"""Rate-limit windows: one row per (key, minute) counting requests and tokens."""

from peewee import BigIntegerField, CompositeKey, IntegerField, Model


def up(migrator, db):
    class RateWindow(Model):
        # No foreign key: rows live two minutes and keys are revoked, never deleted.
        key_id = IntegerField()
        window_start = BigIntegerField()
        requests = IntegerField(default=0)
        tokens = BigIntegerField(default=0)

        class Meta:
            database = db
            table_name = "rate_window"
            primary_key = CompositeKey("key_id", "window_start")

    db.create_tables([RateWindow])


def down(migrator, db):
    db.execute_sql("DROP TABLE rate_window")
