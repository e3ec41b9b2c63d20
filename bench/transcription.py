"""Streaming transcription vs faster-whisper on the whole clip: real-time factor and WER.

Ours (what the analyze stage does for one stream): the clip's 16 kHz audio is cut into
2-second `AudioWindow`s; each goes through `detectors.audio.LoudnessVad.analyze` (loudness +
Silero VAD) and `daemon.speech.SpeechSegmenter(min_silence_s=1.5, pad_s=0.5).feed`; every
completed `SpeechSegment` is transcribed by `detectors.whisper.FasterWhisperTranscriber`
(tiny.en, int8, 2 threads, greedy) and keeps the words whose middle falls in the segment's
own span. Timed: VAD + segmenting + transcription.

Baselines, the same `WhisperModel` instance: `model.transcribe(audio, beam_size=1,
language="en", word_timestamps=True)` on the whole clip (faster-whisper's defaults
otherwise), and the same with `vad_filter=True` (faster-whisper's own Silero VAD gating,
the closest peer of our design). Clips: lobby.ts 0–70 s (JFK at 5 s, a call for help at
30 s, LibriVox at 45 s and 60 s, street noise between) and jfk.wav alone. WER with jiwer
after lowercasing, stripping punctuation and "mr" → "mister". openai-whisper cannot be
compared here: no registry package ships its PyTorch checkpoints.

    .venv/bin/python -m bench.transcription [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import jiwer
import numpy as np
import numpy.typing as npt

from bench.common import (
    Case,
    Result,
    Row,
    ensure_importable,
    machine_info,
    media_file,
    median,
    run_interleaved,
    save,
)

ensure_importable()

from daemon.speech import SpeechSegment, SpeechSegmenter  # noqa: E402
from detectors.audio import LoudnessVad  # noqa: E402
from detectors.whisper import FasterWhisperTranscriber  # noqa: E402
from streams.windows import AudioWindow  # noqa: E402

RATE = 16_000
WINDOW_S = 2
NS = 1_000_000_000
WALL_BASE_NS = 1_700_000_000 * NS  # a window-aligned wallclock for the first sample
LOBBY_SECONDS = 70.0
TIME_TARGET = 1.10
OPENAI_WHISPER = "no offline checkpoint in any registry package"
Pcm = npt.NDArray[np.float32]


def load_audio_16k(path: Path, seconds: float | None = None) -> Pcm:
    """A file's first audio track as 16 kHz mono float32 (PyAV resampler, flushed), cut to `seconds`."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks: list[Pcm] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    audio = np.concatenate(chunks).astype(np.float32)
    return audio[: int(seconds * RATE)] if seconds is not None else audio


def normalise(text: str) -> str:
    """Lowercase, hyphens to spaces, punctuation stripped, `mr` → `mister`, single spaces."""
    words = re.sub(r"[^a-z0-9\s]", "", text.lower().replace("-", " ")).split()
    return " ".join("mister" if word == "mr" else word for word in words)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after `normalise` (1.0 for an empty hypothesis)."""
    hyp = normalise(hypothesis)
    return float(jiwer.wer(normalise(reference), hyp)) if hyp else 1.0


def references() -> dict[str, str]:
    """Reference transcripts: lobby speech within 0–70 s (labels) and jfk.wav (MANIFEST.tsv)."""
    labels = json.loads(media_file("lobby.labels.json").read_text())
    lobby = " ".join(entry["text"] for entry in sorted(labels["speech"], key=lambda e: e["start"])
                     if entry["end"] <= LOBBY_SECONDS)
    with media_file("MANIFEST.tsv").open(newline="") as handle:
        manifest = {row["file"]: row["ground_truth"] for row in csv.DictReader(handle, delimiter="\t")}
    return {"lobby": lobby, "jfk": manifest["jfk.wav"]}


@dataclass
class StreamingRun:
    """What one streaming pass produced and where its time went."""

    text: str = ""
    segments: int = 0
    vad_s: float = 0.0
    whisper_s: float = 0.0
    spans_s: list[tuple[float, float]] = field(default_factory=list)


class Streaming:
    """Our path: 2 s windows → LoudnessVad → SpeechSegmenter → Whisper per segment, owned words."""

    def __init__(self, audio: Pcm, vad: LoudnessVad, whisper: FasterWhisperTranscriber) -> None:
        self._audio = audio
        self._vad = vad
        self._whisper = whisper
        self.last = StreamingRun()

    def __call__(self) -> float:
        run = StreamingRun()
        segmenter = SpeechSegmenter(min_silence_s=1.5, pad_s=0.5)
        words: list[tuple[int, str]] = []
        started = time.perf_counter()
        step = WINDOW_S * RATE
        for offset in range(0, self._audio.size, step):
            pcm = self._audio[offset:offset + step]
            first_ns = WALL_BASE_NS + offset * NS // RATE
            window = AudioWindow(first_ns // 1_000_000, first_ns // 1_000_000 + WINDOW_S * 1000, [pcm], first_ns)
            vad_started = time.perf_counter()
            stats = self._vad.analyze(pcm)
            run.vad_s += time.perf_counter() - vad_started
            for segment in segmenter.feed(window, stats.speech_probabilities, stats.frame_seconds):
                words += self._transcribe(segment, run)
        for segment in segmenter.flush():
            words += self._transcribe(segment, run)
        elapsed = time.perf_counter() - started
        run.text = " ".join(text for _, text in sorted(words, key=lambda w: w[0]))
        self.last = run
        return elapsed

    def _transcribe(self, segment: SpeechSegment, run: StreamingRun) -> list[tuple[int, str]]:
        started = time.perf_counter()
        transcript = self._whisper.transcribe(segment.audio)
        run.whisper_s += time.perf_counter() - started
        run.segments += 1
        run.spans_s.append((round((segment.own_start_ns - WALL_BASE_NS) / NS, 2),
                            round((segment.own_end_ns - WALL_BASE_NS) / NS, 2)))
        kept = []
        for word in transcript.words:
            middle = segment.audio_start_ns + round((word.start + word.end) / 2 * NS)
            if segment.own_start_ns <= middle < segment.own_end_ns:
                kept.append((middle, word.text))
        return kept


class WholeClip:
    """The baseline: faster-whisper's `WhisperModel.transcribe` on the whole clip."""

    def __init__(self, audio: Pcm, model: Any, vad_filter: bool = False) -> None:
        self._audio = audio
        self._model = model
        self._vad_filter = vad_filter
        self.text = ""

    def __call__(self) -> float:
        started = time.perf_counter()
        segments, _info = self._model.transcribe(self._audio, beam_size=1, language="en", word_timestamps=True,
                                                 vad_filter=self._vad_filter)
        words = [word.word.strip() for segment in segments for word in (segment.words or ())]
        elapsed = time.perf_counter() - started
        self.text = " ".join(word for word in words if word)
        return elapsed


