"""`python -m resps_jax.evaluate` on configs/tiny.py: records, resume without recomputing, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

METHODS = "ar;ar_again;static:ar;static:8,3,2;ema;ucb@4"


def evaluate(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "resps_jax.evaluate", "--config", "tiny", *args],
                          capture_output=True, text=True, env=env, cwd=cache, timeout=600)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("eval")
    result = evaluate(cache, "--questions", "1", "--benchmarks", "mt_bench,gsm8k", "--methods", METHODS)
    assert result.returncode == 0, result.stderr[-3000:]
    (cache / "evaluate.stdout").write_text(result.stdout)
    return cache


def test_one_record_per_question_turn_method_and_a_report(evaluated):
    report = evaluated / "runs" / "tiny" / "report"
    records = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    keys = {(r["benchmark"], r["turn"], r["method"]) for r in records}
    # MT-Bench asks both turns; GSM8K has one
    assert len(records) == len(keys) == 3 * 6
    assert {k[:2] for k in keys} == {("mt_bench", 0), ("mt_bench", 1), ("gsm8k", 0)}
    assert all(r["identical_to_ar"] for r in records)  # greedy speculative output is AR's
    assert all(len(r["accepted"]) == r["steps"] for r in records if r["method"].startswith("static"))
    text = (report / "report.md").read_text()
    assert "## Speed" in text and "static:8,3,2" in text and (report / "speedup.png").is_file()
    # the adaptive baselines: calibrated once on a training prompt, deciding every 8 (ema, the
    # config's interval_eval) or 4 (ucb@4) steps over the config's actions
    calibration = json.loads((report / "calibration.json").read_text())
    assert calibration["actions"] == ["ar", "3,1,1", "8,3,2", "16,4,4"]
    assert len(calibration["relative_cost"]) == len(calibration["tokens_per_step"]) == 4
    for method, interval in (("ema", 8), ("ucb@4", 4)):
        mine = [r for r in records if r["method"] == method]
        assert all(set(r["actions"]) <= set(calibration["actions"]) for r in mine)
        assert all(len(r["actions"]) == -(-r["steps"] // interval) for r in mine), method


def test_a_run_ends_with_the_speed_table_and_the_report_path(evaluated):
    """What `make demo` ends with: report.md's speed table on the terminal, then where the rest is."""
    out = (evaluated / "evaluate.stdout").read_text().strip().splitlines()
    report = evaluated / "runs" / "tiny" / "report" / "report.md"
    assert out[-1] == f"Full report: {report}"
    table = [line for line in out if line.startswith("|")]
    assert len(table) == 2 + len(METHODS.split(";")) and "\n".join(table) in report.read_text()


def test_speed_summary_is_the_reports_own_table(tmp_path):
    """On a real SmolLM2 evaluation (docs/results): the printed table is report.md's, line for line."""
    import shutil

    from resps_jax.evaluation.report import speed_summary, write_report

    shutil.copy(Path(__file__).resolve().parents[1] / "docs/results/eval/policy-v5/results.jsonl", tmp_path)
    text = Path(write_report(tmp_path)).read_text()
    summary = speed_summary(tmp_path).splitlines()
    assert summary[0].startswith("## Speed") and summary[-1] == f"Full report: {tmp_path / 'report.md'}"
    table = "\n".join(summary[:-2])
    assert table in text and table.count("\n| ") >= 5  # heading, and a row per method


def test_interrupted_run_resumes_without_recomputing(evaluated):
    results = evaluated / "runs" / "tiny" / "report" / "results.jsonl"
    lines = results.read_text().splitlines()
    kept = lines[:-3]  # as if the run died before the last question's records were written
    results.write_text("\n".join(kept) + "\n")
    again = evaluate(evaluated, "--questions", "1", "--benchmarks", "mt_bench,gsm8k", "--methods", METHODS, "--no-report")
    assert again.returncode == 0, again.stderr[-3000:]
    after = results.read_text().splitlines()
    assert after[: len(kept)] == kept  # finished records untouched
    redone = [json.loads(x) for x in after[len(kept):]]
    last = json.loads(lines[-1])
    assert len(redone) == 3 and {(r["benchmark"], r["turn"]) for r in redone} == {(last["benchmark"], last["turn"])}
    assert json.loads(again.stdout.strip().splitlines()[-1])["turns"] == 3


def test_malformed_question_file_is_one_error_naming_file_and_line(tmp_path):
    bad = tmp_path / "questions.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["What is 2+2?"]}\n{"question_id": 2, "turns": "not a list"}\n')
    result = evaluate(tmp_path, "--question-file", str(bad), "--methods", "ar")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{bad}:2" in lines[0], result.stderr[-2000:]
    unknown = evaluate(tmp_path, "--methods", "ar;static:9,9,9")
    assert unknown.returncode == 2 and "static:9,9,9" in unknown.stderr


