"""Draft heads shipped inside the package, so the embedded default speculates with no training.

A head lives under a versioned folder (`smollm2-v1/`): config.json, float16 model.safetensors
in the official EAGLE-3 layout, and a model card (README.md) saying what data, steps and
command made it and what it measured. Versions are never rewritten in place (each binary
commit stays in the repository's history), so a result names the exact head it used.
"""

from __future__ import annotations

from pathlib import Path

HEADS_DIR = Path(__file__).resolve().parent
SHIPPED_HEADS = {"smollm2": "smollm2-v3"}  # name -> the current version's folder


def head_version(spec: str) -> str:
    """The exact head a draft spec means: a model name's current shipped version, else the spec
    itself (an exact version, a folder, `smollm2-trained`); what results and reports record."""
    return SHIPPED_HEADS.get(spec, spec)


def shipped_head_folder(name: str) -> Path | None:
    """The shipped head's folder for a model name (its current version) or for an exact version
    (`smollm2-v1`: what an older result or policy used), or None when none ships."""
    version = head_version(name)
    if not version or "/" in version or version.startswith("."):
        return None
    folder = HEADS_DIR / version
    return folder if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() else None
