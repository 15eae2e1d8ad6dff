"""The effective settings as TOML text with secrets masked (`gateway config show`), a base to copy.

Masked, as `***`: passwords and query values in URLs, the values of MCP servers' `headers` and
`env`, of providers' `extra_headers` and of webhook guardrails' `headers`, and the value after a command-line option whose name mentions a key, token, secret or
password. Settings left unset (None) are omitted; loading the text gives the same settings.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.config import Settings

MASK = "***"
SECRET_OPTION = re.compile(r"^--?[\w-]*(key|token|secret|password)[\w-]*$", re.IGNORECASE)
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
TABLE_DEPTH = 2  # [section] and [providers.name] are tables; dicts below them are inline tables


def settings_as_toml(settings: Settings) -> str:
    """The settings as a TOML document, every value shown, secrets masked."""
    return "\n".join(table_lines((), masked(settings.model_dump(exclude_none=True)))).lstrip("\n") + "\n"


def masked(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the dumped settings with secrets replaced by MASK."""
    data = json.loads(json.dumps(data))
    for section in ("database", "limits"):
        if "url" in data.get(section, {}):
            data[section]["url"] = masked_url(data[section]["url"])
    for provider in data.get("providers", {}).values():
        provider["base_url"] = masked_url(provider["base_url"])
        provider["extra_headers"] = dict.fromkeys(provider.get("extra_headers", {}), MASK)
        if "command" in provider:
            provider["command"] = masked_argv(provider["command"])
    for server in data.get("mcpServers", {}).values():
        server["headers"] = dict.fromkeys(server.get("headers", {}), MASK)
        server["env"] = dict.fromkeys(server.get("env", {}), MASK)
        server["args"] = masked_argv(server.get("args", []))
        if "url" in server:
            server["url"] = masked_url(server["url"])
    for guardrail in data.get("guardrails", {}).values():  # a webhook's
        guardrail["headers"] = dict.fromkeys(guardrail.get("headers", {}), MASK)
        if "url" in guardrail:
            guardrail["url"] = masked_url(guardrail["url"])
    return data


def masked_url(url: str) -> str:
    """The URL with its password and query values masked."""
    parts = urlsplit(url)
    if parts.password is None and not parts.query:
        return url  # untouched (urlunsplit would also drop the empty host of sqlite:///)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def masked_argv(argv: list[str]) -> list[str]:
    """The arguments with the value of every secret-looking option masked (`--api_key X`, `--token=X`)."""
    shown: list[str] = []
    for position, argument in enumerate(argv):
        name, equals, _ = argument.partition("=")
        if equals and SECRET_OPTION.match(name):
            shown.append(f"{name}={MASK}")
        elif position and SECRET_OPTION.match(argv[position - 1]) and not argument.startswith("-"):
            shown.append(MASK)
        else:
            shown.append(argument)
    return shown


def table_lines(path: tuple[str, ...], table: dict[str, Any]) -> list[str]:
    """A table's header and values, then its sub-tables (down to TABLE_DEPTH)."""
    values = {key: value for key, value in table.items() if not (isinstance(value, dict) and len(path) < TABLE_DEPTH)}
    lines = []
    if path and (values or len(path) == TABLE_DEPTH):
        lines += ["", "[" + ".".join(map(toml_key, path)) + "]"]
    lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in values.items()]
    for key, value in table.items():
        if key not in values:
            lines += table_lines((*path, key), value)
    return lines


def toml_key(key: str) -> str:
    """A bare key when TOML allows one, else a quoted key."""
    return key if BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML value: strings, booleans, numbers, arrays and inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")
