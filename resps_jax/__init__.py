"""Re-SpS in JAX/Flax: EAGLE-3 tree speculative decoding with a PPO policy choosing the tree.

Importing the package quiets third-party loggers before any of them is imported: every CLI
(`python -m resps_jax.X`) imports this module first, so this is the one place that runs early
enough. transformers otherwise prints "PyTorch was not found ..." on every call that loads a
tokenizer in an install without torch (the default one, `make demo`), which reads like an error
although torch is only needed for other GGUFs' tokenizers. Only defaults are set: a user's own
TRANSFORMERS_VERBOSITY still wins. Our own progress bars and `error:` lines are not logging.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
