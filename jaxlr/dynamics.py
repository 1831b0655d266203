r"""Per-layer training dynamics of the sweep's lanes (``--dynamics``, ``dynamics.csv``).

At the end of every epoch, for every lane and Dense layer: the epoch's relative update of the
kernel and the RMS of the layer's output on a fixed probe batch (:func:`layer_dynamics`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PROBE = 256
"""Examples of the fixed probe batch of :func:`layer_dynamics`: the first of the test set."""

DYNAMICS = ("update_ratio", "output_rms")
"""The quantities of :func:`layer_dynamics`, in its last axis (``dynamics.csv``'s ``quantity``)."""


def kernel_layers(params: Any) -> tuple[str, ...]:
    """The top-level modules of a params tree that hold a ``kernel``, in the order of their
    trailing numbers (``Dense_0``, ``Dense_1``, ..., ``Dense_10``)."""
    import re

    names = [k for k, v in params.items() if isinstance(v, dict) and "kernel" in v]
    return tuple(
        sorted(names, key=lambda n: (int(m.group(1)) if (m := re.search(r"(\d+)$", n)) else -1, n))
    )


def layer_dynamics(
    model: Any, start: Any, params: Any, probe: jax.Array, alive: jax.Array
) -> jax.Array:
    r"""Per lane and layer ``l``: :math:`\lVert W_l^{(e)} - W_l^{(e-1)}\rVert_F /
    \lVert W_l^{(e-1)}\rVert_F` (the epoch's update of the kernel relative to the kernel at
    the epoch's start) and :math:`\sqrt{\mathrm{mean}(z_l^2)}` of the layer's output
    :math:`z_l` (before its activation) on the ``probe`` batch after the epoch. ``start`` and
    ``params`` have lane axes ``(S, L)``; NaN for a lane that is dead. Shape ``(S, L, layers, 2)``.

    The second is what microsoft/mup's coordinate check plots, here at every lr and epoch of
    the real training: under muP it stays flat across widths, under SP it grows with width for
    the layers whose lr is too large.
    """
    layers = kernel_layers(params)

    def lane(p0: Any, p: Any) -> jax.Array:
        _, inter = model.apply(
            {"params": p}, probe, capture_intermediates=True, mutable=["intermediates"]
        )
        out = []
        for name in layers:
            w0, w = p0[name]["kernel"], p[name]["kernel"]
            ratio = jnp.linalg.norm(w - w0) / jnp.linalg.norm(w0)
            z = inter["intermediates"][name]["__call__"][0]
            out.append(jnp.stack([ratio, jnp.sqrt(jnp.mean(jnp.square(z)))]))
        return jnp.stack(out).astype(jnp.float32)

    stats = jax.vmap(jax.vmap(lane))(start, params)
    return jnp.where(alive[..., None, None], stats, jnp.nan)
