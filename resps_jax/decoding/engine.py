"""generate(): the decoding entry point over split NNX state.

The model is split once into (graphdef, params); every hot function is a `jax.jit` over
pure arrays with the KV cache donated, never `nnx.jit` (measured ~30x slower per call).
Prefill compiles once per (prompt bucket, cache length); the whole autoregressive loop is
one `lax.while_loop` executable per cache length, so a request is two host dispatches.
Scalars that vary per request (budgets, temperature) are passed as int32/float32 arrays so
a Python int never triggers a second compile.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.decoding.sampling import select_token
from resps_jax.decoding.action import AR_ACTION, Action, format_action, validate_actions
from resps_jax.decoding.policy import IntervalRecord, Policy, as_policy, fixed_action
from resps_jax.distributed import agree
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache, cache_margin, plan_cache_length, prefill_bucket
from resps_jax.models.llama import Llama, causal_mask, resolve_matmul, to_kernel_layout
from resps_jax.models.sharding import Placement, make_mesh, to_host, to_host_tree


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    cache_len: int | None = None  # None: sized from the request
    truncate_prompt: bool = False  # keep the last tokens of a too-long prompt instead of failing
    tree_margin: int = 0  # cache slots past the committed text (TT_max + depth for trees)


@dataclasses.dataclass
class GenerationResult:
    token_ids: list[int]  # new tokens only (EOS included when produced)
    prompt_tokens: int
    seconds: float
    steps: int  # target forwards after prefill
    actions: list[tuple[int, int, int]]
    accepted_per_step: list[int] = dataclasses.field(default_factory=list)  # tokens per step
    # what each interval did: the policy's reward signal
    intervals: list[IntervalRecord] = dataclasses.field(default_factory=list)
    prefill_seconds: float = 0.0  # the prompt's forward and the first token, within `seconds`

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_accepted(self) -> float:
        """New tokens per step after prefill (bonus included); the prefill's token is not a step's."""
        return (self.new_tokens - 1) / self.steps if self.steps else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def decode_seconds(self) -> float:
        return self.seconds - self.prefill_seconds

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the prefill's first one per second of decoding (llama.cpp's "eval"
        rate): a step's cost, apart from the prompt's length."""
        return (self.new_tokens - 1) / self.decode_seconds if self.new_tokens > 1 and self.decode_seconds > 0 else 0.0


def pad_prompts(prompts: list[list[int]], capacity: int) -> tuple[np.ndarray, list[int]]:
    """Right-padded prompt rows [B, bucket] (bucket from prefill_bucket) and their lengths."""
    lengths = [len(ids) for ids in prompts]
    tokens = np.zeros((len(prompts), prefill_bucket(max(lengths), capacity)), np.int32)
    for row, ids in enumerate(prompts):
        tokens[row, : len(ids)] = ids
    return tokens, lengths


def _prefill(graphdef, params, cache: KVCache, tokens, valid, temperature, seed):
    """tokens [B, P] (right-padded), valid [B] -> (cache committed to valid, first token [B])."""
    model: Llama = nnx.merge(graphdef, params)
    key = jax.random.key(seed)
    batch, p = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (batch, p))
    hidden, _, cache = model(tokens, positions, cache, causal_mask(batch, p))
    last = jnp.take_along_axis(hidden, (valid - 1)[:, None, None], axis=1)[:, 0]  # [B, E]
    first = select_token(model.logits(last), temperature, jax.random.fold_in(key, 0))
    return cache.with_lengths(cache.lengths + valid), first


def _ar_loop(graphdef, params, cache: KVCache, first, max_new, eos_ids, temperature, seed):
    """Autoregressive decoding as one while_loop: stop at max_new tokens or EOS in every row.

    Returns the cache, out [B, S] (new tokens, first at column 0) and the count per row.
    """
    model: Llama = nnx.merge(graphdef, params)
    key = jax.random.key(seed)
    batch = first.shape[0]
    out = jnp.zeros((batch, cache.capacity), jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)
    count = jnp.ones((batch,), jnp.int32)

    def cond(state):
        i, _, _, _, done, _ = state
        return (i < max_new) & ~jnp.all(done)

    def body(state):
        i, cache, out, current, done, count = state
        hidden, _, cache = model(current[:, None], cache.lengths[:, None], cache, causal_mask(batch, 1))
        cache = cache.with_lengths(cache.lengths + 1)
        nxt = select_token(model.logits(hidden[:, 0]), temperature, jax.random.fold_in(key, i))
        out = out.at[:, i].set(jnp.where(done, 0, nxt))
        count = count + (~done).astype(jnp.int32)
        done = done | jnp.isin(nxt, eos_ids)
        return i + 1, cache, out, nxt, done, count

    state = (jnp.int32(1), cache, out, first, done, count)
    _, cache, out, _, _, count = jax.lax.while_loop(cond, body, state)
    return cache, out, count


