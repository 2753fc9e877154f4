"""A complete pipeline on a seeded random tiny target + random head + a few prompts (tests)."""

import os

from ml_collections import ConfigDict


def get_config(arg: str | None = None) -> ConfigDict:
    cache = os.environ.get("RESPS_JAX_CACHE", os.path.expanduser("~/.cache/resps_jax"))
    c = ConfigDict()
    c.model = "tiny"
    c.dtype = "float32"
    c.workdir = os.path.join(cache, "runs", "tiny")
    c.seed = 0

    # Re-SpS policy training (python -m resps_jax.train): paper Table 4 defaults; -1 takes
    # the variant's value (max-entropy: gamma 0.95, lambda 0.9, entropy 0.1, temperature 1.5;
    # standard: 0.99, 0.95, 0.01, 1.0).
    c.rl = ConfigDict()
    c.rl.variant = "maxent"  # maxent | standard
    c.rl.hidden = "128,128"  # actor and critic MLP widths (separate towers)
    c.rl.state = "concat"  # concat (paper) | mean (the paper's code) of the three tapped features
    c.rl.normalize = True  # running mean/variance of the state (residual streams have huge dims)
    c.rl.bandit = False  # every interval terminal (the paper code's PPO) instead of GAE over a turn
    c.rl.greedy = False  # inference: argmax instead of sampling at the temperature
    c.rl.temperature = -1.0
    c.rl.gamma = -1.0
    c.rl.gae_lambda = -1.0
    c.rl.ent_coef = -1.0
    c.rl.lr = 3e-4
    c.rl.n_steps = 16
    c.rl.batch_size = 8
    c.rl.epochs = 4
    c.rl.clip = 0.2
    c.rl.vf_coef = 0.5
    c.rl.max_grad_norm = 0.5
    c.rl.reward = "measured"  # measured (tokens/s of the interval) | modeled (tokens / modeled step cost)
    c.rl.prompts = "builtin"  # training questions: first user turns, seed-42 shuffle; never benchmarks
    c.rl.questions = 24
    c.rl.minutes = 0.0  # wall-clock budget (0: none); --resume continues
    c.rl.max_new_tokens = 24
    c.rl.max_prompt_tokens = 200  # longer questions are skipped so prompt + answer fit the cache
    c.rl.checkpoint_every = 1  # updates between checkpoints (a kill loses at most this many)
    c.rl.seed = 0

    c.draft_model = "random"  # a seeded random head: the pipeline, not its speed
    c.actions = ConfigDict()
    c.actions.list = "ar;4,1,1;8,3,2;16,4,4"
    c.actions.interval_train = 4
    c.actions.interval_eval = 8
    # python -m resps_jax.evaluate: benchmarks (held out) x methods, interleaved per question
    c.eval = ConfigDict()
    c.eval.benchmarks = ""  # comma-separated subset; empty: all five
    c.eval.questions = 2  # per benchmark (-1: all 80)
    c.eval.max_new_tokens = 24
    c.eval.interval = 0  # steps per policy decision (0: the policy's own, actions.interval_eval)
    c.eval.grid_prompts = "builtin"  # the best-static grid search runs on training prompts, never benchmarks
    c.eval.grid_questions = 3
    c.eval.truncate_prompt = True  # the tiny target has 256 positions; benchmark prompts can be longer

    c.draft = ConfigDict()
    c.draft.prompts = "builtin"
    c.draft.sources = "distill"
    c.draft.text = "sharegpt"
    c.draft.text_max = -1
    c.draft.feature_cache_gb = 1.0
    c.draft.max_steps = 0
    c.draft.max_prompts = 8
    c.draft.answer_tokens = 24
    c.draft.gen_batch = 8
    c.draft.max_len = 96
    c.draft.vocab_size = 200
    c.draft.ttt_steps = 3
    c.draft.step_decay = 0.8
    c.draft.batch_size = 4
    c.draft.lr = 1e-3
    c.draft.warmup_steps = 2
    c.draft.epochs = 2
    c.draft.minutes = 5.0
    c.draft.init_from_target = True
    c.draft.eval_prompts = 5
    c.draft.checkpoint_every = 2
    c.draft.log_every = 1
    return c
