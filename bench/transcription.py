"""Streaming transcription vs the bare libraries: real-time factor and word error rate.

Ours: 2-second windows of 16 kHz audio through voice activity detection (`LoudnessVad`)
and the `SpeechSegmenter`, each utterance transcribed by the configured `Transcriber`,
words kept by the segment that owns them (`owned_words`) — the analyze stage's speech
path. Baselines, on the whole clip with the same model (tiny.en), greedy, word timestamps
on: faster-whisper's own `WhisperModel.transcribe()` and openai-whisper's
`whisper.transcribe()` (the reference implementation, its weights mapped exactly from the
packaged CTranslate2 model by `detectors.openai_whisper`). Compared:

- streaming on faster-whisper (int8, 2 threads, `encoder_context: fit`, the default) vs
  `WhisperModel.transcribe()`; the same with `encoder_context: full` shows what fitting
  the encoder to the utterance saves;
- streaming on openai-whisper vs `whisper.transcribe()`;
- `WhisperModel.transcribe()` vs `whisper.transcribe()` (target: ≤ 0.5× the time).

    .venv/bin/python -m bench.transcription [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import av
import jiwer
import numpy as np
import numpy.typing as npt
import torch

from bench.common import median, write_result
from daemon.analyze.speech import SpeechSegment, SpeechSegmenter, owned_words
from daemon.cli.commands import fetch_media
from detectors.audio import LoudnessVad
from detectors.base import Transcriber
from detectors.keywords import fold
from detectors.openai_whisper import OpenAIWhisperTranscriber
from detectors.whisper import FasterWhisperTranscriber
from streams.windows import AudioWindow

RATE = 16_000
STREAMING_TARGET = "≤ 1.1× time, WER ≤ baseline"


def load(path: Path, seconds: float | None = None) -> npt.NDArray[np.float32]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    audio = np.concatenate(chunks).astype(np.float32)
    return audio[: int(seconds * RATE)] if seconds else audio


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", fold(text).replace("mr ", "mister ").replace("-", " ")).strip()


def streaming(audio: npt.NDArray[np.float32], analyzer: LoudnessVad, transcriber: Transcriber) -> str:
    """The analyze stage's speech path over `audio`, fed as 2 s windows; the words it keeps."""
    segmenter = SpeechSegmenter(min_silence_s=1.5, pad_s=0.5)
    words: list[tuple[int, str]] = []

    def transcribe(segments: list[SpeechSegment]) -> None:
        for segment in segments:
            words.extend((w.start_ns, w.text) for w in owned_words(segment, transcriber.transcribe(segment.audio)))

    for offset in range(0, audio.size, 2 * RATE):
        pcm = audio[offset : offset + 2 * RATE]
        start_ns = offset * 1_000_000_000 // RATE
        window = AudioWindow(start_ns // 1_000_000, start_ns // 1_000_000 + 2000, [pcm], first_ns=start_ns)
        stats = analyzer.analyze(pcm)
        transcribe(segmenter.feed(window, stats.speech_probabilities, stats.frame_seconds))
    transcribe(segmenter.flush())
    return " ".join(text for _, text in sorted(words))


def faster_whisper_transcribe(audio: npt.NDArray[np.float32], whisper: FasterWhisperTranscriber) -> str:
    segments, _ = whisper.model.transcribe(
        audio, language="en", beam_size=1, word_timestamps=True, condition_on_previous_text=False, temperature=0.0
    )
    return " ".join(segment.text.strip() for segment in segments)


def openai_whisper_transcribe(audio: npt.NDArray[np.float32], whisper: OpenAIWhisperTranscriber) -> str:
    import whisper as openai_whisper

    result = openai_whisper.transcribe(
        whisper.model,
        torch.from_numpy(audio),
        language="en",
        temperature=0.0,
        word_timestamps=True,
        condition_on_previous_text=False,
        fp16=False,
        verbose=None,
    )
    return " ".join(str(segment["text"]).strip() for segment in result["segments"])


def _measure(runs: dict[str, Callable[[], str]], repeat: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Every run `repeat` times, interleaved so that machine noise hits them alike."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    texts: dict[str, str] = {}
    for _ in range(repeat):
        for label, run in runs.items():
            started = time.perf_counter()
            texts[label] = run()
            times[label].append(time.perf_counter() - started)
    return times, texts


def _side(
    times: dict[str, list[float]], texts: dict[str, str], seconds: float, truth: str, label: str
) -> dict[str, Any]:
    return {
        "label": label,
        "timings_s": [round(t, 4) for t in times[label]],
        "rtf": round(median(times[label]) / seconds, 4),
        "wer": round(jiwer.wer(normalise(truth), normalise(texts[label])), 4),
        "text": texts[label],
    }


def main(repeat: int, model: str = "auto") -> dict[str, Any]:
    media = fetch_media(Path(".cache/media"))
    labels = json.loads((media / "lobby.labels.json").read_text())
    clips = {
        "jfk.wav": (
            load(media / "jfk.wav"),
            "And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.",
        ),
        "lobby.ts[0:70s]": (
            load(media / "lobby.ts", 70.0),
            " ".join(s["text"] for s in labels["speech"] if s["end"] <= 70),
        ),
    }
    analyzer = LoudnessVad()
    fitted = FasterWhisperTranscriber(model, encoder_context="fit")
    model = fitted.model_name  # what `auto` chose on this machine, for every side
    full = FasterWhisperTranscriber(model, encoder_context="full")
    reference = OpenAIWhisperTranscriber(model)
    openai_whisper_transcribe(clips["jfk.wav"][0][:RATE], reference)  # numba compiles the word-timing DTW once
    comparisons: list[dict[str, Any]] = []
    for name, (audio, truth) in clips.items():
        runs: dict[str, Callable[[], str]] = {
            "faster-whisper transcribe()": partial(faster_whisper_transcribe, audio, fitted),
            "streaming, faster-whisper, encoder fit": partial(streaming, audio, analyzer, fitted),
            "streaming, faster-whisper, encoder full": partial(streaming, audio, analyzer, full),
            "openai-whisper transcribe()": partial(openai_whisper_transcribe, audio, reference),
            "streaming, openai-whisper": partial(streaming, audio, analyzer, reference),
        }
        times, texts = _measure(runs, repeat)
        seconds = audio.size / RATE
        side = partial(_side, times, texts, seconds, truth)
        for ours, baseline, target in (
            ("streaming, faster-whisper, encoder fit", "faster-whisper transcribe()", STREAMING_TARGET),
            ("streaming, faster-whisper, encoder full", "faster-whisper transcribe()", ""),
            ("streaming, openai-whisper", "openai-whisper transcribe()", STREAMING_TARGET),
            ("faster-whisper transcribe()", "openai-whisper transcribe()", "≤ 0.5× time"),
        ):
            comparisons.append(
                {
                    "clip": name,
                    "audio_s": round(seconds, 2),
                    "ours": side(ours),
                    "baseline": side(baseline),
                    "target": target,
                    "time_ratio": round(median(times[ours]) / median(times[baseline]), 3),
                }
            )
    return {
        "what": f"Whisper {model}: the analyze stage's VAD-gated streaming vs each library's transcribe() on the "
        f"whole clip; faster-whisper {fitted.compute_type} on {fitted.device} (2 CPU threads), "
        f"openai-whisper {'float16' if reference.device.startswith('cuda') else 'float32'} on "
        f"{reference.device} (torch's {torch.get_num_threads()} CPU threads)",
        "model": model,
        "comparisons": comparisons,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", choices=["auto", "tiny.en", "base"], default="auto")
    args = parser.parse_args()
    result = main(args.repeat, args.model)
    for row in result["comparisons"]:
        print(
            f"{row['clip']:>16}  {row['ours']['label']:<40} vs {row['baseline']['label']:<28} "
            f"{row['time_ratio']:>6}× time  WER {row['ours']['wer']} vs {row['baseline']['wer']}"
        )
    print(f"wrote {write_result('transcription', result)}")
