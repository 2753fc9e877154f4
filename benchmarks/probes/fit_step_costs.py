"""What a policy's `ar` and tree steps really cost in an evaluation, fitted from its records.

An evaluation's results.jsonl holds, per question-turn and method, the wall time, the
accepted length of every step and each interval's action, with the same turn decoded by
AR beside it. For each policy method this fits, over its turns, one least-squares model

    seconds = c_ar * (its `ar` steps x AR's seconds per step on that turn)
            + c_tree * (its tree steps x AR's seconds per step on that turn)

so c_ar and c_tree are the costs of its two kinds of step in AR steps, measured where the
policy ran them (switches, catch-ups and policy calls included), and prints them beside the
tokens each kind of step committed. A tree step pays only where its tokens per step exceed
c_tree / c_ar.

    python benchmarks/probes/fit_step_costs.py <workdir>/report/results.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np


def step_kinds(record: dict, interval: int) -> tuple[int, int, int, int]:
    """(ar steps, tree steps, tokens in ar steps, tokens in tree steps) of one policy record."""
    counts = [0, 0, 0, 0]
    actions = record["actions"]
    for step, accepted in enumerate(record["accepted"]):
        tree = actions[min(step // interval, len(actions) - 1)] != "ar"
        counts[tree] += 1
        counts[2 + tree] += accepted
    return tuple(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--interval", type=int, default=30, help="steps per decision of `resps` (resps@N says its own)")
    args = parser.parse_args()
    records = [json.loads(line) for line in open(args.results)]
    ar = {(r["benchmark"], r["question_id"], r["turn"]): r for r in records if r["method"] == "ar"}
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["method"].startswith("resps") and r.get("actions") and (r["benchmark"], r["question_id"], r["turn"]) in ar:
            by_method[r["method"]].append(r)
    print(f"{'method':<14} {'turns':>5} {'ar steps':>8} {'tree steps':>10} {'tok/tree step':>13} {'c_ar':>6} {'c_tree':>7}")
    for method, rows in sorted(by_method.items()):
        interval = int(method.split("@")[1]) if "@" in method else args.interval
        design, seconds, totals = [], [], np.zeros(4)
        for r in rows:
            base = ar[(r["benchmark"], r["question_id"], r["turn"])]
            ar_step = base["seconds"] / max(1, base["steps"])
            kinds = step_kinds(r, interval)
            totals += kinds
            design.append([kinds[0] * ar_step, kinds[1] * ar_step])
            seconds.append(r["seconds"])
        (c_ar, c_tree), *_ = np.linalg.lstsq(np.array(design), np.array(seconds), rcond=None)
        per_tree_step = totals[3] / max(1, totals[1])
        print(f"{method:<14} {len(rows):>5} {int(totals[0]):>8} {int(totals[1]):>10} {per_tree_step:>13.2f} "
              f"{c_ar:>6.2f} {c_tree:>7.2f}")


if __name__ == "__main__":
    main()
