"""`python -m resps_jax.train` on configs/tiny.py: end to end, kill -9 + resume, bad checkpoints, resps mode."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def env_for(cache: Path) -> dict:
    return dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")


def train(cache: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # a bare config name resolves to configs/ (run from another folder to show it)
    return subprocess.run([sys.executable, "-m", "resps_jax.train", "--config", "tiny", *args], capture_output=True,
                          text=True, env=env_for(cache), cwd=cache, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr[-2000:]


def checkpoint_steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("train")
    result = train(cache)
    assert result.returncode == 0, result.stderr[-3000:]
    return cache, json.loads(result.stdout.strip().splitlines()[-1])


def test_trains_end_to_end_and_compiles_each_piece_once(trained):
    cache, summary = trained
    workdir = cache / "runs" / "tiny"
    assert summary["position"] == 24 and summary["updates"] >= 4
    # 4 actions = 3 TT buckets + ar: the step executables stay within the engine's count over
    # the whole run; the policy forward and the PPO update compile exactly once each
    assert summary["executables"]["intervals"] == 4
    assert summary["executables"]["act"] == 1 and summary["executables"]["update"] == 1
    assert set(summary["actions"]) <= {"ar", "3,1,1", "8,3,2", "16,4,4"} and sum(summary["actions"].values()) > 24
    records = [json.loads(line) for line in (workdir / "train_log.jsonl").read_text().splitlines()]
    turns = [r for r in records if r["type"] == "turn"]
    updates = [r for r in records if r["type"] == "update"]
    assert [r["question"] for r in turns] == list(range(24))
    assert len(updates) == summary["updates"] and all("entropy" in u and "approx_kl" in u for u in updates)
    assert all(len(r["actions"]) == len(r["rewards"]) == len(r["values"]) == len(r["interval_steps"]) > 0
               for r in turns)
    # each interval's parts, from which either reward mode is recomputed (probes/reward_agreement.py)
    # (the turn's first token comes from the prefill, before any interval; so does part of its time)
    assert all(sum(r["interval_tokens"]) == r["tokens"] - 1 and sum(r["interval_steps"]) == r["steps"] for r in turns)
    assert all(0 < sum(r["interval_seconds"]) <= r["seconds"] + 1e-3 for r in turns)
    assert all(u["lr_scale"] == 1.0 for u in updates)  # rl.anneal_lr is off in configs/tiny.py
    assert any(f.name.startswith("events.out.tfevents") for f in (workdir / "tb").iterdir())
    assert checkpoint_steps(workdir)[-1] == 24


def test_training_plot_splits_actions_by_decision_index_per_window(trained, tmp_path):
    cache, _ = trained
    log = cache / "runs" / "tiny" / "train_log.jsonl"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plot_training.py"), str(log),
                             str(tmp_path / "training.png"), "--window", "8"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "training.png").stat().st_size > 10_000
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 0-7", "| 8-15", "| 16-23"]  # 24 questions
    from resps_jax.evaluation.report import decision_windows

    turns = [json.loads(line) for line in log.read_text().splitlines() if '"turn"' in line]
    windows = decision_windows(turns, 8)
    for window, first in zip(windows, (turns[:8], turns[8:16], turns[16:])):
        assert sum(window["shares"]["0"].values()) == pytest.approx(1.0)
        counts = [r["actions"][0] for r in first]
        assert window["shares"]["0"] == pytest.approx({a: counts.count(a) / 8 for a in set(counts)})
        assert window["value0"] == pytest.approx(np.mean([r["values"][0] for r in first]))


def test_generate_resps_mode_is_greedy_lossless_and_lists_actions(trained):
    cache, _ = trained
    policy = str(cache / "runs" / "tiny")
    common = ["--model", "tiny", "--max-new-tokens", "24", "--json", "--prompt", "a story", "--prompt", "the sky"]
    base = [sys.executable, "-m", "resps_jax.generate", *common]
    ar = subprocess.run([*base, "--mode", "ar"], capture_output=True, text=True, env=env_for(cache), timeout=300)
    rs = subprocess.run([*base, "--mode", "resps", "--draft", "random", "--policy", policy, "--interval", "2"],
                        capture_output=True, text=True, env=env_for(cache), timeout=300)
    assert ar.returncode == 0 and rs.returncode == 0, rs.stderr[-2000:]
    ar_rows = [json.loads(x) for x in ar.stdout.splitlines()]
    rs_rows = [json.loads(x) for x in rs.stdout.splitlines()]
    assert len(ar_rows) == len(rs_rows) == 2  # a repeated --prompt adds prompts
    for a, r in zip(ar_rows, rs_rows):
        assert r["token_ids"] == a["token_ids"]
        assert r["actions"] and all(x == "ar" or (isinstance(x, list) and len(x) == 3) for x in r["actions"])
    assert rs_rows[0]["compile_seconds"] > 0 and rs_rows[1]["compile_seconds"] == 0


def test_kill_9_then_resume_continues_at_the_checkpoint(tmp_path):
    args = ["--config.rl.questions=60"]
    proc = subprocess.Popen([sys.executable, "-m", "resps_jax.train", "--config", "tiny", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_for(tmp_path), cwd=tmp_path)
    workdir = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(checkpoint_steps(workdir)) < 2 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = checkpoint_steps(workdir)
    assert steps, "no checkpoint before the kill"
    saved = steps[-1]
    assert saved < 60, "the run finished before it could be killed"
    resumed = train(tmp_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at question {saved}" in resumed.stdout
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["position"] == 60 and summary["turns_this_run"] == 60 - saved
    assert summary["executables"]["act"] == 1 and summary["executables"]["update"] == 1  # none added by the restore
    turns = [json.loads(x) for x in (workdir / "train_log.jsonl").read_text().splitlines()]
    after = [r["question"] for r in turns if r["type"] == "turn"][-summary["turns_this_run"]:]
    assert after == list(range(saved, 60))  # same data position: nothing skipped, nothing repeated


def test_rerun_without_resume_and_bad_checkpoints_are_one_error_line(trained, tmp_path):
    cache, _ = trained
    workdir = cache / "runs" / "tiny"
    one_error_line(train(cache), "--resume")
    one_error_line(train(cache, "--resume", "--config.actions.list=ar;3,1,1"), "action set")
    one_error_line(train(cache, "--resume", "--config.rl.state=mean"), "state size")
    one_error_line(train(cache, "--config.rl.no_such_key=1"), "no_such_key")
    # a corrupt checkpoint: one error line, and nothing in the folder changes
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(cache / "runs", copy / "runs")
    latest = copy / "runs" / "tiny" / "checkpoints" / str(checkpoint_steps(workdir)[-1])
    for f in (latest / "meta").rglob("*"):
        if f.is_file():
            f.write_text("{ not json")
    before = sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in (copy / "runs").rglob("*"))
    one_error_line(train(copy, "--resume"), "checkpoint")
    assert sorted((p.relative_to(copy), p.stat().st_mtime_ns) for p in (copy / "runs").rglob("*")) == before


def test_resume_of_a_finished_run_returns_at_once(trained):
    cache, _ = trained
    before = sorted(p.name for p in (cache / "runs" / "tiny" / "checkpoints").iterdir())
    again = train(cache, "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already trained on 24 questions" in again.stdout
    assert sorted(p.name for p in (cache / "runs" / "tiny" / "checkpoints").iterdir()) == before


@pytest.mark.slow  # ~40 s: the restore path (and its one-executable check) is kill -9 + --resume's, in the default suite
def test_init_from_continues_another_policy_on_the_next_questions(trained, tmp_path):
    cache, source_summary = trained
    source = cache / "runs" / "tiny" / "checkpoints"
    before = sorted((p.relative_to(source), p.stat().st_mtime_ns) for p in source.rglob("*"))
    workdir = tmp_path / "continued"
    result = train(cache, f"--config.workdir={workdir}", f"--config.rl.init_from={source}", "--config.rl.questions=32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "question 24" in result.stdout.splitlines()[0]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["position"] == 32 and summary["turns_this_run"] == 8
    assert summary["updates"] > source_summary["updates"]  # its optimizer and update count go on
    # a restored policy (its key included) compiles its forward and update once, as a fresh one does
    assert summary["executables"]["act"] == 1 and summary["executables"]["update"] == 1
    turns = [json.loads(x) for x in (workdir / "train_log.jsonl").read_text().splitlines()]
    assert [r["question"] for r in turns if r["type"] == "turn"] == list(range(24, 32))  # new questions only
    assert sorted((p.relative_to(source), p.stat().st_mtime_ns) for p in source.rglob("*")) == before
    # nothing left to train, or another network: one line, before any work
    one_error_line(train(cache, f"--config.workdir={tmp_path / 'b'}", f"--config.rl.init_from={source}"),
                   "already trained on 24 questions")
    one_error_line(train(cache, f"--config.workdir={tmp_path / 'c'}", f"--config.rl.init_from={source}",
                         "--config.rl.questions=32", "--config.rl.hidden=8,8"), "network")


def latest_costs(checkpoints: Path) -> dict:
    from resps_jax.rl import checkpoint as ckpt

    mngr = ckpt.manager(checkpoints)
    try:
        return ckpt.read_meta(mngr, mngr.latest_step(), checkpoints)["costs"]
    finally:
        mngr.close()


def test_costs_from_trains_on_another_runs_step_costs(trained, tmp_path):
    cache, _ = trained
    source = cache / "runs" / "tiny"
    workdir = tmp_path / "shared"
    result = train(cache, f"--config.workdir={workdir}", f"--config.rl.costs_from={source}", "--config.rl.questions=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step costs from" in result.stdout
    # the new run's modeled reward used the source's timing, not one of its own
    assert latest_costs(workdir / "checkpoints") == latest_costs(source / "checkpoints")
    # another action set: its costs would be read against the wrong actions, so one line, before any work
    one_error_line(train(cache, f"--config.workdir={tmp_path / 'other'}", f"--config.rl.costs_from={source}",
                         "--config.actions.list=ar;3,1,1"), "are not this run's")
    assert not (tmp_path / "other" / "checkpoints").exists() or not any((tmp_path / "other" / "checkpoints").iterdir())


def test_reward_agreement_recomputes_the_logged_reward_from_each_intervals_parts(trained):
    cache, _ = trained
    workdir = cache / "runs" / "tiny"  # trained on the measured reward (configs/tiny.py)
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "probes" / "reward_agreement.py"), str(workdir)],
                            capture_output=True, text=True, env=env_for(cache), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| action")}
    turns = [r for r in map(json.loads, (workdir / "train_log.jsonl").read_text().splitlines()) if r["type"] == "turn"]
    for action, row in rows.items():
        logged = [w for t in turns for a, w in zip(t["actions"], t["rewards"]) if a == action]
        assert int(row[1]) == len(logged)
        # its measured column is the reward training used, recomputed from tokens and seconds
        assert float(row[2]) == pytest.approx(np.mean(logged), rel=0.02, abs=2e-3)
    assert "first decision, last 50 questions, tiny (measured)" in result.stdout


def evaluate(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resps_jax.evaluate", "--config", "tiny", *args],
                          capture_output=True, text=True, env=env_for(cache), cwd=cache, timeout=600)


@pytest.mark.slow  # ~25 s: Fig. 3's sweep is evaluate with resps@N methods, each a resps run the default suite covers
def test_interval_sweep_records_each_n_and_plots_fig3(trained):
    cache, _ = trained
    result = evaluate(cache, "--questions", "1", "--benchmarks", "gsm8k", "--methods", "ar",
                      "--interval-sweep", "1,4")
    assert result.returncode == 0, result.stderr[-3000:]
    report = cache / "runs" / "tiny" / "report"
    records = {r["method"]: r for r in map(json.loads, (report / "results.jsonl").read_text().splitlines())}
    assert set(records) == {"ar", "resps@1", "resps@4"}
    assert all(r["identical_to_ar"] for r in records.values())
    # the policy decides every N steps: one action per step at N=1, one per 4 steps at N=4
    assert len(records["resps@1"]["actions"]) == records["resps@1"]["steps"]
    assert len(records["resps@4"]["actions"]) == -(-records["resps@4"]["steps"] // 4)
    text = (report / "report.md").read_text()
    assert "## Cache-interval sweep" in text and (report / "interval_sweep.png").is_file()
    bad = evaluate(cache, "--methods", "ar", "--interval-sweep", "0,5")
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr


@pytest.mark.slow  # ~40 s: the Table-8 profiling mode; the default suite's evaluate tests run the same engine
def test_profile_times_each_piece_of_every_tree_step(trained):
    cache, _ = trained
    result = evaluate(cache, "--questions", "1", "--benchmarks", "gsm8k", "--profile")
    assert result.returncode == 0, result.stderr[-3000:]
    report = cache / "runs" / "tiny" / "report"
    rows = json.loads((report / "profile.json").read_text())
    assert [r["action"] for r in rows] == ["3,1,1", "8,3,2", "16,4,4"]  # the tiny set's trees (no baselines)
    for row in rows:
        ms = row["ms"]
        assert all(ms[p] > 0 for p in ("drafting", "verification", "tree_management", "policy", "step", "ar_step"))
        assert ms["policy"] < ms["step"]  # one call spread over the interval
    assert "Table 8" in (report / "report.md").read_text()


def test_a_shipped_policy_loads_by_name_and_is_never_rewritten(trained, tmp_path, monkeypatch):
    from resps_jax import policies
    from resps_jax.errors import UserError
    from resps_jax.policies import ship
    from resps_jax.rl.checkpoint import load_policy

    cache, summary = trained
    monkeypatch.setattr(ship, "POLICIES_DIR", tmp_path / "policies")
    monkeypatch.setattr(policies, "POLICIES_DIR", tmp_path / "policies")
    monkeypatch.setitem(policies.SHIPPED_POLICIES, "tiny", "tiny-v1")
    with pytest.raises(UserError, match="no tiny policy ships"):
        load_policy("tiny")
    args = ["--run", str(cache / "runs" / "tiny"), "--version", "tiny-v1", "--notes", "Evaluated: nothing yet."]
    assert ship.main(args) == 0
    folder = tmp_path / "policies" / "tiny-v1"
    card = (folder / "README.md").read_text()
    for fact in ("24 ShareGPT questions", f"{summary['updates']} PPO updates", "Step costs measured at start-up",
                 "Evaluated: nothing yet.", "`--policy smollm2`", "draft head `random`",
                 "per 50 questions (blocks from question 0, as logged)"):
        assert fact in card, fact
    agent, meta = load_policy("tiny")
    trained_agent, _ = load_policy(str(cache / "runs" / "tiny"))
    assert meta["position"] == 24 and agent.updates == trained_agent.updates
    obs = np.random.default_rng(0).normal(size=agent.cfg.obs_dim).astype(np.float32)
    assert agent.probabilities(obs).tolist() == trained_agent.probabilities(obs).tolist()
    exact, _ = load_policy("tiny-v1")  # the exact version loads by name too (what an older result used)
    assert exact.probabilities(obs).tolist() == agent.probabilities(obs).tolist()
    before = sorted(p.stat().st_mtime_ns for p in folder.rglob("*"))
    with pytest.raises(UserError, match="never rewritten"):
        ship.main(args)
    assert sorted(p.stat().st_mtime_ns for p in folder.rglob("*")) == before


@pytest.mark.parametrize("version", ["smollm2-v1", "smollm2-v2", "smollm2-v3", "smollm2-v4"])
def test_a_policy_version_that_left_the_package_says_which_commit_keeps_it(version, tmp_path, monkeypatch):
    from resps_jax.errors import UserError
    from resps_jax.policies import POLICIES_DIR, REMOVED_POLICIES
    from resps_jax.rl.checkpoint import load_policy

    monkeypatch.chdir(tmp_path)  # no local folder of that name
    commit = REMOVED_POLICIES[version]
    with pytest.raises(UserError, match="removed from the package") as err:
        load_policy(version)
    assert f"git checkout {commit} -- resps_jax/policies/{version}" in str(err.value)
    assert not (POLICIES_DIR / version).exists()  # the package ships the current policy only
    if (REPO / ".git").exists():  # the named commit really holds it
        listed = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", commit,
                                 f"resps_jax/policies/{version}"], capture_output=True, text=True).stdout
        assert "README.md" in listed and "checkpoints/" in listed


def test_the_policy_shipped_for_smollm2_matches_its_config():
    """The committed policy (resps_jax/policies/) restores against the action set `make demo`
    continues it with (the Makefile's POLICY_ACTIONS: its own, a subset of configs/smollm2.py's
    since the n-gram actions joined that) and the config's state and network."""
    from resps_jax.config_cli import parse_config_args, resolve_config_argv
    from resps_jax.policies import POLICIES_DIR, shipped_policy_folder
    from resps_jax.rl.actions import config_actions, parse_actions
    from resps_jax.rl.checkpoint import check_compatible, load_policy, locate

    if shipped_policy_folder("smollm2") is None:
        pytest.skip("no SmolLM2 policy ships in this checkout")
    config = parse_config_args(resolve_config_argv(["--config", "smollm2"]))[0]
    makefile = (REPO / "Makefile").read_text()
    actions = parse_actions(re.search(r"^POLICY_ACTIONS := (.+)$", makefile, re.M).group(1))
    assert set(actions) <= set(config_actions(config.actions))
    assert f'"--config.actions.list=$(POLICY_ACTIONS)"' in makefile  # the demo's train and evaluate pass it
    hidden = tuple(int(w) for w in config.rl.hidden.split(","))
    # the default name, and the exact version it stands for (the only one the package ships)
    loaded = {name: load_policy(name) for name in ["smollm2", *sorted(f.name for f in POLICIES_DIR.glob("smollm2-v*"))]}
    assert len(loaded) == 2
    for name, (_, meta) in loaded.items():
        check_compatible(meta, actions, 3 * 576, hidden, locate(name)[0])
    agent, meta = loaded["smollm2"]
    probs = agent.probabilities(np.zeros(agent.cfg.obs_dim, np.float32))
    assert probs.shape == (len(meta["actions"]),) and abs(float(probs.sum()) - 1) < 1e-5
    # `make demo` continues it (rl.init_from=smollm2) up to DEMO_QUESTIONS: past what it saw
    demo_questions = int(re.search(r"^DEMO_QUESTIONS \?= (\d+)$", (REPO / "Makefile").read_text(), re.M).group(1))
    assert demo_questions > int(meta["position"])
