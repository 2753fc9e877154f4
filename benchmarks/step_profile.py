"""Where a speculative step's time goes, piece by piece, for any actions (the paper's Table 8).

Drafting (the head's tree), lookup (the n-gram chain), verification (the target's forward),
the walk, the cache compaction and the head's re-encode, each jitted alone on a real state
a few steps into an answer (decoding/profile.py), beside the compiled interval's own time
per step and the `ar` step's, on SmolLM2 with the shipped head (bf16 kernel weights), one
ShareGPT training question (#3000 of the seed-42 shuffle), a 512-slot cache. One JSON line
per action, then a table; "fixed" is the step beyond its verification.

    python benchmarks/step_profile.py [--actions "3,1,2;3,1,2+ngram:4;ngram:4"]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", default="3,1,2;3,1,2+ngram:4;ngram:4")
    parser.add_argument("--question", type=int, default=3000)
    parser.add_argument("--json-out", help="append the JSON lines to this file too")
    args = parser.parse_args()
    from resps_jax.runtime import setup_runtime

    setup_runtime()
    from resps_jax.decoding.action import AR_ACTION, parse_actions
    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.decoding.profile import PIECES, smollm2_fixture, step_breakdown

    engine, head, ids, gen = smollm2_fixture(args.question)
    rows = []
    for action in parse_actions(args.actions):
        spec = SpeculativeEngine(engine, head, [AR_ACTION, action])
        row = step_breakdown(spec, ids, gen, action)
        rows.append(row)
        line = json.dumps({"action": row["action"], "ms": row["ms"]})
        print(line, flush=True)
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(line + "\n")
    pieces = [p for p in PIECES if p != "policy"]
    print("\n| action | " + " | ".join(pieces) + " | step | ar step | step / ar | fixed (step - verification) |")
    print("|---" * (len(pieces) + 5) + "|")
    for row in rows:
        ms = row["ms"]
        cells = [f"{ms[p]:.2f}" for p in pieces]
        print(f"| {row['action']} | " + " | ".join(cells) + f" | {ms['step']:.2f} | {ms['ar_step']:.2f} | "
              f"{ms['step'] / ms['ar_step']:.2f} | {ms['step'] - ms['verification']:.2f} |")


if __name__ == "__main__":
    main()
