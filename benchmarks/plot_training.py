"""Reward curve and action histogram of a `python -m resps_jax.train` run, from its JSONL log.

    python benchmarks/plot_training.py WORKDIR/train_log.jsonl OUT.png
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(log: str, out: str) -> None:
    records = [json.loads(line) for line in open(log) if line.strip()]
    turns = [r for r in records if r["type"] == "turn"]
    updates = [r for r in records if r["type"] == "update"]
    rewards = np.array([np.mean(r["rewards"]) for r in turns])
    window = 25
    smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(rewards, ".", alpha=0.3, label="per question")
    axes[0].plot(np.arange(window - 1, len(rewards)), smooth, label=f"{window}-question mean")
    axes[0].set_xlabel("training question")
    axes[0].set_ylabel("mean interval reward (AR speed-up units)")
    axes[0].legend(fontsize=8)
    axes[1].plot([u["update"] for u in updates], [u["entropy"] for u in updates], label="policy entropy")
    axes[1].axhline(np.log(len({a for r in turns for a in r["actions"]})), color="gray", linestyle=":",
                    label="uniform")
    axes[1].set_xlabel("PPO update")
    axes[1].legend(fontsize=8)
    names = sorted({a for r in turns for a in r["actions"]}, key=lambda a: (a != "ar", a))
    half = len(turns) // 2
    for label, chunk, offset in (("first half", turns[:half], -0.2), ("second half", turns[half:], 0.2)):
        counts = Counter(a for r in chunk for a in r["actions"])
        axes[2].bar(np.arange(len(names)) + offset, [counts[n] for n in names], 0.4, label=label)
    axes[2].set_xticks(range(len(names)), names, rotation=45)
    axes[2].set_ylabel("intervals")
    axes[2].legend(fontsize=8)
    per = {n: np.mean([x for r in turns for a, x in zip(r["actions"], r["rewards"]) if a == n]) for n in names}
    title = "actions; mean reward " + ", ".join(f"{n} {v:.2f}" for n, v in per.items())
    axes[2].set_title("\n".join(textwrap.wrap(title, 60)), fontsize=7)  # seven actions overflow one line
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
