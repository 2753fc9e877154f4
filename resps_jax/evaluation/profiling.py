"""The paper's Table 8 for every action: drafting, verification, tree management and policy
milliseconds per step (`evaluate --profile`)."""

from __future__ import annotations

import json
from pathlib import Path


def profile_actions(config, engine, head, agent, meta, gen, sets, tok, report_dir: Path) -> None:
    """report/profile.json: drafting, verification, tree management and policy milliseconds
    per step for every tree action of the config and the EAGLE-3 baselines, on the first
    question of the first benchmark (untimed warm-up first; see decoding/profile.py)."""
    from tqdm import tqdm

    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.decoding.profile import step_breakdown
    from resps_jax.decoding.tree import AR_ACTION
    from resps_jax.prompting import encode_conversation
    from resps_jax.rl.actions import config_actions, parse_actions

    trees = [a for a in config_actions(config.actions) if a != AR_ACTION]
    trees += [a for b in str(config.get("baselines", "")).split(";") if b.strip() for a in parse_actions(b)]
    first = next(iter(sets.values()))[0]
    ids = encode_conversation(tok, [first.turns[0]], [])
    interval = int(config.eval.interval or (meta or {}).get("interval_eval", config.actions.interval_eval))
    rows = []
    for action in tqdm(list(dict.fromkeys(trees)), desc="profiling steps", unit="action"):
        spec = SpeculativeEngine(engine, head, [AR_ACTION, action])
        rows.append(step_breakdown(spec, ids, gen, action, decide=agent.decide if agent is not None else None,
                                   interval=interval))
    (report_dir / "profile.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps({"profile": str(report_dir / "profile.json"), "actions": [r["action"] for r in rows]}))
