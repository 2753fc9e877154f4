"""The method registry: what each evaluation method's name means and the decoder it runs.

`ar` and `ar_again` are our AR (timed twice in one run, so the run-to-run spread is
measured); `static:A` and `eagle3:A` one static action; `best_static` the grid search's
pick; `ema` and `ucb` the training-free adaptive choosers (rl/adaptive.py) over the
config's action set; `resps` the policy as trained and `resps_argmax` its argmax; `X@N`
the chooser X deciding every N steps (the paper's Fig. 3 sweep).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from resps_jax.errors import UserError
from resps_jax.rl.adaptive import ADAPTIVE_METHODS

AR_METHODS = ("ar", "ar_again")
STATIC_FOREVER = 1 << 20  # a static method's interval: one decision for the whole turn


class Decoder(NamedTuple):
    """A method's engine, its policy (None: the engine's first action throughout) and interval."""

    spec: object  # decoding.engine.SpeculativeEngine
    policy: object | None  # decoding.policy.Policy
    interval: int


def method_names(config, with_policy: bool, best_static: str | None) -> list[str]:
    """Every method an evaluation of `config` runs by default, in report order."""
    from resps_jax.decoding.tree import format_action
    from resps_jax.rl.actions import config_actions

    actions = config_actions(config.actions)
    names = list(AR_METHODS)
    names += [f"static:{format_action(a)}" for a in actions]
    names += [f"eagle3:{b.strip()}" for b in str(config.get("baselines", "")).split(";") if b.strip()]
    two_drafters = any(a.ngram and not a.uses_head for a in actions) and any(a.uses_head and not a.ngram for a in actions)
    # training-free baselines over the same action set; the rule between drafters needs both kinds
    names += [m for m in ADAPTIVE_METHODS if m != "ngram_else_tree" or two_drafters]
    if best_static and f"static:{best_static}" not in names:  # the pick is one of the config's own actions
        names.append("best_static")  # unless the action set changed since the search
    if with_policy:  # as trained (sampled at its temperature, or argmax), and its argmax
        names += ["resps", "resps_argmax"]
    return names


def sweep_methods(spec: str) -> list[str]:
    """--interval-sweep 1,5,10 -> the policy at each cache interval: resps@1;resps@5;resps@10 (Fig. 3)."""
    try:
        intervals = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--interval-sweep {spec!r}: expected comma-separated step counts, e.g. 1,5,10,30") from None
    if not intervals or min(intervals) < 1:
        raise UserError(f"--interval-sweep {spec!r}: every interval must be >= 1")
    return [f"resps@{n}" for n in intervals]


def policy_interval(method: str) -> int | None:
    """resps@N, ema@N, ucb@N -> N (the chooser decides every N steps); None for every other method."""
    if method.split("@", 1)[0] in ("resps", *ADAPTIVE_METHODS) and "@" in method:
        try:
            n = int(method.split("@", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"method {method!r}: the cache interval after @ must be an integer >= 1")
        return n
    return None


def select_methods(config, with_policy: bool, best_static: str | None, wanted: str | None,
                   sweep: str | None) -> list[str]:
    """The methods to run: the defaults, or those `--methods` / `--interval-sweep` ask for,
    each checked against what this config (and policy) can run."""
    methods = method_names(config, with_policy, best_static)
    if not (wanted or sweep):
        return methods
    asked = [m.strip() for m in (wanted or "").split(";") if m.strip()]
    asked += sweep_methods(sweep) if sweep else []
    allowed = methods + (["best_static"] if best_static else [])
    missing = [m for m in asked if m not in allowed and not (
        policy_interval(m) and (with_policy or not m.startswith("resps@")))]
    if missing:
        raise UserError(f"unknown method(s) {', '.join(missing)}; this config has {', '.join(methods)}"
                        + ("" if with_policy else " (resps@N needs a policy)"))
    return list(dict.fromkeys(asked))


def build_decoders(config, engine, head, methods: list[str], best_static: str | None, policy_path: str | None,
                   agent, meta: dict | None, tok, report_dir: Path) -> dict[str, Decoder]:
    """One Decoder per non-AR method. Methods over the same action set share one engine
    (the policy's methods one, `ema` and `ucb` another), so each compiles once."""
    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.evaluation.calibration import adaptive_calibration
    from resps_jax.rl.actions import config_actions, parse_actions
    from resps_jax.rl.adaptive import make_chooser
    from resps_jax.rl.checkpoint import load_policy

    decoders: dict[str, Decoder] = {}
    policy_spec = adaptive_spec = calibration = None
    default_interval = int(config.eval.interval or (meta or {}).get("interval_eval", config.actions.interval_eval))
    for m in methods:
        kind = m.split("@", 1)[0]
        if kind in ADAPTIVE_METHODS:
            if adaptive_spec is None:
                adaptive_spec = SpeculativeEngine(engine, head, config_actions(config.actions))
                calibration = adaptive_calibration(config, adaptive_spec, tok, report_dir)
            chooser = make_chooser(kind, adaptive_spec.actions, calibration)
            decoders[m] = Decoder(adaptive_spec, chooser, policy_interval(m) or default_interval)
        elif m.startswith("static:") or m.startswith("eagle3:"):
            decoders[m] = Decoder(SpeculativeEngine(engine, head, parse_actions(m.split(":", 1)[1])), None,
                                  STATIC_FOREVER)
        elif m == "best_static":
            decoders[m] = Decoder(SpeculativeEngine(engine, head, parse_actions(best_static)), None, STATIC_FOREVER)
        elif m in ("resps", "resps_argmax") or policy_interval(m):
            if policy_spec is None:  # its executables then compile once, not once per policy method
                policy_spec = SpeculativeEngine(engine, head, parse_actions(";".join(meta["actions"])))
            chooser = agent
            if m == "resps_argmax":
                chooser, _ = load_policy(policy_path)
                chooser.cfg = dataclasses.replace(chooser.cfg, greedy=True)
                chooser.use_tokenizer(tok)
            decoders[m] = Decoder(policy_spec, chooser, policy_interval(m) or default_interval)
    return decoders
