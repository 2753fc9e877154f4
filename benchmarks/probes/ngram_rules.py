"""Which prompt-lookup rule commits most per step, replayed on the target's own greedy text.

Under greedy decoding a chain-only step's outcome is fixed by the text: the lookup proposes
a chain from the context, the target accepts its longest prefix that equals the next tokens
of the greedy answer, and adds one. So every rule can be replayed exactly, with no model,
on the AR answers `benchmarks/spec_decode.py --json-out` saves. Rules:

- ours: the longest suffix of up to `n_max` tokens that occurred before, at its latest
  occurrence (decoding/ngram.py, on device);
- first-match (transformers' `prompt_lookup_num_tokens`, llama-cpp-python's
  LlamaPromptLookupDecoding): suffix sizes from `n_max` (2 by default in both) down to 1,
  the earliest occurrence whose continuation is non-empty.

Prints tokens per step per set and rule, for n_max 1-4 and chain lengths L, and the share of
steps that proposed a chain at all (a step without one could verify the root alone).

    python benchmarks/probes/ngram_rules.py docs/results/ngram/spec_decode_t0.json [--lengths 2,4,8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def latest_longest(context: list[int], n_max: int, length: int, n_min: int = 1) -> list[int]:
    """Our rule (decoding/ngram.py's ngram_chain, on the host); matches shorter than `n_min`
    propose nothing."""
    end = len(context) - 1
    best_len, best_p = 0, -1
    for p in range(end):  # an earlier occurrence ends at p < end
        m = 0
        while m < n_max and p - m >= 0 and context[p - m] == context[end - m]:
            m += 1
        if m > 0 and (m > best_len or (m == best_len and p > best_p)):
            best_len, best_p = m, p
    if best_p < 0 or best_len < n_min:
        return []
    return context[best_p + 1 : min(best_p + 1 + length, end + 1)]


def first_match(context: list[int], n_max: int, length: int) -> list[int]:
    """transformers' and llama-cpp-python's rule: largest n first, earliest occurrence."""
    size = len(context)
    for n in range(min(n_max, size - 1), 0, -1):
        suffix = context[-n:]
        for start in range(size - n + 1):
            if context[start : start + n] == suffix and start + n < size:
                return context[start + n : min(start + n + length, size)]
    return []


def replay(prompt: list[int], answer: list[int], rule, n_max: int, length: int) -> tuple[int, int, int]:
    """(tokens after the first, steps, steps that proposed a chain) of a chain-only greedy
    decode of `answer`."""
    emitted, steps, proposed = 1, 0, 0
    while emitted < len(answer):
        chain = rule(prompt + answer[:emitted], n_max, length)
        proposed += bool(chain)
        accepted = 0
        while accepted < len(chain) and emitted + accepted < len(answer) and chain[accepted] == answer[emitted + accepted]:
            accepted += 1
        emitted += accepted + 1
        steps += 1
    return len(answer) - 1, steps, proposed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a spec_decode.py --json-out file of a greedy run")
    parser.add_argument("--lengths", default="2,4,8")
    args = parser.parse_args()
    data = json.loads(open(args.runs).read())
    ar = data["rows"][0]
    sets = [r["set"] for r in ar["runs"]]
    names = list(dict.fromkeys(sets))
    print(f"{'rule':<26}{'n_max':>6}{'L':>4}" + "".join(f"{n:>11}" for n in names) + f"{'all':>8}{'chained':>9}")
    rules = [("ours (latest)", latest_longest)]
    rules += [(f"ours, match >= {k}", lambda c, n, L, k=k: latest_longest(c, n, L, n_min=k)) for k in (2, 3)]
    rules += [("first-match (HF, llama.cpp)", first_match)]
    for length in (int(v) for v in args.lengths.split(",")):
        for rule_name, rule in rules:
            for n_max in (1, 2, 3, 4):
                per_set = {n: [0, 0, 0] for n in names}
                for prompt, answer, name in zip(ar["prompts"], ar["outputs"], sets):
                    for i, v in enumerate(replay(prompt, answer, rule, n_max, length)):
                        per_set[name][i] += v
                total = np.sum([v for v in per_set.values()], axis=0)
                cells = "".join(f"{t / s:>11.2f}" for t, s, _ in per_set.values())
                print(f"{rule_name[:26]:<26}{n_max:>6}{length:>4}{cells}{total[0] / total[1]:>8.2f}"
                      f"{total[2] / total[1]:>9.2f}")


if __name__ == "__main__":
    main()
