"""HTTP blueprints, one per resource."""

API_PREFIXES = {"v1": "/v1", "openrouter": "/api/v1"}  # the OpenAI-compatible routes are served under each
