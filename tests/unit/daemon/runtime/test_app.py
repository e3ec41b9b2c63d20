"""The supervisor: crashed roles restart with growing backoff and are reported; stop ends every role."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid

import pytest

from config.schema import FusewatchConfig, KafkaConfig, RedisConfig
from daemon.runtime.app import Backoff, Supervisor, run_app, until_stopped
from daemon.runtime.services import ServiceSet
from daemon.telemetry.metrics import Telemetry
from daemon.telemetry.status import ROLE_EXPIRY_MS, RoleStatus, StatusStore, now_ms
from streams.redis_schema import redis_client
from tests.helpers import eventually


def _sample(telemetry: Telemetry, name: str, labels: dict[str, str]) -> float:
    value = telemetry.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_crashing_role_is_restarted_with_growing_backoff_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    telemetry = Telemetry()
    supervisor = Supervisor(stop, telemetry, Backoff(initial=0.02, maximum=0.08, factor=2.0))
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def flaky(stop: asyncio.Event) -> None:
        starts.append(loop.time())
        if len(starts) <= 4:
            raise RuntimeError(f"camera exploded #{len(starts)}")
        await stop.wait()

    with caplog.at_level(logging.ERROR, logger="daemon.runtime.app"):
        task = asyncio.create_task(supervisor.supervise("analyze", flaky))
        await eventually(lambda: len(starts) >= 5)
        state = supervisor.roles["analyze"]
        assert state.state == "running" and state.restarts == 4
        assert state.last_error == "RuntimeError: camera exploded #4"
        assert _sample(telemetry, "fusewatch_role_restarts_total", {"role": "analyze"}) == 4
        assert _sample(telemetry, "fusewatch_role_up", {"role": "analyze"}) == 1
        stop.set()
        await asyncio.wait_for(task, 2)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 0.02, 0.04, 0.08, 0.08 (capped): each wait at least its backoff.
    for gap, expected in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True):
        assert gap >= expected * 0.9
    assert supervisor.roles["analyze"].state == "stopped"
    assert _sample(telemetry, "fusewatch_role_up", {"role": "analyze"}) == 0
    crashes = [r for r in caplog.records if "role analyze failed" in r.getMessage()]
    assert len(crashes) == 4 and crashes[0].exc_info is not None and crashes[0].role == "analyze"


async def test_a_role_that_returns_early_is_restarted_unless_it_may_finish() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop, Telemetry(), Backoff(initial=0.01, maximum=0.01))
    runs = {"fuse": 0, "ingest:file": 0}

    async def returns(name: str, stop: asyncio.Event) -> None:
        runs[name] += 1

    finished = asyncio.create_task(
        supervisor.supervise("ingest:file", lambda s: returns("ingest:file", s), restart_on_exit=False)
    )
    restarted = asyncio.create_task(supervisor.supervise("fuse", lambda s: returns("fuse", s)))
    await asyncio.wait_for(finished, 1)
    await eventually(lambda: runs["fuse"] >= 3)
    assert supervisor.roles["ingest:file"].state == "finished" and runs["ingest:file"] == 1
    assert supervisor.roles["fuse"].last_error == "exited while it should run"
    stop.set()
    await asyncio.wait_for(restarted, 1)


async def test_stop_during_backoff_ends_the_role_at_once() -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop, Telemetry(), Backoff(initial=60.0))

    async def crash(stop: asyncio.Event) -> None:
        raise OSError("broker unreachable")

    task = asyncio.create_task(supervisor.supervise("fuse", crash))
    await eventually(lambda: "fuse" in supervisor.roles and supervisor.roles["fuse"].state == "backoff")
    stop.set()
    await asyncio.wait_for(task, 1)
    assert supervisor.roles["fuse"].state == "stopped"
    statuses = supervisor.statuses()
    assert [(s.role, s.state, s.restarts) for s in statuses] == [("fuse", "stopped", 1)]
    assert statuses[0].departed_ms is None
    last = supervisor.statuses(departed=True)[0]
    assert last.departed_ms == last.updated_ms


async def test_until_stopped_cancels_the_work_when_stop_is_set_and_passes_its_errors_on() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(until_stopped(forever(), stop))
    await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert cancelled.is_set()

    async def broken() -> None:
        raise ValueError("bad file")

    with pytest.raises(ValueError, match="bad file"):
        await until_stopped(broken(), asyncio.Event())


async def test_a_crash_inside_a_task_group_is_logged_with_its_real_traceback(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    supervisor = Supervisor(stop, Telemetry(), Backoff(initial=10.0, maximum=10.0))

    async def explode() -> None:
        raise ValueError("Invalid layout: 0 channels")

    async def role(stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(explode())
            await stop.wait()

    with caplog.at_level(logging.ERROR, logger="daemon.runtime.app"):
        task = asyncio.create_task(supervisor.supervise("analyze", role))
        await eventually(lambda: "analyze" in supervisor.roles and supervisor.roles["analyze"].restarts == 1)
        stop.set()
        await asyncio.wait_for(task, 2)
    assert supervisor.roles["analyze"].last_error == "ValueError: Invalid layout: 0 channels"
    crash = next(r for r in caplog.records if "role analyze failed" in r.getMessage())
    text = logging.Formatter().formatException(crash.exc_info) if crash.exc_info else ""
    assert "in explode" in text and "ValueError: Invalid layout: 0 channels" in text
    assert "NoneType: None" not in text


async def test_a_run_process_prunes_expired_role_records_and_marks_its_own_departed(services: ServiceSet) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = FusewatchConfig(
        site="test",
        kafka=KafkaConfig(bootstrap_servers=[services.kafka.address]),
        redis=RedisConfig(url=f"redis://{services.redis.address}/0", key_prefix=prefix),
    )
    client = redis_client(config.redis)
    store = StatusStore(client, prefix)
    now = now_ms()

    def earlier(role: str, process: str, ago_ms: int, departed: bool) -> RoleStatus:
        at = now - ago_ms
        state = "stopped" if departed else "running"
        return RoleStatus(
            role=role,
            process=process,
            state=state,
            restarts=0,
            last_error="",
            updated_ms=at,
            departed_ms=at if departed else None,
        )

    await store.write_roles(
        [
            earlier("fuse", "old:1", ROLE_EXPIRY_MS + 60_000, departed=True),
            earlier("web", "old:2", ROLE_EXPIRY_MS + 60_000, departed=False),
            earlier("analyze", "old:3", 60_000, departed=False),
        ]
    )
    stop = asyncio.Event()
    telemetry = Telemetry()

    async def analyze(stop: asyncio.Event) -> None:
        await stop.wait()

    app = asyncio.create_task(
        run_app(config, (), "token", stop=stop, telemetry=telemetry, report_every=0.05, extra={"analyze": analyze})
    )
    mine = f"{telemetry.process}/analyze"
    try:
        wanted = {b"old:3/analyze", mine.encode()}  # the records gone past the expiry deleted, departed or not
        deadline = time.monotonic() + 5
        while (fields := set(await client.hkeys(store.keys.status_roles))) != wanted:
            assert time.monotonic() < deadline, fields
            await asyncio.sleep(0.05)
        running = (await store.overview())["roles"]
        assert [(r["role"], r["process"], r["state"], r["live"]) for r in running] == [
            ("analyze", telemetry.process, "running", True)
        ], "the stale analyze of an earlier process is not shown beside the live one"
        stop.set()
        await asyncio.wait_for(app, 5)
        left = (await store.overview())["roles"]
        assert [(r["role"], r["process"], r["state"], r["live"], r["stale"]) for r in left] == [
            ("analyze", telemetry.process, "stopped", False, False)
        ], "once, as departed: the process that left last"
        assert left[0]["departed_ms"] is not None and left[0]["gone_ms"] == left[0]["departed_ms"]
    finally:
        stop.set()
        await asyncio.wait_for(app, 5)
        await client.delete(store.keys.status_roles)
        await client.aclose()
