"""What a policy chooses at a turn's first decision (the prompt's end) against later ones.

Decodes 30 training questions the policy never saw (by default the 30 after the last one it
trained on, from its checkpoint's position; first turns, 64 tokens, `ar` throughout so the
text is AR's) with a decision every 10 steps, keeps the target features each decision
saw, and prints the policy's mean action probabilities at decisions 0, 1 and 2, how often
its argmax is `ar`, its critic's value there, and how large the normalised state gets (a
saturated input would explain a collapsed choice; it does not here). A value below every
action's mean reward at a state makes every sampled action's advantage positive there, so
the action sampled most gains most: a baseline that low lets policy gradient commit to a
worse action (Chung et al., ICML 2021).

    python benchmarks/policy_first_decision.py [--policy smollm2] [--first N]
"""

from __future__ import annotations

import argparse

import numpy as np


N_QUESTIONS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2", help="a shipped policy name or a checkpoints folder")
    parser.add_argument("--first", type=int, default=None,
                        help=f"the first of the {N_QUESTIONS} ShareGPT questions (default: the policy's position, "
                        "the first question it did not train on)")
    args = parser.parse_args()
    from resps_jax.config_cli import parse_config_args, resolve_config_argv
    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
    from resps_jax.models.cache import plan_cache_length
    from resps_jax.rl.actions import config_actions
    from resps_jax.rl.checkpoint import load_policy
    from resps_jax.runtime import setup_runtime
    from resps_jax.pipeline import load_pair, training_questions

    setup_runtime()
    agent, meta = load_policy(args.policy)
    first = int(meta.get("position", 0)) if args.first is None else args.first
    if int(meta.get("position", 0)) > first:
        print(f"note: the policy trained on questions up to {meta['position']}, past --first {first}")
    last = first + N_QUESTIONS
    config, _ = parse_config_args(resolve_config_argv(["--config", "smollm2", f"--config.rl.questions={last}"]))
    target, head = load_pair(config, np.float32)
    spec = SpeculativeEngine(Engine(target.model), head, config_actions(config.actions))
    questions = training_questions(config, target.tokenizer)[first:last]
    new_tokens = 64
    cache_len = plan_cache_length(config.rl.max_prompt_tokens, new_tokens, spec.tree_margin,
                                  target.cfg.max_position_embeddings)  # one length, as training plans it
    gen = GenerationConfig(max_new_tokens=new_tokens, cache_len=cache_len)
    states: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
    for question in questions:
        seen: list[np.ndarray] = []

        def record(taps, seen=seen) -> int:
            seen.append(np.asarray(taps).copy())
            return 0  # `ar`: the text is AR's whatever the policy would pick

        spec.generate(question, gen, (), policy=record, interval=10)
        for k in states:
            if len(seen) > k:
                states[k].append(seen[k])
    names = meta["actions"]
    value = agent.value_fn()
    for k, taps in states.items():
        probs = np.array([agent.probabilities(t) for t in taps])  # [n, A]
        obs = np.array([agent.norm(agent.features(t)) for t in taps])  # [n, D] as the actor sees it
        values = np.array([float(value(agent.params, o)) for o in obs])  # [n] the critic's baseline
        print(f"decision {k}: n={len(taps)} mean probs " + ", ".join(f"{n} {p:.2f}" for n, p in zip(names, probs.mean(0)))
              + f"; argmax ar {np.mean(probs.argmax(1) == names.index('ar')):.2f}; value {values.mean():.3f}"
              f" (sd {values.std():.3f}); |obs| > 5 share "
              f"{np.mean(np.abs(obs) > 5):.4f}, max |obs| {np.abs(obs).max():.1f}")


if __name__ == "__main__":
    main()
