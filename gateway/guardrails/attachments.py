"""Which guardrails apply to a request and where each comes from, for operators (`GET /admin/guardrails`,
`gateway config show`).

The order and the set are `guardrails_for`'s (the one rule); this only names, for each guardrail, the
attachments that brought it in: `default` (`default = true`), `model`, `profile`, `account`, `key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import Settings
from gateway.config_text import toml_key
from gateway.errors import NotFound
from gateway.guardrails.apply import guardrails_for

SOURCES = ("default", "model", "profile", "account", "key")


@dataclass(frozen=True)
class Applied:
    """One guardrail that would apply, and the attachments that bring it in (in SOURCES' order)."""

    name: str
    type: str
    stages: tuple[str, ...]
    action: str
    sources: tuple[str, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "type": self.type, "stages": list(self.stages), "action": self.action,
                "sources": list(self.sources)}


def attached(settings: Settings, *, model: str | None, profile: str | None, key_guardrails: Sequence[str] = (),
             account_guardrails: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Each attachment's guardrail names, by source (404 for a model or profile the config lacks)."""
    if model is not None and model not in settings.models:
        raise NotFound(f"No model {model!r} in the config.", param="model")
    if profile is not None and profile not in settings.profiles:
        raise NotFound(f"No profile {profile!r} in the config.", param="profile")
    return {
        "default": tuple(name for name, guardrail in settings.guardrails.items() if guardrail.default),
        "model": tuple(settings.models[model].guardrails) if model is not None else (),
        "profile": tuple(settings.profiles[profile].guardrails) if profile is not None else (),
        "account": tuple(account_guardrails),
        "key": tuple(key_guardrails),
    }


def applied(settings: Settings, *, model: str | None = None, profile: str | None = None,
            key_guardrails: Sequence[str] = (), account_guardrails: Sequence[str] = ()) -> list[Applied]:
    """The guardrails a request would run, in the order they run, each with where it comes from."""
    sources = attached(settings, model=model, profile=profile, key_guardrails=key_guardrails,
                       account_guardrails=account_guardrails)
    chosen = guardrails_for(settings, model=model, profile=profile, key_guardrails=key_guardrails,
                            account_guardrails=account_guardrails)
    listed = []
    for name in chosen.names:
        guardrail = settings.guardrails[name]
        listed.append(Applied(name, guardrail.type, tuple(guardrail.stages), guardrail.action,
                              tuple(source for source in SOURCES if name in sources[source])))
    return listed


def summary_lines(settings: Settings) -> list[str]:
    """`gateway config show`'s comment on the guardrails: each in the order they run, then their attachments."""
    if not settings.guardrails:
        return []
    lines = ["# Guardrails, in the order they run (type; stages; action; default = true applies to every request):"]
    for name, guardrail in settings.guardrails.items():
        default = "; default" if guardrail.default else ""
        lines.append(f"#   {name}: {guardrail.type}; stages {', '.join(guardrail.stages)}; {guardrail.action}{default}")
    attached = [(f"models.{toml_key(model_id)}", model.guardrails) for model_id, model in settings.models.items()]
    attached += [(f"profiles.{toml_key(name)}", profile.guardrails) for name, profile in settings.profiles.items()]
    lines.append("# Attached to models and profiles (a key's and its account's: GET /admin/guardrails?key_id=ID):")
    lines += [f"#   {where}: {', '.join(names)}" for where, names in attached if names] or ["#   none"]
    return lines
