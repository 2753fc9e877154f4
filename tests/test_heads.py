"""Shipped draft heads: the float16 export, its model card, name resolution and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from resps_jax import heads
from resps_jax.errors import UserError
from resps_jax.heads import ship
from resps_jax.models.loading import load_eagle3, resolve_draft_folder, save_eagle3
from tests.test_eagle3 import TARGET, random_head, run_head

REPORT = {"train_prompts": 17333, "rows_by_source": {"text": 17333}, "heldout_prompts": 20, "steps": 900,
          "epochs": 0.2, "draft_vocab_size": 120,
          "schedule": {"lr": 3e-4, "warmup_steps": 30, "from_step": 400, "to_step": 900},
          "heldout_after": {"acc0": 0.41, "acc1": 0.3, "acc2": 0.25, "acc3": 0.2, "acc4": 0.18}}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A random head exported by train_draft's writer, then shipped into a temporary heads folder."""
    monkeypatch.setattr(ship, "HEADS_DIR", tmp_path / "heads")
    monkeypatch.setattr(heads, "HEADS_DIR", tmp_path / "heads")
    monkeypatch.setitem(heads.SHIPPED_HEADS, "smollm2", "smollm2-v1")  # what this fixture ships
    monkeypatch.setattr(ship, "REMOVED_HEADS", {})  # a package that has shipped nothing before
    monkeypatch.setattr(heads, "REMOVED_HEADS", {})
    head = random_head()
    save_eagle3(head, tmp_path / "draft")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    args = ["--source", str(tmp_path / "draft"), "--report", str(tmp_path / "report.json"), "--version", "smollm2-v1"]
    assert ship.main(args) == 0
    return head, tmp_path / "heads" / "smollm2-v1", args


def test_ship_writes_float16_official_layout_that_loads_close_to_float32(shipped):
    head, folder, _ = shipped
    tensors = load_file(str(folder / "model.safetensors"))
    assert {t.dtype for name, t in tensors.items() if name not in ("d2t", "t2d")} == {np.dtype(np.float16)}
    assert tensors["d2t"].dtype == np.int64 and tensors["t2d"].dtype == bool  # maps stay exact
    loaded = load_eagle3(folder, TARGET)
    full, half = run_head(head), run_head(loaded)
    assert not np.array_equal(full, half)  # really float16 ...
    np.testing.assert_allclose(half, full, atol=2e-2 * np.abs(full).max())  # ... and the same head
    assert "target_hidden_size" not in json.loads((folder / "config.json").read_text())


def test_model_card_states_data_steps_command_and_heldout_top1(shipped):
    _, folder, _ = shipped
    card = (folder / "README.md").read_text()
    for fact in ("17333 ShareGPT dialogues", "900", "0.410 / 0.300 / 0.250 / 0.200 / 0.180",
                 "python -m resps_jax.train_draft --config configs/smollm2.py",
                 "warm-up over 30 steps to 0.0003, then cosine to 3e-05 by step 900, on a schedule from step 400"):
        assert fact in card


def test_a_shipped_version_is_never_rewritten(shipped):
    _, folder, args = shipped
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="never rewritten"):
        ship.main(args)
    assert (folder / "model.safetensors").read_bytes() == before


def test_smollm2_names_the_shipped_head_and_smollm2_trained_the_cache_one(shipped, tmp_path, monkeypatch):
    _, folder, _ = shipped
    monkeypatch.setenv("RESPS_JAX_CACHE", str(tmp_path / "cache"))
    assert resolve_draft_folder("smollm2") == folder
    with pytest.raises(UserError, match="no trained SmolLM2 head .* `make head`"):
        resolve_draft_folder("smollm2-trained")
    save_eagle3(random_head(seed=3), tmp_path / "cache" / "drafts" / "smollm2" / "draft")
    assert resolve_draft_folder("smollm2-trained") == tmp_path / "cache" / "drafts" / "smollm2" / "draft"
    assert resolve_draft_folder("smollm2") == folder  # a local head never replaces the shipped one


def test_missing_shipped_head_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(heads, "HEADS_DIR", tmp_path / "empty")
    with pytest.raises(UserError, match="no SmolLM2 head ships .* --draft smollm2-trained"):
        resolve_draft_folder("smollm2")


def test_an_exact_shipped_version_stays_loadable_after_the_next_one_ships(shipped, tmp_path, monkeypatch):
    """A result or policy made with smollm2-v1 names it; shipping v2 moves `smollm2`, not `smollm2-v1`."""
    _, v1, args = shipped
    monkeypatch.chdir(tmp_path)  # no local folder of that name shadows it ... (see below)
    assert ship.main(args[:-1] + ["smollm2-v2"]) == 0
    monkeypatch.setitem(heads.SHIPPED_HEADS, "smollm2", "smollm2-v2")
    assert resolve_draft_folder("smollm2") == tmp_path / "heads" / "smollm2-v2"
    assert resolve_draft_folder("smollm2-v1") == v1
    (tmp_path / "smollm2-v1").mkdir()  # ... but an existing local folder of that name is what the user means
    assert resolve_draft_folder("smollm2-v1").resolve() == (tmp_path / "smollm2-v1").resolve()


def in_git(commit: str, path: str) -> bool | None:
    """Whether `commit` holds `path` in this checkout's repository (None: not a git checkout)."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    if not (repo / ".git").exists():
        return None
    return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}:{path}"]).returncode == 0


@pytest.mark.parametrize("version", sorted(heads.REMOVED_HEADS))
def test_a_head_version_that_left_the_package_says_which_commit_keeps_it(version, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    commit = heads.REMOVED_HEADS[version]
    with pytest.raises(UserError, match="removed from the package") as err:
        resolve_draft_folder(version)
    assert f"git checkout {commit} -- resps_jax/heads/{version}" in str(err.value)
    assert in_git(commit, f"resps_jax/heads/{version}/model.safetensors") in (True, None)
    assert not (heads.HEADS_DIR / version).exists()  # the package ships the current head only


def test_a_removed_version_name_is_never_shipped_again(tmp_path, monkeypatch):
    """Git holds smollm2-v1's bytes under that name; a new head must take a new one."""
    monkeypatch.setattr(ship, "HEADS_DIR", tmp_path / "heads")
    save_eagle3(random_head(), tmp_path / "draft")
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    args = ["--source", str(tmp_path / "draft"), "--report", str(tmp_path / "report.json"), "--version", "smollm2-v1"]
    with pytest.raises(UserError, match="has shipped before"):
        ship.main(args)
    assert not (tmp_path / "heads").exists()
