"""Files and batches (gateway.batches): files in 1 MiB chunks, batches with their lease, per-line results; usage rows
say which ones are batch lines."""

from peewee import (
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    CompositeKey,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Account(Model):
        class Meta:
            database = db
            table_name = "account"

    class BatchFile(Model):
        id = CharField(primary_key=True, max_length=64)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        purpose = CharField(max_length=32)
        filename = CharField(max_length=255)
        bytes = BigIntegerField(default=0)
        created_at = BigIntegerField()
        status = CharField(max_length=16, default="processed")

        class Meta:
            database = db
            table_name = "batch_file"
            indexes = ((("account", "created_at"), False),)

    class FileChunk(Model):
        file = ForeignKeyField(BatchFile, column_name="file_id", on_delete="CASCADE")
        seq = IntegerField()
        data = BlobField()

        class Meta:
            database = db
            table_name = "file_chunk"
            primary_key = CompositeKey("file", "seq")

    class Batch(Model):
        id = CharField(primary_key=True, max_length=64)
        account = ForeignKeyField(Account, on_delete="CASCADE")
        api_key_id = IntegerField(null=True)
        endpoint = CharField(max_length=64)
        input_file_id = CharField(max_length=64)
        completion_window = CharField(max_length=8)
        status = CharField(max_length=16, index=True)
        output_file_id = CharField(max_length=64, null=True)
        error_file_id = CharField(max_length=64, null=True)
        errors = TextField(null=True)
        metadata = TextField(null=True)
        total = IntegerField(default=0)
        completed = IntegerField(default=0)
        failed = IntegerField(default=0)
        created_at = BigIntegerField()
        expires_at = BigIntegerField()
        in_progress_at = BigIntegerField(null=True)
        finalizing_at = BigIntegerField(null=True)
        completed_at = BigIntegerField(null=True)
        failed_at = BigIntegerField(null=True)
        expired_at = BigIntegerField(null=True)
        cancelling_at = BigIntegerField(null=True)
        cancelled_at = BigIntegerField(null=True)
        lease_owner = CharField(max_length=64, null=True)
        lease_until = DoubleField(default=0.0)

        class Meta:
            database = db
            table_name = "batch"
            indexes = ((("account", "created_at"), False),)

    class BatchLine(Model):
        batch_id = CharField(max_length=64)
        line = IntegerField()
        ok = BooleanField()
        result = TextField()

        class Meta:
            database = db
            table_name = "batch_line"
            primary_key = CompositeKey("batch_id", "line")

    db.create_tables([BatchFile, FileChunk, Batch, BatchLine])
    migrator.migrate(migrator.add_column("usage_entry", "batch", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("usage_entry", "batch"))
    for table in ("batch_line", "batch", "file_chunk", "batch_file"):
        db.execute_sql(f"DROP TABLE {table}")
