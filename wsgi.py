"""WSGI entry point: `gunicorn -c deploy/gunicorn.conf.py wsgi:app` (no DB work here: `gateway db upgrade` first)."""

from gateway import create_app

app = create_app()
