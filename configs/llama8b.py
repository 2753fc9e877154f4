"""Llama-3.1-8B-Instruct + its official EAGLE-3 head, one device (the paper used one 48 GB A40).

    python -m resps_jax.plan --config configs/llama8b.py --config.device_memory_gib=24
    --config.model=/path/to/Llama-3.1-8B-Instruct --config.draft_model=/path/to/EAGLE3-LLaMA3.1-Instruct-8B
"""

from resps_jax.config_base import apply_ablation, llama3_arch, paper_config


def get_config(arg: str | None = None):
    target, head = llama3_arch(hidden=4096, intermediate=14336, layers=32, heads=32)
    return apply_ablation(paper_config("llama8b", target, head, mesh="1x1", device_memory_gib=48.0), arg)
