"""gunicorn settings for the gateway, built from its config like `gateway serve` builds them.

The config is found the usual way ($GATEWAY_CONFIG, else ./config.toml, else embedded defaults) and
GATEWAY_<SECTION>_<KEY> variables override it. Run `gateway db upgrade` before starting gunicorn.
"""

import sys

from gateway.config import ConfigError, load_settings
from gateway.server import gunicorn_options

try:
    globals().update(gunicorn_options(load_settings()))
except ConfigError as exc:
    sys.exit(f"gateway: config error: {exc}")
