"""What every benchmark shares: the machine description, medians, and writing results."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, GPU (if torch sees one) and library versions."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    with contextlib.suppress(ImportError):
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    versions = {}
    for name in ("av", "aiokafka", "cv2", "faster_whisper", "ctranslate2", "ultralytics", "torch", "numpy"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(round(q / 100 * (len(ordered) - 1)), len(ordered) - 1)
    return float(ordered[index])


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/NAME.json with the machine and the date added."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    } | result
    path.write_text(json.dumps(document, indent=2))
    return path


def run_on_frames(name: str, doc: str, main: Callable[[int, int], dict[str, Any]], frames: int, repeat: int) -> None:
    """The command line of a benchmark over `--frames` frames timed `--repeat` times: run, print, write."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--frames", type=int, default=frames)
    parser.add_argument("--repeat", type=int, default=repeat)
    args = parser.parse_args()
    result = main(args.frames, args.repeat)
    print(json.dumps(result, indent=2))
    print(f"wrote {write_result(name, result)}")