def _write_run(run: Path, speeds: dict[str, tuple[float, float]], rewards: list[float]) -> None:
    """A run folder as train + evaluate leave it: report/results.jsonl (one gsm8k turn per method,
    128 tokens in `seconds`) and train_log.jsonl (one turn per question)."""
    (run / "report").mkdir(parents=True)
    records = [{"benchmark": b, "question_id": 1, "turn": 0, "method": m, "tokens": 128, "seconds": 128 / tps,
                "tokens_per_second": tps} for m, pair in speeds.items() for b, tps in zip(("gsm8k", "sum"), pair)]
    (run / "report" / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    turns = [{"type": "turn", "question": q, "actions": ["ar" if q % 2 else "4,2,2"], "rewards": [r]}
             for q, r in enumerate(rewards)]
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(t) for t in turns) + "\n")


def test_ablation_table_sets_each_runs_policy_against_its_own_ar(tmp_path):
    from resps_jax.evaluation.report import ablation_table
    from resps_jax.report import main

    _write_run(tmp_path / "smollm2", {"ar": (20.0, 10.0), "resps": (22.0, 9.0), "resps_argmax": (24.0, 10.0)},
               rewards=[0.5] * 60 + [1.0] * 50)
    _write_run(tmp_path / "smollm2-state_mean", {"ar": (10.0, 5.0), "resps": (5.0, 5.0)}, rewards=[0.8, 0.6, 0.7])
    lines = ablation_table([tmp_path / "smollm2", tmp_path / "smollm2-state_mean"])
    assert lines[0].split("|")[6:10] == [" method ", " gsm8k ", " sum ", " mean "]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    # 110 questions, the last 50 all at reward 1.0, half of them `ar` (each turn's only decision,
    # so its first: 4,2,2 from question 60 on, counted first on the tie); gsm8k 22/20, sum 9/10,
    # mean = mean tok/s over benchmarks (15.5) / AR's (15.0)
    assert cells[0] == ["smollm2", "110", "1.000", "50%", "4,2,2 50%", "resps", "1.10x", "0.90x", "1.03x"]
    assert cells[1] == ["", "", "", "", "", "resps_argmax", "1.20x", "1.00x", "1.13x"]
    assert cells[2] == ["smollm2-state_mean", "3", "0.700", "33%", "4,2,2 67%", "resps", "0.50x", "1.00x", "0.67x"]
    assert cells[3][5:] == ["resps_argmax", "-", "-", "-"]
    with pytest.raises(Exception, match="no report/results.jsonl"):
        main(["--ablations", str(tmp_path)])


