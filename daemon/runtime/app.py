"""`fusewatch run`: the roles of a site (ingest, analyze, fuse, web) in one supervised process.

Every role runs as a task of one `asyncio.TaskGroup`, under a `Supervisor` that restarts a
crashed role with exponential backoff, counts and logs the crash, and publishes each
role's state (to metrics and to Redis for `fusewatch status`; marked departed when the
process stops), so no role is ever silently dead. Shutdown has two stages: the first
SIGTERM/SIGINT sets the stop event, and every role drains (analyze and fuse flush their
outputs and commit offsets); a second signal cancels everything at once, and if blocking
inference still holds the process, it exits hard a few seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from config.schema import FusewatchConfig, SourceConfig
from daemon.telemetry.metrics import Telemetry
from daemon.telemetry.status import RoleStatus, StatusStore, now_ms
from streams.backoff import ROLE_RESTART, Backoff
from streams.kafka import MediaPublisher, ensure_topics
from streams.redis_schema import REDIS_DOWN, redis_client
from streams.sources import IngestState, MessageSink, ReplayOptions, ingest_live, open_spec, replay

log = logging.getLogger(__name__)

ROLES = ("ingest", "analyze", "fuse", "clips", "index", "web")
"""Every role `fusewatch run` knows, in run order; `ingest:<source id>` is the ingest of one source."""
# A looping file source: replay "forever" (a 2 s loop would take 60 years to run out).
_FOREVER = 10**9
T = TypeVar("T")


@dataclass
class RoleState:
    """What the supervisor knows about one role."""

    name: str
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""


RoleRun = Callable[[asyncio.Event], Awaitable[object]]


class Supervisor:
    """Runs roles until `stop`; restarts a crashed role with backoff and reports it."""

    def __init__(self, stop: asyncio.Event, telemetry: Telemetry, backoff: Backoff = ROLE_RESTART) -> None:
        self.stop = stop
        self.telemetry = telemetry
        self.backoff = backoff
        self.roles: dict[str, RoleState] = {}

    async def supervise(self, name: str, run: RoleRun, restart_on_exit: bool = True) -> None:
        """Run `run(stop)` until stop; a crash (or, if `restart_on_exit`, an early return) restarts it."""
        state = self.roles[name] = RoleState(name)
        up = self.telemetry.metrics.role_up.labels(name)
        delays = self.backoff.delays()
        while not self.stop.is_set():
            state.state = "running"
            up.set(1)
            failure: BaseException | None = None
            try:
                await run(self.stop)
            except asyncio.CancelledError:
                state.state = "stopped"
                raise
            except Exception as exc:
                failure = exc
                reason = crash_reason(exc)
            else:
                if self.stop.is_set():
                    break
                if not restart_on_exit:
                    state.state = "finished"
                    log.info("role %s finished", name, extra={"role": name})
                    return
                reason = "exited while it should run"
            finally:
                up.set(0)
            delay = delays.next
            state.restarts += 1
            state.last_error = reason
            state.state = "backoff"
            self.telemetry.metrics.role_restarts.labels(name).inc()
            log.error(
                "role %s failed (%s); restart %d in %.1fs",
                name,
                reason,
                state.restarts,
                delay,
                extra={"role": name, "restarts": state.restarts},
                exc_info=failure,
            )
            await delays.wait(self.stop)
        state.state = "stopped"

    def statuses(self, departed: bool = False) -> list[RoleStatus]:
        """Every role's record for Redis; `departed`: this process's last, marking it gone."""
        now = now_ms()
        return [
            RoleStatus(
                role=s.name,
                process=self.telemetry.process,
                state=s.state,
                restarts=s.restarts,
                last_error=s.last_error[:500],
                updated_ms=now,
                consumer=self._consumer(s.name),
                departed_ms=now if departed else None,
            )
            for s in self.roles.values()
        ]

    def _consumer(self, role: str) -> str:
        health = self.telemetry.consumers.get(role)
        if health is None:
            return ""
        if health.stalled:
            return "stalled: " + ", ".join(health.stalled)
        return health.broker[:200]


def crash_reason(exc: BaseException) -> str:
    """`Type: message` of what really failed: the leaves of an ExceptionGroup, not the group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(crash_reason(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """Run `work` until it ends (its result) or `stop` is set (then cancel it: None); its exceptions propagate."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


# --------------------------------------------------------------------------- roles


def ingest_sources(config: FusewatchConfig, roles: tuple[str, ...]) -> list[SourceConfig]:
    """The sources whose ingest `roles` asks for: all of them for `ingest`, one for each `ingest:<id>`.

    One source per process lets a deployment run each camera exactly once (one Kubernetes
    Deployment or systemd unit per source) while the others scale or restart on their own.
    KeyError names an `ingest:<id>` that is not a configured source, and the known ones.
    """
    if "ingest" in roles:
        return list(config.sources)
    wanted = [role.partition(":")[2] for role in roles if role.startswith("ingest:")]
    return [config.source(source_id) for source_id in wanted]


def ingest_role(config: FusewatchConfig, source: SourceConfig, telemetry: Telemetry) -> RoleRun:
    """One source into `fw.media`: a live source reconnecting forever, a file once or in a loop."""

    async def run(stop: asyncio.Event) -> None:
        counter = telemetry.metrics.media_messages.labels(source.id)
        await ensure_topics(config.kafka)
        async with MediaPublisher(config.kafka, on_publish=counter.inc) as publisher:
            await ingest_source(config, source, publisher, stop)
            await publisher.flush()

    return run


async def ingest_source(
    config: FusewatchConfig,
    source: SourceConfig,
    sink: MessageSink,
    stop: asyncio.Event,
    state: IngestState | None = None,
) -> IngestState:
    """One configured source into `sink` until it ends or `stop`: what the ingest role and `fusewatch ingest` run.

    A live source reconnects forever; a file is replayed at real speed, once or (`loop`) in
    a loop, its wallclock aligned to `windows.size` so every replay falls into the same windows.
    """
    state = state if state is not None else IngestState()
    if open_spec(source.url, dict(source.options)).live:
        return await ingest_live(
            source.url,
            source.id,
            config.site_of(source),
            sink,
            source.reconnect,
            dict(source.options),
            state=state,
            stop=stop,
        )
    options = ReplayOptions(speed=1.0, loops=_FOREVER if source.loop else 1, align_s=config.windows.size)
    result = await until_stopped(replay(source.url, source.id, config.site_of(source), sink, options), stop)
    state.connects = 1
    if result is not None:
        state.messages = result.messages
    return state


def analyze_role(config: FusewatchConfig, telemetry: Telemetry) -> RoleRun:
    async def run(stop: asyncio.Event) -> None:
        from daemon.analyze.worker import run_analyze

        await run_analyze(config, stop=stop, telemetry=telemetry)

    return run


def fuse_role(config: FusewatchConfig, telemetry: Telemetry) -> RoleRun:
    async def run(stop: asyncio.Event) -> None:
        from daemon.fuse.worker import run_fuse

        await run_fuse(config, stop=stop, telemetry=telemetry)

    return run


def clips_role(config: FusewatchConfig, telemetry: Telemetry) -> RoleRun:
    async def run(stop: asyncio.Event) -> None:
        from daemon.clips.worker import run_clips

        await run_clips(config, stop=stop, telemetry=telemetry)

    return run


def index_role(config: FusewatchConfig, telemetry: Telemetry) -> RoleRun:
    async def run(stop: asyncio.Event) -> None:
        from daemon.search.worker import run_index

        await run_index(config, stop=stop, telemetry=telemetry)

    return run


def web_role(
    config: FusewatchConfig,
    telemetry: Telemetry,
    roles: tuple[str, ...],
    token: str,
    dashboard: bool = True,
    port: int | None = None,
) -> RoleRun:
    async def run(stop: asyncio.Event) -> None:
        from daemon.console.web import serve

        await serve(config, telemetry, stop, token=token, local_roles=roles, dashboard=dashboard, port=port)

    return run


# --------------------------------------------------------------------------- the app


def install_signal_handlers(
    stop: asyncio.Event,
    main: asyncio.Task[Any],
    hard_exit_after: float = 5.0,
    before_hard_exit: Callable[[], None] | None = None,
) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: cancel everything now, and exit hard if that hangs.

    `before_hard_exit` runs (in a thread) just before a hard exit: stop child processes there.
    """
    loop = asyncio.get_running_loop()

    def hard_exit() -> None:
        if before_hard_exit is not None:
            before_hard_exit()
        os._exit(130)

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.warning("%s: stopping (finishing in-flight work); send it again to stop at once", name)
            stop.set()
            return
        log.warning("%s again: stopping now", name)
        main.cancel()
        timer = threading.Timer(hard_exit_after, hard_exit)
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)


async def run_app(
    config: FusewatchConfig,
    roles: tuple[str, ...],
    token: str,
    stop: asyncio.Event | None = None,
    telemetry: Telemetry | None = None,
    backoff: Backoff = ROLE_RESTART,
    metrics_port: int | None = None,
    report_every: float = 2.0,
    extra: dict[str, RoleRun] | None = None,
) -> Supervisor:
    """Run `roles` (and `extra` named roles) under one supervisor until `stop` (set by the signal handlers)."""
    stop = stop or asyncio.Event()
    telemetry = telemetry or Telemetry()
    supervisor = Supervisor(stop, telemetry, backoff)
    async with asyncio.TaskGroup() as tasks:
        for source in ingest_sources(config, roles):
            tasks.create_task(
                supervisor.supervise(
                    f"ingest:{source.id}",
                    ingest_role(config, source, telemetry),
                    restart_on_exit=open_spec(source.url).live or source.loop,
                )
            )
        if "analyze" in roles:
            tasks.create_task(supervisor.supervise("analyze", analyze_role(config, telemetry)))
        if "fuse" in roles:
            tasks.create_task(supervisor.supervise("fuse", fuse_role(config, telemetry)))
        if "clips" in roles:
            tasks.create_task(supervisor.supervise("clips", clips_role(config, telemetry)))
        if "index" in roles:
            tasks.create_task(supervisor.supervise("index", index_role(config, telemetry)))
        if "web" in roles:
            tasks.create_task(supervisor.supervise("web", web_role(config, telemetry, roles, token)))
        elif metrics_port is not None:
            tasks.create_task(
                supervisor.supervise(
                    "metrics", web_role(config, telemetry, roles, token, dashboard=False, port=metrics_port)
                )
            )
        for name, run in (extra or {}).items():
            tasks.create_task(supervisor.supervise(name, run))
        tasks.create_task(_report_roles(config, supervisor, report_every))
    return supervisor


async def _report_roles(config: FusewatchConfig, supervisor: Supervisor, every: float) -> None:
    """Role states to Redis every `every` seconds, pruning every process's expired records, and
    once more at the end, marked departed (best effort: a process that cannot say goodbye
    goes stale instead)."""
    client = redis_client(config.redis)
    store = StatusStore(client, config.redis.key_prefix)
    try:
        while True:
            leaving = supervisor.stop.is_set() and all(
                s.state in ("stopped", "finished") for s in supervisor.roles.values()
            )
            try:
                await store.write_roles(supervisor.statuses(departed=leaving))
                if not leaving:
                    await store.prune_roles()
            except REDIS_DOWN as exc:
                log.debug("role status not written (redis: %s)", exc)
            except Exception:
                log.exception("role status not written")
            if leaving:
                return
            await asyncio.sleep(every if not supervisor.stop.is_set() else 0.2)
    finally:
        await client.aclose()
