"""`python -m resps_jax.evaluate` on configs/tiny.py: records, resume without recomputing, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

METHODS = "ar;ar_again;static:ar;static:8,3,2"


def evaluate(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESPS_JAX_CACHE=str(cache), JAX_PLATFORMS="cpu", RESPS_JAX_NO_XLA_CACHE="1")
    return subprocess.run([sys.executable, "-m", "resps_jax.evaluate", "--config", "tiny", *args],
                          capture_output=True, text=True, env=env, cwd=cache, timeout=600)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    cache = tmp_path_factory.mktemp("eval")
    result = evaluate(cache, "--questions", "1", "--benchmarks", "mt_bench,gsm8k", "--methods", METHODS)
    assert result.returncode == 0, result.stderr[-3000:]
    return cache


def test_one_record_per_question_turn_method_and_a_report(evaluated):
    report = evaluated / "runs" / "tiny" / "report"
    records = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    keys = {(r["benchmark"], r["turn"], r["method"]) for r in records}
    # MT-Bench asks both turns; GSM8K has one
    assert len(records) == len(keys) == 3 * 4
    assert {k[:2] for k in keys} == {("mt_bench", 0), ("mt_bench", 1), ("gsm8k", 0)}
    assert all(r["identical_to_ar"] for r in records)  # greedy speculative output is AR's
    assert all(len(r["accepted"]) == r["steps"] for r in records if r["method"].startswith("static"))
    text = (report / "report.md").read_text()
    assert "## Speed" in text and "static:8,3,2" in text and (report / "speedup.png").is_file()


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
