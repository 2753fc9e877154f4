"""Scale-out: partition rules, fake-device meshes, sharded loading, two jax.distributed processes.

Meshes need several devices and `jax.distributed` can start once per process, so the
decoding checks run tests/workers/mesh_generate.py in subprocesses (8 fake CPU devices,
or two processes x 2 devices talking over gloo) and compare what they print.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from resps_jax.errors import UserError
from resps_jax.models.config import llama_config_from_hf
from resps_jax.models.loading import abstract_llama
from resps_jax.models.sharding import Placement, abstract_mesh, make_mesh, parse_mesh
from resps_jax.models.tiny import tiny_llama_config

WORKER = Path(__file__).parent / "workers" / "mesh_generate.py"
MODES = ("ar", "ar_batch", "ar_sampled", "static", "static_sampled")


def run_worker(args: list[str], devices: int, timeout: int = 600) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def result_of(proc: subprocess.Popen, timeout: int = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory) -> dict:
    """One worker on 8 fake devices: the tiny model on 1x1, 1x8 and 2x4 meshes (8x1: a slow test)."""
    folder = tmp_path_factory.mktemp("mesh") / "ckpt"
    return result_of(run_worker([str(folder), "1x1,1x8,2x4", "--prompts", "2"], devices=8))


# ------------------------------------------------------------------------------ rules


def test_mesh_strings():
    assert parse_mesh(None) == (1, 1)
    assert parse_mesh("2x4") == (2, 4)
    for bad in ("2x", "0x4", "2*4", "ax1"):
        with pytest.raises(UserError, match="DATAxMODEL"):
            parse_mesh(bad)


def test_mesh_larger_than_the_machine_is_a_clear_error():
    with pytest.raises(UserError, match="needs 64 devices, but 1 are visible"):
        make_mesh((8, 8))


def specs(mesh: tuple[int, int], **overrides) -> dict[str, P]:
    hf = tiny_llama_config()
    hf.update(overrides)
    cfg = llama_config_from_hf(hf)
    _, abstract = abstract_llama(cfg, jnp.float32)
    placement = Placement(abstract_mesh(mesh))
    lines = placement.describe(abstract, cfg.head_dim)
    return {line.split(":")[0]: line.split("-> ")[1] for line in lines}


def test_partition_rules_split_whole_heads_and_replicate_what_does_not_divide():
    # 8 heads / 4 KV heads / vocab 256 on 4-way model parallelism: everything big is split
    four = specs((2, 4), vocab_size=256, num_attention_heads=8, num_key_value_heads=4, head_dim=8)
    assert four["layers/0/self_attn/q_proj/weight"] == "P(None, 'model')"
    assert four["layers/0/self_attn/k_proj/weight"] == "P(None, 'model')"
    assert four["layers/0/self_attn/o_proj/weight"] == "P('model',)"
    assert four["layers/0/mlp/gate_proj/weight"] == "P(None, 'model')"
    assert four["layers/0/mlp/down_proj/weight"] == "P('model',)"
    assert four["embed_tokens/weight"] == "P('model',)"
    assert four["lm_head/weight"] == "P(None, 'model')"
    assert four["layers/0/input_layernorm/weight"] == "P()"
    # 8-way: 4 KV heads cannot split (K/V replicated) while Q's 8 heads still do
    eight = specs((1, 8), vocab_size=256, num_attention_heads=8, num_key_value_heads=4, head_dim=8)
    assert eight["layers/0/self_attn/q_proj/weight"] == "P(None, 'model')"
    assert eight["layers/0/self_attn/k_proj/weight"] == "P()"
    # q_proj has 64 columns, which 8 divides, but 4 heads of 16 do not split 8 ways: replicated
    gqa = specs((1, 8), num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    assert gqa["layers/0/self_attn/q_proj/weight"] == "P()"
    assert gqa["embed_tokens/weight"] == "P()"  # vocab 257
    # data parallelism never splits parameters
    assert set(specs((8, 1)).values()) == {"P()"}


# -------------------------------------------------------------------- 8 fake devices


@pytest.mark.parametrize("mesh", ["1x8", "2x4"])
def test_sharded_generation_is_token_identical_to_one_device(eight_devices, mesh):
    single, sharded = eight_devices["1x1"], eight_devices[mesh]
    assert sharded["devices"] == 8
    for mode in MODES:
        assert sharded[mode] == single[mode], mode
        assert all(len(ids) > 0 for ids in sharded[mode])


def test_meshes_really_split_the_model_and_the_cache(eight_devices):
    assert eight_devices["2x4"]["specs"] == {
        "q_proj": "P(None, 'model')", "k_proj": "P(None, 'model')",
        "embed": "P('model',)", "cache_batch8": "P('data', 'model')",
    }
    assert eight_devices["1x8"]["specs"]["k_proj"] == "P()"  # 4 KV heads, 8 devices


@pytest.mark.slow  # ~40 s: its own 8-device worker; 2x4 already runs a data axis beside a model axis
def test_data_parallel_mesh_is_token_identical_to_one_device(tmp_path):
    result = result_of(run_worker([str(tmp_path / "ckpt"), "1x1,8x1", "--prompts", "2"], devices=8))
    for mode in MODES:
        assert result["8x1"][mode] == result["1x1"][mode], mode
    assert result["8x1"]["specs"]["cache_batch8"] == "P('data',)"


def test_sharded_load_never_reads_a_split_tensor_whole(eight_devices):
    """Each device's block is read alone: a tensor split n ways is read in blocks of size/n."""
    # per layer q, o, gate, up, down split (k, v too when the 4 KV heads divide), + embed + lm_head
    for mesh, parts, per_layer in (("1x8", 8, 5), ("2x4", 4, 7)):
        reads = eight_devices[mesh]["reads"]
        split = {name: (largest, full) for name, (largest, full) in reads.items() if largest < full}
        for kind in ("q_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head"):
            names = [n for n in reads if kind in n]
            assert names and all(n in split for n in names), (mesh, kind)
        for name, (largest, full) in split.items():
            assert largest * parts == full, (mesh, name)
        assert len(split) == per_layer * 8 + 2
        assert eight_devices[mesh]["orbax"]["equal"] and eight_devices[mesh]["orbax"]["same_sharding"]
    assert all(largest == full for largest, full in eight_devices["1x1"]["reads"].values())


