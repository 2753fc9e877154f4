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

    c.rl = rl_config(prompts="sharegpt", questions=4000, max_new_tokens=512, max_prompt_tokens=1536)

    c.eval = eval_config(questions=-1, max_new_tokens=512, grid_prompts="sharegpt", grid_questions=40)

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


def rl_config(prompts: str, questions: int, max_new_tokens: int, max_prompt_tokens: int, n_steps: int = 64,
              batch_size: int = 32) -> ConfigDict:
    """The `rl` section every config shares; only data sizes (and, for tiny runs, the buffer) differ.
    """
    # Re-SpS policy training (python -m resps_jax.train): paper Table 4 defaults; -1 takes
    # the variant's value (max-entropy: gamma 0.95, lambda 0.9, entropy 0.1, temperature 1.5;
    # standard: 0.99, 0.95, 0.01, 1.0).
    rl = ConfigDict()
    rl.variant = "maxent"  # maxent | standard
    rl.hidden = "128,128"  # actor and critic MLP widths (separate towers)
    rl.state = "concat"  # concat (paper) | mean (the paper's code) of the three tapped features
    rl.normalize = True  # running mean/variance of the state (residual streams have huge dims)
    rl.bandit = False  # every interval terminal (the paper code's PPO) instead of GAE over a turn
    rl.greedy = False  # inference: argmax instead of sampling at the temperature
    rl.temperature = -1.0
    rl.gamma = -1.0
    rl.gae_lambda = -1.0
    rl.ent_coef = -1.0
    rl.lr = 3e-4
    rl.n_steps = n_steps
    rl.batch_size = batch_size
    rl.epochs = 4
    rl.clip = 0.2
    rl.vf_coef = 0.5
    rl.max_grad_norm = 0.5
    rl.target_kl = 0.0  # stop an update's gradient steps past 1.5 x this approximate KL (SB3; 0: off)
    # Anneal the learning rate linearly to 0 over rl.questions (CleanRL's PPO default; off: Table 4's
    # constant rate, as SB3 runs it).
    rl.anneal_lr = False
    rl.reward = "measured"  # measured (tokens/s of the interval) | modeled (tokens / modeled step cost)
    rl.prompts = prompts  # training questions: first user turns, seed-42 shuffle; never benchmarks
    rl.questions = questions
    rl.minutes = 0.0  # wall-clock budget (0: none); --resume continues
    rl.max_new_tokens = max_new_tokens
    rl.max_prompt_tokens = max_prompt_tokens  # longer questions are skipped so prompt + answer fit the cache
    rl.checkpoint_every = 1  # updates between checkpoints (a kill loses at most this many)
    rl.seed = 0
    # A fresh workdir can start from another policy instead of from nothing: a checkpoints
    # folder, "smollm2" (the shipped policy) or a shipped version. It goes on from that
    # policy's data position; rl.questions still counts from the first question.
    rl.init_from = ""
    # The modeled reward's step costs taken from another run (its workdir or checkpoints folder)
    # instead of timed at this run's start: runs meant to be compared (the ablations) then share
    # one calibration, so a start-up timing's noise (up to 20% between runs) is not a difference
    # between them. Empty: measure.
    rl.costs_from = ""
    return rl


def eval_config(questions: int, max_new_tokens: int, grid_prompts: str, grid_questions: int,
                truncate_prompt: bool = False) -> ConfigDict:
    """The `eval` section every config shares (python -m resps_jax.evaluate)."""
    # python -m resps_jax.evaluate: benchmarks (held out) x methods, interleaved per question
    ev = ConfigDict()
    ev.benchmarks = ""  # comma-separated subset; empty: all five
    ev.questions = questions  # per benchmark (-1: all 80)
    ev.max_new_tokens = max_new_tokens
    ev.interval = 0  # steps per policy decision (0: the policy's own, actions.interval_eval)
    ev.grid_prompts = grid_prompts  # the best-static grid search runs on training prompts, never benchmarks
    ev.truncate_prompt = truncate_prompt  # keep the last tokens of a prompt too long for the context
    ev.grid_questions = grid_questions
    return ev


# The paper's ablations (and ours), one config switch each: `--config smollm2:state_mean`.
# Each writes to its own workdir (<workdir>-<name>), so the runs sit side by side.
ABLATIONS = {
    "state_mean": {"state": "mean"},  # the mean of the three tapped features (the paper code's state)
    "state_text": {"state": "text"},  # an all-MiniLM-L6-v2 embedding of the decoded context
    "standard": {"variant": "standard"},  # standard PPO instead of max-entropy PPO
    "maxent": {"variant": "maxent"},  # max-entropy PPO where a config defaults to standard (smollm2)
    "net64": {"hidden": "64,64"},  # [64, 64] instead of [128, 128]
    "bandit": {"bandit": True},  # every interval terminal (the paper code's PPO) instead of GAE over a turn
    "gae": {"bandit": False},  # GAE over a turn's intervals where a config defaults to the bandit form (smollm2)
    "no_norm": {"normalize": False},  # the raw residual-stream features, unnormalised
}


def apply_ablation(config: ConfigDict, name: str | None) -> ConfigDict:
    """The config with one ablation's `rl` switch applied and its own workdir."""
    if not name:
        return config
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r} after ':'; expected one of {', '.join(ABLATIONS)}")
    if all(config.rl[key] == value for key, value in ABLATIONS[name].items()):
        raise ValueError(f"ablation {name!r} is already this config's own setting; run the config without it")
    for key, value in ABLATIONS[name].items():
        config.rl[key] = value
    config.workdir = f"{config.workdir}-{name}"
    return config
