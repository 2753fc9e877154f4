"""Training an EAGLE-3 head for a target, as a library: `train_head` (its CLI:
`python -m resps_jax.train_draft`).

Stages, each cached in the workdir so a rerun or a resume repeats nothing: self-distilled
answers (greedy AR by the target), the draft vocabulary, the frozen target's features and
logits, then training-time-test optimisation under a wall-clock budget with Orbax
checkpoints, and a held-out report (top-1 agreement with the target on benchmark prompts,
never trained on). The head is written in the official format to
<draft.workdir or workdir>/draft/ (config.json + model.safetensors).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from resps_jax.errors import UserError

EVAL_PER_BENCHMARK_DIVISOR = 5  # eval_prompts are spread over the five benchmarks


def _sequences(prompt_ids: list[list[int]], answers: list[list[int]], max_len: int):
    """Right-padded [N, max_len] tokens, assistant-token mask and lengths (truncated to max_len)."""
    n = len(prompt_ids)
    tokens = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), bool)
    lengths = np.zeros((n,), np.int32)
    for row, (p, a) in enumerate(zip(prompt_ids, answers)):
        ids = (p + a)[:max_len]
        tokens[row, : len(ids)] = ids
        mask[row, len(p) : len(ids)] = True
        lengths[row] = len(ids)
    return tokens, mask, lengths


def _target_features(graphdef, params, tokens, used_ids):
    """Frozen target over full sequences: taps [B,T,3H], draft-vocab logits [B,T,Vd], in-vocab [B,T]."""
    from resps_jax.models.cache import KVCache
    from resps_jax.models.llama import causal_mask

    model = nnx.merge(graphdef, params)
    batch, length = tokens.shape
    c = model.cfg
    cache = KVCache.create(c.num_layers, batch, length, c.num_kv_heads, c.head_dim, jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    hidden, taps, _ = model(tokens, positions, cache, causal_mask(batch, length))
    logits = model.logits(hidden)  # [B, T, V]
    in_vocab = jnp.isin(jnp.argmax(logits, -1), used_ids)
    return taps.astype(jnp.float16), logits[..., used_ids].astype(jnp.float16), in_vocab


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def featurize_in_bar(featurize, tokens: np.ndarray, batch: int, desc: str):
    """featurize over all rows in chunks, with a progress bar (the precomputed path)."""
    parts = []
    step = 16 * batch
    for start in tqdm(range(0, len(tokens), step), desc=desc, unit="chunk"):
        parts.append(featurize(tokens[start : start + step]))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _init_head(target, head_cfg, d2t: np.ndarray, from_target: bool, seed: int):
    from resps_jax.models.eagle3 import Eagle3Head

    head = Eagle3Head(head_cfg, rngs=nnx.Rngs(seed))
    head.d2t[...] = jnp.asarray(d2t, jnp.int32)
    if from_target:  # the target's own output layer, restricted to the draft vocabulary
        used = np.arange(d2t.shape[0]) + d2t
        model = target.model
        table = model.embed_tokens.weight[...] if model.lm_head is None else model.lm_head.weight[...].T
        head.lm_head.weight[...] = jnp.asarray(table)[used].T
        head.norm.weight[...] = model.norm.weight[...]
    return head


def _head_to_continue(spec: str, target_cfg, head_cfg):
    """The head named by draft.init_from, checked against the one this run would build. It keeps
    its own draft vocabulary, so it can continue on other sources (e.g. self-distilled rows mixed
    in): their tokens outside that vocabulary are the rows' out-of-vocabulary targets, as ever."""
    from resps_jax.models.loading import load_head

    head = load_head(spec, target_cfg)
    if head.cfg != head_cfg:
        raise UserError(f"draft.init_from {spec!r}: its config differs from this run's head ({head.cfg} vs {head_cfg})")
    return head


@dataclasses.dataclass
class TrainingRows:
    """Stage 1: (prompt ids, answer ids) rows from the configured sources, and held-out prompts."""

    rows: list[tuple[list[int], list[int]]]
    counts: dict[str, int]  # rows per source
    eval_prompts: list[str]
    eval_answers: dict[str, list[int]]


