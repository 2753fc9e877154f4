"""XLA:CPU flags on the whole model: AR and a small tree, each flag set in its own process.

XLA reads its flags once per process, so one run cannot hold two settings. This script
alternates the settings round by round (A B C A B C ...), each round a `spec_decode.py` run
over the same held-out prompts (our AR and the listed trees, every output checked against
AR), so drift on the machine hits every setting alike. The flags are the ones a 30-layer
matmul chain found faster (docs/results.md): oneDNN's and YNNPACK's dot fusions.

    python benchmarks/probes/xla_flags.py [--rounds 2] [--per-benchmark 1] [--trees "4,2,2"]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "default": "",
    "onednn dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "ynn dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
}


def one_run(flags: str, args, out: Path) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS=" ".join(f for f in (os.environ.get("XLA_FLAGS", ""), flags) if f))
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "spec_decode.py"), "--no-hf", "--per-benchmark",
           str(args.per_benchmark), "--new-tokens", str(args.new_tokens), "--trees", args.trees,
           "--json-out", str(out)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-benchmark", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--trees", default="4,2,2")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    args = parser.parse_args()
    names = args.settings.split(",")
    ms: dict[tuple[str, str], list[float]] = {}
    identical: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in names:
                rows = one_run(SETTINGS[name], args, Path(tmp) / f"{r}-{name}.json")
                this_round = {row["decoder"]: 1000 * row["seconds"] / row["tokens"] for row in rows}
                for decoder, value in this_round.items():
                    ms.setdefault((name, decoder), []).append(value)
                identical[name] = identical.get(name, True) and all(not row["mismatches"] for row in rows)
                print(f"round {r + 1}, {name}: " + ", ".join(
                    f"{decoder} {value:.1f} ms/token" for decoder, value in this_round.items()), flush=True)
    decoders = list(dict.fromkeys(d for _, d in ms))
    base = {d: statistics.median(ms[("default", d)]) for d in decoders} if "default" in names else None
    print(f"\nms per token (median of {args.rounds} rounds; {args.per_benchmark} prompt(s) per benchmark, "
          f"{args.new_tokens} new tokens, greedy)")
    print(f"{'setting':<14}" + "".join(f"{d:>22}" for d in decoders) + f"{'identical':>11}")
    for name in names:
        cells = []
        for d in decoders:
            v = statistics.median(ms[(name, d)])
            cells.append(f"{v:.1f}" + (f" ({v / base[d]:.2f}x)" if base else ""))
        print(f"{name:<14}" + "".join(f"{c:>22}" for c in cells) + f"{'yes' if identical[name] else 'NO':>11}")


if __name__ == "__main__":
    main()
