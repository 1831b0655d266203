r"""Muon: momentum orthogonalized by a Newton-Schulz iteration, for the hidden matrices.

For a hidden matrix :math:`W \in \mathbb{R}^{n_\mathrm{in} \times n_\mathrm{out}}` (a Flax
kernel) with gradient :math:`G_t`, PyTorch's ``torch.optim.Muon`` (and Keller Jordan's) is

.. math::

    B_t = \mu B_{t-1} + (1 - \mu) G_t, \qquad
    \tilde B_t = (1 - \mu) G_t + \mu B_t \ \text{(Nesterov)}, \qquad
    d_t = \kappa\, \mathrm{NS}_5(\tilde B_t),

where :math:`\mathrm{NS}_k` is :math:`k` steps of the quintic Newton-Schulz iteration
:math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top`, from
:math:`X_0 = \tilde B / \max(\lVert \tilde B\rVert_F, \epsilon)`, with
:math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`: it maps the singular values of :math:`\tilde B`
to roughly 1 (between about 0.7 and 1.2), i.e. approximately :math:`UV^\top`. The shape factor
:math:`\kappa` is the scaling convention (optax issues #1249, #1435 discuss the difference):

* ``spectral``: :math:`\kappa = \sqrt{\max(1, n_\mathrm{out}/n_\mathrm{in})}` (PyTorch's
  ``adjust_lr_fn="original"``, optax's default), the spectral-norm scaling;
* ``rms``: :math:`\kappa = 0.2\sqrt{\max(n_\mathrm{out}, n_\mathrm{in})}` (Moonshot's,
  PyTorch's ``"match_rms_adamw"``), which gives the update the RMS of a typical AdamW update, so
  that one learning rate serves both the Muon and the Adam parameters.

Every other parameter (the biases, the readout matrix) takes Adam's direction. The sweep gives
both parts the lane's one learning rate, which is why ``rms`` is the default there.

Differences from ``torch.optim.Muon``: the iteration runs in the parameters' dtype (PyTorch
casts to bfloat16), so a float64 run is a float64 computation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
NS_EPS = 1e-7  # PyTorch's EPS


def newton_schulz(
    x: jax.Array,
    steps: int = NS_STEPS,
    coeffs: tuple[float, float, float] = NS_COEFFS,
    eps: float = NS_EPS,
) -> jax.Array:
    r"""``steps`` quintic Newton-Schulz iterations from :math:`x / \max(\lVert x\rVert_F, \epsilon)`
    (see the module docstring); the Gram matrix is taken over the shorter side."""
    a, b, c = coeffs
    wide = x.shape[0] <= x.shape[1]
    y = x if wide else x.T
    y = y / jnp.maximum(jnp.linalg.norm(y), eps)
    for _ in range(steps):
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y if wide else y.T


def shape_factor(fan_in: int, fan_out: int, scaling: Literal["spectral", "rms"]) -> float:
    r""":math:`\kappa` of an :math:`n_\mathrm{in} \times n_\mathrm{out}` matrix (see the module)."""
    if scaling == "spectral":
        return max(1.0, fan_out / fan_in) ** 0.5
    if scaling == "rms":
        return 0.2 * max(fan_out, fan_in) ** 0.5
    raise ValueError(f"unknown Muon scaling {scaling!r}; choose spectral or rms")


class MuonState(NamedTuple):
    """The Nesterov momentum buffers :math:`B` (zeros for the non-Muon leaves)."""

    momentum: Any


def scale_by_muon(
    momentum: float = 0.95,
    nesterov: bool = True,
    scaling: Literal["spectral", "rms"] = "rms",
    steps: int = NS_STEPS,
) -> optax.GradientTransformation:
    """Muon's direction :math:`d_t` for every leaf it is given (2-D leaves only); see the module
    docstring. Use it on the hidden matrices (:func:`muon_direction` partitions a model)."""

    def init(params: Any) -> MuonState:
        return MuonState(jax.tree.map(jnp.zeros_like, params))

    def update(updates: Any, state: MuonState, params: Any = None) -> tuple[Any, MuonState]:
        buf = jax.tree.map(lambda b, g: momentum * b + (1 - momentum) * g, state.momentum, updates)
        look = (
            jax.tree.map(lambda b, g: (1 - momentum) * g + momentum * b, buf, updates)
            if nesterov
            else buf
        )

        def direction(m: jax.Array) -> jax.Array:
            if m.ndim != 2:
                raise ValueError(f"Muon takes 2-D matrices, got shape {m.shape}")
            return shape_factor(m.shape[0], m.shape[1], scaling) * newton_schulz(m, steps)

        return jax.tree.map(direction, look), MuonState(buf)

    return optax.GradientTransformation(init, update)


def _layer_index(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else -1


def readout_module(params: Any) -> str | None:
    """The top-level module that is the readout: ``readout`` if there is one, else the last
    ``Dense_i`` of an MLP (by its number: ``Dense_10`` after ``Dense_2``); ``None`` otherwise
    (a GPT whose readout is the tied token embedding)."""
    if "readout" in params:
        return "readout"
    if params and all(re.fullmatch(r"Dense_\d+", k) for k in params):
        return max(params, key=_layer_index)
    return None


def hidden_matrices(params: Any) -> Any:
    """``True`` for the leaves Muon trains: the 2-D ``kernel`` leaves of every module but the
    readout (:func:`readout_module`); ``False`` for the rest (biases, LayerNorm scales,
    embeddings, the readout), which take Adam."""
    last = readout_module(params)

    def mark(path: Any, p: Any) -> bool:
        names = [getattr(k, "key", None) for k in path]
        return names[0] != last and names[-1] == "kernel" and jnp.ndim(p) == 2

    return jax.tree_util.tree_map_with_path(mark, params)


def muon_direction(
    momentum: float = 0.95,
    scaling: Literal["spectral", "rms"] = "rms",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    mask: Callable[[Any], Any] = hidden_matrices,
) -> optax.GradientTransformation:
    """Muon (:func:`scale_by_muon`, Nesterov) on the leaves ``mask(params)`` marks, Adam's
    direction (``eps`` 1e-8) on the others. Multiply by ``-lr`` (``optax.scale``) for the
    update, and add weight decay as ``torch.optim.Muon`` does with ``optax.add_decayed_weights``
    before that."""

    def labels(params: Any) -> Any:
        return jax.tree.map(lambda m: "muon" if m else "adam", mask(params))

    return optax.multi_transform(
        {
            "muon": scale_by_muon(momentum, True, scaling),
            "adam": optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=1e-8),
        },
        labels,
    )
