"""Config files: bare names, `file.py:ablation` switches, and clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resps_jax.config_base import ABLATIONS
from resps_jax.config_cli import parse_config_args, resolve_config_argv
from resps_jax.errors import UserError


def load(spec: str, *overrides: str):
    return parse_config_args(resolve_config_argv(["--config", spec, *overrides]))[0]


@pytest.mark.parametrize("config", ["smollm2", "tiny", "llama8b", "llama70b", "vicuna13b"])
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_is_one_switch_in_its_own_workdir(config, ablation):
    base = load(config)
    if all(base.rl[k] == v for k, v in ABLATIONS[ablation].items()):  # e.g. smollm2 is standard PPO already
        with pytest.raises(UserError, match=f"ablation '{ablation}' is already this config's own setting"):
            load(f"{config}:{ablation}")
        return
    variant = load(f"{config}:{ablation}")
    changed = {k for k in base.rl if base.rl[k] != variant.rl[k]}
    assert changed == set(ABLATIONS[ablation])  # exactly the named switch, nothing else
    assert variant.workdir == f"{base.workdir}-{ablation}"
    assert {k: variant[k] for k in variant if k not in ("rl", "workdir")} == {
        k: base[k] for k in base if k not in ("rl", "workdir")}


def test_overrides_still_apply_on_top_of_an_ablation():
    assert load("smollm2:net64", "--config.rl.questions=7").rl.questions == 7


def test_unknown_ablation_is_one_clear_error():
    with pytest.raises(UserError, match="unknown ablation 'nope'.*state_mean"):
        load("tiny:nope")


def run_cli(module: str, *args: str, cwd, cache) -> subprocess.CompletedProcess:
    """A config CLI run from another folder than the repository (so configs/ is not at hand)."""
    env = dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def test_parsing_resolves_a_bare_name_itself():
    """Every config CLI parses through parse_config_args, so resolving there covers them all."""
    assert parse_config_args(["--config", "llama8b"])[0].workdir == load("llama8b").workdir
    assert parse_config_args(["--config=tiny.py:bandit"])[0].workdir == load("tiny:bandit").workdir


def test_plan_finds_a_bare_config_name_as_train_does(tmp_path):
    proc = run_cli("resps_jax.plan", "--config", "llama8b", cwd=tmp_path, cache=tmp_path)
    assert proc.returncode == 0 and "fits:" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("module", ["resps_jax.train", "resps_jax.evaluate"])
def test_a_config_without_model_paths_names_the_flags_that_set_them(module, tmp_path):
    line = one_error_line(run_cli(module, "--config", "llama8b", cwd=tmp_path, cache=tmp_path))
    assert "--config.model=" in line and "--config.draft_model=" in line


def test_a_missing_model_path_names_its_override(tmp_path):
    missing = tmp_path / "no_such_llama"
    line = one_error_line(run_cli("resps_jax.train", "--config", "llama8b", f"--config.model={missing}",
                                  cwd=tmp_path, cache=tmp_path))
    assert str(missing) in line and "--config.model=" in line
    line = one_error_line(run_cli("resps_jax.train_draft", "--config", "tiny", "--config.model=",
                                  cwd=tmp_path, cache=tmp_path))
    assert "--config.model=" in line and "draft_model" not in line  # train_draft builds the head itself
