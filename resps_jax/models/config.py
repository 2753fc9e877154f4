"""Llama architecture settings, parsed from HF config.json in either RoPE form.

Published Llama checkpoints write `rope_theta` + `rope_scaling`; transformers 5 writes a
single `rope_parameters` dict. Both land in one frozen, hashable dataclass so a config
can be a static argument of `jax.jit` and a key of compiled-step caches.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from resps_jax.errors import UserError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = RopeConfig()
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 8192
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def tap_layers(self) -> tuple[int, int, int]:
        """Decoder layers whose *inputs* EAGLE-3 fuses: (low, mid, high)."""
        return (2, self.num_layers // 2, self.num_layers - 3)

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json in the older, widely read form (rope_theta + rope_scaling)."""
        rope_scaling = None
        if self.rope.rope_type == "linear":
            rope_scaling = {"rope_type": "linear", "factor": self.rope.factor}
        elif self.rope.rope_type == "llama3":
            rope_scaling = {
                "rope_type": "llama3",
                "factor": self.rope.factor,
                "low_freq_factor": self.rope.low_freq_factor,
                "high_freq_factor": self.rope.high_freq_factor,
                "original_max_position_embeddings": self.rope.original_max_position_embeddings,
            }
        eos = list(self.eos_token_ids)
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope.theta,
            "rope_scaling": rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "hidden_act": "silu",
        }


def _rope_from_hf(raw: dict[str, Any]) -> RopeConfig:
    params = raw.get("rope_parameters")
    if params is None:
        params = dict(raw.get("rope_scaling") or {})
        if "rope_theta" in raw:  # the top-level key is authoritative in the older form
            params["rope_theta"] = raw["rope_theta"]
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UserError(
            f"unsupported RoPE type {rope_type!r} in config.json (supported: "
            f"{', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    return RopeConfig(
        theta=float(params.get("rope_theta", 10000.0)),
        rope_type=rope_type,
        factor=float(params.get("factor", 1.0)),
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(
            params.get("original_max_position_embeddings", 8192)
        ),
    )


def llama_config_from_hf(raw: dict[str, Any], source: str = "config.json") -> LlamaConfig:
    """Parse an HF Llama config dict; anything not a Llama is refused by name."""
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    if model_type != "llama":
        raise UserError(
            f"{source}: model_type is {model_type!r} (architectures {archs}); only Llama "
            "checkpoints (model_type 'llama') are supported"
        )
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise UserError(f"{source}: hidden_act {act!r} is not supported (Llama uses 'silu')")
    if raw.get("mlp_bias"):
        raise UserError(f"{source}: mlp_bias=true is not supported")
    try:
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        eos = raw.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if eos is not None else ())
        return LlamaConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            rope=_rope_from_hf(raw),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_ids=tuple(int(e) for e in eos_ids),
        )
    except KeyError as missing:
        raise UserError(f"{source}: missing required key {missing}") from None


def read_config_json(folder: Path, what: str) -> tuple[dict[str, Any], Path]:
    """A checkpoint folder's config.json as a dict (and its path), or a UserError naming it."""
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no config.json (not {what})")
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def read_llama_config(folder: Path) -> LlamaConfig:
    raw, path = read_config_json(folder, "an HF checkpoint folder")
    return llama_config_from_hf(raw, source=str(path))
