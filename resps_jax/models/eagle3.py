"""The EAGLE-3 draft head as Flax NNX, parameter for parameter the official checkpoint.

One decoder layer reads concat(input_layernorm(embedding), hidden_norm(h)) (2H wide,
embedding first), where h is either the target's three fused taps (through `fc`, only
for target features) or the head's own previous output (fed back while drafting). Its
output is a pre-norm state; `logits` applies `norm` and `lm_head` over the draft
vocabulary, and `d2t` maps draft ids to target ids (target = draft + d2t[draft]). The
embedding table is the target's, shared and frozen, so callers pass embeddings in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache, attention_mask
from resps_jax.models.config import RopeConfig
from resps_jax.models.llama import MLP, Attention, Linear, RMSNorm, rope_inv_freq, rope_tables


class Buffer(nnx.Variable):
    """A non-trainable array saved with the head (d2t); optimizers filter on nnx.Param."""


@dataclasses.dataclass(frozen=True)
class Eagle3Config:
    vocab_size: int  # the target's vocabulary
    draft_vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    target_hidden_size: int  # fc reads 3 x this
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048

    @property
    def rope(self) -> RopeConfig:
        return RopeConfig(theta=self.rope_theta)

    @staticmethod
    def for_target(target_cfg, draft_vocab_size: int | None = None, **overrides) -> Eagle3Config:
        """A head shaped like the target's layers (what EAGLE-3 trains by default)."""
        fields = dict(
            vocab_size=target_cfg.vocab_size,
            draft_vocab_size=draft_vocab_size or target_cfg.vocab_size,
            hidden_size=target_cfg.hidden_size,
            intermediate_size=target_cfg.intermediate_size,
            num_heads=target_cfg.num_heads,
            num_kv_heads=target_cfg.num_kv_heads,
            head_dim=target_cfg.head_dim,
            target_hidden_size=target_cfg.hidden_size,
            rms_norm_eps=target_cfg.rms_norm_eps,
            max_position_embeddings=target_cfg.max_position_embeddings,
        )
        fields.update(overrides)
        return Eagle3Config(**fields)

    def to_official(self) -> dict[str, Any]:
        """config.json as EAGLE-3's own trainer writes it (plus rope_theta/head_dim).

        `target_hidden_size` is written only when it differs from hidden_size: EAGLE's
        reference reads the key's presence as "the head has its own embedding" and then
        skips loading the target's, drafting with a random one (measured: 1.08 tokens per
        step at 2/1/1 with the key, 1.21 without, against 1.22 here).
        """
        official = {
            "architectures": ["LlamaForCausalLMEagle3"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "num_hidden_layers": 1,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
        }
        if self.target_hidden_size != self.hidden_size:
            official["target_hidden_size"] = self.target_hidden_size
        return official

    @staticmethod
    def from_official(raw: dict[str, Any], source: str, target_hidden_size: int | None = None) -> Eagle3Config:
        try:
            hidden = int(raw["hidden_size"])
            heads = int(raw["num_attention_heads"])
            vocab = int(raw["vocab_size"])
            return Eagle3Config(
                vocab_size=vocab,
                draft_vocab_size=int(raw.get("draft_vocab_size") or vocab),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_heads=heads,
                num_kv_heads=int(raw.get("num_key_value_heads") or heads),
                head_dim=int(raw.get("head_dim") or hidden // heads),
                target_hidden_size=int(raw.get("target_hidden_size") or target_hidden_size or hidden),
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
                rope_theta=float(raw.get("rope_theta", 10000.0)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            )
        except KeyError as missing:
            raise UserError(f"{source}: missing required key {missing}") from None


class DraftLayer(nnx.Module):
    """EAGLE-3's `midlayer`: a Llama decoder layer whose attention reads 2H inputs."""

    def __init__(self, cfg: Eagle3Config, *, dtype, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.hidden_norm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.input_layernorm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.self_attn = Attention(
            2 * h, h, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, bias=False, dtype=dtype, rngs=rngs
        )
        self.post_attention_layernorm = RMSNorm(h, cfg.rms_norm_eps, dtype)
        self.mlp = MLP(h, cfg.intermediate_size, dtype=dtype, rngs=rngs)

    def __call__(self, embeds, hidden, rope, cache_k, cache_v, lengths, mask):
        x = jnp.concatenate([self.input_layernorm(embeds), self.hidden_norm(hidden)], axis=-1)
        attn, cache_k, cache_v = self.self_attn(x, rope, cache_k, cache_v, lengths, mask)
        hidden = hidden + attn
        hidden = hidden + self.mlp(self.post_attention_layernorm(hidden))
        return hidden, cache_k, cache_v


class Eagle3Head(nnx.Module):
    def __init__(self, cfg: Eagle3Config, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.cfg = cfg
        self.fc = Linear(3 * cfg.target_hidden_size, cfg.hidden_size, bias=False, dtype=dtype, rngs=rngs)
        self.midlayer = DraftLayer(cfg, dtype=dtype, rngs=rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.lm_head = Linear(cfg.hidden_size, cfg.draft_vocab_size, bias=False, dtype=dtype, rngs=rngs)
        self.d2t = Buffer(jnp.zeros((cfg.draft_vocab_size,), jnp.int32))

    def new_cache(self, batch: int, capacity: int, dtype=jnp.float32) -> KVCache:
        c = self.cfg
        return KVCache.create(1, batch, capacity, c.num_kv_heads, c.head_dim, dtype)

    def __call__(
        self,
        embeds: jax.Array,  # [B, T, H] target embeddings of the input tokens
        hidden: jax.Array,  # [B, T, 3*Ht] target taps, or [B, T, H] the head's own outputs
        positions: jax.Array,  # [B, T]
        cache: KVCache,  # one layer
        local_mask: jax.Array,  # [B, T, T]
        mask: jax.Array | None = None,  # [B, T, S]
    ) -> tuple[jax.Array, KVCache]:
        """Returns the pre-norm output state [B, T, H] and the cache with the new K/V written.

        `mask` [B, T, S], when given, replaces the prefix + local_mask rule (training-time
        test uses it for its causal-then-diagonal pattern).
        """
        if hidden.shape[-1] != self.cfg.hidden_size:  # static: target features go through fc
            hidden = self.fc(hidden)
        rope = rope_tables(positions, rope_inv_freq(self.cfg.rope, self.cfg.head_dim))
        if mask is None:
            mask = attention_mask(cache.lengths, local_mask, cache.capacity)
        out, k, v = self.midlayer(embeds, hidden, rope, cache.keys[0], cache.values[0], cache.lengths, mask)
        return out, KVCache(keys=[k], values=[v], lengths=cache.lengths)

    def logits(self, out: jax.Array) -> jax.Array:
        """[..., H] pre-norm state -> [..., Vd] float32 logits over the draft vocabulary."""
        return self.lm_head(self.norm(out), out_dtype=jnp.float32)

    def to_target_ids(self, draft_ids: jax.Array) -> jax.Array:
        return draft_ids + self.d2t[...][draft_ids]