# ----------------------------------------------------------------- two processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # ~80 s: two spawned processes load and decode; the in-process meshes cover the math
def test_two_processes_with_jax_distributed_agree_with_one(eight_devices, tmp_path):
    """2 processes x 2 CPU devices (gloo collectives), meshes spanning both processes."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [
        run_worker([str(tmp_path / "ckpt"), "2x2,1x4", "--prompts", "2", "--distributed", coordinator, "2", str(i)],
                   devices=2)
        for i in range(2)
    ]
    results = [result_of(p) for p in procs]
    single = eight_devices["1x1"]
    for index, result in enumerate(results):
        assert result["process"] == [index, 2, 4, 2]
        for mesh in ("2x2", "1x4"):
            for mode in MODES:
                assert result[mesh][mode] == single[mode], (index, mesh, mode)
    assert results[0]["1x4"]["specs"]["q_proj"] == "P(None, 'model')"
    # Orbax across both processes: the sharded head saved and restored. 9 of its tensors are split
    # 4 ways (fc, q, k, v, o, gate, up, down, lm_head); norms and d2t are replicated.
    for result in results:
        assert result["1x4"]["orbax"] == {"equal": True, "same_sharding": True, "split_leaves": 9}


# ------------------------------------------------------------------------ the CLI


@pytest.mark.slow  # ~40 s: the CLI path of what the in-process mesh tests check
def test_generate_cli_mesh_matches_one_device(tmp_path):
    """`generate --mesh 2x4` on 8 fake devices prints the tokens of the unsharded run, in AR
    and static modes; asking for more devices than exist is one error line."""
    from resps_jax.models.config import read_llama_config
    from resps_jax.models.loading import save_eagle3
    from resps_jax.models.tiny import ensure_tiny_checkpoint, random_pair

    cache = tmp_path / "cache"
    folder = ensure_tiny_checkpoint(cache / "tiny")
    _, head = random_pair(read_llama_config(folder), seed=3)
    save_eagle3(head, tmp_path / "head")
    env = dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    base = [sys.executable, "-m", "resps_jax.generate", "--model", "tiny", "--draft", str(tmp_path / "head"),
            "--max-new-tokens", "12", "--json", "--no-chat", "--prompt", "hello there", "sharded world"]

    def tokens(*extra: str) -> list[list[int]]:
        proc = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return [json.loads(line)["token_ids"] for line in proc.stdout.splitlines()]

    for mode in ("ar", "static"):
        single = tokens("--mode", mode)
        assert len(single) == 2 and all(single)
        assert tokens("--mode", mode, "--mesh", "2x4") == single, mode
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    proc = subprocess.run([*base, "--mesh", "2x4"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: mesh 2x4 needs 8 devices, but 2 are visible "
        "(on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices)"
    ]


def test_distributed_settings_are_checked_before_joining(monkeypatch):
    """Half-given settings are clear errors; nothing given means a single process."""
    from ml_collections import ConfigDict

    from resps_jax import distributed

    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.agree((8, 3, 2)) == (8, 3, 2) and distributed.agree(5) == 5  # one process: identity
    config = ConfigDict({"distributed": {"coordinator_address": "127.0.0.1:1", "num_processes": 2, "process_id": -1}})
    with pytest.raises(UserError, match="without the process count and id"):
        distributed.initialize_from_config(config)
    config.distributed.process_id = 2
    with pytest.raises(UserError, match="process id 2 is outside 0..1"):
        distributed.initialize_from_config(config)
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(UserError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.initialize()
