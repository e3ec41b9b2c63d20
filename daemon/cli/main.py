"""`fusewatch` command line: config checks, schemas, services, replay/ingest, workers, `run`, feeds, summaries, demo.

Each sub-command is a thin shell over the library: it parses arguments, loads the config
(the embedded demo config when none is given), runs one coroutine and maps failures to a
clear message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console

from config import ConfigError, FusewatchConfig, load_config
from daemon.cli.errors import UserError
from daemon.telemetry.logs import configure_logging

console = Console(stderr=True)


def default_config_path() -> Path:
    """The embedded defaults: `config/examples/demo.yaml` shipped with the package."""
    return Path(str(resources.files("config") / "examples" / "demo.yaml"))


def _load(path: str | None) -> FusewatchConfig:
    return load_config(path or default_config_path())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusewatch", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    config_cmd = commands.add_parser("config", help="work with config files")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file")

    schema = commands.add_parser("schema", help="print JSON Schemas of the config and wire messages")
    schema.add_argument(
        "name",
        nargs="?",
        default="all",
        help="config, init, features, alert, summary, period-summary, clip or all (default)",
    )

    services = commands.add_parser("services", help="embedded Kafka-protocol broker and Redis")
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--config", help="config whose kafka/redis addresses to serve")
    services.add_argument("--state-dir", default=".cache/services")

    replay = commands.add_parser("replay", help="replay a recording into fw.media")
    replay.add_argument("file")
    replay.add_argument("--stream-id", required=True)
    replay.add_argument("--site")
    replay.add_argument("--speed", default="1.0", help="1.0 = the recording's own timing; max = as fast as possible")
    replay.add_argument("--loop", type=int, default=1, help="play the file N times")
    replay.add_argument("--config")

    ingest = commands.add_parser("ingest", help="ingest a configured source into fw.media")
    ingest.add_argument("--source", required=True, help="source id from the config")
    ingest.add_argument("--config")

    decode = commands.add_parser("decode", help="consume fw.media, decode, print counts per stream")
    decode.add_argument("--config")
    decode.add_argument("--group", default=None, help="consumer group (default: read all, commit nothing)")
    decode.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")

    analyze = commands.add_parser("analyze", help="analyze worker: fw.media → detection, speech → fw.features")
    analyze.add_argument("--config")
    analyze.add_argument("--idle", type=float, default=None, help="exit after this many idle seconds")

    fuse = commands.add_parser("fuse", help="fuse worker: fw.features → events → alerts/summaries (Redis, Kafka)")
    fuse.add_argument("--config")
    fuse.add_argument("--idle", type=float, default=None, help="exit after this many idle seconds")

    evaluate = commands.add_parser("eval", help="precision/recall/F1 per event on labelled recordings")
    evaluate.add_argument("config")
    evaluate.add_argument("media", nargs="+")
    evaluate.add_argument("--labels", nargs="*", default=[], help="labels JSON per media (default: NAME.labels.json)")
    evaluate.add_argument("--tolerance", type=float, default=2.0, help="seconds around a label that still match")
    evaluate.add_argument("--json", dest="json_out", help="write the report as JSON to this file ('-': stdout)")

    fusion = commands.add_parser("fusion", help="learned fusion models")
    fusion_sub = fusion.add_subparsers(dest="fusion_command", required=True)
    fit = fusion_sub.add_parser("train", help="fit a logistic fusion model for one event on labelled recordings")
    fit.add_argument("config")
    fit.add_argument("media", nargs="+")
    fit.add_argument("--event", required=True)
    fit.add_argument("--labels", nargs="*", default=[], help="labels JSON per media (default: NAME.labels.json)")
    fit.add_argument("--out", required=True, help="model file to write (JSON)")

    run = commands.add_parser(
        "run", help="run roles (ingest, analyze, fuse, clips, index, web) supervised in one process"
    )
    run.add_argument("config", nargs="?", help="site file (default: the embedded demo config)")
    run.add_argument(
        "--role",
        action="append",
        default=[],
        help="all (default), ingest, analyze, fuse, clips, index or web, or ingest:<source id> for one "
        "source's ingest alone; repeat or comma-separate for several",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="without the web role: serve /metrics, /healthz and /readyz on this port",
    )

    clip = commands.add_parser("clip", help="cut a span of a stream from fw.media into an MP4 (no re-encoding)")
    clip.add_argument("--config")
    clip.add_argument("--stream", required=True, help="stream (source) id")
    clip.add_argument(
        "--from", dest="start", required=True, help="2026-12-07T10:14:30, epoch ms, or a duration ago (90s)"
    )
    clip.add_argument("--to", dest="end", required=True, help="same forms as --from")
    clip.add_argument("-o", "--output", required=True, help="MP4 file to write")
    clip.add_argument(
        "--wait", type=float, default=5.0, help="seconds to wait past --to for the stream's packets (default 5)"
    )

    search = commands.add_parser("search", help="moments of every stream matching a text query (hybrid ranking)")
    search.add_argument("query")
    search.add_argument("--config")
    search.add_argument("--site")
    search.add_argument("--stream")
    search.add_argument("--since", help="2026-12-07T10:14:30, epoch ms, or a duration ago (1h)")
    search.add_argument("--until", help="same forms as --since")
    search.add_argument("-n", "--limit", type=int, default=10)
    search.add_argument("--ranking", choices=["hybrid", "keyword", "vector"], default="hybrid")
    search.add_argument("--json", dest="json_lines", action="store_true", help="JSON lines even on a terminal")

    feed = commands.add_parser("alerts", help="the alert feed from Redis (JSON lines when piped)")
    feed.add_argument("--config")
    feed.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts")
    feed.add_argument("--site")
    feed.add_argument("--event")
    feed.add_argument("--since", help="only alerts of windows in the last DURATION, e.g. 10m, 2h")
    feed.add_argument("--limit", "-n", type=int, default=20, help="how many recent alerts to show first")
    feed.add_argument("--json", dest="json_lines", action="store_true", help="JSON lines even on a terminal")

    summary = commands.add_parser("summary", help="a stream's rolling summaries from Redis (JSON lines when piped)")
    summary.add_argument("--config")
    summary.add_argument("--stream", required=True)
    summary.add_argument("--since", default="1h", help="periods ending in the last DURATION, e.g. 10m (default 1h)")
    summary.add_argument("--period", help="period length, e.g. 1m or 1h (default: the shortest configured)")
    summary.add_argument("--json", dest="json_lines", action="store_true", help="JSON lines even on a terminal")

    status = commands.add_parser("status", help="per stream fps, dropped frames, lag, last window and alert")
    status.add_argument("--config")
    status.add_argument("--json", dest="json_out", action="store_true")

    demo = commands.add_parser("demo", help="embedded services + sample media looping at real speed + every role")
    demo.add_argument("--config")
    demo.add_argument("--media-dir", default=".cache/media")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fusewatch` console script."""
    args = _parser().parse_args(argv)
    daemonish = args.command in ("run", "demo")
    configure_logging(logging.DEBUG if args.verbose else logging.INFO if daemonish else logging.WARNING)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except UserError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return exc.exit_code
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from daemon.cli import commands

    def config_check(args: argparse.Namespace) -> int:
        config = load_config(args.file)
        console.print(f"[green]ok[/] {args.file}: {len(config.sources)} sources, {len(config.events)} events")
        return 0

    def schema(args: argparse.Namespace) -> int:
        print(json.dumps(commands.schemas(args.name), indent=2))
        return 0

    def replay(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
        speed = None if args.speed == "max" else _positive_float(args.speed, "--speed")
        return commands.replay(_load(args.config), args.file, args.stream_id, args.site, speed, args.loop)

    handlers: dict[str, Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]] = {
        "config": config_check,
        "schema": schema,
        "services": lambda a: commands.services(a.action, _load(a.config), Path(a.state_dir)),
        "replay": replay,
        "ingest": lambda a: commands.ingest(_load(a.config), a.source),
        "decode": lambda a: commands.decode(_load(a.config), a.group, a.idle),
        "analyze": lambda a: commands.analyze(_load(a.config), a.idle),
        "fuse": lambda a: commands.fuse(_load(a.config), a.idle),
        "eval": lambda a: commands.evaluate(load_config(a.config), a.media, a.labels, a.tolerance, a.json_out),
        "fusion": lambda a: commands.train_fusion(load_config(a.config), a.event, a.media, a.labels, a.out),
        "run": lambda a: commands.run(_load(a.config), commands.parse_roles(a.role), a.metrics_port),
        "clip": lambda a: commands.clip(_load(a.config), a.stream, a.start, a.end, Path(a.output), a.wait),
        "search": lambda a: commands.search(
            _load(a.config),
            a.query,
            {"site": a.site, "stream": a.stream, "since": a.since, "until": a.until},
            a.limit,
            a.json_lines,
            a.ranking,
        ),
        "alerts": lambda a: commands.alerts(_load(a.config), a.site, a.event, a.since, a.limit, a.follow, a.json_lines),
        "summary": lambda a: commands.summary(_load(a.config), a.stream, a.since, a.period, a.json_lines),
        "status": lambda a: commands.status(_load(a.config), a.json_out),
        "demo": lambda a: commands.demo(_load(a.config), Path(a.media_dir)),
    }
    handler = handlers.get(args.command)
    if handler is None:
        raise UserError(f"unknown command {args.command}")
    result = handler(args)
    return result if isinstance(result, int) else asyncio.run(result)


def _positive_float(raw: str, flag: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{flag}: expected a number or 'max', got {raw!r}") from None
    if value <= 0:
        raise UserError(f"{flag}: must be > 0, got {raw}")
    return value
