"""The response cache's entries (gateway.cache.database_cache): one row per cached answer."""

from peewee import CharField, DoubleField, IntegerField, Model, TextField


def up(migrator, db):
    class ResponseCacheEntry(Model):
        key = CharField(primary_key=True, max_length=64)
        scope = CharField(max_length=100, null=True)
        model = CharField(max_length=200)
        endpoint = CharField(max_length=32)
        answer = TextField()
        usage = TextField()
        bytes = IntegerField()
        created_at = DoubleField()
        expires_at = DoubleField(index=True)
        last_used_at = DoubleField(index=True)

        class Meta:
            database = db
            table_name = "response_cache"

    db.create_tables([ResponseCacheEntry])


def down(migrator, db):
    db.execute_sql("DROP TABLE response_cache")