class Engine:
    """A target model split once into graphdef + params, placed on a mesh, with its compiled steps.

    Without a placement the model runs on one device (a 1x1 mesh), through the same code.
    `matmul` picks the weight products: the CPU kernel (default on a single CPU device; the
    weights are packed once here) or XLA's dot (meshes, accelerators, or asked for).
    Every jitted step names its in/out shardings: parameters by the partition rules, the
    cache by its own rules (the same sharding in and out, so steps never recompile), and
    the small inputs and outputs replicated. Host inputs are numpy values, which every
    process of a multi-process run passes identically.
    """

    def __init__(self, model: Llama, placement: Placement | None = None, matmul: str | None = None):
        self.cfg = model.cfg
        self.placement = placement or Placement(make_mesh((1, 1)))
        devices = self.placement.mesh.devices.flat
        self.matmul = resolve_matmul(matmul, self.placement.mesh.size == 1 and devices[0].platform == "cpu")
        if self.matmul == "kernel":  # weights packed once for the CPU kernel; `model` keeps its own
            model = to_kernel_layout(model)
        self.graphdef, params = nnx.split(model)
        self.param_shardings = self.placement.param_shardings(params, self.cfg.head_dim)
        self.params = self.placement.put(params, self.param_shardings)
        self.dtype = model.embed_tokens.weight[...].dtype
        self._steps: dict[int, tuple] = {}  # batch size -> (prefill, ar_loop)
        self._caches: dict[tuple[int, int], Callable[[], KVCache]] = {}

    def cache_shardings(self, batch: int):
        return self.placement.cache_shardings(jax.eval_shape(lambda: self._empty_cache(batch, 1)))

    def _empty_cache(self, batch: int, capacity: int) -> KVCache:
        c = self.cfg
        return KVCache.create(c.num_layers, batch, capacity, c.num_kv_heads, c.head_dim, self.dtype)

    def steps_for(self, batch: int) -> tuple:
        """(prefill, ar_loop) jitted with this batch size's cache shardings."""
        if batch not in self._steps:
            cache_sh, rep = self.cache_shardings(batch), self.placement.replicated
            params_sh = self.param_shardings
            prefill = jax.jit(
                partial(_prefill, self.graphdef), donate_argnames=("cache",),
                in_shardings=(params_sh, cache_sh, rep, rep, rep, rep), out_shardings=(cache_sh, rep),
            )
            ar_loop = jax.jit(
                partial(_ar_loop, self.graphdef), donate_argnames=("cache",),
                in_shardings=(params_sh, cache_sh, rep, rep, rep, rep, rep), out_shardings=(cache_sh, rep, rep),
            )
            self._steps[batch] = (prefill, ar_loop)
        return self._steps[batch]

    def executables(self) -> int:
        """Compiled executables held by this engine's jitted steps (for compile-count tests)."""
        return sum(f._cache_size() for steps in self._steps.values() for f in steps)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache created directly in its shards (no host copy of the whole cache)."""
        if (batch, capacity) not in self._caches:
            self._caches[batch, capacity] = jax.jit(
                partial(self._empty_cache, batch, capacity), out_shardings=self.cache_shardings(batch)
            )
        return self._caches[batch, capacity]()

    def fit_prompt(self, prompt_ids: list[int], gen: GenerationConfig) -> tuple[list[int], int]:
        """The prompt (left-truncated if asked) and the cache length it runs with."""
        if not prompt_ids:
            raise UserError("the prompt is empty")
        limit = self.cfg.max_position_embeddings
        budget = gen.max_new_tokens + gen.tree_margin
        if gen.truncate_prompt:
            room = (gen.cache_len or limit) - budget
            if room < 1:
                raise UserError(
                    f"max_new_tokens ({gen.max_new_tokens}) + tree margin ({gen.tree_margin}) "
                    f"leaves no room for a prompt in a cache of {gen.cache_len or limit}"
                )
            prompt_ids = prompt_ids[-room:]
        capacity = plan_cache_length(len(prompt_ids), gen.max_new_tokens, gen.tree_margin, limit, gen.cache_len)
        return prompt_ids, capacity

    def generate(
        self, prompt_ids: list[int], gen: GenerationConfig, eos_ids: tuple[int, ...]
    ) -> GenerationResult:
        """Plain autoregressive decoding (the reference every speculative mode must match)."""
        return self.generate_batch([prompt_ids], gen, eos_ids)[0]

    def generate_batch(
        self, prompts: list[list[int]], gen: GenerationConfig, eos_ids: tuple[int, ...]
    ) -> list[GenerationResult]:
        """AR decoding of several prompts at once (rows right-padded, per-row lengths and EOS).

        Each row's tokens equal its single-prompt run: rows never see each other and padded
        slots are masked. Seconds are the batch's wall time, shared by every row.
        """
        if gen.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1 (got {gen.max_new_tokens})")
        fitted = [self.fit_prompt(ids, gen) for ids in prompts]
        capacity = max(c for _, c in fitted)
        tokens, lengths = pad_prompts([ids for ids, _ in fitted], capacity)
        seed, temperature = np.int32(gen.seed), np.float32(gen.temperature)
        eos = np.asarray(eos_ids or (-1,), np.int32)
        prefill, ar_loop = self.steps_for(len(prompts))
        start = time.perf_counter()
        cache, first = prefill(
            self.params, self.new_cache(len(prompts), capacity), tokens, np.asarray(lengths, np.int32),
            temperature, seed,
        )
        first.block_until_ready()
        prefill_seconds = time.perf_counter() - start
        cache, out, counts = ar_loop(self.params, cache, first, np.int32(gen.max_new_tokens), eos, temperature, seed)
        out, counts = to_host(out), to_host(counts)
        seconds = time.perf_counter() - start
        return [
            GenerationResult(out[row, : counts[row]].tolist(), lengths[row], seconds, int(counts[row]) - 1, [],
                             prefill_seconds=prefill_seconds)
            for row in range(len(prompts))
        ]


@dataclasses.dataclass(frozen=True)
class _Status:
    """What the host reads of a SpecState between intervals, in one transfer."""

    count: int  # tokens emitted so far
    steps: int  # speculative steps taken
    done: bool
    taps: np.ndarray  # [3H] the policy's state
    context: np.ndarray | None  # [S + W] the text by position, only for a policy that reads it

    @classmethod
    def of(cls, state, with_context: bool) -> _Status:
        fields = (state.count, state.steps, state.done, state.last_taps) + ((state.context,) if with_context else ())
        count, steps, done, taps, *context = to_host_tree(fields)
        return cls(int(count), int(steps), bool(done), taps, context[0] if context else None)


# The lookup's longest matched suffix: 3 tokens; 2 and 4 commit the same to 0.01 token a step on
# the benchmark answers (benchmarks/probes/ngram_rules.py; docs/results.md, "n-gram drafting").
NGRAM_MATCH = 3


class SpeculativeEngine:
    """Speculative decoding over a target Engine, an EAGLE-3 head and a prompt-lookup drafter.

    `actions` fixes the static limits: k_max and d_max over the head's actions, one compiled
    interval per (TT bucket, chain length) pair that an action uses (depth, k and the chain's
    real length are traced values), the `ar` interval when the set has it, plus prefill per
    prompt bucket. `head` may be None when every action is `ar` or `ngram:L`: speculation
    for a target that has no draft head.
    """

    def __init__(self, engine: Engine, head, actions: Sequence[Sequence[int]], draft_weights: str | None = None,
                 ngram_match: int = NGRAM_MATCH):
        from resps_jax.decoding.spec import SpecState, ar_interval, spec_interval, spec_prefill_seeded
        from resps_jax.decoding.tree import step_shapes, tt_buckets

        self.engine = engine
        self.actions = validate_actions([tuple(int(v) for v in a) for a in actions])
        if ngram_match < 1:
            raise UserError(f"ngram_match must be >= 1 (got {ngram_match})")
        trees = [a for a in self.actions if a.uses_head]
        if trees and head is None:
            raise UserError(f"action {format_action(trees[0])} drafts with the head: give a draft head "
                            "(--draft), or use only 'ar' and 'ngram:L' actions")
        self.k_max = max((a.topk for a in trees), default=1)
        self.d_max = max((a.depth for a in trees), default=1)
        self.buckets = tt_buckets(trees) if trees else ()
        self.head_cfg = head.cfg if head is not None else None
        self.shapes = step_shapes(self.actions, ngram_match)
        self.path_width = max([2] + [s.path_width for s in self.shapes.values()])
        # The head's products on the same kernel as the target's, its weights in bf16 by default:
        # drafting then reads half the bytes, and the target verifies every draft, so output is
        # unchanged (docs/decisions.md, "Draft head"; the measurement in docs/results.md).
        if draft_weights not in (None, "float32", "bfloat16"):
            raise UserError(f"draft_weights {draft_weights!r}: expected float32 or bfloat16")
        if head is not None and engine.matmul == "kernel":
            head = to_kernel_layout(head, weight_dtype=None if draft_weights == "float32" else jnp.bfloat16)
        elif draft_weights == "bfloat16" and head is not None:
            raise UserError("draft_weights needs the CPU kernel (--matmul kernel)")
        placement = engine.placement
        if head is not None:
            self.graphdef_h, params_h = nnx.split(head)
            self.head_shardings = placement.param_shardings(params_h, head.cfg.head_dim)
            self.params_h = placement.put(params_h, self.head_shardings)
        else:  # no head: an empty parameter tree, and a one-slot placeholder draft cache
            self.graphdef_h, self.params_h, self.head_shardings = None, {}, {}
        gt, gh = engine.graphdef, self.graphdef_h
        rep = placement.replicated
        target_sh = engine.cache_shardings(1)
        draft_sh = placement.cache_shardings(jax.eval_shape(lambda: self._empty_draft_cache(1)))
        # SpecState: the two caches by their rules, every small field replicated
        state_sh = SpecState(target_sh, draft_sh, *([rep] * (len(dataclasses.fields(SpecState)) - 2)))
        params = (engine.param_shardings, self.head_shardings)
        # features are logged for the head to catch up on after steps that leave it behind
        log_taps = head is not None and any(not a.uses_head for a in self.actions)
        self.prefill = jax.jit(
            partial(spec_prefill_seeded, gt, gh, out_width=self.path_width, log_taps=log_taps),
            donate_argnames=("target_cache", "draft_cache"),
            in_shardings=(*params, target_sh, draft_sh, rep, rep, rep, rep), out_shardings=state_sh,
        )
        self.intervals = {
            key: jax.jit(
                partial(spec_interval, gt, gh, shape=shape), donate_argnames=("state",),
                in_shardings=(*params, state_sh, *([rep] * 8)), out_shardings=state_sh,
            )
            for key, shape in self.shapes.items()
        }
        # the no-draft action `ar`: one more executable, only when the set has it
        self.ar_interval = None
        if AR_ACTION in self.actions:
            self.ar_interval = jax.jit(
                partial(ar_interval, gt, gh), donate_argnames=("state",),
                in_shardings=(*params, state_sh, *([rep] * 4)), out_shardings=state_sh,
            )
        self._draft_caches: dict[int, Callable[[], KVCache]] = {}
        self._draft_sh = draft_sh

    def shape_key(self, action: Action) -> tuple[int, int]:
        """(TT bucket or 1 without the head, chain length or 0): the compiled step an action runs."""
        from resps_jax.decoding.tree import shape_key

        return shape_key(action, self.buckets)

    def run_interval(self, state, action: Action, n_steps, max_new, eos, temperature):
        """Up to n_steps steps of `action` from `state` (one dispatch; the state is donated)."""
        if action == AR_ACTION:
            return self.ar_interval(self.engine.params, self.params_h, state, n_steps, max_new, eos, temperature)
        return self.intervals[self.shape_key(action)](
            self.engine.params, self.params_h, state, np.int32(action.tt), np.int32(action.depth),
            np.int32(action.topk), np.int32(action.ngram), n_steps, max_new, eos, temperature,
        )

    def _empty_draft_cache(self, capacity: int) -> KVCache:
        c = self.head_cfg
        if c is None:  # no head: a one-slot placeholder the steps never touch
            return KVCache.create(1, 1, 1, 1, 1, self.engine.dtype)
        return KVCache.create(1, 1, capacity, c.num_kv_heads, c.head_dim, self.engine.dtype)

    def new_draft_cache(self, capacity: int) -> KVCache:
        if capacity not in self._draft_caches:
            self._draft_caches[capacity] = jax.jit(
                partial(self._empty_draft_cache, capacity), out_shardings=self._draft_sh
            )
        return self._draft_caches[capacity]()

    @property
    def tree_margin(self) -> int:
        """Cache slots past the committed text this engine's steps write (decoding.tree.tree_margin)."""
        return cache_margin(max([1] + [s.verify_rows for s in self.shapes.values()]), self.path_width)

    def executables(self) -> int:
        return sum(self.executables_by_kind().values())

    def warm_up(self, prompt_ids: list[int], gen: GenerationConfig, eos_ids: tuple[int, ...]) -> float:
        """Compile every action's interval for this request's shapes; the seconds it took.

        A policy may pick any action at any interval, so compilation is paid here, apart,
        and never inside a timed decode.
        """
        gen = dataclasses.replace(gen, tree_margin=max(gen.tree_margin, self.tree_margin))
        prompt_ids, capacity = self.engine.fit_prompt(prompt_ids, gen)
        short = dataclasses.replace(gen, max_new_tokens=2, cache_len=capacity)
        start = time.perf_counter()
        for index in range(len(self.actions)):
            self.generate(prompt_ids, short, eos_ids, policy=fixed_action(index), interval=1)
        return time.perf_counter() - start

    def executables_by_kind(self) -> dict[str, int]:
        """Compiled prefills (one per prompt bucket and cache length) and step intervals."""
        intervals = sum(f._cache_size() for f in self.intervals.values())
        ar = self.ar_interval._cache_size() if self.ar_interval is not None else 0
        return {"prefill": self.prefill._cache_size(), "intervals": intervals + ar}

    def start(self, prompt_ids: list[int], gen: GenerationConfig):
        """(the prompt as fitted to the cache, the state after prefill): both caches sized
        for this request, the target's first token chosen, the head encoded over the prompt."""
        from resps_jax.decoding.spec import draft_cache_length

        gen = dataclasses.replace(gen, tree_margin=max(gen.tree_margin, self.tree_margin))
        prompt_ids, capacity = self.engine.fit_prompt(prompt_ids, gen)
        tokens, (n,) = pad_prompts([prompt_ids], capacity)
        state = self.prefill(
            self.engine.params, self.params_h, self.engine.new_cache(1, capacity),
            self.new_draft_cache(draft_cache_length(capacity, self.d_max, self.k_max, self.path_width)), tokens,
            np.asarray([n], np.int32), np.float32(gen.temperature), np.int32(gen.seed),
        )
        return prompt_ids, state

    def generate(
        self,
        prompt_ids: list[int],
        gen: GenerationConfig,
        eos_ids: tuple[int, ...],
        policy: Policy | Callable[[np.ndarray], int] | None = None,
        interval: int = 30,
    ) -> GenerationResult:
        """Speculative decoding; `policy` picks an action index every `interval` steps.

        Without a policy the first action is used throughout (a static tree), as one
        dispatch. A policy (decoding/policy.py; a plain function of the taps is wrapped) sees
        the target features of the last committed token (the paper's state), and the
        context when it asks for it; each interval's record (tokens, steps, wall time with
        the policy's call) goes to its `observe` and comes back in `result.intervals`.
        """
        if gen.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1 (got {gen.max_new_tokens})")
        if interval < 1:
            raise UserError(f"the cache interval must be >= 1 (got {interval})")
        policy = as_policy(policy)
        start = time.perf_counter()
        prompt_ids, state = self.start(prompt_ids, gen)
        temperature = np.float32(gen.temperature)
        eos = np.asarray(eos_ids or (-1,), np.int32)
        actions: list[Action] = []
        log: list[IntervalRecord] = []
        if policy is not None:
            policy.reset()
        wants_context = policy is not None and policy.wants_context
        max_new = np.int32(gen.max_new_tokens)
        status = _Status.of(state, wants_context)  # waits for the prefill
        count, steps = status.count, 0
        prefill_seconds = time.perf_counter() - start
        while not status.done and count < gen.max_new_tokens:
            tick = time.perf_counter()
            index = 0
            if policy is not None:
                context = status.context[: len(prompt_ids) + count].tolist() if wants_context else None
                index = agree(int(policy.decide(status.taps, context)))  # one choice for every process
            if not 0 <= index < len(self.actions):
                raise UserError(f"the policy chose action {index}, outside 0..{len(self.actions) - 1}")
            action = self.actions[index]
            actions.append(action)
            n_steps = np.int32(interval if policy is not None else 1 << 30)
            state = self.run_interval(state, action, n_steps, max_new, eos, temperature)
            status = _Status.of(state, wants_context)  # waits for the interval
            log.append(IntervalRecord(index, status.count - count, status.steps - steps, time.perf_counter() - tick))
            if policy is not None:
                policy.observe(log[-1])
            count, steps = status.count, status.steps
        context, accepted = to_host_tree((state.context, state.accepted))
        token_ids = context[len(prompt_ids) : len(prompt_ids) + count].tolist()
        seconds = time.perf_counter() - start
        accepted = accepted[:steps].tolist()
        return GenerationResult(token_ids, len(prompt_ids), seconds, steps=steps, actions=actions,
                                accepted_per_step=accepted, intervals=log, prefill_seconds=prefill_seconds)
