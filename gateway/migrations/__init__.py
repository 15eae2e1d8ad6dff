"""Numbered schema migrations, applied in order by playhouse.migrations (frozen models)."""
