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


def lane_mesh(devices: int | None) -> Mesh | None:
    """A 1-D ``lanes`` mesh over the first ``devices`` local devices (``None`` for one)."""
    local = jax.local_devices()
    n = devices or len(local)
    if n > len(local):
        raise ConfigError(
            f"--devices {n} asks for more devices than this process has ({len(local)}: "
            f"{local[0].platform}); use --devices {len(local)} or fewer"
        )
    if n == 1:
        return None
    return Mesh(np.array(local[:n]), ("lanes",))


def mesh_size(mesh: Mesh | None) -> int:
    """Devices in ``mesh`` (1 for no mesh)."""
    return 1 if mesh is None else mesh.size


def replicated(mesh: Mesh | None) -> NamedSharding | None:
    """The sharding of arrays every device holds whole (the data)."""
    return None if mesh is None else NamedSharding(mesh, P())


def place_lrs(lrs: jax.Array, mesh: Mesh | None) -> jax.Array:
    """The per-lane learning rates ``(L,)``, split over the mesh."""
    return lrs if mesh is None else jax.device_put(lrs, NamedSharding(mesh, P("lanes")))


def place_state(tree: Any, mesh: Mesh | None) -> Any:
    """Puts a lane tree on ``mesh``: arrays with a ``(S, L, ...)`` layout split along ``L``."""
    if mesh is None:
        return tree
    lanes = NamedSharding(mesh, P(None, "lanes"))
    repl = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.device_put(a, lanes if np.ndim(a) >= 2 else repl), tree)
