"""Multi-process runs through `jax.distributed`: start-up, who writes, and agreeing on choices.

Every process runs the same program over one global mesh and must issue the same jitted
calls with the same static shapes. Host-side choices that pick a shape (a tree from the
command line today, a policy's action later) are therefore made on process 0 and
broadcast, so a policy that reads slightly different floats on another host can never
make the processes compile different executables.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from resps_jax.errors import UserError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by jax.distributed itself too
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run when asked (arguments, else the JAX_* variables); True if joined.

    Must run before anything touches a device. A single process without these settings
    is left alone, so the same CLI serves laptops and clusters.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None and os.environ.get(ENV_PROCESS_ID):
        process_id = _env_int(ENV_PROCESS_ID)
    if not coordinator_address:
        if num_processes not in (None, 1):
            raise UserError(f"{num_processes} processes requested but no coordinator address ({ENV_COORDINATOR})")
        return False
    if num_processes is None or process_id is None:
        raise UserError(
            f"coordinator {coordinator_address} given without the process count and id "
            f"({ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})"
        )
    if not 0 <= process_id < num_processes:
        raise UserError(f"process id {process_id} is outside 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
    return True


def initialize_from_config(config) -> bool:
    """`initialize` from a config's `distributed` section (empty fields fall back to JAX_*)."""
    section = config.get("distributed") if hasattr(config, "get") else None
    if not section:
        return initialize()
    return initialize(
        str(section.get("coordinator_address") or "") or None,
        int(section.num_processes) if section.get("num_processes", 0) > 0 else None,
        int(section.process_id) if section.get("process_id", -1) >= 0 else None,
    )


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise UserError(f"{name}={os.environ[name]!r} is not an integer") from None


def is_writer() -> bool:
    """Only process 0 prints results, writes logs, reports and checkpoint metadata."""
    return jax.process_index() == 0


def agree(values):
    """Process 0's value of a small int tuple/int on every process (identity in one process)."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    array = np.asarray(values, np.int32)
    shared = np.asarray(multihost_utils.broadcast_one_to_all(array))
    return int(shared) if array.ndim == 0 else tuple(int(v) for v in shared)


def agree_floats(values: list[float]) -> list[float]:
    """Process 0's float list on every process: the policy's rewards, so every process
    applies the same PPO update (wall-clock rewards differ from host to host)."""
    if jax.process_count() == 1:
        return list(values)
    from jax.experimental import multihost_utils

    shared = multihost_utils.broadcast_one_to_all(np.asarray(values, np.float32))
    return [float(v) for v in np.asarray(shared)]
