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
  writes as ``coord_check.csv``, ``coord_check_summary.csv`` and ``coord_check.png``;
* :func:`gpt_coord_check` and :func:`run_gpt_coord_check` (:class:`GPTCoordCheckConfig`): the
  same for the GPT of :mod:`jaxlr.gpt` on a fixed batch of text (:func:`text_batch`), recording
  the RMS :math:`\sqrt{\mathrm{mean}\, y^2}` of its embedding output, each block's attention
  logits, attention output, MLP output and residual stream, and the readout logits
  (``python -m jaxlr.coord_check --model gpt --out DIR``: ``gpt_coord_check.*``).

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

from jaxlr.coord_check.config import CoordCheckConfig, GPTCoordCheckConfig, Parametrization

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    import jax
    import pandas as pd

    from jaxlr.coord_check.check import coord_check_summary as coord_check_summary
    from jaxlr.coord_check.check import digits_batch as digits_batch
    from jaxlr.coord_check.check import plot_coord_check as plot_coord_check
    from jaxlr.coord_check.check import run_coord_check as run_coord_check
    from jaxlr.coord_check.gpt_check import run_gpt_coord_check as run_gpt_coord_check
    from jaxlr.coord_check.gpt_check import text_batch as text_batch

__all__ = [
    "CoordCheckConfig",
    "GPTCoordCheckConfig",
    "coord_check",
    "coord_check_summary",
    "digits_batch",
    "gpt_coord_check",
    "plot_coord_check",
    "run_coord_check",
    "run_gpt_coord_check",
    "text_batch",
]

_LAZY = {  # name -> the module defining it, imported on first use
    "coord_check_summary": "jaxlr.coord_check.check",
    "digits_batch": "jaxlr.coord_check.check",
    "plot_coord_check": "jaxlr.coord_check.check",
    "run_coord_check": "jaxlr.coord_check.check",
    "run_gpt_coord_check": "jaxlr.coord_check.gpt_check",
    "text_batch": "jaxlr.coord_check.gpt_check",
}


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


def gpt_coord_check(
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
    head_dim: int = 16,
) -> pd.DataFrame:
    r"""The coordinate check of :class:`jaxlr.gpt.GPT`: the RMS of its activations against
    width, during training.

    For each width :math:`n` and seed, ``GPT(n, depth, T, head_dim=head_dim)`` (tied readout,
    :math:`T` the windows' length) is trained for ``steps`` full-batch steps on the fixed token
    windows ``data`` with next-token cross-entropy; before each step and after the last, the
    RMS :math:`\sqrt{\mathrm{mean}\, y^2}` of each activation :math:`y` is recorded:
    ``embedding`` (:math:`x_0 = W_{te}[s] + W_{pe}`), for each block ``block_i/attn_logits``
    (:math:`\tau q k^\top` over the causal pairs), ``block_i/attn_out``, ``block_i/mlp_out``
    (the branches, before the residual multiplier) and ``block_i/residual`` (:math:`x_{i+1}`),
    and the readout ``logits``. Under muP (:math:`\tau = 1/d_{\mathrm{head}}`, readout
    multiplier :math:`1/m`, ``MuAdam`` / ``MuSGD`` rates) each trained curve stays about flat
    in :math:`n`; under SP the hidden activations and the logits grow with :math:`n`.

    SP: ``optax.adam`` / ``optax.sgd``; muP: :func:`~jaxlr.mup.mup_adam` /
    :func:`~jaxlr.mup.mup_sgd` with :func:`~jaxlr.gpt.gpt_mup_lr_scales`. Seed ``s``'s init is
    ``init_gpt(model, jax.random.key(s))``'s; training is vmapped over seeds, one program per
    (width, parametrization, optimizer). The activations come from Flax's
    ``capture_intermediates`` (:mod:`jaxlr.coord_check.gpt_check`), the model unchanged.

    Args:
      widths: ``d_model`` values to compare, multiples of ``head_dim``.
      parametrization: ``"sp"`` or ``"mup"``.
      optimizer: ``"adam"`` or ``"sgd"``.
      lr: the (base) learning rate.
      steps: number of optimizer steps.
      base_width: muP base width (ignored for SP), a multiple of ``head_dim``.
      seeds: init seeds (vmapped).
      data: a fixed batch ``(x, y)`` of int token windows ``(B, T)`` and their next tokens
        (:func:`text_batch`).
      depth: number of transformer blocks.
      head_dim: size of one attention head (``heads = width / head_dim``).

    Returns:
      A DataFrame with one row per (width, seed, step, activation) and columns
      ``parametrization, optimizer, lr, width, layer, step, seed, rms, loss`` (``layer``: the
      activation's name, in the order above; ``loss``: the batch loss at that step).
    """
    from jaxlr.coord_check.gpt_check import measure_gpt

    return measure_gpt(
        widths, parametrization=parametrization, optimizer=optimizer, lr=lr, steps=steps,
        base_width=base_width, seeds=seeds, data=data, depth=depth, head_dim=head_dim,
    )  # fmt: skip


def __getattr__(name: str) -> Any:
    """A public function of :mod:`jaxlr.coord_check.check` or
    :mod:`jaxlr.coord_check.gpt_check`, imported on first use (then cached in this module)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
