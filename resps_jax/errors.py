"""The one exception type that reaches a user as `error: ...` and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user (paths, checkpoints, arguments); never a bug of ours."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI entry point: user errors print one line and exit 2; `--debug` shows tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = main(args)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def refuse_removed_version(kind: str, version: str, removed: dict[str, str], shipped: str, flag: str,
                           folder: str) -> None:
    """One error line for a shipped head or policy version that left the package.

    `removed` maps each such version to the last commit that had it; the message names the
    commit and the `git checkout` that restores `folder` (resps_jax/heads/<version>, ...).
    """
    if version in removed:
        raise UserError(f"{kind} {version} was removed from the package (it ships {shipped} only); git keeps it: "
                        f"`git checkout {removed[version]} -- {folder}` in a clone of the repository restores the "
                        f"folder (pass it as {flag}; an editable install also loads it by name)")
