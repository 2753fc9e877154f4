"""python -m resps_jax.evaluate --config configs/X.py [--policy P] [--benchmarks a,b] [--questions N]
    [--methods "ar;static:4,2,2;resps"] [--interval-sweep 1,5,10,30,50] [--question-file F.jsonl]
    [--grid-search] [--profile] [--no-report]

Benchmarks and baselines as the paper runs them: for every question and turn of the
chosen benchmark sets (MT-Bench with both turns, the second seeing the model's own first
answer), every method decodes the same prompt after a warm-up that compiled everything:
our AR (timed twice, `ar` and `ar_again`, so the run-to-run spread is measured in the same
run), each static action of the config's set (`static:ar` is the `ar`-only policy), the
EAGLE-3 baselines (`config.baselines`: 60/5/10 as the paper compared against, 60/7/10),
the best static action of a grid search on training prompts (`--grid-search` makes and
saves that pick, then exits: run it once before the evaluation; benchmark prompts never
choose it), two training-free adaptive baselines over the config's action set (`ema`:
SGLang-style running mean of acceptance; `ucb`: BanditSpec-style UCB1; rl/adaptive.py,
calibrated once on a training prompt into report/calibration.json), and the Re-SpS policy.
Methods run
interleaved per question, their order rotating, so drift on a shared machine hits all
alike. One record per question x turn x method goes to <workdir>/report/results.jsonl;
an interrupted run resumes and skips finished records. `python -m resps_jax.report`
turns the records into report.md and plots (this CLI calls it at the end).

`resps@N` is the policy deciding every N steps (`ema@N`, `ucb@N` likewise); `--interval-sweep 1,5,10` adds one such
method per N (the paper's Fig. 3: latency and tokens/s against the cache interval).
`--profile` times each tree action's step piece by piece instead (the paper's Table 8:
drafting, verification, tree management, policy) into report/profile.json.
"""

from __future__ import annotations

from resps_jax.errors import UserError, run_cli

BOOL_FLAGS = ("debug", "grid_search", "no_report", "profile")


def parse_args(argv: list[str]) -> tuple[list[str], dict]:
    """This CLI's own options; the rest (--config, --config.x=y, flags) goes to the config parser."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m resps_jax.evaluate", add_help=False, allow_abbrev=False,
                                     exit_on_error=False)
    for name in ("--policy", "--benchmarks", "--questions", "--methods", "--question-file", "--interval-sweep"):
        parser.add_argument(name)
    try:
        known, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise UserError(str(err)) from None
    rest = [a.replace("--grid-search", "--grid_search").replace("--no-report", "--no_report") for a in rest]
    return rest, vars(known)


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args
    from resps_jax.distributed import initialize_from_config
    from resps_jax.evaluation.runner import Request, question_sets
    from resps_jax.runtime import setup_runtime

    rest, extra = parse_args(list(argv or []))
    config, flags = parse_config_args(rest, BOOL_FLAGS)
    if "actions" not in config or "eval" not in config:
        raise UserError("the config has no 'actions' or 'eval' section")
    request = Request(**extra, grid_search=flags["grid_search"], profile=flags["profile"],
                      report=not flags["no_report"])
    sets = question_sets(config, request)  # bad sets or counts fail here, before any weights load
    initialize_from_config(config)
    setup_runtime()
    from resps_jax.evaluation.runner import evaluate

    evaluate(config, request, sets, command=" ".join(["python -m resps_jax.evaluate", *(argv or [])]))
    return 0


if __name__ == "__main__":
    run_cli(main)
