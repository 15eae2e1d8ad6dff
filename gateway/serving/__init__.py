"""Serving HTTP under gunicorn: a gthread worker that reads whole requests before a thread runs them."""
