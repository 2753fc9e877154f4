"""The ablation table from real runs: each variant trains its own policy, then is evaluated.

Every run is the base config or the base config with one ablation switch
(`--config smollm2:NAME`, see `ABLATIONS` in `resps_jax/config_base.py`), trained from
nothing for the same number of questions on the same ShareGPT order and seed, then
evaluated on the same held-out benchmark questions with AR timed beside it; every run's
modeled reward uses one table of step costs (`rl.costs_from`): the first run's start-up
calibration, or `--costs-from` (a run or a shipped policy such as `smollm2`, whose costs
were measured on the machine that trained it) for every run. Runs go one
after the other (nothing else should run: the evaluation times decoding) and resume: a
finished training or evaluation is skipped, a stopped one continues (`--resume`, the
evaluation's own record skipping). Ends by printing `report --ablations` over all runs.

    python benchmarks/ablations.py [--runs base,state_mean,state_text,maxent,net64,gae]
        [--questions 120] [--eval-questions 2] [--workdir DIR] [--config smollm2] [--costs-from RUN]
        [-- extra --config.rl.x=y overrides, given to every training]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from resps_jax.models.loading import cache_root


def trained_questions(workdir: Path) -> int:
    """Questions a run's training log reaches (0 when it has not started)."""
    log = workdir / "train_log.jsonl"
    if not log.is_file():
        return 0
    turns = [r for r in map(json.loads, filter(str.strip, log.read_text().splitlines())) if r["type"] == "turn"]
    return turns[-1]["question"] + 1 if turns else 0


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), f"> {log}", flush=True)
    started = time.time()
    with log.open("a") as out:
        subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True)
    print(f"  done in {(time.time() - started) / 60:.1f} min", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="base,state_mean,state_text,maxent,net64,gae",
                        help="comma-separated: base (the config as it is) and ablation names")
    parser.add_argument("--questions", type=int, default=120, help="training questions per run")
    parser.add_argument("--eval-questions", type=int, default=2, help="benchmark questions per set")
    parser.add_argument("--methods", default="ar;resps;resps_argmax")
    parser.add_argument("--config", default="smollm2")
    parser.add_argument("--workdir", default=str(cache_root() / "runs" / "ablations"))
    parser.add_argument("--costs-from", default=None,
                        help="every run's step costs from this run or shipped policy (default: the first run's own)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    root = Path(args.workdir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    for name in names:
        workdir = root / name
        config = args.config if name == "base" else f"{args.config}:{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        # one calibration for all (rl.costs_from), so the start-up timing's noise is no difference
        # between runs: --costs-from's, or the first run's own
        source = args.costs_from or (str(root / names[0]) if name != names[0] else None)
        shared = [f"--config.rl.costs_from={source}"] if source else []
        if trained_questions(workdir) < args.questions:
            run([sys.executable, "-m", "resps_jax.train", "--config", config, f"--config.workdir={workdir}",
                 f"--config.rl.questions={args.questions}", "--resume", *shared, *extra], workdir / "train.out")
        run([sys.executable, "-m", "resps_jax.evaluate", "--config", config, f"--config.workdir={workdir}",
             "--questions", str(args.eval_questions), "--methods", args.methods, *extra_eval(extra)],
            workdir / "evaluate.out")
    table = subprocess.run([sys.executable, "-m", "resps_jax.report", "--ablations",
                            *[str(root / n) for n in names]], capture_output=True, text=True, check=True).stdout
    (root / "ablations.md").write_text(table)
    print(table)
    return 0


def extra_eval(extra: list[str]) -> list[str]:
    """The overrides the evaluation needs too (the reward mode names how rewards were made;
    the rest of `rl` only shapes training)."""
    return [a for a in extra if not a.startswith("--config.rl.") or a.startswith("--config.rl.reward")]


if __name__ == "__main__":
    sys.exit(main())