def prompt_ids(d, tok, text: str) -> list[int]:
    """A prompt's ids, kept to its last max_len / 2 tokens so the answer has room."""
    from resps_jax.prompting import encode_prompt

    return encode_prompt(tok, text)[-(d.max_len // 2):]


def training_rows(d, target, engine, eos: tuple[int, ...], workdir: Path) -> TrainingRows:
    """Self-distilled answers (EAGLE-3's recipe) and/or the source's own assistant text scored
    by the target (EAGLE-1's), plus the target's answers to held-out benchmark prompts."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
    from resps_jax.data.distill import distill_answers
    from resps_jax.data.prompts import load_training_dialogues, load_training_prompts
    from resps_jax.decoding.engine import GenerationConfig
    from resps_jax.prompting import encode_prompt

    tok = target.tokenizer
    sources = [name.strip() for name in str(d.sources).split(",") if name.strip()]
    unknown = sorted(set(sources) - {"distill", "text"})
    if unknown or not sources:
        raise UserError(f"draft.sources {d.sources!r}: expected 'distill', 'text' or 'distill,text'")
    per_bench = max(1, d.eval_prompts // EVAL_PER_BENCHMARK_DIVISOR)
    eval_prompts = [q.turns[0] for name in BENCHMARKS for q in load_benchmark(name, limit=per_bench)]

    def answer(prompts: list[str]) -> list[list[int]]:
        ids = [encode_prompt(tok, p) for p in prompts]
        gen = GenerationConfig(max_new_tokens=d.answer_tokens, truncate_prompt=True, cache_len=d.max_len + d.answer_tokens)
        return [r.token_ids for r in engine.generate_batch(ids, gen, eos)]

    distill_dir = workdir / "distill"
    rows: list[tuple[list[int], list[int]]] = []
    counts = {}
    if "distill" in sources:  # (b) the target's own greedy answers (EAGLE-3's recipe; ~60 tok/s here)
        limit = None if d.max_prompts < 0 else d.max_prompts
        with config_source("draft.prompts"):
            train_prompts = [conv[0] for conv in load_training_prompts(d.prompts, limit=limit, seed=42)]
        train_answers = distill_answers(train_prompts, distill_dir / f"train-{d.answer_tokens}.jsonl", answer, d.gen_batch)
        rows += [(prompt_ids(d, tok, p), train_answers[p]) for p in train_prompts]
        counts["distill"] = len(train_prompts)
    if "text" in sources:  # (a) the source's own assistant text, scored by the target (EAGLE-1's recipe)
        with config_source("draft.text"):
            dialogues = load_training_dialogues(d.text, limit=None if d.text_max < 0 else d.text_max, seed=42)
        end_ids = [eos[0]] if eos else []
        chars = 8 * d.max_len  # plenty of text for max_len tokens; keeps tokenizing fast
        for user, reply in tqdm(dialogues, desc="tokenizing text dialogues", unit="dialogue"):
            rows.append((prompt_ids(d, tok, user[-chars:]), tok.encode(reply[:chars], add_special_tokens=False) + end_ids))
        counts["text"] = len(dialogues)
    eval_answers = distill_answers(eval_prompts, distill_dir / f"heldout-{d.answer_tokens}.jsonl", answer, d.gen_batch,
                                   desc="answering held-out prompts")
    return TrainingRows(rows, counts, eval_prompts, eval_answers)


def head_to_train(config, target, rows: list[tuple[list[int], list[int]]]):
    """Stage 2: (the head, its d2t, init_from, start_step). A new head's draft vocabulary comes
    from the assistant tokens of the training rows; a continued one (e.g. the shipped head)
    keeps its own, and is checked before any features are computed."""
    from resps_jax.models.eagle3 import Eagle3Config
    from resps_jax.models.eagle3_train import build_draft_vocab

    d = config.draft
    head_cfg = Eagle3Config.for_target(target.cfg, draft_vocab_size=d.vocab_size)
    init_from = str(d.get("init_from", "") or "")
    start_step = int(d.get("start_step", 0)) if init_from else 0
    if init_from:
        head = _head_to_continue(init_from, target.cfg, head_cfg)
        d2t = np.asarray(head.d2t[...])
    else:
        d2t = build_draft_vocab((t for _, a in rows for t in a), target.cfg.vocab_size, d.vocab_size)
        head = _init_head(target, head_cfg, d2t, d.init_from_target, config.seed)
    return head, d2t, init_from, start_step


class Features:
    """Stage 3: the frozen target's taps, draft-vocabulary logits and in-vocabulary flags for
    token rows, precomputed for the training rows when they fit draft.feature_cache_gb, else
    computed per batch."""

    def __init__(self, d, target, used_ids, train_tokens: np.ndarray, train_mask: np.ndarray):
        self.d, self.used_ids = d, used_ids
        graphdef_t, self.params_t = nnx.split(target.model)
        self.features = jax.jit(partial(_target_features, graphdef_t))
        self.train_tokens, self.train_mask = train_tokens, train_mask
        row_bytes = d.max_len * (3 * target.cfg.hidden_size + d.vocab_size + 1) * 2
        self.precompute = len(train_tokens) * row_bytes <= d.feature_cache_gb * 2**30
        self.cached = (featurize_in_bar(self, train_tokens, d.batch_size, "target features (train)")
                       if self.precompute else None)

    def __call__(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """taps, logits, in_vocab of [N, max_len] rows, run in padded batches of batch_size."""
        d = self.d
        taps, logits, in_vocab = [], [], []
        for start in range(0, len(tokens), d.batch_size):
            chunk = tokens[start : start + d.batch_size]
            pad = d.batch_size - len(chunk)
            chunk = np.concatenate([chunk, np.zeros((pad, d.max_len), np.int32)]) if pad else chunk
            t, lg, iv = self.features(self.params_t, jnp.asarray(chunk), self.used_ids)
            keep = d.batch_size - pad
            taps.append(np.asarray(t)[:keep]), logits.append(np.asarray(lg)[:keep]), in_vocab.append(np.asarray(iv)[:keep])
        return np.concatenate(taps), np.concatenate(logits), np.concatenate(in_vocab)

    def batch_at(self, rows_index: np.ndarray):
        """One training batch: (tokens, taps, logits, in_vocab, mask) of these rows."""
        tokens, mask = self.train_tokens[rows_index], self.train_mask[rows_index]
        taps, logits, in_vocab = (
            tuple(x[rows_index] for x in self.cached) if self.cached is not None else self(tokens)
        )
        return (jnp.asarray(tokens), jnp.asarray(taps, jnp.float32), jnp.asarray(logits), jnp.asarray(in_vocab),
                jnp.asarray(mask))


def heldout_metrics(eval_step, params, embed, eval_tokens, eval_features, eval_mask, batch_size: int) -> dict[str, float]:
    """The TTT loss and per-step top-1 agreement on the held-out rows (whole batches only)."""
    n = len(eval_tokens) // batch_size * batch_size
    sums: dict[str, float] = {}
    for start in range(0, n, batch_size):
        r = slice(start, start + batch_size)
        batch = (jnp.asarray(eval_tokens[r]), jnp.asarray(eval_features[0][r], jnp.float32),
                 jnp.asarray(eval_features[1][r]), jnp.asarray(eval_features[2][r]), jnp.asarray(eval_mask[r]))
        m = eval_step(params, embed, batch)
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return {k: v / max(1, n // batch_size) for k, v in sums.items()}


def train_head(config, resume: bool) -> dict:
    """Every stage for the config's draft section; returns the CLI's summary (the full report
    goes to draft_report.json beside the head)."""
    from resps_jax.config_cli import config_source, require_model
    from resps_jax.decoding.engine import Engine
    from resps_jax.models.eagle3 import Buffer
    from resps_jax.models.eagle3_train import TTTConfig, lr_schedule, make_optimizer, make_train_step
    from resps_jax.heads import head_version
    from resps_jax.models.loading import load_target, parse_dtype, save_eagle3
    from resps_jax.prompting import eos_token_ids

    d = config.draft
    # the head's own folder when the config names one (the policy's runs live in config.workdir)
    workdir = Path(d.get("workdir", "") or config.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = (workdir / "checkpoints_draft").absolute()
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise UserError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue or remove the folder")
    model = require_model(config, head=False)
    with config_source("model"):
        target = load_target(model, parse_dtype(config.dtype))
    tok = target.tokenizer
    engine = Engine(target.model)
    eos = eos_token_ids(tok, target.cfg.eos_token_ids)
    if d.vocab_size > target.cfg.vocab_size:
        raise UserError(f"draft.vocab_size {d.vocab_size} exceeds the target's vocabulary {target.cfg.vocab_size}")

    data = training_rows(d, target, engine, eos, workdir)
    rows = data.rows
    head, d2t, init_from, start_step = head_to_train(config, target, rows)
    used_ids = jnp.asarray(np.arange(d.vocab_size) + d2t, jnp.int32)
    train_tokens, train_mask, _ = _sequences([p for p, _ in rows], [a for _, a in rows], d.max_len)
    eval_tokens, eval_mask, _ = _sequences([prompt_ids(d, tok, p) for p in data.eval_prompts],
                                           [data.eval_answers[p] for p in data.eval_prompts], d.max_len)
    features = Features(d, target, used_ids, train_tokens, train_mask)
    eval_features = features(eval_tokens)

    # 4. the head, optimizer and checkpoints
    graphdef, params, buffers = nnx.split(head, nnx.Param, Buffer)
    n_train = len(rows)
    steps_per_epoch = max(1, n_train // d.batch_size)
    total_steps = d.max_steps if d.max_steps > 0 else steps_per_epoch * d.epochs
    # A head continued from init_from has new Adam moments, and optax's schedule counts the
    # optimizer's own updates from 0: so it runs a schedule of its own over the steps from
    # start_step to total_steps (warm-up to draft.lr, cosine to 0.1x), not the rest of the one
    # the head was trained with. A resume restores the count and stays on that schedule.
    schedule = lr_schedule(d.lr, d.warmup_steps, total_steps - start_step)
    tx = make_optimizer(schedule)
    train_step, eval_step = make_train_step(graphdef, buffers, tx, TTTConfig(d.ttt_steps, d.step_decay))
    opt_state = tx.init(params)
    embed = target.model.embed_tokens.weight[...]

    manager, params, opt_state, step = open_checkpoints(ckpt_dir, params, opt_state, resume, start_step, total_steps)

    def heldout(p) -> dict[str, float]:
        return heldout_metrics(eval_step, p, embed, eval_tokens, eval_features, eval_mask, d.batch_size)

    before = heldout(params)
    params, opt_state, step = optimise(config, train_step, features, params, opt_state, embed, manager, schedule,
                                       step, start_step, total_steps, steps_per_epoch, n_train, workdir)
    after = heldout(params)
    head = nnx.merge(graphdef, params, buffers)
    save_eagle3(head, workdir / "draft")
    report = {
        "model": config.model, "train_prompts": len(rows), "rows_by_source": data.counts,
        "heldout_prompts": len(data.eval_prompts),
        "features": "precomputed" if features.precompute else "per batch",
        "draft_vocab_size": d.vocab_size, "steps": step, "epochs": round(step / steps_per_epoch, 2),
        "heldout_before": before, "heldout_after": after,
        "assistant_tokens": int(train_mask.sum()), "minutes": d.minutes,
        "init_from": head_version(init_from), "start_step": start_step,  # the exact version
        "schedule": {"lr": d.lr, "warmup_steps": d.warmup_steps, "from_step": start_step, "to_step": total_steps},
    }
    (workdir / "draft_report.json").write_text(json.dumps(report, indent=2))
    return {"draft": str(workdir / "draft"), "steps": step, "heldout_top1": round(after["acc0"], 4),
            "heldout_top1_by_step": [round(after[f"acc{k}"], 4) for k in range(d.ttt_steps)]}


def open_checkpoints(ckpt_dir: Path, params, opt_state, resume: bool, start_step: int, total_steps: int):
    """(the Orbax manager, params, opt_state, the step to go on from): the latest checkpoint's
    state on resume, else the head as given at start_step of the data order (a head continued
    from init_from starts there; its optimizer and LR schedule start afresh)."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    step = start_step
    if step >= total_steps:
        raise UserError(f"draft.start_step {step} is not below the schedule's {total_steps} steps (draft.max_steps)")
    if resume and manager.latest_step() is not None:
        step = manager.latest_step()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as err:
            raise UserError(f"{ckpt_dir}: cannot restore draft checkpoint {step} ({type(err).__name__}: {err})") from None
        params, opt_state = restored["params"], restored["opt_state"]
        print(f"resumed from step {step}")
    return manager, params, opt_state, step


def optimise(config, train_step, features: Features, params, opt_state, embed, manager, schedule, step: int,
             start_step: int, total_steps: int, steps_per_epoch: int, n_train: int, workdir: Path):
    """Stage 4: TTT steps until total_steps or draft.minutes, logging and checkpointing; Ctrl-C or
    SIGTERM (also for a background run, where SIGINT starts ignored) ends training early, and
    the head so far is still checkpointed. Returns (params, opt_state, step)."""
    import orbax.checkpoint as ocp

    d = config.draft
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    deadline = time.monotonic() + 60 * d.minutes
    log = (workdir / "train_draft.jsonl").open("a")
    bar = tqdm(total=total_steps, initial=step, desc="training draft head", unit="step")
    try:
        while step < total_steps and time.monotonic() < deadline:
            epoch, offset = divmod(step, steps_per_epoch)
            order = np.random.RandomState(config.seed + epoch).permutation(n_train)
            rows_index = order[offset * d.batch_size : (offset + 1) * d.batch_size]
            params, opt_state, metrics = train_step(params, opt_state, embed, features.batch_at(rows_index))
            step += 1
            bar.update(1)
            if step % d.log_every == 0:
                m = {k: round(float(v), 4) for k, v in metrics.items()}
                bar.set_postfix(loss=m["loss"], acc0=m["acc0"])
                # the rate of this step's update: the optimizer has made step - start_step updates
                lr = float(schedule(step - start_step - 1))
                log.write(json.dumps({"step": step, "lr": lr, **m}) + "\n")
            if step % d.checkpoint_every == 0:
                manager.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}))
    except KeyboardInterrupt:  # Ctrl-C ends training early: the head so far is still saved and exported
        print(f"interrupted at step {step}; saving and exporting the head", flush=True)
    finally:
        bar.close()
        log.close()
        if manager.latest_step() != step:  # keep the work done, also when interrupted
            manager.save(step, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}), force=True)
        manager.wait_until_finished()
        manager.close()
    return params, opt_state, step
