"""Two-stage shutdown in a real process: the first signal asks roles to drain, the second stops at once.

Each case runs a small program around `install_signal_handlers` and the `Supervisor` whose
role does not finish its drain, so only the second signal can end it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

PROGRAM = textwrap.dedent("""
    import asyncio, sys, time
    from daemon.runtime.app import Supervisor, install_signal_handlers
    from daemon.telemetry.metrics import Telemetry

    marker = sys.argv[2]

    async def stuck_in_await(stop):
        await stop.wait()
        print("draining", flush=True)
        await asyncio.sleep(3600)          # a drain that never ends

    async def stuck_in_thread(stop):
        await stop.wait()
        print("draining", flush=True)
        await asyncio.to_thread(time.sleep, 3600)   # blocking work cancellation cannot reach

    async def main():
        stop = asyncio.Event()
        install_signal_handlers(stop, asyncio.current_task(), hard_exit_after=1.0,
                                before_hard_exit=lambda: open(marker, "w").write("cleaned"))
        role = stuck_in_await if sys.argv[1] == "await" else stuck_in_thread
        print("ready", flush=True)
        await Supervisor(stop, Telemetry()).supervise("stuck", role)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        sys.exit(130)
""")


def _run_until_second_signal(mode: str, tmp_path: Path) -> tuple[int, float, str]:
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, mode, str(marker)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "draining"
        time.sleep(0.5)
        assert proc.poll() is None, "the first signal only asks for a drain"
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        code = proc.wait(10)
        stderr = proc.stderr.read() if proc.stderr else ""
        return code, time.monotonic() - began, stderr + (marker.read_text() if marker.exists() else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_signal_cancels_a_drain_that_hangs(tmp_path: Path) -> None:
    code, took, output = _run_until_second_signal("await", tmp_path)
    assert code == 130 and took < 2.0
    assert "SIGINT again: stopping now" in output and "cleaned" not in output


def test_second_signal_exits_hard_when_blocking_work_holds_the_process(tmp_path: Path) -> None:
    code, took, output = _run_until_second_signal("thread", tmp_path)
    assert code == 130 and 0.9 < took < 5.0
    assert output.endswith("cleaned"), "the hook that stops child processes runs before the hard exit"
