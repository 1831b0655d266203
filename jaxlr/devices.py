"""The devices a sweep runs on: how many, how much memory, and how lanes are laid out.

Lanes are sharded along their ``lrs`` axis over a 1-D ``("lanes",)`` mesh of local devices; the
data and everything without a lane axis is replicated.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlr.config import ConfigError


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Usable memory of ``device``: its allocator limit, or half the host RAM on CPU."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def initialize_distributed(cfg: Any) -> None:
    """Joins the processes of a multi-process sweep (``jax.distributed.initialize``), if asked.

    Must run before anything else touches a JAX backend; a second call is a no-op.
    """
    if cfg.coordinator_address is None and not cfg.distributed:
        return
    if jax.distributed.is_initialized():
        return
    try:
        if cfg.distributed:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(
                cfg.coordinator_address, num_processes=cfg.num_processes, process_id=cfg.process_id
            )
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"jax.distributed could not start: {e}".splitlines()[0]) from None


def is_writer() -> bool:
    """Whether this process writes the sweep's files (process 0 of a multi-process sweep)."""
    return jax.process_index() == 0


def lane_mesh(devices: int | None) -> Mesh | None:
    """A 1-D ``lanes`` mesh over the first ``devices`` devices (``None`` for one).

    In a multi-process sweep the mesh spans every process's devices (``jax.devices()``).
    """
    pool = jax.devices() if jax.process_count() > 1 else jax.local_devices()
    n = devices or len(pool)
    if n > len(pool):
        raise ConfigError(
            f"--devices {n} asks for more devices than this sweep has ({len(pool)}: "
            f"{pool[0].platform}); use --devices {len(pool)} or fewer"
        )
    if jax.process_count() > 1 and n != len(pool):
        raise ConfigError("a multi-process sweep uses every process's devices; drop --devices")
    if n == 1:
        return None
    return Mesh(np.array(pool[:n]), ("lanes",))


def mesh_size(mesh: Mesh | None) -> int:
    """Devices in ``mesh`` (1 for no mesh)."""
    return 1 if mesh is None else mesh.size


def replicated(mesh: Mesh | None) -> NamedSharding | None:
    """The sharding of arrays every device holds whole (the data)."""
    return None if mesh is None else NamedSharding(mesh, P())


def place_lrs(lrs: Any, mesh: Mesh | None) -> Any:
    """The per-lane learning rates ``(L,)`` (or a tree of per-lane arrays, e.g.
    :class:`jaxlr.engine.Hypers`), split over the mesh."""
    if mesh is None:
        return lrs
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, P("lanes"))), lrs)


def place_state(tree: Any, mesh: Mesh | None) -> Any:
    """Puts a lane tree on ``mesh``: arrays with a ``(S, L, ...)`` layout split along ``L``."""
    if mesh is None:
        return tree
    lanes = NamedSharding(mesh, P(None, "lanes"))
    repl = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.device_put(a, lanes if np.ndim(a) >= 2 else repl), tree)
