"""The shape every GPU-scale config shares (configs/llama8b.py, vicuna13b.py, llama70b.py).

A config names its checkpoints (user-supplied paths; nothing is downloaded), the mesh
and per-device memory it expects, and the paper's decoding settings. It also carries the
published architecture (`arch`, `draft_arch`: config.json fields) so `python -m
resps_jax.plan` can size a run before the weights exist on this machine; when the
checkpoint folder is present its own config.json is used instead.
"""

from __future__ import annotations

import os

from ml_collections import ConfigDict

from resps_jax.rl.actions import PAPER_DEPTH, PAPER_TOPK, PAPER_TT


def paper_config(
    name: str, arch: dict, draft_arch: dict, mesh: str, device_memory_gib: float, dtype: str = "bfloat16"
) -> ConfigDict:
    cache = os.environ.get("RESPS_JAX_CACHE", os.path.expanduser("~/.cache/resps_jax"))
    c = ConfigDict()
    c.model = ""  # HF Llama folder (config.json + *.safetensors + tokenizer); user-supplied
    c.draft_model = ""  # official EAGLE-3 folder for this target; user-supplied
    c.dtype = dtype
    c.workdir = os.path.join(cache, "runs", name)
    c.seed = 42  # the paper's shuffle seed

    c.mesh = ConfigDict()
    c.mesh.shape = mesh  # DATAxMODEL
    c.device_memory_gib = device_memory_gib  # per device, for `plan`
    c.memory_fraction = 0.9  # of device memory usable by arrays (set XLA_PYTHON_CLIENT_MEM_FRACTION to match)

    c.distributed = ConfigDict()  # empty: single process, or the JAX_* environment variables
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1

    c.decode = ConfigDict()
    c.decode.max_length = 2048  # prompt + answer budget per turn, as EAGLE-3 and the paper
    c.decode.max_new_tokens = 512
    c.decode.temperature = 0.0
    c.decode.batch = 1

    c.actions = ConfigDict()  # the paper's action set: TT x d x k, keeping TT <= k**(d-1)
    c.actions.list = ""  # or an explicit 'TT,d,k;...' set, which wins over the grids
    c.actions.tt = PAPER_TT
    c.actions.depth = PAPER_DEPTH
    c.actions.topk = PAPER_TOPK
    c.actions.interval_train = 10
    c.actions.interval_eval = 30
    c.baselines = "60,5,10;60,7,10"  # EAGLE-3 as the paper ran it; EAGLE's library default

    c.arch = ConfigDict(arch)
    c.draft_arch = ConfigDict(draft_arch)
    return c


def llama3_arch(hidden: int, intermediate: int, layers: int, heads: int) -> tuple[dict, dict]:
    """(target config.json, EAGLE-3 head config.json) of a Llama-3.x Instruct model.

    Shared by all Llama-3.x sizes: 128256-token vocabulary, 8 KV heads of 128, Llama-3 RoPE
    scaling (factor 8 over 8192 positions), untied head; the head mirrors one target layer
    with a 32000-token draft vocabulary (the published 8B head's config.json, facts file
    section 1; assumed for other sizes until a downloaded config.json says otherwise).
    """
    rope = {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    target = dict(
        model_type="llama", vocab_size=128256, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=8, head_dim=128,
        rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=rope, max_position_embeddings=131072,
        tie_word_embeddings=False, eos_token_id=[128001, 128008, 128009],
    )
    head = dict(
        vocab_size=128256, draft_vocab_size=32000, hidden_size=hidden, intermediate_size=intermediate,
        num_attention_heads=heads, num_key_value_heads=8, num_hidden_layers=1, rms_norm_eps=1e-5,
        max_position_embeddings=2048,
    )
    return target, head
