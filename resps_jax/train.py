"""python -m resps_jax.train --config configs/X.py [--config.rl.x=y ...] [--resume]

Online PPO training of the Re-SpS policy (Algorithm 2; the loop is rl/trainer.py): each
training question is one turn decoded by the speculative engine, the policy choosing an
action every `actions.interval_train` steps from the target's own features; each
interval's reward is its speed (rl/env.py). Orbax checkpoints under <workdir>/checkpoints/;
`--resume` continues from the latest one exactly. Logs: <workdir>/train_log.jsonl and
TensorBoard events in <workdir>/tb/. Prints the run's summary as one JSON line.
"""

from __future__ import annotations

import json

from resps_jax.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args
    from resps_jax.distributed import initialize_from_config, is_writer
    from resps_jax.runtime import setup_runtime

    config, flags = parse_config_args(list(argv or []), ("resume", "debug"))
    initialize_from_config(config)
    setup_runtime()
    from resps_jax.rl.trainer import train_policy

    summary = train_policy(config, resume=flags["resume"])
    if summary is not None and is_writer():
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
