"""python -m resps_jax.train_draft --config configs/X.py [--config.draft.k=v ...] [--resume]

Trains an EAGLE-3 head for the config's target (resps_jax/heads/trainer.py) and writes it in
the official format to <draft.workdir or workdir>/draft/ (config.json + model.safetensors).
Stages, each cached in the workdir so a rerun or `--resume` repeats nothing: self-distilled
answers (greedy AR by the target), the draft vocabulary, the frozen target's features and
logits, then training-time-test optimisation under a wall-clock budget with Orbax
checkpoints, and a held-out report (top-1 agreement with the target on benchmark prompts,
never trained on). Prints a summary as one JSON line.
"""

from __future__ import annotations

import json

from resps_jax.errors import UserError, run_cli


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args

    config, flags = parse_config_args(list(argv or []), ("resume", "debug"))
    if "draft" not in config:  # the paper configs plan and evaluate official heads; they train none
        raise UserError("the config has no 'draft' section (configs/smollm2.py and configs/tiny.py have one)")
    from resps_jax.runtime import setup_runtime

    setup_runtime()
    from resps_jax.heads.trainer import train_head

    print(json.dumps(train_head(config, resume=flags["resume"])))
    return 0


if __name__ == "__main__":
    run_cli(main)
