"""Re-SpS policies shipped inside the package, so `--policy smollm2` decodes with no training.

A policy lives under a versioned folder (`smollm2-v5/`): one Orbax checkpoint step exactly as
`train` wrote it (actor, critic, optimizer, normaliser, RNG and metadata, so a run can also
resume from it) and a model card (README.md) saying which command, reward and questions made
it and what it measured. A policy trained on a machine whose `~/.cache` is not kept is lost
unless committed; versions are never rewritten in place, so a result names the exact policy
it used.

Only the current version ships; older ones left the package and stay in git, restored by
name from the commit in REMOVED_POLICIES.
"""

from __future__ import annotations

from pathlib import Path

from resps_jax.errors import refuse_removed_version

POLICIES_DIR = Path(__file__).resolve().parent
SHIPPED_POLICIES = {"smollm2": "smollm2-v5"}  # name -> the current version's folder
# Versions that shipped once -> the last commit that changed their folder (whole there).
REMOVED_POLICIES = {"smollm2-v1": "c870b42", "smollm2-v2": "d2a43d4", "smollm2-v3": "5bccb01",
                    "smollm2-v4": "80f571c"}


def shipped_policy_folder(name: str) -> Path | None:
    """The checkpoints folder of a model name's current policy (`smollm2`) or of one exact
    shipped version (`smollm2-v5`: what a result used), or None when none ships."""
    version = SHIPPED_POLICIES.get(name, name)
    if not version or "/" in version or version.startswith("."):
        return None
    folder = POLICIES_DIR / version / "checkpoints"
    return folder if folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir()) else None


def refuse_removed_policy(version: str) -> None:
    """One error line for a version that no longer ships: which commit has it and how to get it.

    Checked only after the package has no such folder, so a version restored with the
    command below loads by name again.
    """
    refuse_removed_version("policy", version, REMOVED_POLICIES, SHIPPED_POLICIES["smollm2"], "--policy",
                           f"resps_jax/policies/{version}")
