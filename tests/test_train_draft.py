"""train_draft end to end on configs/tiny.py: official-format output, resume, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resps_jax.models.config import read_llama_config
from resps_jax.models.loading import load_eagle3

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "resps_jax.train_draft", "--config", str(REPO / "configs" / "tiny.py"), *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    result = run([], cache)
    assert result.returncode == 0, result.stderr[-2000:]
    return cache, result


def test_writes_an_official_format_head(trained):
    cache, result = trained
    workdir = cache / "runs" / "tiny"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 4  # 8 prompts, batch 4, 2 epochs
    assert len(summary["heldout_top1_by_step"]) == 3
    head = load_eagle3(workdir / "draft", read_llama_config(cache / "tiny" / "tiny-seed0"))
    assert head.cfg.draft_vocab_size == 200
    used = np.arange(200) + np.asarray(head.d2t[...])
    assert np.all(np.diff(used) > 0) and used.max() < 257
    report = json.loads((workdir / "draft_report.json").read_text())
    assert report["train_prompts"] == 8 and report["heldout_prompts"] == 5
    assert report["assistant_tokens"] > 0
    lines = (workdir / "distill" / "train-24.jsonl").read_text().splitlines()
    assert len(lines) == 8 and all(len(json.loads(x)["answer_ids"]) <= 24 for x in lines)


def test_rerun_refuses_to_overwrite_then_resumes(trained):
    cache, _ = trained
    again = run([], cache)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [line for line in again.stderr.strip().splitlines() if line.startswith("error: ")]
    assert "--resume" in again.stderr
    resumed = run(["--resume", "--config.draft.epochs=3"], cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step 4" in resumed.stdout
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 6
    # the self-distilled answers were reused, not regenerated
    assert "self-distilling answers" not in resumed.stderr.replace("0/0", "")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--config.draft.no_such_key=1"], "no_such_key"),
        (["--config.draft.lr=fast"], "fast"),
        (["--config.draft.vocab_size=100000"], "100000"),
    ],
)
def test_bad_config_is_one_error_line(tmp_path, args, needle):
    result = run(args, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_init_from_continues_an_earlier_head_from_its_step(trained, tmp_path):
    cache, _ = trained
    first = cache / "runs" / "tiny"
    args = [f"--config.workdir={tmp_path / 'continued'}", f"--config.draft.init_from={first / 'draft'}",
            "--config.draft.start_step=3", "--config.draft.epochs=4"]
    result = run(args, cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 8  # five steps: 3 -> 8 of 8
    # its new optimizer warms up again and decays over its own 5 steps (optax counts updates from
    # 0): a schedule over all 8 would still be at 0.775x lr on the last step, this one is at 0.325x
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "continued" / "train_draft.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 7.75e-4, 3.25e-4], rel=1e-5)
    before = json.loads((tmp_path / "continued" / "draft_report.json").read_text())
    earlier = json.loads((first / "draft_report.json").read_text())
    assert before["init_from"] == str(first / "draft") and before["start_step"] == 3
    assert before["schedule"] == {"lr": 1e-3, "warmup_steps": 2, "from_step": 3, "to_step": 8}
    # the continued run starts from the earlier head itself: same held-out metrics before its first step
    for key, value in earlier["heldout_after"].items():
        assert before["heldout_before"][key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.slow  # ~20 s: a second continued run; test_init_from_continues_an_earlier_head_from_its_step covers init_from
def test_a_continued_head_keeps_its_vocabulary_on_other_sources(trained, tmp_path):
    """Mixing ShareGPT text into a head trained on distilled rows would build another draft
    vocabulary from the rows; the continued head keeps its own instead of being refused."""
    cache, _ = trained
    first = cache / "runs" / "tiny" / "draft"
    workdir = tmp_path / "mixed"
    args = [f"--config.workdir={workdir}", f"--config.draft.init_from={first}", "--config.draft.start_step=3",
            "--config.draft.sources=distill,text", "--config.draft.text_max=8"]
    result = run(args, cache)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((workdir / "draft_report.json").read_text())
    assert report["train_prompts"] == 16  # 8 distilled + 8 text rows
    target_cfg = read_llama_config(cache / "tiny" / "tiny-seed0")
    before, after = load_eagle3(first, target_cfg), load_eagle3(workdir / "draft", target_cfg)
    np.testing.assert_array_equal(np.asarray(after.d2t[...]), np.asarray(before.d2t[...]))


@pytest.mark.parametrize("extra, needle", [
    (["--config.draft.vocab_size=150"], "differs"),
    (["--config.draft.start_step=4"], "start_step 4"),
])
def test_init_from_refuses_a_head_it_cannot_continue(trained, tmp_path, extra, needle):
    cache, _ = trained
    args = [f"--config.workdir={tmp_path / 'w'}", f"--config.draft.init_from={cache / 'runs' / 'tiny' / 'draft'}", *extra]
    result = run(args, cache)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], result.stderr[-2000:]
