"""Policy checkpoints: Orbax arrays (policy + optimizer) beside JSON metadata.

The metadata carries everything a restore must agree with (action set, state size and
mode, network width) and everything a resume needs to continue exactly (normaliser,
RNG key, data position, the transitions collected past the last update). A restore
reads the metadata first and refuses a mismatch by name, before any array is touched;
arrays are restored into an abstract target (Orbax's rule). Nothing here writes on a
failed restore, so a bad checkpoint never costs the ones beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from resps_jax.decoding.tree import format_action
from resps_jax.errors import UserError
from resps_jax.rl.actions import parse_actions
from resps_jax.rl.agent import Agent, AgentConfig
from resps_jax.rl.ppo import PPOConfig

ITEMS = ("state", "meta")


def manager(folder: Path, max_to_keep: int = 3) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        folder.absolute(), item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
    )


def save(mngr: ocp.CheckpointManager, step: int, agent: Agent, extra: dict) -> None:
    meta = {**agent.meta(), **extra}
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(agent.arrays()), meta=ocp.args.JsonSave(meta)),
              force=True)
    mngr.wait_until_finished()


def read_meta(mngr: ocp.CheckpointManager, step: int, where: Path) -> dict:
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
    except Exception as err:  # a truncated or foreign folder: the user's to fix, named
        raise UserError(f"{where}: cannot read policy checkpoint {step} ({type(err).__name__}: {_short(err)})") from None
    if not isinstance(meta, dict) or "obs_dim" not in meta or "actions" not in meta:
        raise UserError(f"{where}: checkpoint {step} is not a Re-SpS policy checkpoint (no obs_dim/actions metadata)")
    return meta


def check_compatible(meta: dict, actions: list[tuple[int, int, int]], obs_dim: int, hidden: tuple[int, ...],
                     where: Path) -> None:
    saved = [tuple(a) for a in parse_actions(";".join(meta["actions"]))]
    if saved != list(actions):
        raise UserError(
            f"{where}: the checkpoint's action set ({';'.join(meta['actions'])}) differs from the config's "
            f"({';'.join(format_action(a) for a in actions)})"
        )
    if int(meta["obs_dim"]) != obs_dim:
        raise UserError(f"{where}: the checkpoint's state size {meta['obs_dim']} differs from this run's {obs_dim}")
    if tuple(meta["hidden"]) != tuple(hidden):
        raise UserError(f"{where}: the checkpoint's network {meta['hidden']} differs from the config's {list(hidden)}")


def restore_into(mngr: ocp.CheckpointManager, step: int, agent: Agent, meta: dict, where: Path) -> None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, agent.arrays())
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        agent.restore(restored["state"], meta)
    except Exception as err:
        raise UserError(f"{where}: cannot restore policy checkpoint {step} ({type(err).__name__}: {_short(err)})") from None


def locate(path: str) -> tuple[Path, int | None]:
    """A checkpoints folder (latest step), one step folder inside it, or the name of a policy
    shipped in resps_jax/policies/ (`smollm2`, or an exact version: `smollm2-v5`) -> (folder, step).
    A local folder of that name wins."""
    from resps_jax.policies import SHIPPED_POLICIES, refuse_removed_policy, shipped_policy_folder

    folder = Path(path).expanduser()
    if not folder.exists():
        if (shipped := shipped_policy_folder(path)) is not None:
            return shipped, None
        refuse_removed_policy(path)
        if path in SHIPPED_POLICIES:
            raise UserError(f"no {path} policy ships in this install (resps_jax/policies/); train one with "
                            f"`python -m resps_jax.train --config {path}` and pass its workdir")
    if not folder.is_dir():
        raise UserError(f"policy checkpoint not found: {folder}")
    if folder.name.isdigit() and (folder / "meta").exists():
        return folder.parent, int(folder.name)
    if (folder / "checkpoints").is_dir():
        folder = folder / "checkpoints"
    return folder, None


@contextlib.contextmanager
def opened(path: str, named_by: str | None = None) -> Iterator[tuple[ocp.CheckpointManager, int, dict, Path]]:
    """The checkpoint `path` names (see `locate`) at its given or latest step, open for reading:
    yields (manager, step, metadata, folder) and closes the manager after. `named_by` is what
    named it (a config option such as `rl.init_from=...`), for the error when it holds none."""
    folder, step = locate(path)
    mngr = manager(folder)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{named_by}: no policy checkpoint in {folder}" if named_by
                            else f"{folder}: no policy checkpoint in this folder")
        yield mngr, step, read_meta(mngr, step, folder), folder
    finally:
        mngr.close()


def load_policy(path: str) -> tuple[Agent, dict]:
    """An inference-mode Agent from a checkpoint (see `locate`), and its metadata."""
    with opened(path) as (mngr, step, meta, folder):
        actions = parse_actions(";".join(meta["actions"]))
        cfg = AgentConfig(
            obs_dim=int(meta["obs_dim"]), num_actions=len(actions), hidden=tuple(meta["hidden"]),
            state=meta["state"], normalize=bool(meta["normalize"]), temperature=float(meta["temperature"]),
            greedy=bool(meta["greedy"]), ppo=PPOConfig(**meta["ppo"]),
        )
        agent = Agent(cfg)
        restore_into(mngr, step, agent, meta, folder)
    agent.training = False
    return agent, meta


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
