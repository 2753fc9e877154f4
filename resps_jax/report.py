"""python -m resps_jax.report REPORT_DIR: results.jsonl -> report.md + PNG plots.
python -m resps_jax.report --ablations RUN_DIR [RUN_DIR ...]: the ablation table (markdown).

The tables and plots are resps_jax/evaluation/report.py's; `evaluate` writes the same
report at the end of a run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from resps_jax.errors import UserError, run_cli
from resps_jax.evaluation.report import ablation_table, write_report


def main(argv: list[str] | None = None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if args[:1] == ["--ablations"]:  # python -m resps_jax.report --ablations RUN [RUN ...]
        if len(args) < 2:
            raise UserError("usage: python -m resps_jax.report --ablations RUN_DIR [RUN_DIR ...] (workdirs)")
        try:
            print("\n".join(ablation_table([Path(a) for a in args[1:]])))
        except ValueError as err:
            raise UserError(str(err)) from None
        return 0
    if len(args) != 1:
        raise UserError("usage: python -m resps_jax.report REPORT_DIR (the folder holding results.jsonl)"
                        " | --ablations RUN_DIR [RUN_DIR ...]")
    folder = Path(args[0])
    if not (folder / "results.jsonl").is_file():
        raise UserError(f"no results.jsonl in {folder}")
    try:
        print(write_report(folder))
    except ValueError as err:
        raise UserError(str(err)) from None
    return 0


if __name__ == "__main__":
    run_cli(main)
