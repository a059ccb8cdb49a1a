"""A BERT sentence encoder in MLX (all-MiniLM-L6-v2 by default): tokenizer, encoder, mean
pooling and L2 normalisation, as sentence-transformers computes them.

The weights are the Hugging Face BertModel's own (`model.safetensors`), loaded as they are; the
attention uses `mx.fast.scaled_dot_product_attention` and the norms `mx.fast.layer_norm`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def load(cls, folder: Path) -> BertConfig:
        raw = json.loads((folder / "config.json").read_text())
        if raw.get("model_type") != "bert":
            raise ValueError(f"{folder}: expected a BERT model (model_type bert), found {raw.get('model_type')!r}")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


class LayerNorm(nn.Module):
    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = mx.ones((dims,)), mx.zeros((dims,)), eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.layer_norm(x, self.weight, self.bias, self.eps)


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, c.layer_norm_eps)

    def __call__(self, ids: mx.array, types: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])[None, :]
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)


class AttentionOutput(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, c.layer_norm_eps)


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = SelfAttention(c)  # the checkpoint's name for it
        self.output = AttentionOutput(c)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        attn: SelfAttention = self.self
        b, n, d = x.shape
        h = attn.heads

        def split(t: mx.array) -> mx.array:
            return t.reshape(b, n, h, d // h).transpose(0, 2, 1, 3)

        q, k, v = split(attn.query(x)), split(attn.key(x)), split(attn.value(x))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=(d // h) ** -0.5, mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(b, n, d)
        return self.output.LayerNorm(self.output.dense(out) + x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)


class Output(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, c.layer_norm_eps)


def _erf(x: mx.array) -> mx.array:
    # Abramowitz & Stegun 7.1.28 (|error| < 3e-7, ~2e-6 in float32): multiplies and adds only.
    # On the CPU backend mx.erf costs ~25 ns an element and dominated the whole encoder.
    a = mx.abs(x)
    p = 1.0 + a * (0.0705230784 + a * (0.0422820123 + a * (0.0092705272 + a * (0.0001520143 + a * (0.0002765672 + a * 0.0000430638)))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return mx.sign(x) * (1.0 - 1.0 / p)


@mx.compile
def _gelu_cpu(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))


def gelu(x: mx.array) -> mx.array:
    """BERT's exact (erf) GELU; on the CPU through the fast polynomial erf, elsewhere (Metal) as is."""
    return _gelu_cpu(x) if mx.default_device() == mx.cpu else nn.gelu(x)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Output(c)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention(x, mask)
        hidden = gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(self.output.dense(hidden) + x)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.layer = [Layer(c) for _ in range(c.num_hidden_layers)]


class BertModel(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)

    def __call__(self, ids: mx.array, types: mx.array, attention_mask: mx.array) -> mx.array:
        x = self.embeddings(ids, types)
        # additive mask over keys: 0 where attended, a large negative where padded
        mask = ((1.0 - attention_mask.astype(x.dtype)) * -1e9)[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


class SentenceEncoder:
    """Texts -> L2-normalised mean-pooled embeddings."""

    def __init__(self, folder: Path, max_length: int | None = None):
        self.folder = folder
        self.config = BertConfig.load(folder)
        self.model = BertModel(self.config)
        weights = mx.load(str(folder / "model.safetensors"))
        weights = {k.removeprefix("bert."): v for k, v in weights.items()}
        weights = [(k, v) for k, v in weights.items() if not k.startswith("pooler.") and not k.endswith("position_ids")]
        self.model.load_weights(weights, strict=True)
        self.model.eval()
        mx.eval(self.model.parameters())
        st_config = folder / "sentence_bert_config.json"
        limit = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.exists() else 256
        self.max_length = max_length or limit
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - BERT's padding token, not a password
        self._forward = mx.compile(self._pooled)

    @property
    def dimension(self) -> int:
        return self.config.hidden_size

    def _pooled(self, ids: mx.array, types: mx.array, mask: mx.array) -> mx.array:
        hidden = self.model(ids, types, mask)
        weights = mask.astype(hidden.dtype)[..., None]
        summed = (hidden * weights).sum(axis=1)
        pooled = summed / mx.maximum(weights.sum(axis=1), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts), dimension) float32 array; texts are batched as given."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        ids = mx.array(np.array([e.ids for e in encodings], dtype=np.int32))
        types = mx.array(np.array([e.type_ids for e in encodings], dtype=np.int32))
        mask = mx.array(np.array([e.attention_mask for e in encodings], dtype=np.int32))
        out = self._forward(ids, types, mask)
        mx.eval(out)
        return np.array(out, copy=False)
