"""Per-key MCP allow-list: `api_key.mcp_servers`, a JSON list of built-in server labels (NULL: no narrowing)."""

from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("api_key", "mcp_servers", TextField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("api_key", "mcp_servers"))