def test_report_compares_the_policy_with_the_grid_search_pick(evaluated, tmp_path):
    import shutil

    from resps_jax.evaluation.report import write_report

    report = tmp_path / "report"
    shutil.copytree(evaluated / "runs" / "tiny" / "report", report)
    records = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    for r in [r for r in records if r["method"] == "static:8,3,2"]:  # the policy: 8,3,2 at half the time
        records.append(dict(r, method="resps", seconds=r["seconds"] / 2))
    (report / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (report / "best_static.json").write_text(json.dumps(
        {"action": "8,3,2", "tokens_per_second": {"ar": 30.0, "8,3,2": 31.5}, "prompts": 3, "source": "builtin"}))
    text = Path(write_report(report)).read_text()
    assert "Grid search (3 builtin prompts, never benchmarks) picked static:8,3,2: ar 30.0, 8,3,2 31.5 tok/s." in text
    assert "- Overall: resps / the grid search's pick (static:8,3,2, chosen on training prompts) = 2.000x" in text


def test_plain_ar_stands_for_static_ar_when_the_policy_can_choose_ar(evaluated, tmp_path):
    """A run without `static:ar` must not call a losing tree the best static action when the
    policy's own set holds `ar` (a report of 2026-12-02 did, before 350bac4)."""
    import shutil

    from resps_jax.evaluation.report import write_report

    for actions, listed in ((["ar", "8,3,2"], "static:8,3,2, ar"), (["8,3,2"], "static:8,3,2)")):
        report = tmp_path / "-".join(actions) / "report"
        shutil.copytree(evaluated / "runs" / "tiny" / "report", report)
        records = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
        records = [r for r in records if r["method"] != "static:ar"]
        records += [dict(r, method="resps", actions=actions) for r in records if r["method"] == "static:8,3,2"]
        (report / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        text = Path(write_report(report)).read_text()
        assert f"of those run: {listed}" in text, text


def test_grid_pick_runs_once_when_the_static_methods_already_hold_it():
    from resps_jax.evaluation.methods import method_names
    from configs.tiny import get_config

    config = get_config()
    assert "best_static" not in method_names(config, False, "8,3,2")  # static:8,3,2 is run anyway
    assert method_names(config, False, "8,4,2")[-1] == "best_static"  # a pick from another action set


def test_grid_search_times_every_action_on_training_prompts_and_saves_its_pick(evaluated):
    result = evaluate(evaluated, "--grid-search", "--config.actions.list=ar;8,3,2")  # two actions: compiles
    assert result.returncode == 0, result.stderr[-3000:]
    pick = json.loads((evaluated / "runs" / "tiny" / "report" / "best_static.json").read_text())
    assert set(pick["tokens_per_second"]) == {"ar", "8,3,2"}
    assert pick["action"] == max(pick["tokens_per_second"], key=pick["tokens_per_second"].get)
    assert pick["source"] == "builtin" and pick["prompts"] == 3


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="Linux /proc only")
def test_memory_map_guard_reads_this_process_against_the_kernel_limit():
    from resps_jax.evaluation.runner import memory_maps_near_limit

    assert memory_maps_near_limit(0.0)  # any process holds some mappings
    assert not memory_maps_near_limit(1.0)  # and this one is far from vm.max_map_count


def test_switching_ceiling_is_what_a_per_interval_oracle_over_ar_and_one_tree_reaches():
    from resps_jax.evaluation.report import switching_ceiling, switching_gain

    # AR: 0.1 s per token. The tree: 0.2 s per step; its first 2-step interval commits 3 tokens each
    # step (0.4 s against AR's 0.6: the tree), its second 1 token each (0.4 s against 0.2: AR).
    ar = {"tokens": 9, "seconds": 0.9, "steps": 8, "accepted": []}
    tree = {"tokens": 9, "seconds": 0.8, "steps": 4, "accepted": [3, 3, 1, 1]}
    ar_seconds, oracle_seconds = switching_gain(ar, tree, interval=2)
    assert (round(ar_seconds, 6), round(oracle_seconds, 6)) == (0.8, 0.6)
    assert [round(v, 6) for v in switching_gain(ar, tree, interval=4)] == [0.8, 0.8]  # one interval: no gain
    records = [dict(ar, benchmark="gsm8k", question_id=1, turn=0, method="ar"),
               dict(tree, benchmark="gsm8k", question_id=1, turn=0, method="static:4,2,2"),
               dict(ar, benchmark="gsm8k", question_id=1, turn=0, method="static:ar", accepted=[1] * 8)]
    lines = switching_ceiling(records, ["gsm8k"], interval=2)
    assert lines[-1] == "| static:4,2,2 | 1.333x | 1.333x |" and lines[-2].startswith("|---")  # `static:ar` is no tree


def test_the_oracle_over_actions_takes_each_interval_from_the_action_fastest_there():
    from resps_jax.evaluation.report import oracle_ceiling, oracle_over_actions

    # 8 tokens after the prefill's. AR: 0.1 s a token. A tree at 0.2 s a step commits 3, 3, 1, 1; a
    # chain at 0.15 s a step commits 1, 1, 1, 1, 2, 2: the tree pays first, the chain later.
    ar = {"tokens": 9, "seconds": 0.9, "steps": 8, "accepted": []}
    tree = {"tokens": 9, "seconds": 0.8, "steps": 4, "accepted": [3, 3, 1, 1]}
    chain = {"tokens": 9, "seconds": 0.9, "steps": 6, "accepted": [1, 1, 1, 1, 2, 2]}
    turn = {"ar": ar, "static:4,2,2": tree, "static:ngram:2": chain}
    ar_seconds, oracle = oracle_over_actions(turn, interval=2)
    # the tree's two steps to position 6 (0.4 s), then the chain's step covering 6 ends at 8 (0.15 s)
    assert round(ar_seconds, 6) == 0.8 and round(oracle, 6) == 0.55
    assert round(oracle_over_actions(turn, interval=100)[1], 6) == 0.8  # one decision: the best whole run
    records = [dict(r, benchmark="gsm8k", question_id=1, turn=0, method=m) for m, r in turn.items()]
    lines = oracle_ceiling(records, ["gsm8k"], intervals=(2,))
    assert lines[-2] == "| best static action | 1.000x | 1.000x |"  # 0.8 s against AR's 0.8
    assert lines[-1] == "| oracle, every 2 steps | 1.455x | 1.455x |"
    assert oracle_ceiling(records[:2], ["gsm8k"]) == []  # one static action: switching_ceiling's table
