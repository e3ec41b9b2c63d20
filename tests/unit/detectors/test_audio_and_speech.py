"""Loudness, voice activity, Whisper transcription (WER on known transcripts) and keywords."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from config.schema import FasterWhisperConfig, LoudnessVadConfig
from detectors import registry
from detectors.audio import SILENCE_DBFS, LoudnessVad, dbfs
from detectors.keywords import KeywordSpotter
from detectors.weights import WeightsError
from detectors.whisper import FasterWhisperTranscriber, fitted_context_frames, packaged_model_dir
from tests.helpers import TRANSCRIPTS, load_audio_16k, normalise

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperTranscriber:
    built = registry.transcriber(FasterWhisperConfig(type="faster-whisper"))
    assert isinstance(built, FasterWhisperTranscriber)
    return built


@pytest.fixture(scope="module")
def analyzer() -> LoudnessVad:
    built = registry.audio_analyzer(LoudnessVadConfig(type="loudness-vad"))
    assert isinstance(built, LoudnessVad)
    return built


@pytest.mark.parametrize(
    ("names", "limit"),
    [
        (["jfk.wav"], 0.10),
        # Corpus-level WER over the LibriVox clips, as WER is reported on a test set: tiny.en
        # hears "ill disposed" as "old-sposed" (2 errors of the 30 words).
        (["librivox-0870.wav", "librivox-0880.wav"], 0.20),
    ],
)
def test_word_error_rate_on_known_transcripts(
    whisper: FasterWhisperTranscriber, media_dir: Path, names: list[str], limit: float
) -> None:
    references, hypotheses = [], []
    for name in names:
        transcript = whisper.transcribe(load_audio_16k(media_dir / name))
        references.append(normalise(TRANSCRIPTS[name]))
        hypotheses.append(normalise(transcript.text))
        assert transcript.language == "en"
        words = transcript.words
        assert words and all(0 <= w.start <= w.end for w in words)
        assert [w.start for w in words] == sorted(w.start for w in words)
        assert all(-10 < s.avg_logprob <= 0 and 0 <= s.no_speech_prob <= 1 for s in transcript.segments)
    wer = jiwer.wer(references, hypotheses)
    assert wer <= limit, (wer, hypotheses)


def test_fitted_encoder_context_is_the_audio_plus_a_margin(whisper: FasterWhisperTranscriber) -> None:
    assert [fitted_context_frames(int(s * 16_000)) for s in (0.5, 3.4, 7.0, 11.0, 11.2, 26.9, 40)] == [
        1000,
        1000,
        1000,
        1400,
        1500,
        3000,
        3000,
    ]  # ≥ 10 s, 3 s after the speech, whole seconds, ≤ 30 s
    features = np.zeros((80, 3000), dtype=np.float32)
    with whisper._context.sized_for(int(3.4 * 16_000)):
        assert whisper.model.encode(features).shape == [1, 500, 384]
    with whisper._context.sized_for(28 * 16_000):  # no room for the margin: Whisper's 30 s
        assert whisper.model.encode(features).shape == [1, 1500, 384]
    assert whisper.model.encode(features).shape == [1, 1500, 384], "outside a transcription: 30 s"


@pytest.mark.parametrize("name", ["help.wav", "librivox-0880.wav", "librivox-0870.wav", "jfk.wav"])
def test_fitted_encoder_context_hears_the_same_words_as_30_seconds(
    whisper: FasterWhisperTranscriber, media_dir: Path, name: str
) -> None:
    full = FasterWhisperTranscriber(encoder_context="full")
    audio = np.pad(load_audio_16k(media_dir / name), 8000)  # the segmenter's 0.5 s on each side
    fitted = whisper.transcribe(audio)
    assert [w.text for w in fitted.words] == [w.text for w in full.transcribe(audio).words]
    assert fitted.words


@pytest.mark.parametrize("name", ["dog.mp3", "alarm.oga"])
def test_non_speech_gives_no_words(
    whisper: FasterWhisperTranscriber, analyzer: LoudnessVad, media_dir: Path, name: str
) -> None:
    audio = load_audio_16k(media_dir / name)
    stats = analyzer.analyze(audio)
    assert stats.speech_ratio < 0.05
    assert stats.loudness_dbfs > -40, "the sound is clearly audible"
    assert whisper.transcribe(audio).words == ()


def test_loudness_and_voice_activity(analyzer: LoudnessVad, media_dir: Path) -> None:
    speech = analyzer.analyze(load_audio_16k(media_dir / "jfk.wav"))
    assert speech.speech_ratio > 0.4
    assert -30 < speech.loudness_dbfs < speech.peak_dbfs <= 0
    tone = np.sin(np.linspace(0, 2 * np.pi * 440, 16000, dtype=np.float32)) * np.float32(0.5)
    assert analyzer.analyze(tone).peak_dbfs == pytest.approx(dbfs(0.5), abs=0.01)
    assert analyzer.analyze(tone).loudness_dbfs == pytest.approx(dbfs(0.5 / np.sqrt(2)), abs=0.05)
    assert speech.loudness_lufs is not None and -30 < speech.loudness_lufs < -10
    # A full-scale 1 kHz sine reads -3.01 LUFS by the BS.1770 definition (K-weighting is ~0 dB there).
    sine = np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000).astype(np.float32)
    assert analyzer.analyze(sine).loudness_lufs == pytest.approx(-3.01, abs=0.2)
    silence = analyzer.analyze(np.zeros(16000, dtype=np.float32))
    assert silence.loudness_dbfs == silence.peak_dbfs == SILENCE_DBFS and silence.speech_ratio == 0
    assert analyzer.analyze(np.zeros(0, dtype=np.float32)).speech_ratio == 0


def test_whisper_model_comes_from_a_package_and_never_downloads(tmp_path: Path) -> None:
    assert (packaged_model_dir("tiny.en") / "model.bin").is_file()
    with pytest.raises(WeightsError, match=r"no packaged Whisper model 'large-v3'"):
        packaged_model_dir("large-v3")
    with pytest.raises(WeightsError, match=r"has no model\.bin"):
        FasterWhisperTranscriber(model_dir=str(tmp_path))


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Help! Somebody call the police!", ["help", "police", "call the police"]),
        ("HELP me", ["help"]),
        ("helpful people", []),
        ("the Police-station", ["police"]),
        ("Café fire drill", ["fire", "cafe"]),
        ("call the police now", ["police", "call the police"]),
    ],
)
def test_keywords_are_whole_words_case_and_diacritics_insensitive(text: str, found: list[str]) -> None:
    spotter = KeywordSpotter(["help", "police", "fire", "cafe", "call the police"])
    assert sorted(spotter.find(text)) == sorted(found)
    assert KeywordSpotter(["Café"]).find("cafe au lait") == ["Café"]
