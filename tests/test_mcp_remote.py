"""Remote MCP clients against real loopback HTTP(S) and MCP servers: checks, pinning, redirects."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
from collections.abc import Awaitable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpcore2
import httpx2
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from gateway.errors import BadInput
from gateway.mcp.remote import (
    remote_http_client,
    system_resolver,
)
from tests.ports import free_port

HOST = "mcp.example.com"
PUBLIC_IP = "8.8.8.8"
TOKEN = "tok-SECRET-42"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine with a bound, so a hang fails instead of blocking."""
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


class ScriptedResolver:
    """Answers from a script (last answer repeats) and records every lookup."""

    def __init__(self, *answers: list[str], internal: list[str] | None = None) -> None:
        self.answers = list(answers)
        self.internal = internal or ["10.0.0.5"]
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host == "internal.example.com":
            return self.internal
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class LoopbackDialer(httpcore2.AsyncNetworkBackend):
    """Records the address it is asked to dial and connects to 127.0.0.1 instead."""

    def __init__(self, unreachable: frozenset[str] = frozenset()) -> None:
        self.inner = httpcore2.AnyIOBackend()
        self.unreachable = unreachable
        self.dialled: list[str] = []

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, *args: Any
    ) -> httpcore2.AsyncNetworkStream:
        self.dialled.append(host)
        if host in self.unreachable:
            raise httpcore2.ConnectError(f"{host} unreachable")
        return await self.inner.connect_tcp("127.0.0.1", port, timeout, *args)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class RecordingHandler(BaseHTTPRequestHandler):
    """Records each request; /redirect-* answer with redirects, the rest with 200."""

    server: RecordingServer

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        port = self.server.server_address[1]
        targets = {
            "/redirect-ip": f"https://127.0.0.1:{port}/landed",
            "/redirect-name": "https://internal.example.com/landed",
            "/redirect-same": "/landed",
        }
        status = 307 if self.path in targets else 200
        self.send_response(status)
        if status == 307:
            self.send_header("Location", targets[self.path])
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        return


class RecordingServer(ThreadingHTTPServer):
    """A loopback HTTP(S) server on its own thread; one connection per request."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for mcp.example.com and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def trust(cert_files: tuple[Path, Path]) -> ssl.SSLContext:
    """A client TLS context that trusts only the test certificate."""
    return ssl.create_default_context(cafile=str(cert_files[0]))


@pytest.fixture
def tls_server(cert_files: tuple[Path, Path]) -> Iterator[RecordingServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_files)
    server = RecordingServer(context)
    yield server
    server.stop()


@pytest.fixture
def plain_server() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.stop()


def pinned_client(
    server: RecordingServer, resolver: ScriptedResolver, dialer: Any, trust: Any
) -> httpx2.AsyncClient:
    """A checks-on client for https://mcp.example.com:<server port>/ with test seams."""
    client = remote_http_client(
        f"https://{HOST}:{server.port}/",
        {"X-Docs-Tenant": "acme"},
        TOKEN,
        True,
        5.0,
        resolver=resolver,
        dialer=dialer,
        verify=trust,
    )
    client.base_url = httpx2.URL(f"https://{HOST}:{server.port}")
    return client


