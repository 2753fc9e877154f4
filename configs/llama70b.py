"""Llama-3.3-70B-Instruct + its official EAGLE-3 head, tensor parallel (the paper: 4 x 80 GB H100).

    python -m resps_jax.plan --config configs/llama70b.py                       # 1x4, 80 GiB
    python -m resps_jax.plan --config configs/llama70b.py --config.mesh.shape=1x8
"""

from resps_jax.config_base import apply_ablation, llama3_arch, paper_config


def get_config(arg: str | None = None):
    target, head = llama3_arch(hidden=8192, intermediate=28672, layers=80, heads=64)
    return apply_ablation(paper_config("llama70b", target, head, mesh="1x4", device_memory_gib=80.0), arg)
