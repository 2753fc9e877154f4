"""Could a per-step confidence gate make a tree pay on this CPU? Acceptance only, no timing.

The switching ceiling (report.py) says an oracle choosing `ar` or 4/2/2 every step would
reach 1.12-1.14x AR where every 30 steps reaches 1.01x. A real per-step choice needs a
signal seen before the step. This probe decodes ShareGPT prompts (past the ones policy
training reads; never the benchmark sets) with one static tree and logs, per step, what a
gate could read for free or nearly so, beside the step's accepted length:

- the head's first-level distribution at the root (EAGLE-2's confidence): top-1 and top-2
  mass. A gated step that declines still runs the head on the new token and its logits
  (`--gate-cost`, in AR steps).
- the target's probability of the token it just chose (free: computed anyway).

It then prints, for thresholds, the share of steps that would draft, their mean accepted
length, and the speed-up over AR that follows from the step costs (`--tree-cost`: the
tree's step in AR steps, as `train` measures it at start-up; a declined step costs
1 + gate cost). Greedy, so the tokens are AR's whatever the gate does.

    python benchmarks/probes/gate_probe.py --prompts 20 --tree 4,2,2 --tree-cost 1.85
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.data.prompts import load_training_prompts
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.spec import accept_and_commit, draft_tree, verify_tree
from resps_jax.decoding.verify import walk_tree
from resps_jax.models.loading import load_eagle3, load_target, resolve_draft_folder
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def gated_speedup(signal: np.ndarray, accepted: np.ndarray, threshold: float, tree_cost: float,
                  gate_cost: float) -> tuple[float, float, float]:
    """(share of steps drafted, their mean accepted length, tokens per AR-step of time) for a
    gate that drafts when `signal >= threshold`; a declined step emits one token."""
    draft = signal >= threshold
    tokens = np.where(draft, accepted, 1.0).sum()
    cost = np.where(draft, tree_cost, 1.0 + gate_cost).sum()
    return float(draft.mean()), float(accepted[draft].mean()) if draft.any() else 0.0, float(tokens / cost)


def oracle_speedup(accepted: np.ndarray, tree_cost: float) -> float:
    """Drafting exactly on the steps where the tree beats one AR step, at no gate cost."""
    pays = accepted > tree_cost
    return float(np.where(pays, accepted, 1.0).sum() / np.where(pays, tree_cost, 1.0).sum())


def probe_rows(n_prompts: int, tree: tuple[int, int, int], skip: int, draft: str, new_tokens: int) -> np.ndarray:
    """[steps, 4]: head top-1, head top-2 mass, target p(chosen token), accepted length."""
    target = load_target("smollm2")
    head = load_eagle3(resolve_draft_folder(draft), target.cfg)
    engine = Engine(target.model)
    eos = np.asarray(eos_token_ids(target.tokenizer, target.cfg.eos_token_ids), np.int32)
    spec = SpeculativeEngine(engine, head, [tree])
    shape = spec.shapes[spec.shape_key(spec.actions[0])]
    gt, gh = engine.graphdef, spec.graphdef_h

    @jax.jit
    def step(params_t, params_h, state, chosen_p):
        target_m, head_m = nnx.merge(gt, params_t), nnx.merge(gh, params_h)
        first = jax.nn.softmax(head_m.logits(state.last_out[None])[0])  # [Vd] the head's first level
        top2 = jax.lax.top_k(first, 2)[0]  # [2]
        drafted = draft_tree(target_m, head_m, state, tree[0], tree[1], tree[2], shape)
        logits, taps, cache = verify_tree(target_m, state, drafted)  # [TT, V]
        path, accepted, _ = walk_tree(drafted, logits, jnp.float32(0), state.key, shape.path_width)
        bonus_p = jax.nn.softmax(logits[path[accepted]]).max()  # the target's p of its next token
        new = accept_and_commit(target_m, head_m, state, drafted, logits, taps, cache, jnp.int32(new_tokens),
                                eos, jnp.float32(0), shape)
        row = jnp.stack([top2[0], top2[0] + top2[1], chosen_p, (accepted + 1).astype(jnp.float32)])
        return new, bonus_p, row

    gen = GenerationConfig(max_new_tokens=new_tokens, tree_margin=spec.tree_margin)
    rows = []
    for conversation in load_training_prompts("sharegpt", limit=skip + n_prompts)[skip:]:
        ids = encode_prompt(target.tokenizer, conversation[0])
        if len(ids) > 256:  # what policy training keeps (rl.max_prompt_tokens)
            continue
        _, state = spec.start(ids, gen)
        chosen_p = jnp.float32(1.0)  # the prefill's choice: no signal yet
        while not bool(state.done):
            state, chosen_p, row = step(engine.params, spec.params_h, state, chosen_p)
            rows.append(np.asarray(row))
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--tree", default="4,2,2")
    parser.add_argument("--tree-cost", type=float, default=1.85, help="the tree's step in AR steps")
    parser.add_argument("--gate-cost", type=float, default=0.06,
                        help="a declined step's extra cost in AR steps (head re-encode + first-level logits)")
    parser.add_argument("--skip", type=int, default=4000, help="ShareGPT prompts policy training reads first")
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--json-out", help="write the per-step rows here")
    args = parser.parse_args()
    setup_runtime()
    tree = tuple(int(v) for v in args.tree.split(","))
    rows = probe_rows(args.prompts, tree, args.skip, args.draft, args.new_tokens)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows.tolist(), f)
    accepted = rows[:, 3]
    print(f"{len(rows)} steps of {args.tree} over {args.prompts} ShareGPT prompts (head {args.draft}): "
          f"mean accepted {accepted.mean():.3f}, static tree {accepted.mean() / args.tree_cost:.3f}x AR "
          f"at a step cost of {args.tree_cost} AR steps")
    print(f"per-step oracle (drafts where accepted > {args.tree_cost}, free gate): "
          f"{oracle_speedup(accepted, args.tree_cost):.3f}x AR")
    for col, name in ((0, "head top-1"), (1, "head top-2 mass"), (2, "target p(chosen)")):
        print(f"\n{name}: correlation with accepted length {np.corrcoef(rows[:, col], accepted)[0, 1]:.3f}")
        print(f"{'threshold':>10}{'drafted':>9}{'acc|drafted':>13}{'x AR':>8}{'x AR, free gate':>17}")
        for t in THRESHOLDS:
            share, acc, speed = gated_speedup(rows[:, col], accepted, t, args.tree_cost, args.gate_cost)
            free = gated_speedup(rows[:, col], accepted, t, args.tree_cost, 0.0)[2]
            print(f"{t:>10.2f}{share:>9.1%}{acc:>13.2f}{speed:>8.3f}{free:>17.3f}")


if __name__ == "__main__":
    main()