def test_host_resolving_to_loopback_is_refused_before_any_connection(
    tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    resolver = ScriptedResolver(["127.0.0.1"])
    client = pinned_client(tls_server, resolver, None, trust)

    async def enter() -> None:
        async with client:
            raise AssertionError("entered a client for a loopback host")

    with pytest.raises(BadInput) as caught:
        run(enter())
    assert "loopback" in caught.value.message and TOKEN not in str(caught.value)
    assert resolver.calls == [HOST]
    assert tls_server.requests == [] and tls_server.sni == []


def test_lazy_use_without_async_with_is_refused_too(
    tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    resolver = ScriptedResolver(["::ffff:169.254.169.254"])
    client = pinned_client(tls_server, resolver, None, trust)
    with pytest.raises(BadInput, match="cloud metadata") as caught:
        run(client.get("/"))
    assert TOKEN not in str(caught.value)
    assert tls_server.requests == [] and tls_server.sni == []


def test_checks_off_reaches_loopback_with_bearer_and_headers(
    plain_server: RecordingServer,
) -> None:
    url = f"http://127.0.0.1:{plain_server.port}/mcp"
    client = remote_http_client(url, {"X-Docs-Tenant": "acme"}, f"Bearer {TOKEN}", False)

    async def fetch() -> int:
        async with client:
            return (await client.get(url)).status_code

    assert run(fetch()) == 200
    path, headers = plain_server.requests[0]
    assert path == "/mcp"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Docs-Tenant"] == "acme"


def test_checks_on_refuses_the_same_loopback_url(plain_server: RecordingServer) -> None:
    url = f"http://127.0.0.1:{plain_server.port}/mcp"
    with pytest.raises(BadInput, match="https"):
        remote_http_client(url, None, TOKEN, True)
    with pytest.raises(BadInput, match="http or https"):
        remote_http_client("file:///etc/passwd", None, None, False)


@pytest.mark.parametrize("path", ["/redirect-ip", "/redirect-name"])
def test_off_policy_redirect_is_not_followed(
    path: str, tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    resolver = ScriptedResolver([PUBLIC_IP])
    dialer = LoopbackDialer()
    client = pinned_client(tls_server, resolver, dialer, trust)

    async def fetch() -> tuple[int, BadInput | None]:
        async with client:
            status = (await client.get(path)).status_code
            try:
                await client.get(path, follow_redirects=True)
            except BadInput as exc:
                return status, exc
            return status, None

    status, refusal = run(fetch())
    assert status == 307  # handed back, not followed
    assert refusal is not None and TOKEN not in str(refusal)
    assert ("IP address literal" if path == "/redirect-ip" else "private") in str(refusal)
    assert [p for p, _ in tls_server.requests] == [path, path]
    assert dialer.dialled == [PUBLIC_IP, PUBLIC_IP]


def test_same_origin_redirect_hop_is_rechecked_and_allowed(
    tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    client = pinned_client(tls_server, ScriptedResolver([PUBLIC_IP]), LoopbackDialer(), trust)

    async def fetch() -> int:
        async with client:
            return (await client.get("/redirect-same", follow_redirects=True)).status_code

    assert run(fetch()) == 200
    assert [p for p, _ in tls_server.requests] == ["/redirect-same", "/landed"]


def test_connections_dial_the_checked_address_and_never_re_resolve(
    tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    # A rebinding DNS server: public on the first answer, loopback afterwards.
    resolver = ScriptedResolver([PUBLIC_IP], ["127.0.0.1"])
    dialer = LoopbackDialer()
    client = pinned_client(tls_server, resolver, dialer, trust)

    async def fetch_three() -> list[int]:
        async with client:
            return [(await client.get(f"/{n}")).status_code for n in range(3)]

    assert run(fetch_three()) == [200, 200, 200]
    assert resolver.calls == [HOST]
    assert dialer.dialled == [PUBLIC_IP] * 3  # one connection per request, all pinned
    assert tls_server.sni == [HOST] * 3
    assert {h["Host"] for _, h in tls_server.requests} == {f"{HOST}:{tls_server.port}"}
    assert {h["Authorization"] for _, h in tls_server.requests} == {f"Bearer {TOKEN}"}


def test_unreachable_checked_address_falls_back_to_the_next_checked_one(
    tls_server: RecordingServer, trust: ssl.SSLContext
) -> None:
    resolver = ScriptedResolver(["2606:4700::1111", PUBLIC_IP])
    dialer = LoopbackDialer(unreachable=frozenset({"2606:4700::1111"}))
    client = pinned_client(tls_server, resolver, dialer, trust)

    async def fetch() -> int:
        async with client:
            return (await client.get("/")).status_code

    assert run(fetch()) == 200
    assert dialer.dialled == ["2606:4700::1111", PUBLIC_IP]


def test_client_refuses_an_off_policy_url_when_built() -> None:
    with pytest.raises(BadInput, match="IP address literal"):
        remote_http_client("https://169.254.169.254/sse", None, TOKEN, True)
    with pytest.raises(BadInput, match="http or https"):
        remote_http_client("ftp://mcp.example.com/", None, TOKEN, False)


@pytest.mark.parametrize("failure", [socket.gaierror(socket.EAI_NONAME, "Name or service not known"), None])
def test_unresolvable_host_is_bad_input(failure: OSError | None, trust: ssl.SSLContext) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        if failure is not None:
            raise failure
        await asyncio.Event().wait()  # never answers; the client's timeout bounds it
        return []

    client = remote_http_client(f"https://{HOST}/", None, TOKEN, True, 0.2, resolver=resolver, verify=trust)
    with pytest.raises(BadInput, match="could not be resolved") as caught:
        run(client.get(f"https://{HOST}/"))
    assert TOKEN not in str(caught.value)


def test_system_resolver_uses_the_loop_and_its_answer_is_checked() -> None:
    addresses = run(system_resolver("localhost", 443))
    assert addresses and set(addresses) <= {"127.0.0.1", "::1"}


def test_bad_headers_and_tokens_never_reach_error_messages() -> None:
    with pytest.raises(BadInput) as caught:
        remote_http_client(f"https://{HOST}/", {"X-Key": f"{TOKEN}\r\n"}, TOKEN, True)
    with pytest.raises(BadInput) as caught_token:
        remote_http_client(f"https://{HOST}/", None, f"{TOKEN}\nX: y", True)
    for error in (caught.value, caught_token.value):
        assert TOKEN not in str(error)


def test_checks_off_connection_failure_does_not_carry_the_token() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    client = remote_http_client(url, None, TOKEN, False, 2.0)
    with pytest.raises(httpx2.ConnectError) as caught:
        run(client.get(url))
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)


class McpTlsServer:
    """A real MCP server (streamable HTTP at /mcp, SSE at /sse) over TLS on loopback."""

    def __init__(self, cert_files: tuple[Path, Path]) -> None:
        self.headers: list[dict[bytes, bytes]] = []
        mcp = MCPServer("remote-test")
        mcp.tool()(self.echo)
        security = TransportSecuritySettings(allowed_hosts=[f"{HOST}:*"])
        self.stream_app = mcp.streamable_http_app(transport_security=security)
        self.sse_app = mcp.sse_app(transport_security=security)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            log_level="warning",
            ssl_certfile=str(cert_files[0]),
            ssl_keyfile=str(cert_files[1]),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @staticmethod
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self.stream_app(scope, receive, send)
        self.headers.append(dict(scope["headers"]))
        target = self.stream_app if scope["path"].startswith("/mcp") else self.sse_app
        await target(scope, receive, send)

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    def start(self) -> McpTlsServer:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            self.thread.join(timeout=0.01)
        raise RuntimeError("MCP test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture(scope="module")
def mcp_server(cert_files: tuple[Path, Path]) -> Iterator[McpTlsServer]:
    server = McpTlsServer(cert_files).start()
    yield server
    server.stop()


async def list_and_call(read: Any, write: Any) -> tuple[list[str], str]:
    async with ClientSession(read, write) as session:
        await session.initialize()
        names = [tool.name for tool in (await session.list_tools()).tools]
        result = await session.call_tool("echo", {"text": "pinned"})
        return names, result.content[0].text


def test_streamable_http_client_through_pinned_client(
    mcp_server: McpTlsServer, trust: ssl.SSLContext
) -> None:
    url = f"https://{HOST}:{mcp_server.port}/mcp"
    resolver, dialer = ScriptedResolver([PUBLIC_IP], ["127.0.0.1"]), LoopbackDialer()
    client = remote_http_client(
        url,
        {"X-Docs-Tenant": "acme"},
        TOKEN,
        True,
        5.0,
        resolver=resolver,
        dialer=dialer,
        verify=trust,
    )

    async def session() -> tuple[list[str], str]:
        async with client, streamable_http_client(url, http_client=client) as (read, write):
            return await list_and_call(read, write)

    assert run(session()) == (["echo"], "pinned")
    assert resolver.calls == [HOST] and set(dialer.dialled) == {PUBLIC_IP}
    sent = mcp_server.headers[-1]
    assert sent[b"authorization"] == f"Bearer {TOKEN}".encode()
    assert sent[b"x-docs-tenant"] == b"acme"


def test_sse_client_through_pinned_client_factory(mcp_server: McpTlsServer, trust: ssl.SSLContext) -> None:
    url = f"https://{HOST}:{mcp_server.port}/sse"
    resolver, dialer = ScriptedResolver([PUBLIC_IP]), LoopbackDialer()
    client = remote_http_client(
        url, {"X-Docs-Tenant": "acme"}, TOKEN, True, 5.0, resolver=resolver, dialer=dialer, verify=trust
    )

    async def session() -> tuple[list[str], str]:
        async with sse_client(url, httpx_client_factory=lambda **_: client) as (read, write):
            return await list_and_call(read, write)

    assert run(session()) == (["echo"], "pinned")
    assert resolver.calls == [HOST] and set(dialer.dialled) == {PUBLIC_IP}
    assert mcp_server.headers[-1][b"authorization"] == f"Bearer {TOKEN}".encode()


def test_sse_client_factory_refuses_loopback_before_connecting(
    mcp_server: McpTlsServer, trust: ssl.SSLContext
) -> None:
    url = f"https://{HOST}:{mcp_server.port}/sse"
    seen_before = len(mcp_server.headers)
    client = remote_http_client(url, None, TOKEN, True, 5.0, resolver=ScriptedResolver(["127.0.0.1"]), verify=trust)

    async def session() -> None:
        async with sse_client(url, httpx_client_factory=lambda **_: client):
            raise AssertionError("connected to a loopback host")

    with pytest.raises(BadInput, match="loopback") as caught:
        run(session())
    assert TOKEN not in str(caught.value)
    assert len(mcp_server.headers) == seen_before
