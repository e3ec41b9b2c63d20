"""all-MiniLM-L6-v2 written out in PyTorch: the network sentence-transformers runs, without transformers.

A BERT encoder (word, position and token-type embeddings, `num_hidden_layers` post-norm
blocks of multi-head attention and a GELU feed-forward), then the sentence-transformers head
of this model: the mean of the last hidden states over the real tokens (`1_Pooling`, mean
tokens) and L2 normalisation. Sizes come from the model's `config.json`, weights from its
`model.safetensors`, with Hugging Face's parameter names. The result matches
`SentenceTransformer(...).encode(..., normalize_embeddings=True)` (checked in
`tests/unit/detectors/test_text_embedding.py` against vectors it gave).

This is the export source of the ONNX graph that `detectors.text_embedding` runs on
OpenVINO, and the `torch` runtime. torch is imported here at module level: import this
module only when exporting or when the torch runtime is chosen.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn import functional


class MiniLmNetwork(torch.nn.Module):
    """(token ids, attention mask), both (batch, tokens) int64 → (batch, hidden) unit-length float32."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{folder}: not a BERT model with GELU ({config.get('model_type')})")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        # Plain tensors, not parameters: nothing here trains, and the ONNX export folds them in as constants.
        self.weights = {
            name: tensor
            for name, tensor in load_file(str(folder / "model.safetensors")).items()
            if "position_ids" not in name
        }

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.weights
        positions = torch.arange(ids.shape[1])
        hidden = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][positions]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        hidden = self._norm(hidden, "embeddings.LayerNorm")
        keep = mask.bool()[:, None, None, :]  # (batch, 1, 1, tokens): padding is never attended to
        for layer in range(self.layers):
            hidden = self._block(hidden, keep, f"encoder.layer.{layer}.")
        real = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * real).sum(1) / real.sum(1).clamp(min=1e-9)
        return functional.normalize(pooled, p=2.0, dim=1)

    def _block(self, hidden: torch.Tensor, keep: torch.Tensor, prefix: str) -> torch.Tensor:
        batch, tokens, _ = hidden.shape
        size = self.hidden // self.heads

        def split(name: str) -> torch.Tensor:
            projected = self._linear(hidden, f"{prefix}attention.self.{name}")
            return projected.view(batch, tokens, self.heads, size).transpose(1, 2)

        attended = functional.scaled_dot_product_attention(
            split("query"), split("key"), split("value"), attn_mask=keep, scale=1 / math.sqrt(size)
        )
        attended = self._linear(
            attended.transpose(1, 2).reshape(batch, tokens, self.hidden), f"{prefix}attention.output.dense"
        )
        hidden = self._norm(attended + hidden, f"{prefix}attention.output.LayerNorm")
        inner = functional.gelu(self._linear(hidden, f"{prefix}intermediate.dense"))
        return self._norm(self._linear(inner, f"{prefix}output.dense") + hidden, f"{prefix}output.LayerNorm")

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return functional.linear(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = self.weights
        return functional.layer_norm(x, (self.hidden,), w[f"{name}.weight"], w[f"{name}.bias"], self.eps)