def run(repeats: int = 3) -> Result:
    """Both clips, ours and both baselines interleaved; RTF and WER per clip."""
    machine = machine_info()
    refs = references()
    clips = {"lobby": load_audio_16k(media_file("lobby.ts"), LOBBY_SECONDS),
             "jfk": load_audio_16k(media_file("jfk.wav"))}
    vad = LoudnessVad()
    whisper = FasterWhisperTranscriber()
    whisper.transcribe(clips["jfk"][:RATE])  # warm-up
    vad.analyze(clips["jfk"][: WINDOW_S * RATE])
    raw: dict[str, dict[str, list[float]]] = {}
    clip_results: dict[str, Any] = {}
    rows: list[Row] = []
    for clip, audio in clips.items():
        ours = Streaming(audio, vad, whisper)
        plain = WholeClip(audio, whisper.model)
        vad_filtered = WholeClip(audio, whisper.model, vad_filter=True)
        cases: dict[str, Case] = {"ours_streaming": ours, "faster_whisper_transcribe": plain,
                                  "faster_whisper_vad_filter": vad_filtered}
        raw[clip] = run_interleaved(f"transcription {clip}", cases, repeats)
        seconds = audio.size / RATE
        medians = {name: round(median(values), 4) for name, values in raw[clip].items()}
        texts = {"ours_streaming": ours.last.text, "faster_whisper_transcribe": plain.text,
                 "faster_whisper_vad_filter": vad_filtered.text}
        wers = {name: round(wer(refs[clip], text), 4) for name, text in texts.items()}
        clip_results[clip] = {
            "audio_s": round(seconds, 2), "medians_s": medians,
            "rtf": {name: round(value / seconds, 4) for name, value in medians.items()},
            "wer": wers, "text": texts, "reference": refs[clip],
            "ours_breakdown_last_run": {"segments": ours.last.segments, "vad_s": round(ours.last.vad_s, 3),
                                        "whisper_s": round(ours.last.whisper_s, 3),
                                        "segment_spans_s": ours.last.spans_s},
        }
        label = "lobby.ts 0–70 s" if clip == "lobby" else "jfk.wav"
        for base, base_label in (("faster_whisper_transcribe", "transcribe()"),
                                 ("faster_whisper_vad_filter", "transcribe(vad_filter)")):
            ratio = round(medians["ours_streaming"] / medians[base], 3)
            met = ratio <= TIME_TARGET and wers["ours_streaming"] <= wers[base]
            clip_results[clip][f"time_ratio_vs_{base}"] = ratio
            rows.append(Row(
                f"transcription {label}: VAD → segments → Whisper tiny.en",
                f"RTF {clip_results[clip]['rtf']['ours_streaming']:.3f}, WER {wers['ours_streaming']:.1%}",
                f"{base_label}: RTF {clip_results[clip]['rtf'][base]:.3f}, WER {wers[base]:.1%}",
                ratio, f"time ≤ {TIME_TARGET}, WER ≤ baseline", met))
    primary = clip_results["lobby"]
    ratio = primary["time_ratio_vs_faster_whisper_transcribe"]
    met = ratio <= TIME_TARGET and primary["wer"]["ours_streaming"] <= primary["wer"]["faster_whisper_transcribe"]
    return Result(
        name="transcription",
        description="Whisper tiny.en (faster-whisper, int8, 2 threads): streaming VAD-gated segments vs "
                    "transcribe() on the whole clip; real-time factor = seconds / audio seconds",
        rows=rows, raw={"seconds": raw},
        medians={f"{clip}.{name}": value for clip, data in clip_results.items()
                 for name, value in data["medians_s"].items()},
        ratio=ratio,
        target={"metric": "ours seconds / transcribe() seconds on lobby 0–70 s, and WER ours ≤ WER baseline",
                "op": "<=", "value": TIME_TARGET},
        met=met, config={"repeats": repeats, "window_s": WINDOW_S, "min_silence_s": 1.5, "pad_s": 0.5,
                         "model": "tiny.en", "compute_type": "int8 (auto on CPU)", "cpu_threads": 2,
                         "lobby_seconds": LOBBY_SECONDS, "interleaved": True},
        extra={"clips": clip_results, "openai_whisper": OPENAI_WHISPER},
        notes=["WER normalisation: lowercase, hyphens to spaces, punctuation stripped, mr → mister.",
               "Whisper pads every input to 30 s, so each segment costs one encoder pass: streaming runs one per "
               "utterance, the whole-clip baseline one per 30 s of audio.",
               "texts and WER are from the last repetition (greedy decoding is deterministic)."],
        machine=machine,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    save(run(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
