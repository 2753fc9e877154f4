"""Head training data, (a) against (b): held-out acceptance per CPU hour, each from scratch.

(a) `text`: ShareGPT's own assistant replies, scored by the target in one batched forward
    (prefill speed; EAGLE-1's recipe).
(b) `distill`: the target's own greedy answers to ShareGPT prompts (decode speed, about
    60 tok/s here; EAGLE-3's recipe).

Each source trains a fresh head in its own workdir through `train_draft` (one process each,
one after the other, nothing else should run), with the same head, batch and training-time
budget; the CPU each process used, data making included (self-distillation is the expensive
part of (b)), is read from the OS. Prints, per source: CPU hours, minutes of wall time,
optimisation steps and the held-out top-1 agreement by test-time-training step (20 benchmark
prompts, the target's greedy answers: the same for both).

    python benchmarks/probes/head_sources.py --minutes 30 [--distill-prompts 600] [--workdir DIR]
        [--config configs/smollm2.py] [-- extra --config.draft.x=y overrides]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from resps_jax.models.loading import cache_root


def run_source(source: str, args, extra: list[str]) -> dict:
    workdir = Path(args.workdir) / source
    if (workdir / "head_sources.json").is_file():  # a finished run is read, not redone
        return json.loads((workdir / "head_sources.json").read_text())
    cmd = [sys.executable, "-m", "resps_jax.train_draft", "--config", args.config,
           f"--config.draft.workdir={workdir}", f"--config.draft.sources={source}",
           f"--config.draft.minutes={args.minutes}", f"--config.draft.max_steps={args.steps}",
           f"--config.draft.prompts={args.prompts}", f"--config.draft.max_prompts={args.distill_prompts}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((workdir / "draft_report.json").read_text())
    row = {
        "source": source,
        "cpu_hours": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 3600,
        "wall_minutes": (time.monotonic() - start) / 60,
        "steps": report["steps"],
        "rows": report["rows_by_source"],
        "top1": [report["heldout_after"][k] for k in sorted(report["heldout_after"]) if k.startswith("acc")],
    }
    (workdir / "head_sources.json").write_text(json.dumps(row))
    return row


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training-time budget of each run")
    parser.add_argument("--steps", type=int, default=150, help="LR schedule length (about 5 steps a minute here)")
    parser.add_argument("--distill-prompts", type=int, default=600, help="prompts (b) answers before training")
    parser.add_argument("--prompts", default="sharegpt", help="(b)'s prompt source (draft.prompts)")
    parser.add_argument("--config", default="configs/smollm2.py")
    parser.add_argument("--sources", default="text,distill")
    parser.add_argument("--workdir", default=str(cache_root() / "head_sources"))
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    rows = [run_source(s, args, extra) for s in args.sources.split(",")]
    print(f"\nHead data sources, each from scratch: {args.minutes:g} training minutes, {args.steps}-step schedule")
    print(f"{'source':<10}{'CPU h':>8}{'wall min':>10}{'steps':>7}  held-out top-1 by TTT step")
    for r in rows:
        print(f"{r['source']:<10}{r['cpu_hours']:>8.2f}{r['wall_minutes']:>10.1f}{r['steps']:>7}  "
              + " / ".join(f"{a:.3f}" for a in r["top1"]))


if __name__ == "__main__":
    main()
