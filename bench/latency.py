"""End-to-end latency at real speed: packet capture wallclock → alert / summary published.

Replays the demo recordings at their own speed (`--speed 1.0`, looping) through the
embedded broker and Redis with the analyze and fuse workers of the demo config (live
mode: frames are dropped rather than falling behind), and measures
- alert latency: `Alert.published_ns` − the wallclock end of the alert's window;
- features latency: per modality, when the analyze worker emitted the window − its end.
A window can only be complete at its end, so this is the delay fusewatch adds.

    .venv/bin/python -m bench.latency [--loops 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from bench.common import percentile, write_result
from config import load_config
from config.schema import FusewatchConfig, KafkaTopics
from daemon.cli.commands import fetch_media
from daemon.cli.main import default_config_path
from daemon.runtime.services import ServiceSet
from streams.kafka import MediaPublisher, make_consumer
from streams.models import Alert
from streams.redis_schema import RedisKeys, redis_client
from streams.sources import ReplayOptions, replay


async def _records(config: FusewatchConfig, topic: str) -> list[Any]:
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        records = []
        while batch := await consumer.getmany(timeout_ms=2000):
            records += [r for rs in batch.values() for r in rs]
        return records
    finally:
        await consumer.stop()


async def main(loops: int) -> dict[str, Any]:
    media = fetch_media(Path(".cache/media"))
    services = ServiceSet(Path(".cache/services/bench-latency"))
    services.start()
    try:
        base = load_config(
            default_config_path(),
            env={"FUSEWATCH_KAFKA": services.kafka.address, "FUSEWATCH_REDIS": f"redis://{services.redis.address}/0"},
        )
        run = f"lat{int(time.time())}"
        config = base.model_copy(
            update={
                "kafka": base.kafka.model_copy(
                    update={
                        "group_prefix": run,
                        "topics": KafkaTopics(**{k: f"{run}.{v}" for k, v in base.kafka.topics.model_dump().items()}),
                    }
                ),
                "redis": base.redis.model_copy(update={"key_prefix": run}),
            }
        )
        config_file = Path(".cache/services/bench-latency") / f"{run}.yaml"
        topics = ", ".join(f"{k}: {v}" for k, v in config.kafka.topics.model_dump().items())
        config_file.write_text(
            default_config_path()
            .read_text()
            .replace(
                "kafka:\n",
                f"kafka:\n  group_prefix: {run}\n  topics: {{{topics}}}\n",
                1,
            )
            .replace("redis:\n", f"redis:\n  key_prefix: {run}\n", 1)
        )
        env = os.environ | {
            "FUSEWATCH_KAFKA": services.kafka.address,
            "FUSEWATCH_REDIS": f"redis://{services.redis.address}/0",
        }
        # The roles run as their own processes, as they are deployed.
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "daemon.cli",
                role,
                "--config",
                str(config_file),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for role in ("analyze", "fuse")
        ]
        await asyncio.sleep(8.0)  # models loaded, consumer groups joined
        async with MediaPublisher(config.kafka) as publisher:
            await asyncio.gather(
                *(
                    replay(
                        str(media / f"{name}.ts"),
                        name,
                        config.site,
                        publisher,
                        ReplayOptions(speed=1.0, loops=loops, align_s=config.windows.size),
                    )
                    for name in ("lobby", "street")
                )
            )
            await publisher.flush()
        await asyncio.sleep(config.windows.grace + 20)  # let the last windows close
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            await asyncio.wait_for(worker.wait(), 60)
        redis = redis_client(config.redis)
        try:
            entries = await redis.xrange(RedisKeys(config.redis.key_prefix).alerts)
        finally:
            await redis.aclose()
        alerts = [Alert.model_validate_json(fields[b"alert"]) for _, fields in entries or [] if fields]
        alert_ms = [(a.published_ns or 0) / 1e6 - a.window_end for a in alerts]
        # Measured by the producers themselves (Tansu's record timestamps are not usable for this).
        feature_ms: dict[str, list[float]] = defaultdict(list)
        for record in await _records(config, config.kafka.topics.features):
            value = json.loads(record.value)
            feature_ms[value["modality"]].append(value["latency_ms"]["window_end_to_emit"])
    finally:
        services.stop()

    def stats(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p95_ms": round(percentile(values, 95), 1),
            "max_ms": round(max(values), 1) if values else float("nan"),
        }

    return {
        "what": "wallclock end of a window → alert / window features published, demo streams at real speed",
        "loops": loops,
        "alerts": stats(alert_ms),
        "alert_events": [a.event for a in alerts],
        "features": {modality: stats(values) for modality, values in sorted(feature_ms.items())},
        "setup": "analyze and fuse as separate `fusewatch` processes, replay in the benchmark process",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loops", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(main(args.loops))
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result('latency', result)}")
