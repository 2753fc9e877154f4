"""Llama-3.3-70B-Instruct + its official EAGLE-3 head, tensor parallel (the paper: 4 x 80 GB H100).

    python -m resps_jax.plan --config configs/llama70b.py                       # 1x4, 80 GB
    python -m resps_jax.plan --config configs/llama70b.py --config.mesh.shape=1x8
"""

from resps_jax.config_base import llama3_rope, paper_config


def get_config(arg: str | None = None):
    arch = dict(
        model_type="llama", vocab_size=128256, hidden_size=8192, intermediate_size=28672,
        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=llama3_rope(),
        max_position_embeddings=131072, tie_word_embeddings=False, eos_token_id=[128001, 128008, 128009],
    )
    # assumed to mirror the target's layer shapes with a 32000-token draft vocabulary, as the 8B head
    draft = dict(
        vocab_size=128256, draft_vocab_size=32000, hidden_size=8192, intermediate_size=28672,
        num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=1, rms_norm_eps=1e-5,
        max_position_embeddings=2048,
    )
    return paper_config("llama70b", arch, draft, mesh="1x4", device_memory_gib=80.0)
