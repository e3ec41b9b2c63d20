"""TLS for tests: a throwaway CA and certificates, Redis over TLS with an ACL user, a TLS front for the broker.

Everything is real: certificates come from the `openssl` command line, Redis is Debian's
`redis-server` with `tls-port` (the server certificate, and client certificates it requires),
and `TlsFront` terminates TLS in front of a plaintext broker, for brokers that cannot serve
TLS themselves (the embedded Tansu 0.6.0: see tests/integration/test_transport_security.py).
A tool that is missing or fails raises with its output: the tests that need it fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.runtime.services import EmbeddedService, free_port, redis_binary, tansu_binary

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = {name}
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{names}
"""
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    try:
        done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError as exc:
        raise RuntimeError("openssl not found: apt-get install -y openssl") from exc
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a second
    CA that signed neither (what a client trusting the wrong CA has)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _ca(directory: Path, stem: str, name: str) -> tuple[Path, Path]:
    config = directory / f"{stem}.cnf"
    config.write_text(_CA_CONFIG.format(name=name))
    _openssl(
        "req",
        "-x509",
        "-new",
        "-config",
        config.name,
        "-extensions",
        "v3_ca",
        *_EC,
        "-keyout",
        f"{stem}.key",
        "-out",
        f"{stem}.crt",
        "-days",
        "2",
        cwd=directory,
    )
    return directory / f"{stem}.crt", directory / f"{stem}.key"


def _leaf(directory: Path, stem: str, name: str, usage: str, names: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    extensions = directory / f"{stem}.ext"
    extensions.write_text(_LEAF_EXTENSIONS.format(usage=usage, names=names))
    _openssl(
        "req", "-new", *_EC, "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={name}", cwd=directory
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{stem}.csr",
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-set_serial",
        f"0x{secrets.token_hex(8)}",
        "-days",
        "2",
        "-extfile",
        extensions.name,
        "-out",
        f"{stem}.crt",
        cwd=directory,
    )
    return directory / f"{stem}.crt", directory / f"{stem}.key"


def make_pki(directory: Path) -> Pki:
    """A fresh CA and certificates under `directory` (EC P-256, valid two days)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca", "fusewatch test CA")
    server = _leaf(directory, "server", "localhost", "serverAuth", "subjectAltName = IP:127.0.0.1, DNS:localhost", ca)
    client = _leaf(directory, "client", "fusewatch", "clientAuth", "", ca)
    other_ca, _ = _ca(directory, "other-ca", "some other CA")
    return Pki(ca[0], *server, *client, other_ca)


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def server_context(pki: Pki) -> ssl.SSLContext:
    """A server side that presents the server certificate and requires a client certificate from the CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# --------------------------------------------------------------------------- Redis over TLS


@dataclass(frozen=True)
class TlsRedis:
    """A running `redis-server` that speaks only TLS, requires client certificates and has one ACL user."""

    port: int
    user: str
    key_prefix: str
    log: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def tls_redis(
    directory: Path, pki: Pki, user: str, password: str, key_prefix: str, timeout: float = 15.0
) -> Iterator[TlsRedis]:
    """Start Redis on a free port: TLS only (`port 0`), `tls-auth-clients yes`, the `default` user off and
    `user` allowed the `key_prefix:*` keys and channels, every command but @admin/@dangerous ones.
    Its password is stored hashed (`#sha256`), so it is in no file or command line."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = directory / "redis.log"
    digest = hashlib.sha256(password.encode()).hexdigest()
    config = directory / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"tls-port {port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"tls-cert-file {pki.server_cert}",
                f"tls-key-file {pki.server_key}",
                f"tls-ca-cert-file {pki.ca}",
                "tls-auth-clients yes",
                'save ""',
                "appendonly no",
                f"dir {directory}",
                "user default off",
                f"user {user} on #{digest} ~{key_prefix}:* &{key_prefix}:* +@all -@admin -@dangerous",
                "",
            ]
        )
    )
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(redis_binary()), str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        context = client_context(pki.ca, pki.client_cert, pki.client_key)
        while not _tls_redis_answers(port, context):
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {process.returncode} at start (does it have TLS? "
                    f"`redis-server --version`, Debian's is built with it):\n{_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not answer over TLS on 127.0.0.1:{port} in {timeout}s:\n{_tail(log)}"
                )
            time.sleep(0.05)
        yield TlsRedis(port, user, key_prefix, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _tls_redis_answers(port: int, context: ssl.SSLContext) -> bool:
    """Any reply to PING over TLS (-NOAUTH: the default user is off) means the server is up."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"PING\r\n")
            return tls.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --------------------------------------------------------------------------- TLS in front of a broker


class TansuBroker(EmbeddedService):
    """The embedded Tansu broker with extra flags, optionally advertising another port (a TLS front's)."""

    def __init__(self, log_dir: Path, advertised_port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        super().__init__("kafka", log_dir)
        self.advertised_port = advertised_port or self.port
        self.extra = extra

    def command(self) -> list[str]:
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
            *self.extra,
        ]


@dataclass
class TlsFront:
    """`accepted`: connections whose TLS handshake passed (the client's certificate included)."""

    port: int
    accepted: int = 0


@contextlib.asynccontextmanager
async def tls_front(port: int, context: ssl.SSLContext, target: tuple[str, int]) -> AsyncIterator[TlsFront]:
    """Terminate TLS on 127.0.0.1:`port` (handshake per `context`) and pipe the bytes to `target`.

    A client that fails the handshake (untrusted server, no client certificate) never gets through.
    """
    front = TlsFront(port)
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        front.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        except OSError:
            writer.close()
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", port, ssl=context)
    try:
        yield front
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
