"""Reward curve, entropy, action histogram and the first decision's course of a
`python -m resps_jax.train` run, from its JSONL log; prints the per-50-question table too.

    python benchmarks/plot_training.py WORKDIR/train_log.jsonl OUT.png [--window 50]

The table (and the fourth and fifth panels) split the actions by decision index: a turn's
first decision sees the prompt's end, later ones the answer, and the first is where earlier
policies collapsed onto a worse tree (docs/results.md). Each row gives that window's shares,
the critic's mean value at decision 0 and the mean reward each action earned there.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from resps_jax.evaluation.report import decision_windows  # noqa: E402


def table(rows: list[dict], names: list[str]) -> list[str]:
    lines = ["| questions | decision 0 shares | decision 1 | decisions 2+ | critic at 0 | reward at 0 by action | reward |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda shares: ", ".join(f"{a} {100 * shares[a]:.0f}%" for a in names if shares.get(a, 0) >= 0.05)  # noqa: E731
    for r in rows:
        value = "-" if r["value0"] is None else f"{r['value0']:.3f}"
        rewards = ", ".join(f"{a} {r['reward0'][a]:.2f}" for a in names if a in r["reward0"])
        lines.append(f"| {r['questions']} | {fmt(r['shares']['0'])} | {fmt(r['shares']['1'])} | "
                     f"{fmt(r['shares']['2+'])} | {value} | {rewards} | {r['reward']:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("out")
    parser.add_argument("--window", type=int, default=50)
    args = parser.parse_args()
    records = [json.loads(line) for line in open(args.log) if line.strip()]
    turns = [r for r in records if r["type"] == "turn"]
    updates = [r for r in records if r["type"] == "update"]
    names = sorted({a for r in turns for a in r["actions"]},
                   key=lambda a: (a != "ar", [int(v) for v in a.split(",")] if a != "ar" else []))
    rewards = np.array([np.mean(r["rewards"]) for r in turns])
    window = max(1, min(25, len(rewards)))
    smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.2))
    axes[0].plot(rewards, ".", alpha=0.3, label="per question")
    axes[0].plot(np.arange(window - 1, len(rewards)), smooth, label=f"{window}-question mean")
    axes[0].set_xlabel("training question")
    axes[0].set_ylabel("mean interval reward (AR speed-up units)")
    axes[0].legend(fontsize=8)
    axes[1].plot([u["update"] for u in updates], [u["entropy"] for u in updates], label="policy entropy")
    axes[1].axhline(np.log(len(names)), color="gray", linestyle=":", label="uniform")
    if updates and "approx_kl" in updates[0]:
        twin = axes[1].twinx()
        twin.plot([u["update"] for u in updates], [u["approx_kl"] for u in updates], color="tab:red", alpha=0.5,
                  label="approx. KL")
        twin.set_ylabel("approximate KL per update", color="tab:red")
    axes[1].set_xlabel("PPO update")
    axes[1].legend(fontsize=8)
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

    rows = decision_windows(turns, args.window)
    x = np.arange(len(rows)) * args.window
    for panel, index in ((3, "0"), (4, "2+")):
        bottom = np.zeros(len(rows))
        for i, name in enumerate(names):
            share = np.array([r["shares"][index].get(name, 0.0) for r in rows])
            axes[panel].bar(x, share, args.window * 0.9, bottom=bottom, label=name, color=plt.cm.tab10(i % 10),
                            align="edge")
            bottom += share
        axes[panel].set_xlabel("training question")
        axes[panel].set_ylabel(f"share of decision {index}")
        axes[panel].set_title(f"actions at decision {index}, per {args.window} questions", fontsize=9)
    axes[3].legend(fontsize=7, loc="lower left")
    values = [r["value0"] for r in rows]
    if any(v is not None for v in values):
        twin = axes[3].twinx()
        twin.plot(x + args.window / 2, [np.nan if v is None else v for v in values], "k-o", markersize=3,
                  label="critic at decision 0")
        twin.plot(x + args.window / 2, [max(r["reward0"].values()) if r["reward0"] else np.nan for r in rows],
                  "k:", label="best action's reward there")
        twin.set_ylabel("AR speed-up units")
        twin.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print("\n".join(table(rows, names)))


if __name__ == "__main__":
    main()
