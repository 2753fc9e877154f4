"""The five held-out benchmark question sets of the paper, shipped as package data.

The files are the EAGLE evaluation files (FastChat question format, see DATA_LICENSES).
They are read through `importlib.resources` so the same code works from a checkout, an
editable install and a wheel. Nothing here may feed training: `prompts.py` checks every
training source against `benchmark_first_turns()` and refuses overlaps.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from resps_jax.errors import UserError

BENCHMARKS: tuple[str, ...] = ("mt_bench", "humaneval", "gsm8k", "alpaca", "sum")


@dataclass(frozen=True)
class Question:
    """One benchmark question: the user turns are asked in order, each after the model's answer."""

    question_id: int | str
    category: str
    turns: tuple[str, ...]
    benchmark: str


def benchmarks_dir() -> Traversable:
    """The shipped benchmarks folder (also used by the training guard to refuse it as a source)."""
    return resources.files("resps_jax.data") / "files" / "benchmarks"


def _parse_lines(lines: Iterable[str], benchmark: str, where: str) -> list[Question]:
    """Parse FastChat question lines; a malformed line is the user's error, named by line number."""
    questions: list[Question] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}:{number}: expected a JSON object, got {type(record).__name__}")
        turns = record.get("turns")
        if (
            not isinstance(turns, list)
            or not turns
            or not all(isinstance(t, str) and t.strip() for t in turns)
        ):
            raise UserError(f"{where}:{number}: 'turns' must be a non-empty list of non-empty strings")
        questions.append(
            Question(
                question_id=record.get("question_id", len(questions)),
                category=str(record.get("category", "")),
                turns=tuple(turns),
                benchmark=benchmark,
            )
        )
    return questions


def load_benchmark(name: str, limit: int | None = None) -> list[Question]:
    """The questions of one shipped benchmark, in file order (first `limit` if given)."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    text = (benchmarks_dir() / f"{name}.jsonl").read_text(encoding="utf-8")
    questions = _parse_lines(text.splitlines(), name, f"{name}.jsonl")
    return questions if limit is None else questions[:limit]


def load_question_file(path: str | Path, limit: int | None = None) -> list[Question]:
    """Questions from a user-supplied FastChat-format jsonl; the benchmark name is the file stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"question file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read question file {path}: {err}") from None
    questions = _parse_lines(text.splitlines(), path.stem, str(path))
    if not questions:
        raise UserError(f"question file {path} holds no questions")
    return questions if limit is None else questions[:limit]


@functools.cache
def benchmark_first_turns() -> frozenset[str]:
    """First turns of all five benchmarks, whitespace-stripped: the held-out set for the guard."""
    return frozenset(q.turns[0].strip() for name in BENCHMARKS for q in load_benchmark(name))
