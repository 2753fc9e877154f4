"""Re-SpS policies shipped inside the package, so `--policy smollm2` decodes with no training.

A policy lives under a versioned folder (`smollm2-v1/`): one Orbax checkpoint step exactly as
`train` wrote it (actor, critic, optimizer, normaliser, RNG and metadata, so a run can also
resume from it) and a model card (README.md) saying which command, reward and questions made
it and what it measured. The machine's sessions do not keep `~/.cache`, so a policy that is
not committed is a policy lost; versions are never rewritten in place, so a result names the
exact policy it used.
"""

from __future__ import annotations

from pathlib import Path

POLICIES_DIR = Path(__file__).resolve().parent
SHIPPED_POLICIES = {"smollm2": "smollm2-v2"}  # name -> the current version's folder


def shipped_policy_folder(name: str) -> Path | None:
    """The checkpoints folder of a model name's current policy (`smollm2`) or of one exact
    shipped version (`smollm2-v1`: what an older result used), or None when none ships."""
    version = SHIPPED_POLICIES.get(name, name)
    if not version or "/" in version or version.startswith("."):
        return None
    folder = POLICIES_DIR / version / "checkpoints"
    return folder if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()) else None
