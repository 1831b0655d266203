r"""mup's coordinate check: does each layer's output stay the same size as the width grows?

For each hidden width :math:`n` an MLP ``in -> n -> ... -> n -> classes`` is trained for a few
full-batch steps on one fixed batch, and the mean absolute coordinate
:math:`\ell_1 = \mathrm{mean}|y|` of every Dense layer's output :math:`y` is recorded before each
step and after the last. Under muP (:mod:`jaxlr.mup`) each curve :math:`\ell_1(n)` stays flat;
under the standard parametrization (SP) the trained layers' outputs grow with :math:`n`. This is
the test of Tensor Programs V, Appendix D.1 and ``mup.coord_check``.

* :func:`coord_check`: the table for one (parametrization, optimizer) on any batch;
* :func:`coord_check_summary`: :math:`\ell_1(n_{\max}) / \ell_1(n_{\min})` and the log-log slope;
* :func:`plot_coord_check`: mup's figure (:math:`\ell_1` against width, one panel per step);
* :func:`run_coord_check`: SP and muP, Adam and SGD, on a fixed ``digits`` batch
  (:class:`CoordCheckConfig`), which is what ``python -m jaxlr.coord_check --out DIR`` runs and
  writes as ``coord_check.csv``, ``coord_check_summary.csv`` and ``coord_check.png``.

The package imports JAX, Optax and pandas only when one of these is first used (its computation
is in :mod:`jaxlr.coord_check.check`), so ``python -m jaxlr.coord_check --help`` and its flag
errors return at once.

Example:
  >>> import numpy as np
  >>> x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4); y = np.arange(8) % 2
  >>> df = coord_check((16, 32), parametrization="mup", optimizer="sgd", lr=0.1, steps=1,
  ...                  base_width=16, seeds=(0,), data=(x, y), depth=1)
  >>> df.shape, sorted(df["layer"].unique())
  ((8, 9), ['Dense_0', 'Dense_1'])

References:
  G. Yang et al. "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
  Transfer", 2022 (arXiv:2203.03466), Appendix D.1. microsoft/mup, ``mup/coord_check.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from jaxlr.coord_check.config import CoordCheckConfig, Parametrization

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    import jax
    import pandas as pd

    from jaxlr.coord_check.check import coord_check_summary as coord_check_summary
    from jaxlr.coord_check.check import digits_batch as digits_batch
    from jaxlr.coord_check.check import plot_coord_check as plot_coord_check
    from jaxlr.coord_check.check import run_coord_check as run_coord_check

__all__ = [
    "CoordCheckConfig",
    "coord_check",
    "coord_check_summary",
    "digits_batch",
    "plot_coord_check",
    "run_coord_check",
]

_LAZY = ("coord_check_summary", "digits_batch", "plot_coord_check", "run_coord_check")


def coord_check(
    widths: Sequence[int],
    *,
    parametrization: Parametrization,
    optimizer: Literal["adam", "sgd"],
    lr: float,
    steps: int = 4,
    base_width: int,
    seeds: Sequence[int] = (0, 1, 2),
    data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
    depth: int = 2,
    num_classes: int | None = None,
    output_mult: float = 1.0,
    readout_zero_init: bool = True,
) -> pd.DataFrame:
    r"""mup's coordinate check: the size of each layer's output against width, during training.

    For each width :math:`n` and seed, an MLP ``in -> n -> ... -> n -> classes`` (``depth``
    hidden layers) is trained for ``steps`` full-batch steps on the fixed batch ``data`` with
    cross-entropy; before each step and after the last, the mean absolute coordinate
    :math:`\ell_1 = \mathrm{mean}|y|` of every Dense layer's output :math:`y` (pre-activations;
    the logits for the readout) is recorded. Under muP each curve :math:`\ell_1(n)` stays flat;
    under SP the trained layers' outputs blow up with :math:`n`. (mup's ``t`` is ``step + 1``: it
    records the forward pass of step ``t``.)

    SP: ``init_mlp(init="torch")``'s init, trained by :func:`~jaxlr.mup.mup_adam` /
    :func:`~jaxlr.mup.mup_sgd` with all scales 1 (that is, ``optax.adam`` / ``optax.sgd``). muP:
    :func:`~jaxlr.mup.init_mup_mlp`'s params (``base_hidden=base_width``), computed as the same
    torch draws times :func:`~jaxlr.mup.mup_init_factors` (readout zeroed), with
    :func:`~jaxlr.mup.mup_lr_scales`. SP and muP share one compiled init and training program
    per width (compilation dominates the run time on CPU); training is vmapped over seeds. The
    init of seed ``s`` is exactly ``init_mlp(jax.random.key(s, impl="rbg"), ...)``'s (``rbg``:
    faster to compile than threefry), whatever the other seeds.

    Args:
      widths: hidden widths to compare.
      parametrization: ``"sp"`` or ``"mup"``.
      optimizer: ``"adam"`` or ``"sgd"``.
      lr: the (base) learning rate.
      steps: number of optimizer steps.
      base_width: muP base width (ignored for SP).
      seeds: init seeds (vmapped).
      data: a fixed batch ``(x, y)``: float inputs ``(N, in)`` and integer labels ``(N,)``.
      depth: number of hidden layers (at least 1).
      num_classes: number of outputs (default ``max(y) + 1``).
      output_mult: muP's :math:`\alpha_{\mathrm{out}}`.
      readout_zero_init: muP's readout zero-init.

    Returns:
      A DataFrame with one row per (width, seed, step, layer) and columns ``parametrization,
      optimizer, lr, width, layer, step, seed, l1, loss`` (``loss``: the batch loss at that
      step; ``layer``: ``Dense_0`` ... ``Dense_{depth}``, the last being the logits).
    """
    from jaxlr.coord_check.check import measure

    return measure(
        widths, parametrization=parametrization, optimizer=optimizer, lr=lr, steps=steps,
        base_width=base_width, seeds=seeds, data=data, depth=depth, num_classes=num_classes,
        output_mult=output_mult, readout_zero_init=readout_zero_init,
    )  # fmt: skip


def __getattr__(name: str) -> Any:
    """A public function of :mod:`jaxlr.coord_check.check`, imported on first use (then cached
    in this module)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("jaxlr.coord_check.check"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
