"""results.jsonl: one record per benchmark x question x turn x method, appended as each
question finishes, so an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

from resps_jax.errors import UserError

RecordKey = tuple[str, str, int, str]  # (benchmark, question id, turn, method)


def record_key(benchmark: str, question_id, turn: int, method: str) -> RecordKey:
    return benchmark, str(question_id), turn, method


def load_done(path: Path) -> dict[RecordKey, dict]:
    """The records already written (none when the file does not exist yet)."""
    done: dict[RecordKey, dict] = {}
    if not path.is_file():
        return done
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{number}: not valid JSON; remove the line to resume") from None
            done[record_key(r["benchmark"], r["question_id"], r["turn"], r["method"])] = r
    return done


def result_record(benchmark: str, question_id, turn: int, method: str, result, ar_ids: list[int] | None) -> dict:
    """A decode's record; `identical_to_ar` compares its tokens with AR's on the same prompt."""
    from resps_jax.decoding.action import format_action

    return {
        "benchmark": benchmark, "question_id": question_id, "turn": turn, "method": method,
        "tokens": result.new_tokens, "seconds": round(result.seconds, 5), "steps": result.steps,
        "tokens_per_second": round(result.tokens_per_second, 3),
        "accepted": result.accepted_per_step,
        "actions": [format_action(a) for a in result.actions],
        "prompt_tokens": result.prompt_tokens,
        "identical_to_ar": ar_ids is None or result.token_ids == ar_ids,
    }
