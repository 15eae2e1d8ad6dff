"""The contestants of one run, started side by side on the same stubs, and everything they need.

direct   the stubs themselves (nginx for JSON, the Python stub for streams)
floor    bench/floor.py: Flask + requests under gunicorn gthread, no auth, no accounting
sqlite   the gateway on SQLite, postgres: on PostgreSQL (auth, rate limits, billing, usage rows)
litellm  LiteLLM's proxy from bench/.venv-litellm, the stubs as `openai/` models, no database

A contestant that cannot start is kept with `skipped` set to the reason; the run goes on.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import databases, processes
from bench.install import Tools


@dataclass
class Contestant:
    """One column of the report: where its JSON and stream requests go, with which key."""

    name: str
    label: str
    json_port: int = 0
    stream_port: int = 0
    secret: str | None = None
    service: processes.Service | None = None
    database_url: str | None = None
    key_id: int | None = None
    skipped: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"} if self.secret else {}

    @property
    def is_gateway(self) -> bool:
        return self.database_url is not None


class Lineup:
    """Owns every child process and temporary resource of a run; `close()` releases them all."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.contestants: list[Contestant] = []
        self.services: list[processes.Service] = []
        self.stub: subprocess.Popen | None = None
        self.postgres_servers: list[str] = []
        self.notes: list[str] = []

    def get(self, name: str) -> Contestant | None:
        """The contestant of that name if it runs."""
        return next((c for c in self.contestants if c.name == name and not c.skipped), None)

    def running(self) -> list[Contestant]:
        return [c for c in self.contestants if not c.skipped]

    def own_groups(self) -> set[int]:
        """Process groups of the children (each leads its own session, so group id == pid)."""
        return {p.pid for p in [self.stub, *(s.process for s in self.services)] if p is not None}

    def start(self, tools: Tools, postgres: bool, litellm: bool) -> None:
        """Start the stubs, then every contestant (all launched first, then each waited for)."""
        self.stub, stream_port = processes.start_upstream()
        json_port = stream_port
        if tools.nginx:
            nginx = self._launch(processes.nginx_service(tools.nginx, self.workdir))
            nginx.wait_ready()
            json_port = nginx.port
        else:
            self.notes.append(f"JSON upstream: the Python stub ({tools.missing.get('nginx')}).")
        self.contestants.append(Contestant("direct", "direct (stub)", json_port, stream_port, "direct-no-auth"))
        json_url, stream_url = (f"http://127.0.0.1:{port}/v1/chat/completions" for port in (json_port, stream_port))
        waits: list[tuple[Contestant, Callable[[], None]]] = []
        floor = self._launch(processes.floor_service(self.workdir, json_url, stream_url, self.workers, self.threads))
        waits.append((self._add("floor", "floor (Flask+requests)", floor, "floor-no-auth"), floor.wait_ready))
        for name, label, wanted in (("sqlite", "gateway, SQLite", True), ("postgres", "gateway, PostgreSQL", postgres)):
            contestant = Contestant(name, label)
            self.contestants.append(contestant)
            if not wanted:
                contestant.skipped = "left out with --no-postgres"
                continue
            try:
                waits.append((contestant, self._start_gateway(contestant, json_port, stream_port)))
            except Exception as exc:  # noqa: BLE001 - one contestant failing must not stop the others
                contestant.skipped = f"could not start: {exc}"
        if litellm and tools.litellm:
            service = self._launch(processes.litellm_service(tools.litellm, self.workdir, json_port, stream_port,
                                                             self.workers))
            waits.append((self._add("litellm", "LiteLLM proxy", service, processes.LITELLM_KEY), service.wait_ready))
        else:
            reason = tools.missing.get("litellm", "left out with --no-litellm")
            self.contestants.append(Contestant("litellm", "LiteLLM proxy", skipped=reason))
        for contestant, wait in waits:
            try:
                wait()
            except Exception as exc:  # noqa: BLE001 - skip this one, keep the rest
                contestant.skipped = f"did not start: {str(exc)[-600:]}"
                if contestant.service is not None:
                    contestant.service.stop()

    def _launch(self, service: processes.Service) -> processes.Service:
        self.services.append(service)
        return service.start()

    def _add(self, name: str, label: str, service: processes.Service, secret: str) -> Contestant:
        contestant = Contestant(name, label, service.port, service.port, secret, service)
        self.contestants.append(contestant)
        return contestant

    def _start_gateway(self, contestant: Contestant, json_port: int, stream_port: int) -> Callable[[], None]:
        """Database, config and a priced key with credits, then `gateway serve`; returns its readiness wait."""
        if contestant.name == "sqlite":
            url = databases.sqlite_url(self.workdir)
        else:
            if not databases.has_postgres_driver():
                raise RuntimeError("psycopg2 is not installed (pip install -e '.[postgres]')")
            server = databases.postgres_server_url()
            if server is None:
                raise RuntimeError("no PostgreSQL: GATEWAY_TEST_DATABASE_URL unset and nothing on 127.0.0.1:5432")
            self.postgres_servers.append(server)
            url = databases.create_postgres_database(server)
        config = self.workdir / f"gateway-{contestant.name}.toml"
        config.write_text(processes.gateway_config(url, json_port, stream_port))
        contestant.key_id, contestant.secret = processes.create_key(config, "bench", processes.CREDITS)
        contestant.database_url = url
        service = self._launch(processes.gateway_service(f"gateway-{contestant.name}", config, self.workdir,
                                                         self.workers, self.threads))
        contestant.json_port = contestant.stream_port = service.port
        contestant.service = service
        return service.wait_ready

    def stop_services(self) -> None:
        """Stop every contestant and stub server (gunicorn workers flush what they buffer on the way out)."""
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 - report and go on: the others must still stop
                print(f"bench: stopping {service.name} failed: {exc!r}", file=sys.stderr)

    def close(self) -> None:
        """Stop every child, drop the bench database, delete the workdir; each step runs."""
        steps: list[Callable[[], object]] = [service.stop for service in reversed(self.services)]
        steps += [functools.partial(databases.drop_postgres_database, s) for s in self.postgres_servers]
        if self.stub is not None:
            steps.append(functools.partial(processes.stop_process, self.stub))
        steps.append(functools.partial(shutil.rmtree, self.workdir, ignore_errors=True))
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - report and go on: the other steps must still run
                print(f"bench: cleanup step failed: {exc!r}", file=sys.stderr)
