"""Evaluation as a library; `python -m resps_jax.evaluate` is its command line.

- `methods`: the method names (`ar`, `static:A`, `eagle3:A`, `best_static`, `ema`, `ucb`,
  `resps`, `resps_argmax`, `X@N`) and the decoder each one runs.
- `results_log`: results.jsonl, one record per question x turn x method, resumable.
- `runner`: the questions, interleaved methods and untimed compiles of one evaluation.
- `grid`, `calibration`, `profiling`: the best static action on training prompts, the
  adaptive baselines' calibration, and each action's step timed piece by piece.
- `report`: results.jsonl -> report.md and plots.
"""
