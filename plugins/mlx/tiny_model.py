"""A tiny Llama-architecture model, built deterministically: the out-of-the-box generation model
and the one the tests use. It is random, so what it writes is gibberish, but it is a real model
that `mlx_lm.load` loads and runs like any mlx-community checkpoint.

    python scripts/build_tiny_model.py DIR

The same seed gives byte-identical files: a byte-level BPE tokenizer trained on a fixed corpus,
a config, and safetensors weights drawn from numpy's seeded generator.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

NAME = "cortex-tiny-llama"
SPECIAL = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = (
    "the a of to and in is it you that he was for on are with as I his they be at one have this from "
    "or had by word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long make "
    "thing see him two has look more day could go come did number sound no most people my over know "
    "water than call first who may down side been now find memory plan model note remember recall "
    "kernel policy proof replay local private agent tool trace embed search answer question"
).split()


def corpus(seed: int, lines: int = 400) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lines):
        words = rng.choice(WORDS, size=int(rng.integers(4, 14)))
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return out


def build_tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(seed), trainer=trainer)
    return tokenizer


def config(vocab_size: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 176,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": 0,
        "torch_dtype": "float32",
    }


def weights(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, n, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head

    def dense(rows: int, cols: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    out = {"model.embed_tokens.weight": dense(v, h, 1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out |= {
            p + "self_attn.q_proj.weight": dense(h, h),
            p + "self_attn.k_proj.weight": dense(kv, h),
            p + "self_attn.v_proj.weight": dense(kv, h),
            p + "self_attn.o_proj.weight": dense(h, h),
            p + "mlp.gate_proj.weight": dense(n, h),
            p + "mlp.up_proj.weight": dense(n, h),
            p + "mlp.down_proj.weight": dense(h, n),
            p + "input_layernorm.weight": np.ones(h, np.float32),
            p + "post_attention_layernorm.weight": np.ones(h, np.float32),
        }
    out["model.norm.weight"] = np.ones(h, np.float32)
    out["lm_head.weight"] = dense(v, h, 0.5)
    return out


def build_tiny_model(folder: Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write the model into `folder` (created) and return it."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed, vocab_size)
    tokenizer.save(str(folder / "tokenizer.json"))
    cfg = config(tokenizer.get_vocab_size())
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": SPECIAL[0],
                "pad_token": SPECIAL[0],
                "model_max_length": cfg["max_position_embeddings"],
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": SPECIAL[0], "pad_token": SPECIAL[0]}, indent=2, sort_keys=True) + "\n"
    )
    save_file(weights(cfg, seed), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def fingerprint(folder: Path) -> str:
    """SHA-256 over the model's files, to show two builds are byte-identical."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
