"""Prompt text -> token ids, through the tokenizer's own chat template."""

from __future__ import annotations

import json
from pathlib import Path

from resps_jax.errors import UserError


def encode_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text)["input_ids"])


def encode_conversation(tokenizer, turns: list[str], answers: list[str], chat: bool = True) -> list[int]:
    """The prompt for turn len(answers): earlier user turns with the model's own answers, then
    the next user turn (MT-Bench's second turn sees the first answer), in the chat template."""
    if not answers:
        return encode_prompt(tokenizer, turns[0], chat)
    if not (chat and getattr(tokenizer, "chat_template", None)):
        text = "\n\n".join(part for pair in zip(turns, answers) for part in pair) + "\n\n" + turns[len(answers)]
        return list(tokenizer(text)["input_ids"])
    messages = []
    for user, assistant in zip(turns, answers):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": turns[len(answers)]})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(tokenizer, config_eos: tuple[int, ...]) -> tuple[int, ...]:
    """Every id that ends a turn: the config's EOS ids plus the tokenizer's."""
    ids = list(config_eos)
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(sorted(set(ids)))


def read_prompts_jsonl(path: str) -> list[str]:
    """First user turn of each line, in any record format `data.prompts` reads.

    Unlike training sources, benchmark files are welcome here: generation is evaluation.
    """
    from resps_jax.data.prompts import record_to_conversation

    file = Path(path)
    if file.is_dir():
        raise UserError(f"--prompts {file} is a folder: give a JSONL file, one prompt record per line")
    if not file.is_file():
        raise UserError(f"prompts file does not exist: {file}")
    prompts = []
    for lineno, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            turns = record_to_conversation(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{file}:{lineno}: not valid JSON ({err})") from None
        if not turns:
            raise UserError(f"{file}:{lineno}: no prompt ('turns', 'conversations', 'prompt', 'instruction' or 'text')")
        prompts.append(turns[0])
    if not prompts:
        raise UserError(f"{file}: no prompts")
    return prompts
