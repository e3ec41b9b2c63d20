"""The broker is replaced under a running pipeline: new records are processed and alert again.

The analyze and fuse roles run in-process under the supervisor, as `fusewatch run` runs
them, against a broker of this test's own. After the
lobby's distress alert the broker is killed (SIGKILL) and a fresh one started on the same
port: its memory storage has lost every topic, record and committed offset, so each log
starts again at 0 while the workers' positions lie far beyond it. Without a check against
the log end they would wait there for offsets that never come (issue 11, point 2). With it,
the workers read the new logs from the start and the lobby replayed again alerts again.
A send that was in flight when the broker died may fail for good (the new broker did not
have the topic yet); the role then stops before committing past it and the supervisor
restarts it, as at-least-once delivery wants. No alert is lost or doubled either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from daemon.runtime.app import Supervisor, analyze_role, fuse_role
from daemon.runtime.services import EmbeddedService, ServiceSet, free_port
from daemon.telemetry.metrics import Telemetry
from streams.kafka import MediaPublisher, ensure_topics
from streams.sources import ReplayOptions, replay
from tests.helpers import demo_config_on, redis_alerts

pytestmark = pytest.mark.integration
RECORDING_NS = 90 * 1_000_000_000  # lobby.ts lasts 79.6 s


async def _until(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within {within:.0f} s"
        await asyncio.sleep(0.5)


async def test_a_replaced_broker_is_read_from_its_start_and_new_alerts_arrive(
    services: ServiceSet, media_dir: Path, tmp_path: Path
) -> None:
    broker = EmbeddedService("kafka", tmp_path, port=free_port())
    broker.start()
    config = demo_config_on(broker.address, services.redis.address, tmp_path / "snapshots", "b")
    telemetry = Telemetry()
    registry = telemetry.metrics.registry
    stop = asyncio.Event()

    def resets(role: str) -> float:
        return registry.get_sample_value("fusewatch_offset_resets_total", {"role": role}) or 0.0

    async def replay_lobby(wall_base_ns: int | None = None) -> int:
        """The lobby at max speed; returns its wallclock start."""
        async with MediaPublisher(config.kafka) as publisher:
            done = await replay(
                str(media_dir / "lobby.ts"),
                "lobby",
                config.site,
                publisher,
                ReplayOptions(speed=None, wall_base_ns=wall_base_ns),
            )
            await publisher.flush()
        return done.wall_start_ns

    def alerted(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            assert not any(role.done() for role in roles.values()), "a role ended"
            return len(await redis_alerts(config)) >= count

        return check

    await ensure_topics(config.kafka)
    supervisor = Supervisor(stop, telemetry)
    roles = {
        "analyze": asyncio.create_task(supervisor.supervise("analyze", analyze_role(config, telemetry))),
        "fuse": asyncio.create_task(supervisor.supervise("fuse", fuse_role(config, telemetry))),
    }
    try:
        first_start = await replay_lobby()
        await _until(alerted(1), 120, "the lobby's alert from the first broker")

        broker.kill()
        await asyncio.sleep(2.0)  # the workers see the broker gone
        broker.start()
        restarted = time.monotonic()
        await asyncio.wait_for(ensure_topics(config.kafka), 30)

        async def reset_both() -> bool:  # both notice their offsets lie beyond the new, empty logs
            assert not any(role.done() for role in roles.values()), "a role ended"
            return resets("analyze") >= 1 and resets("fuse") >= 1

        await _until(reset_both, 90, "offset resets of analyze and fuse")
        reset_after = time.monotonic() - restarted

        # Stamped after the first replay's last window (max speed stamps the recording's own
        # time span from its start), so that no window of it is one the site closed already.
        await replay_lobby(wall_base_ns=first_start + RECORDING_NS)
        replayed = time.monotonic()
        await _until(alerted(2), 120, "the lobby's alert through the new broker")
        restarts = {name: state.restarts for name, state in supervisor.roles.items()}
        print(
            f"\nbroker replaced: offsets reset {reset_after:.1f} s after the new broker started; "
            f"the alert {time.monotonic() - replayed:.1f} s after the second replay was sent; "
            f"role restarts {restarts}"
        )
        assert not any(role.done() for role in roles.values())
    finally:
        stop.set()
        for role in roles.values():
            await asyncio.wait_for(role, 60)
        broker.stop()
    fired = await redis_alerts(config)
    assert [(a["event"], a["site"]) for a in fired] == [("distress", "demo")] * 2, fired
    assert fired[0]["window_start"] < fired[1]["window_start"], "the second alert is the second replay's"
    assert all(count <= 2 for count in restarts.values()), restarts  # one per send lost with the old broker
