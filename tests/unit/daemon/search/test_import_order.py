"""The moment store and the VAD share a process: onnxruntime must survive usearch being loaded."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


def test_the_vad_runs_after_the_moment_store_is_imported() -> None:
    # The index role imports the store, and the analyze role imports onnxruntime later, in one
    # `fusewatch run` process: without the store loading onnxruntime first, this dies of SIGSEGV.
    done = _run(
        "import daemon.search.store\n"
        "import numpy as np\n"
        "from detectors.audio import LoudnessVad\n"
        "print(LoudnessVad().analyze(np.zeros(16000, dtype=np.float32)).speech_ratio)\n"
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert float(done.stdout.strip()) == 0.0
