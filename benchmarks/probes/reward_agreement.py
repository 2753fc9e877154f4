"""Does the modeled reward tell the policy what the measured one does? From one training log.

A turn record in train_log.jsonl holds, per interval, its action, tokens, steps and wall
seconds, so both reward modes can be computed for the same intervals whichever one trained:

    measured = tokens / seconds x (AR seconds per token)        (the paper's reward)
    modeled  = tokens / (steps x the action's step cost in AR steps)

with the run's own calibration (its checkpoint's `costs`). The modeled reward swaps the
interval's wall time for a cost table, so it is noise-free and unaffected by other jobs on
the machine; it is right if, on intervals timed alone, it ranks the actions as the wall
clock does. This prints, per action, both means over the same intervals and their ratio, the
rank correlations over all intervals and over the action means, and, given a second run
(`--against`, e.g. the modeled-reward run on the same questions), each run's first-decision
action shares over its last questions: whether the two rewards train the same choice.

    python benchmarks/probes/reward_agreement.py <measured-run workdir> [--against <workdir>] [--last 50]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from scipy import stats


def turns_of(workdir: Path) -> list[dict]:
    records = map(json.loads, filter(str.strip, (workdir / "train_log.jsonl").read_text().splitlines()))
    return [r for r in records if r["type"] == "turn"]


def run_meta(workdir: Path) -> dict:
    from resps_jax.rl import checkpoint as ckpt

    with ckpt.opened(str(workdir)) as (_, _, meta, _):
        return meta


def both_rewards(turns: list[dict], meta: dict) -> list[tuple[str, float, float]]:
    """(action, measured reward, modeled reward) for every interval that logged its parts."""
    relative = dict(zip(meta["actions"], meta["costs"]["relative"]))
    ar_seconds = meta["costs"]["ar_seconds"]
    rows = []
    for turn in turns:
        if "interval_seconds" not in turn:
            continue
        for action, tokens, steps, seconds in zip(turn["actions"], turn["interval_tokens"], turn["interval_steps"],
                                                  turn["interval_seconds"]):
            rows.append((action, tokens / max(seconds, 1e-9) * ar_seconds, tokens / max(steps * relative[action], 1e-9)))
    return rows


def first_decision_shares(turns: list[dict], last: int) -> dict[str, float]:
    counts = Counter(t["actions"][0] for t in turns[-last:] if t["actions"])
    return {a: c / max(1, sum(counts.values())) for a, c in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--against", type=Path, help="a second run to compare first decisions with")
    parser.add_argument("--last", type=int, default=50, help="questions at the end whose first decisions count")
    args = parser.parse_args()
    meta = run_meta(args.workdir)
    rows = both_rewards(turns_of(args.workdir), meta)
    if not rows:
        raise SystemExit(f"error: {args.workdir}/train_log.jsonl has no per-interval tokens, steps and seconds")
    print(f"{args.workdir}: trained on the {meta['reward']} reward; {len(rows)} intervals; "
          f"AR {1 / meta['costs']['ar_seconds']:.1f} tok/s at calibration\n")
    by_action: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for action, measured, modeled in rows:
        by_action[action].append((measured, modeled))
    print("| action | intervals | measured reward | modeled reward | measured / modeled |")
    print("|---|---|---|---|---|")
    means = {}
    for action in meta["actions"]:
        if not by_action[action]:
            continue
        measured, modeled = np.mean(by_action[action], axis=0)
        means[action] = (measured, modeled)
        print(f"| {action} | {len(by_action[action])} | {measured:.3f} | {modeled:.3f} | {measured / modeled:.3f} |")
    pairs = np.array([(m, d) for _, m, d in rows])
    spearman = stats.spearmanr(pairs[:, 0], pairs[:, 1]).statistic
    action_means = np.array(list(means.values()))
    kendall = stats.kendalltau(action_means[:, 0], action_means[:, 1]).statistic
    print(f"\nSpearman over intervals {spearman:.3f}; Kendall tau over the action means {kendall:.3f}; "
          f"best action measured {max(means, key=lambda a: means[a][0])}, modeled {max(means, key=lambda a: means[a][1])}")
    runs = [args.workdir] + ([args.against] if args.against else [])
    for workdir in runs:
        shares = first_decision_shares(turns_of(workdir), args.last)
        reward = run_meta(workdir)["reward"]
        print(f"first decision, last {args.last} questions, {workdir.name} ({reward}): "
              + ", ".join(f"{a} {s:.0%}" for a, s in shares.items()))


if __name__ == "__main__":
    main()
