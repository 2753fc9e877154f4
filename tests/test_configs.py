"""Config files: bare names, `file.py:ablation` switches, and clear refusals."""

from __future__ import annotations

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
