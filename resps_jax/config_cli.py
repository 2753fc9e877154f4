"""`--config file.py[:arg] --config.a.b=v` parsing for the training/evaluation CLIs.

ml_collections' config_flags does the loading and the typed overrides; this wraps it in a
private absl FlagValues so that a bad file, an unknown key or a badly typed value becomes
one `error: ...` line (UserError) instead of absl's usage dump. Every config CLI (train,
train_draft, evaluate, plan) parses here, so a bare config name resolves the same way in
all of them, and an error about a path the config names says which override sets it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ml_collections import ConfigDict

from resps_jax.errors import UserError


def parse_config_args(argv: list[str], extra_bools: tuple[str, ...] = ()) -> tuple[ConfigDict, dict[str, bool]]:
    """argv -> (config, {flag: value}) for `--config ...` plus the boolean flags named.

    A bare `--config llama8b` is resolved to configs/llama8b.py first (`resolve_config_argv`).
    """
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    argv = ["prog", *resolve_config_argv(argv)]
    try:
        # config_flags reads argv when the flag is defined, to register the --config.x overrides.
        config_flags.DEFINE_config_file(
            "config", None, "ml_collections config file", flag_values=values, lock_config=True, sys_argv=argv
        )
        for name in extra_bools:
            flags.DEFINE_bool(name, False, name, flag_values=values)
        values(argv)
        config = values.config
        has_workdir = config is not None and "workdir" in config  # touching it surfaces load errors
    except flags.Error as err:
        text = str(err)
        if "Error whilst parsing config file" in text:  # get_config raised: its traceback's last line says why
            raise UserError(f"cannot load --config: {text.strip().splitlines()[-1].strip()}") from None
        raise UserError(_first_line(text)) from None
    except (KeyError, AttributeError, ValueError, TypeError) as err:
        raise UserError(f"bad --config override, unknown key or value: {_first_line(str(err))}") from None
    except OSError as err:  # the config file itself (config_flags wraps the errno error)
        detail = [line.strip() for line in str(err).splitlines() if line.strip().startswith("[Errno")]
        raise UserError(f"cannot load --config: {detail[0] if detail else _first_line(str(err))}") from None
    if config is None:
        raise UserError("--config FILE.py is required")
    if not has_workdir:
        raise UserError("the config has no top-level 'workdir'")
    return config, {name: bool(values[name].value) for name in extra_bools}


def resolve_config_argv(argv: list[str]) -> list[str]:
    """`--config llama8b.py` (or `--config=llama8b.py[:arg]`) finds configs/llama8b.py when no
    such file exists relative to the working directory: the repository's configs folder."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = _resolve(out[i + 1], configs)
        elif arg.startswith("--config="):
            out[i] = "--config=" + _resolve(arg[len("--config="):], configs)
    return out


def require_model(config, head: bool = True) -> str:
    """config.model, or one error naming the overrides that set it.

    The paper configs (llama8b, vicuna13b, llama70b) leave the checkpoint paths to the user,
    so this is the first thing such a run meets; `head` adds the draft head's flag too.
    """
    if config.get("model"):
        return str(config.model)
    flags = "--config.model=PATH (an HF Llama folder or a .gguf file)"
    if head:
        flags += " and --config.draft_model=PATH (its EAGLE-3 head folder)"
    raise UserError(f"the config names no target model: pass {flags}")


@contextlib.contextmanager
def config_source(key: str) -> Iterator[None]:
    """A UserError raised while loading what config.KEY names gains the override that sets it.

    The loaders speak of paths (`model path does not exist: ...`) without knowing they came
    from a config; a user of train or evaluate needs the flag to change.
    """
    try:
        yield
    except UserError as err:
        raise UserError(f"{err} (config.{key}: set it with --config.{key}=...)") from None


def _resolve(spec: str, configs: Path) -> str:
    path, colon, arg = spec.partition(":")
    if Path(path).is_file() or "/" in path:
        return spec
    name = path if path.endswith(".py") else f"{path}.py"
    return str(configs / name) + colon + arg if (configs / name).is_file() else spec


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "invalid arguments"
