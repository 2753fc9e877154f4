"""EAGLE's side of benchmarks/eagle_peer.py: runs SafeAILab/EAGLE's `EaModel.eagenerate`.

Runs under EAGLE's own python (torch + the transformers EAGLE pins), never under ours: it
imports nothing from resps_jax, so the reference is EAGLE's code on EAGLE's stack. It reads
one JSON request (argv[1]) and prints one JSON reply on stdout:

    request: {"eagle_repo", "target", "draft", "trees": [[TT, d, k], ...],
              "prompts": [[ids], ...], "new_tokens", "eos": [ids], "threads"}
    reply:   {"trees": [{"tree": [TT, d, k], "runs": [{"output_ids", "step_tokens",
              "new_token", "steps", "seconds"}, ...]}, ...], "versions": {...}}

Two things are observed, not changed, in EAGLE's loop: `evaluate_posterior` is wrapped to
record each verify step's accepted length (so both sides can be scored by one rule), and
the tokenizer EAGLE loads only for its EOS check is replaced by one answering our EOS set
(EAGLE's slow-tokenizer load needs vocab files a GGUF-converted folder does not have).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


class _EosSet(int):
    """An id that equals every id of a set: EAGLE's `eos_token_id in ids` then stops at any."""

    def __new__(cls, ids: list[int]):
        obj = super().__new__(cls, ids[0] if ids else -1)
        obj.ids = frozenset(ids)
        return obj

    def __eq__(self, other) -> bool:
        return other in self.ids

    __hash__ = int.__hash__


class _EosOnlyTokenizer:
    def __init__(self, eos: list[int]):
        self.eos_token_id = _EosSet(eos)

    def convert_tokens_to_ids(self, _token):  # only reached with is_llama3=True, which we never pass
        return -1


def target_with_index(target: Path, scratch: Path) -> Path:
    """The target folder, linked file by file, plus a model.safetensors.index.json.

    EAGLE's head finds the target's token embedding through that index; a single-file
    checkpoint has none, so one mapping every tensor to model.safetensors is written here
    (in a scratch folder: the cached original is never touched).
    """
    from safetensors import safe_open

    if (target / "model.safetensors.index.json").is_file():
        return target
    for file in target.iterdir():
        (scratch / file.name).symlink_to(file.resolve())
    with safe_open(str(target / "model.safetensors"), "pt") as f:
        weight_map = {name: "model.safetensors" for name in f.keys()}
    (scratch / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return scratch


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    sys.path.insert(0, request["eagle_repo"])
    import torch
    import transformers

    import eagle.model.ea_model as ea

    if request.get("threads"):  # on a busy machine torch's spinning thread pool can cost 20x per op
        torch.set_num_threads(int(request["threads"]))
    eos = [int(i) for i in request["eos"]]
    ea.AutoTokenizer = type("_Tok", (), {"from_pretrained": staticmethod(lambda *_a, **_k: _EosOnlyTokenizer(eos))})
    step_tokens: list[int] = []
    evaluate = ea.evaluate_posterior

    def observed(*args, **kwargs):
        best, accept_length, sample_p = evaluate(*args, **kwargs)
        step_tokens.append(int(accept_length) + 1)  # accepted drafts + the root this step commits
        return best, accept_length, sample_p

    ea.evaluate_posterior = observed

    reply = {"trees": [], "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    with tempfile.TemporaryDirectory() as scratch:
        target = target_with_index(Path(request["target"]), Path(scratch))
        for tt, depth, top_k in request["trees"]:
            model = ea.EaModel.from_pretrained(
                use_eagle3=True, base_model_path=str(target), ea_model_path=request["draft"],
                total_token=tt, depth=depth, top_k=top_k, torch_dtype=torch.float32,
            ).eval()
            runs = []
            prompts = request["prompts"]
            for i, ids in enumerate([prompts[0]] + prompts):  # the first run warms up, untimed
                step_tokens.clear()
                input_ids = torch.tensor([ids])
                start = time.perf_counter()
                out, new_token, idx = model.eagenerate(input_ids, temperature=0.0,
                                                       max_new_tokens=request["new_tokens"], log=True)
                seconds = time.perf_counter() - start
                if i > 0:
                    runs.append({"output_ids": out[0, len(ids):].tolist(), "step_tokens": list(step_tokens),
                                 "new_token": int(new_token), "steps": int(idx) + 1, "seconds": seconds})
            reply["trees"].append({"tree": [tt, depth, top_k], "runs": runs})
            print(f"eagle worker: {tt},{depth},{top_k} done", file=sys.stderr, flush=True)
    print(json.dumps(reply))


if __name__ == "__main__":
    main()
