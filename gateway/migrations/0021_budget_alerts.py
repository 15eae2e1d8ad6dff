"""Budget alerts sent (gateway.accounting.budget_alerts): one row per budget, period and threshold.

The unique index is the claim: the worker whose insert succeeds sends that alert, so every worker
and host together send each one once.
"""

import datetime

from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class BudgetAlert(Model):
        budget = CharField(max_length=200)
        period_start = DateTimeField()
        threshold = IntegerField()
        account_id = IntegerField(index=True)
        status = CharField(max_length=16, default="sending")
        attempts = IntegerField(default=0)
        body = TextField()
        last_error = CharField(max_length=500, null=True)
        claimed_at = DateTimeField(default=datetime.datetime.utcnow)
        sent_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "budget_alert"
            indexes = ((("budget", "period_start", "threshold"), True),)

    db.create_tables([BudgetAlert])


def down(migrator, db):
    db.execute_sql("DROP TABLE budget_alert")
