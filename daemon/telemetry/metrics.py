"""Prometheus metrics of one fusewatch process (docs/design.md §9).

The workers keep plain counters of what they did (`DecodeCounters`, `AnalyzeCounters`, …);
they reset when a crashed role is restarted. `CounterMirror` turns their growth into
increments of the process-wide Prometheus counters, so the exported totals only ever grow,
across restarts, as Prometheus expects. Histograms (inference time, alert latency) are
observed where the thing happens.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.checkpoint import CheckpointHealth

# Inference of one batch/segment on 2 CPU cores takes 10 ms … 10 s; a GPU goes below that.
_INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Window end → alert published: the window itself, the join grace and Whisper's delay.
_LATENCY_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


class Metrics:
    """Every metric fusewatch exports, in one registry (one per process; tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.media_messages = Counter(
            "fusewatch_media_messages", "Wire messages ingested into fw.media", ["stream"], registry=r
        )
        self.frames_decoded = Counter("fusewatch_frames_decoded", "Video frames decoded", ["stream"], registry=r)
        self.frames_analysed = Counter(
            "fusewatch_frames_analysed", "Sampled video frames analysed", ["stream"], registry=r
        )
        self.frames_without_motion = Counter(
            "fusewatch_frames_without_motion",
            "Analysed frames the detector did not see: nothing moved, the stream's latest detections stood for them",
            ["stream"],
            registry=r,
        )
        self.motion_regions = Counter("fusewatch_motion_regions", "Moving regions found in sampled frames", registry=r)
        self.frames_dropped = Counter(
            "fusewatch_frames_dropped", "Frames dropped because detection fell behind", ["stream"], registry=r
        )
        self.windows_emitted = Counter(
            "fusewatch_windows_emitted", "WindowFeatures produced", ["stream", "modality"], registry=r
        )
        self.inference_seconds = Histogram(
            "fusewatch_inference_seconds",
            "Time of one inference call",
            ["model"],
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.alerts = Counter("fusewatch_alerts", "Alerts raised", ["event", "site"], registry=r)
        self.alert_latency = Histogram(
            "fusewatch_alert_latency_seconds",
            "Window end (stream wallclock) to the alert written to Redis (buffered while it is down) and sent to Kafka",
            ["event"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.late_records = Counter(
            "fusewatch_late_records", "Features that arrived after their window closed", registry=r
        )
        self.dead_letters = Counter(
            "fusewatch_dead_letters", "Records sent to the dead-letter topic", ["stage"], registry=r
        )
        self.consumer_lag = Gauge(
            "fusewatch_consumer_lag",
            "Records behind the end of the partition",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.redis_buffer_depth = Gauge("fusewatch_redis_buffer_depth", "Outputs waiting for Redis", registry=r)
        self.redis_buffer_dropped = Counter(
            "fusewatch_redis_buffer_dropped",
            "Outputs dropped, oldest first, from a full buffer while Redis was down",
            registry=r,
        )
        self.clips = Counter(
            "fusewatch_clips",
            "Alert clips by outcome: written, existing (in the store already), failed, beyond_retention",
            ["outcome"],
            registry=r,
        )
        self.clip_seconds = Histogram(
            "fusewatch_clip_cut_seconds",
            "Reading a clip's packets from fw.media and remuxing them (waiting for its post-roll excluded)",
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.clip_bytes = Counter("fusewatch_clip_bytes", "Bytes of clips written to the clip store", registry=r)
        self.role_restarts = Counter("fusewatch_role_restarts", "Roles restarted after a crash", ["role"], registry=r)
        self.role_up = Gauge("fusewatch_role_up", "1 while a role runs", ["role"], registry=r)
        self.partitions_revoked = Counter(
            "fusewatch_partitions_revoked",
            "Partitions taken from this worker by a consumer-group rebalance",
            ["role"],
            registry=r,
        )
        self.offset_resets = Counter(
            "fusewatch_offset_resets",
            "Partitions read again per kafka.offset_reset: their offset lay beyond "
            "the log end (topic recreated, broker replaced)",
            ["role"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    def mirror(self) -> CounterMirror:
        """A mirror for one worker's counters (make a new one when the worker restarts)."""
        return CounterMirror()


class CounterMirror:
    """Adds the growth of a worker's plain counter to a Prometheus counter since the last sync."""

    def __init__(self) -> None:
        self._seen: dict[tuple[int, tuple[str, ...]], float] = {}

    def sync(self, counter: Counter, value: float, *labels: str) -> None:
        key = (id(counter), labels)
        delta = value - self._seen.get(key, 0.0)
        if delta > 0:
            (counter.labels(*labels) if labels else counter).inc(delta)
            self._seen[key] = value


class LagGauge:
    """One worker's consumer lag per partition; a partition a rebalance took away stops being shown."""

    def __init__(self, metrics: Metrics, group: str) -> None:
        self._gauge = metrics.consumer_lag
        self._group = group
        self._shown: set[tuple[str, str, str]] = set()

    def show(self, lags: Mapping[TopicPartition, int]) -> None:
        labels = {(self._group, tp.topic, str(tp.partition)): lag for tp, lag in lags.items()}
        for gone in self._shown - labels.keys():
            self._gauge.remove(*gone)
        for label, lag in labels.items():
            self._gauge.labels(*label).set(lag)
        self._shown = set(labels)


class Telemetry:
    """What one process shares across its roles: the metrics and which roles have their dependencies up."""

    def __init__(self, metrics: Metrics | None = None, process: str | None = None) -> None:
        import os
        import socket

        self.metrics = metrics or Metrics()
        self.process = process or f"{socket.gethostname()}:{os.getpid()}"
        self.loaded: set[str] = set()
        self.consumers: dict[str, CheckpointHealth] = {}  # role → its consumer's broker state and stalls
