"""Vicuna-13B v1.3 + its official EAGLE-3 head, one device (the paper used one 48 GB A40).

Vicuna's head keeps the full 32000-token vocabulary, so it has no d2t map.

    python -m resps_jax.plan --config configs/vicuna13b.py
"""

from resps_jax.config_base import apply_ablation, paper_config


def get_config(arg: str | None = None):
    arch = dict(
        model_type="llama", vocab_size=32000, hidden_size=5120, intermediate_size=13824,
        num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40, head_dim=128,
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False,
        eos_token_id=2,
    )
    # assumed to mirror the target's layer shapes (EAGLE-3's default); a downloaded config.json wins
    draft = dict(
        vocab_size=32000, draft_vocab_size=32000, hidden_size=5120, intermediate_size=13824,
        num_attention_heads=40, num_key_value_heads=40, num_hidden_layers=1, rms_norm_eps=1e-6,
        max_position_embeddings=2048,
    )
    c = paper_config("vicuna13b", arch, draft, mesh="1x1", device_memory_gib=48.0)
    c.decode.temperature = 0.0  # the paper reports temperature 0; EAGLE's vicuna scripts default to 1.0
    return apply_ablation(c, arg)
