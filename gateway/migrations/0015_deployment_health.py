"""Deployments' shared health: failures in a window, cooldowns and half-open trials (gateway.upstream.health_store)."""

import datetime

from peewee import BooleanField, CharField, DateTimeField, DoubleField, IntegerField, Model


def up(migrator, db):
    class DeploymentHealth(Model):
        name = CharField(primary_key=True, max_length=200)
        failures = IntegerField(default=0)
        window_start = DoubleField(default=0.0)
        cooling_until = DoubleField(default=0.0)
        half_open = BooleanField(default=False)
        trial_until = DoubleField(default=0.0)
        updated_at = DateTimeField(default=datetime.datetime.utcnow)

        class Meta:
            database = db
            table_name = "deployment_health"

    db.create_tables([DeploymentHealth])


def down(migrator, db):
    db.execute_sql("DROP TABLE deployment_health")
