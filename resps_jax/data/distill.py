"""Self-distillation: the target answers the training prompts once, and the answers are kept.

EAGLE-3 recommends training the head on the target's own outputs. Answers are generated
with greedy AR decoding in batches and appended to a jsonl file as they finish, so an
interrupted run resumes where it stopped and a finished one is never regenerated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm


def distill_answers(
    prompts: list[str],
    path: Path,
    generate_batch: Callable[[list[str]], list[list[int]]],
    batch_size: int,
    desc: str = "self-distilling answers",
) -> dict[str, list[int]]:
    """{prompt: answer token ids} for every prompt, generating only what `path` lacks."""
    done: dict[str, list[int]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["prompt"]] = record["answer_ids"]
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out, tqdm(total=len(todo), desc=desc, unit="prompt", disable=not todo) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            for prompt, answer in zip(chunk, generate_batch(chunk)):
                done[prompt] = answer
                out.write(json.dumps({"prompt": prompt, "answer_ids": answer}) + "\n")
            out.flush()
            bar.update(len(chunk))
    return {p: done[p] for p in prompts}
