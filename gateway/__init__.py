"""An OpenAI-compatible LLM gateway: proxying, API keys, credits, Responses API and MCP tools."""

from __future__ import annotations

import time

from flask import Flask

from gateway import dashboard, db, errors, lifecycle, observability
from gateway.api import (
    API_PREFIXES,
    account,
    admin,
    batches,
    catalog,
    chat,
    conversations,
    cors,
    files,
    generations,
    health,
    http,
    mcp,
    media,
    messages,
    openapi,
    profiles,
    responses,
    responses_ws,
    usage,
)
from gateway.config import Settings, load_settings
from gateway.mcp_hub import views as mcp_hub
from gateway.serving import body_limits


def create_app(settings: Settings | None = None, config_path: str | None = None) -> Flask:
    """Build the WSGI app: load config, wire services, register blueprints (no DB work; see db.migrate)."""
    settings = settings or load_settings(config_path)
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # `/v1/responses//input_items` is a 404, not an HTML redirect
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes  # the upload routes' own: body_limits
    app.json.sort_keys = False
    app.extensions["gateway.settings"] = settings
    app.extensions["gateway.started_at"] = int(time.time())
    errors.init_app(app)
    body_limits.init_app(app, settings)  # first: before any hook or view reads a body
    db.init_app(app, settings.database.url, pool_size=2 * settings.server.threads)
    lifecycle.init_app(app, settings)
    http.init_app(app)
    cors.init_app(app, settings.server.cors_origins)  # after http, before the blueprints authenticate
    # after http: it reads the request id
    observability.init_app(app, settings, app.extensions["gateway.router"].deployment_states)
    responses_ws.init_app(app, settings)
    for name, prefix in API_PREFIXES.items():
        for blueprint in (chat.bp, catalog.bp, mcp.bp, messages.bp, responses.bp, conversations.bp, media.bp,
                          files.bp, batches.bp):
            app.register_blueprint(blueprint, url_prefix=prefix, name=f"{name}.{blueprint.name}")
    app.register_blueprint(profiles.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(generations.bp)
    app.register_blueprint(usage.bp)  # GET /api/v1/usage, GET /admin/usage
    app.register_blueprint(admin.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    mcp_hub.init_app(app)  # /mcp and /mcp/{scope}/{profile} for MCP clients
    dashboard.init_app(app, settings)  # off with [dashboard] enabled = false
    return app
