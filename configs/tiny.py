"""A complete pipeline on a seeded random tiny target + random head + a few prompts (tests)."""

import os

from ml_collections import ConfigDict

from resps_jax.config_base import apply_ablation, eval_config, rl_config


def get_config(arg: str | None = None) -> ConfigDict:
    cache = os.environ.get("RESPS_JAX_CACHE", os.path.expanduser("~/.cache/resps_jax"))
    c = ConfigDict()
    c.model = "tiny"
    c.dtype = "float32"
    c.workdir = os.path.join(cache, "runs", "tiny")
    c.seed = 0

    c.rl = rl_config(prompts="builtin", questions=24, max_new_tokens=24, max_prompt_tokens=200, n_steps=16,
                     batch_size=8)

    c.draft_model = "random"  # a seeded random head: the pipeline, not its speed
    c.actions = ConfigDict()
    c.actions.list = "ar;3,1,1;8,3,2;16,4,4"
    c.actions.interval_train = 4
    c.actions.interval_eval = 8
    # the tiny target has 256 positions; benchmark prompts can be longer
    c.eval = eval_config(questions=2, max_new_tokens=24, grid_prompts="builtin", grid_questions=3, truncate_prompt=True)

    c.draft = ConfigDict()
    c.draft.workdir = ""  # empty: the run's own workdir
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
    c.draft.init_from = ""
    c.draft.start_step = 0
    c.draft.eval_prompts = 5
    c.draft.checkpoint_every = 2
    c.draft.log_every = 1
    return apply_ablation(c, arg)
