"""`python -m resps_jax.plan`: per-device memory against a hand calculation, and refusals."""

from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import pytest

from resps_jax.errors import UserError
from resps_jax.models.config import llama_config_from_hf
from resps_jax.plan import GIB, TreeLimits, main, plan_memory

CONFIGS = "configs"


def by_hand_params(v: int, e: int, layers: int, heads: int, kv: int, d: int, inter: int) -> tuple[int, int]:
    """(all parameters, replicated norm parameters) of an untied Llama, counted by hand."""
    per_layer = e * heads * d + 2 * e * kv * d + heads * d * e + 3 * e * inter + 2 * e
    return 2 * v * e + layers * per_layer + e, (2 * layers + 1) * e


def rows(plan) -> dict[str, float]:
    return {what: size for what, size, _ in plan.rows}


def load(path: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize("mesh", [(1, 4), (1, 8)])
def test_llama70b_weights_and_cache_match_the_hand_calculation(mesh):
    c = load(f"{CONFIGS}/llama70b.py")
    cfg = llama_config_from_hf(c.arch.to_dict())
    plan = plan_memory(cfg, None, jnp.bfloat16, mesh, 2048, 1, TreeLimits(128, 8, 32))
    params, norms = by_hand_params(128256, 8192, 80, 64, 8, 128, 28672)
    assert params == 70_553_706_496
    m = mesh[1]
    # everything but the norms splits m ways (64 heads, 8 KV heads, 28672 and 128256 all divide by 8)
    assert rows(plan)["target weights"] == 2 * ((params - norms) / m + norms)
    capacity = 2304  # 2048 + 128 + 8 + 2 = 2186, rounded up to 128
    assert plan.capacity == capacity
    # keys and values [1, 8/m, S, 128] per layer, plus the int32 row lengths
    assert rows(plan)["target KV cache"] == 80 * 2 * (8 // m) * capacity * 128 * 2 + 4


def test_llama8b_on_one_24gb_device_fits_and_matches_by_hand():
    c = load(f"{CONFIGS}/llama8b.py")
    cfg = llama_config_from_hf(c.arch.to_dict())
    plan = plan_memory(cfg, None, jnp.bfloat16, (1, 1), 2048, 1, TreeLimits(128, 8, 32))
    params, _ = by_hand_params(128256, 4096, 32, 32, 8, 128, 14336)
    assert params == 8_030_261_248
    assert rows(plan)["target weights"] == 2 * params
    assert rows(plan)["target KV cache"] == 32 * 2 * 8 * 2304 * 128 * 2 + 4
    assert plan.per_device < 0.9 * 24 * GIB


def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resps_jax.plan", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # ~20 s: the CLI over the plan math the other tests check to the byte
def test_plan_cli_prints_fits_for_the_paper_setups(capsys):
    for args in (
        ["--config", f"{CONFIGS}/llama70b.py", "--config.mesh.shape=1x4", "--config.device_memory_gib=80"],
        ["--config", f"{CONFIGS}/llama70b.py", "--config.mesh.shape=1x8", "--config.device_memory_gib=80"],
        ["--config", f"{CONFIGS}/llama8b.py", "--config.device_memory_gib=24"],
        ["--config", f"{CONFIGS}/vicuna13b.py"],
    ):
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "target weights" in out and "activations" in out and "fits:" in out


def test_plan_refuses_what_does_not_fit_with_one_line():
    result = run_plan("--config", f"{CONFIGS}/llama70b.py", "--config.mesh.shape=1x1", "--config.device_memory_gib=80")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: llama70b on 1x1 devices of 80 GiB does not fit")
    assert "Traceback" not in result.stderr


def test_plan_bad_inputs_are_clear_errors():
    with pytest.raises(UserError, match="does not exist"):
        main(["--config", f"{CONFIGS}/llama8b.py", "--config.model=/no/such/llama"])
    with pytest.raises(UserError, match="DATAxMODEL"):
        main(["--config", f"{CONFIGS}/llama8b.py", "--config.mesh.shape=four"])
    with pytest.raises(UserError, match="unknown key"):
        main(["--config", f"{CONFIGS}/llama8b.py", "--config.mesh.shap=1x2"])


def test_config_action_sets():
    from resps_jax.decoding.tree import AR_ACTION
    from resps_jax.rl.actions import config_actions, paper_actions, parse_actions

    assert config_actions(load(f"{CONFIGS}/llama8b.py").actions) == paper_actions()
    cpu = config_actions(load(f"{CONFIGS}/smollm2.py").actions)
    assert (3, 1, 2, 0) in cpu and AR_ACTION in cpu and max(a.tt for a in cpu) <= 16
    assert parse_actions("8,3,2; 4,2,2") == [(8, 3, 2, 0), (4, 2, 2, 0)]
    with pytest.raises(UserError, match="three integers"):
        parse_actions("8,3")
    with pytest.raises(UserError, match="repeats"):
        parse_actions("8,3,2;8,3,2")
