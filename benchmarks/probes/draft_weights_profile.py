"""A tree step piece by piece with the head's kernel weights in f32 and in bf16.

Drafting, verification and tree management (decoding/profile.py's Table 8 pieces) for a few
trees on one ShareGPT training question (#3000 of the seed-42 shuffle), each tree in an
engine of its own beside `ar`, once with each head precision; one JSON line per run.

    python benchmarks/probes/draft_weights_profile.py [--trees "4,2,2;8,3,2;16,4,4"]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="4,2,2;8,3,2;16,4,4")
    parser.add_argument("--question", type=int, default=3000)
    args = parser.parse_args()
    from resps_jax.runtime import setup_runtime

    setup_runtime()
    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.decoding.profile import smollm2_fixture, step_breakdown
    from resps_jax.decoding.tree import AR_ACTION
    from resps_jax.rl.actions import parse_actions

    engine, head, ids, gen = smollm2_fixture(args.question)
    for weights in ("float32", "bfloat16"):
        for action in parse_actions(args.trees):
            spec = SpeculativeEngine(engine, head, [AR_ACTION, action], draft_weights=weights)
            row = step_breakdown(spec, ids, gen, action)
            print(json.dumps({"draft_weights": weights, "action": row["action"], "ms": row["ms"]}), flush=True)


if __name__ == "__main__":
    main()
