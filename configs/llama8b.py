"""Llama-3.1-8B-Instruct + its official EAGLE-3 head, one device (the paper used one 48 GB A40).

    python -m resps_jax.plan --config configs/llama8b.py --config.device_memory_gib=24
    --config.model=/path/to/Llama-3.1-8B-Instruct --config.draft_model=/path/to/EAGLE3-LLaMA3.1-Instruct-8B
"""

from resps_jax.config_base import llama3_rope, paper_config


def get_config(arg: str | None = None):
    arch = dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=llama3_rope(),
        max_position_embeddings=131072, tie_word_embeddings=False, eos_token_id=[128001, 128008, 128009],
    )
    # the published head's config.json (facts file, section 1)
    draft = dict(
        vocab_size=128256, draft_vocab_size=32000, hidden_size=4096, intermediate_size=14336,
        num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=1, rms_norm_eps=1e-5,
        max_position_embeddings=2048,
    )
    return paper_config("llama8b", arch, draft, mesh="1x1", device_memory_gib=48.0)
