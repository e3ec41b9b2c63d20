"""Whisper on openai-whisper (PyTorch, the reference implementation), weights mapped from CTranslate2.

No registry package carries openai-whisper's PyTorch checkpoints, but a float16 (or float32,
bfloat16) CTranslate2 Whisper `model.bin` holds the very same tensors under other names:
`convert` reads it with numpy and builds the `ModelDimensions` and state_dict that
`whisper.model.Whisper` loads, exactly (float16 → float32 is lossless, which is also what
openai-whisper's own `load_model` does with its float16 checkpoints). The tokenizer and
the mel filters come with the openai-whisper package.

The `model.bin` layout is CTranslate2's (python/ctranslate2/specs/model_spec.py,
`_serialize`): u32 binary version, the spec name, u32 revision, u32 variable count, then per
variable its name, u8 rank, u32 dims, u8 dtype id (float32, int8, int16, int32, float16,
bfloat16), u32 byte count and the bytes; then u32 alias count and (alias, target) names.
Strings are u16 length (with the NUL) + UTF-8 + NUL. What the converter undoes
(ctranslate2/converters/transformers.py, `WhisperLoader`): self-attention q, k, v fused
into one `linear_0` (the key has no bias, so its slice of the fused bias is zero), and
cross-attention k, v fused into `linear_1`. An int8-quantized model cannot be mapped
exactly (only int8 values and per-row scales are left of the weights) and is refused.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from detectors.base import Pcm16k
from detectors.weights import WeightsError
from detectors.whisper import EncoderContext, choose_model, keep_segment
from streams.models import Transcript, TranscriptSegment, WordTiming

CT2_BINARY_VERSION = 6
_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}


@dataclass(frozen=True)
class OpenAIWhisperWeights:
    """What openai-whisper needs to build a model: dimensions, state_dict and alignment heads."""

    dims: dict[str, int]
    state_dict: dict[str, torch.Tensor]
    alignment_heads: tuple[tuple[int, int], ...]

    @property
    def is_multilingual(self) -> bool:
        return self.dims["n_vocab"] >= 51865


class _Reader:
    """Little-endian reads from a memory map of `model.bin`."""

    def __init__(self, path: Path) -> None:
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        self.offset = 0

    def unpack(self, fmt: str) -> int:
        if self.offset + struct.calcsize(fmt) > len(self.data):
            raise WeightsError(f"model.bin is truncated at byte {self.offset}")
        (value,) = struct.unpack_from(fmt, self.data.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        size = self.unpack("<H")
        text = bytes(self.data[self.offset : self.offset + size - 1]).decode("utf-8")
        self.offset += size
        return text

    def array(self, dtype: str, shape: tuple[int, ...], size: int) -> npt.NDArray[Any]:
        if self.offset + size > len(self.data):
            raise WeightsError(
                f"model.bin is truncated: a variable needs bytes up to {self.offset + size}, "
                f"the file has {len(self.data)}"
            )
        raw = self.data[self.offset : self.offset + size]
        self.offset += size
        if dtype == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
            return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return raw.view(np.dtype(dtype)).reshape(shape)


def read_model_bin(path: Path) -> tuple[str, dict[str, npt.NDArray[Any]]]:
    """The spec name and the variables (aliases resolved) of a CTranslate2 `model.bin`."""
    reader = _Reader(path)
    version = reader.unpack("<I")
    if version != CT2_BINARY_VERSION:
        raise WeightsError(f"{path}: CTranslate2 binary version {version}, this reader knows {CT2_BINARY_VERSION}")
    spec = reader.string()
    reader.unpack("<I")  # spec revision
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(reader.unpack("<I")):
        name = reader.string()
        shape = tuple(reader.unpack("<I") for _ in range(reader.unpack("<B")))
        type_id = reader.unpack("<B")
        if type_id not in _DTYPES:
            raise WeightsError(f"{path}: variable {name} has unknown dtype id {type_id}")
        variables[name] = reader.array(_DTYPES[type_id], shape, reader.unpack("<I"))
    for _ in range(reader.unpack("<I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables


def _layers(variables: dict[str, npt.NDArray[Any]], stack: str) -> int:
    return len({m.group(1) for name in variables if (m := re.match(rf"{stack}/layer_(\d+)/", name))})


class _StateDict:
    """openai-whisper's state dict, filled from CTranslate2's variables one layer at a time."""

    def __init__(self, variables: dict[str, npt.NDArray[Any]]) -> None:
        self.variables = variables
        self.state: dict[str, torch.Tensor] = {}

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(self.variables[name], dtype=np.float32))

    def linear(self, target: str, source: str) -> None:  # every Whisper linear and conv has a bias but the key's
        self.state[f"{target}.weight"] = self.tensor(f"{source}/weight")
        self.state[f"{target}.bias"] = self.tensor(f"{source}/bias")

    def norm(self, target: str, source: str) -> None:
        self.state[f"{target}.weight"] = self.tensor(f"{source}/gamma")
        self.state[f"{target}.bias"] = self.tensor(f"{source}/beta")

    def unfuse(self, target: str, source: str, names: tuple[str, ...]) -> None:
        weight, bias = self.tensor(f"{source}/weight"), self.tensor(f"{source}/bias")
        width = weight.shape[1]
        for index, name in enumerate(names):
            rows = slice(index * width, (index + 1) * width)
            self.state[f"{target}.{name}.weight"] = weight[rows].clone()
            if name == "key":
                if bias[rows].any():
                    raise WeightsError(f"{source}: the key projection has a bias; not a Whisper model")
            else:
                self.state[f"{target}.{name}.bias"] = bias[rows].clone()

    def block(self, target: str, source: str, cross: bool) -> None:
        self.unfuse(f"{target}.attn", f"{source}/self_attention/linear_0", ("query", "key", "value"))
        self.linear(f"{target}.attn.out", f"{source}/self_attention/linear_1")
        self.norm(f"{target}.attn_ln", f"{source}/self_attention/layer_norm")
        if cross:
            self.linear(f"{target}.cross_attn.query", f"{source}/attention/linear_0")
            self.unfuse(f"{target}.cross_attn", f"{source}/attention/linear_1", ("key", "value"))
            self.linear(f"{target}.cross_attn.out", f"{source}/attention/linear_2")
            self.norm(f"{target}.cross_attn_ln", f"{source}/attention/layer_norm")
        self.linear(f"{target}.mlp.0", f"{source}/ffn/linear_0")
        self.linear(f"{target}.mlp.2", f"{source}/ffn/linear_1")
        self.norm(f"{target}.mlp_ln", f"{source}/ffn/layer_norm")


def convert(folder: Path) -> OpenAIWhisperWeights:
    """openai-whisper weights from a CTranslate2 Whisper directory (model.bin, config.json)."""
    spec, v = read_model_bin(folder / "model.bin")
    if spec != "WhisperSpec":
        raise WeightsError(f"{folder / 'model.bin'} is a {spec}, not a Whisper model")
    quantized = sorted({str(a.dtype) for n, a in v.items() if n.endswith("/weight") and a.dtype.kind in "iu"})
    if quantized or any(n.endswith("/weight_scale") for n in v):
        raise WeightsError(
            f"{folder / 'model.bin'} is quantized ({', '.join(quantized) or 'scaled'}): its "
            "original weights are gone, so it cannot be mapped exactly to openai-whisper"
        )

    mapped = _StateDict(v)
    state, linear, norm, block = mapped.state, mapped.linear, mapped.norm, mapped.block
    tensor = mapped.tensor

    try:
        encoder_layers, decoder_layers = _layers(v, "encoder"), _layers(v, "decoder")
        for conv in ("conv1", "conv2"):
            linear(f"encoder.{conv}", f"encoder/{conv}")
        state["encoder.positional_embedding"] = tensor("encoder/position_encodings/encodings")
        for i in range(encoder_layers):
            block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
        norm("encoder.ln_post", "encoder/layer_norm")
        state["decoder.token_embedding.weight"] = tensor("decoder/embeddings/weight")
        state["decoder.positional_embedding"] = tensor("decoder/position_encodings/encodings")
        for i in range(decoder_layers):
            block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
        norm("decoder.ln", "decoder/layer_norm")
        if not np.array_equal(v["decoder/projection/weight"], v["decoder/embeddings/weight"]):
            raise WeightsError("decoder/projection is not tied to the embeddings; not a Whisper model")
        dims = {
            "n_mels": state["encoder.conv1.weight"].shape[1],
            "n_audio_ctx": state["encoder.positional_embedding"].shape[0],
            "n_audio_state": state["encoder.conv1.weight"].shape[0],
            "n_audio_head": int(v["encoder/num_heads"]),
            "n_audio_layer": encoder_layers,
            "n_vocab": state["decoder.token_embedding.weight"].shape[0],
            "n_text_ctx": state["decoder.positional_embedding"].shape[0],
            "n_text_state": state["decoder.token_embedding.weight"].shape[1],
            "n_text_head": int(v["decoder/num_heads"]),
            "n_text_layer": decoder_layers,
        }
    except KeyError as exc:
        raise WeightsError(f"{folder / 'model.bin'} lacks {exc}: not a CTranslate2 Whisper model") from exc
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    heads = tuple((int(layer), int(head)) for layer, head in config.get("alignment_heads") or ())
    return OpenAIWhisperWeights(dims, state, heads)


def _fitted_encoder(dims: dict[str, int], context: EncoderContext) -> Any:
    """openai-whisper's `AudioEncoder`, except that it encodes as many frames as `context` allows.

    The stock `forward` asserts 30 s of input; this one is the same computation on the
    first `context.frames` frames, with the positional embedding cut to match (what
    CTranslate2's encoder does with a shorter input).
    """
    import torch.nn.functional as F
    from whisper.model import AudioEncoder

    class FittedAudioEncoder(AudioEncoder):  # type: ignore[misc]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = context.frames
            if frames:
                x = x[..., :frames]
            x = F.gelu(self.conv1(x))
            x = F.gelu(self.conv2(x))
            x = x.permute(0, 2, 1)
            x = (x + self.positional_embedding[: x.shape[1]]).to(x.dtype)
            for block in self.blocks:
                x = block(x)
            encoded: torch.Tensor = self.ln_post(x)
            return encoded

    return FittedAudioEncoder(
        dims["n_mels"], dims["n_audio_ctx"], dims["n_audio_state"], dims["n_audio_head"], dims["n_audio_layer"]
    )


def load_model(folder: Path, device: str = "cpu", context: EncoderContext | None = None) -> Any:
    """An openai-whisper `Whisper` model from a CTranslate2 directory, in eval mode on `device`.

    With a `context`, its encoder hears only the frames the context allows (`encoder_context: fit`).
    """
    from whisper.model import ModelDimensions, Whisper

    weights = convert(folder)
    model = Whisper(ModelDimensions(**weights.dims))
    if context is not None:
        model.encoder = _fitted_encoder(weights.dims, context)
    model.load_state_dict(weights.state_dict, strict=True)
    if weights.alignment_heads:  # else openai-whisper's default: the last half of the decoder layers
        mask = torch.zeros(weights.dims["n_text_layer"], weights.dims["n_text_head"], dtype=torch.bool)
        for layer, head in weights.alignment_heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device).eval()


class OpenAIWhisperTranscriber:
    """`Transcriber` on openai-whisper with word timestamps and the same hallucination guards.

    Runs in PyTorch with torch's process-wide thread count. Greedy decoding (`beam_size` 1) at
    temperature 0 gives the same tokens as `FasterWhisperTranscriber` with compute_type
    float32 on the same model directory. The first transcription with words compiles
    openai-whisper's DTW with numba (a few seconds, once per process).
    """

    def __init__(
        self,
        model: str = "auto",
        model_dir: str | None = None,
        device: str = "auto",
        beam_size: int = 1,
        language: str | None = None,
        encoder_context: Literal["fit", "full"] = "fit",
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        choice = choose_model(model, model_dir, device, language)
        self.model_name = choice.name
        self.device = device
        self._context = EncoderContext(encoder_context == "fit")
        self._model = load_model(choice.folder, device, self._context)
        self._beam_size = beam_size
        self._language = choice.language or (None if self._model.is_multilingual else "en")

    @property
    def model(self) -> Any:
        return self._model

    def _detect_language(self, audio: torch.Tensor) -> tuple[str, float]:
        import whisper

        mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), self._model.dims.n_mels)
        _, probabilities = self._model.detect_language(mel.to(self.device))
        language = max(probabilities, key=probabilities.get)
        return str(language), float(probabilities[language])

    def transcribe(self, audio: Pcm16k) -> Transcript:
        import whisper

        samples = torch.from_numpy(np.array(audio, dtype=np.float32))
        language, probability = self._language, 1.0
        with self._context.sized_for(samples.numel()):  # language detection too, as faster-whisper does
            if language is None:
                language, probability = self._detect_language(samples)
            result = whisper.transcribe(
                self._model,
                samples,
                language=language,
                beam_size=None if self._beam_size == 1 else self._beam_size,
                temperature=0.0,
                word_timestamps=True,
                condition_on_previous_text=False,
                fp16=self.device.startswith("cuda"),
                verbose=None,
            )
        kept = []
        for segment in result["segments"]:
            if not keep_segment(segment["no_speech_prob"], segment["avg_logprob"], segment["compression_ratio"]):
                continue
            words = tuple(
                WordTiming(
                    w["word"].strip(),
                    round(float(w["start"]), 3),
                    round(float(w["end"]), 3),
                    round(float(w["probability"]), 4),
                )
                for w in segment.get("words", ())
                if w["word"].strip()
            )
            text = str(segment["text"]).strip()
            if not words and not text:
                continue
            kept.append(
                TranscriptSegment(
                    round(float(segment["start"]), 3),
                    round(float(segment["end"]), 3),
                    text,
                    words,
                    round(float(segment["avg_logprob"]), 4),
                    round(float(segment["no_speech_prob"]), 4),
                )
            )
        return Transcript(tuple(kept), str(result.get("language") or language), round(probability, 4))
