r"""Maximal Update Parametrization (muP) for jaxlr's MLP, matching ``microsoft/mup``.

muP (Yang et al. 2022) makes every layer's activations change by :math:`\Theta(1)` per coordinate
in one step, whatever the width, so that the optimal learning rate tuned on a narrow *base*
model transfers to a wide *target* model. This module is the functional, shape-only counterpart
of ``mup.set_base_shapes``, ``mup.MuReadout``, ``mup.MuAdam`` and ``mup.MuSGD`` (v1.0), in three
orthogonal pieces: shapes, init (with the output multiplier), and optimizer scaling.

**Shapes.** A dimension of a parameter is *infinite* (a width) when it differs between the
base and the delta model (without a delta model: between the base and the target model); its
width multiplier is :math:`m = n / n_{\mathrm{base}}`, and a finite dimension has :math:`m = 1`.
Dimensions are read in torch order, ``(fan_out, fan_in)``: a Flax ``kernel`` ``(fan_in,
fan_out)`` is transposed first. A parameter with 2 infinite dims is *matrix-like* (hidden
weights), with 1 *vector-like* (input weights, biases of hidden layers, the readout weight),
with 0 *scalar-like* (the readout bias). Its ``width_mult`` is that of its last infinite torch
dim: the fan-in :math:`m_{\mathrm{in}}` for matrix-like parameters and for the readout weight,
the fan-out for input weights and hidden biases.

**Init** (``set_base_shapes(..., rescale_params=True)`` applied to torch's default init
:math:`U(\pm 1/\sqrt{\mathrm{fan\_in}})`):

.. math::

   W_l \sim U(\pm 1/\sqrt{\mathrm{fan\_in}_l}), \qquad
   b_l \sim U(\pm \sqrt{m_{\mathrm{in},l}} / \sqrt{\mathrm{fan\_in}_l})
        = U(\pm 1/\sqrt{\mathrm{fan\_in}_{\mathrm{base},l}}) \text{ if fan-in is infinite},

   W_L, b_L = 0 \quad\text{(readout zero-init)}\quad\text{or}\quad
   W_L, b_L \sim U(\pm \sqrt{m_L} / \sqrt{\mathrm{fan\_in}_L}).

**Output multiplier** (``MuReadout.forward``): the readout sees its input scaled down,

.. math:: \mathrm{logits} = W_L^\top \Big(\frac{\alpha_{\mathrm{out}}}{m_L}\, h_L\Big) + b_L,
   \qquad m_L = \mathrm{hidden}_{-1} / \mathrm{base\_hidden}_{-1},

which is :class:`jaxlr.models.MLP`'s ``readout_mult`` = :math:`\alpha_{\mathrm{out}} / m_L`.

**Learning rates** (the ``lr`` of the param group ``MuAdam``/``MuSGD`` puts each parameter in,
divided by the base lr :math:`\eta`):

.. math::

   \text{Adam:}\quad \eta_p = \begin{cases} \eta / m_{\mathrm{in}} & \text{matrix-like} \\
       \eta & \text{otherwise} \end{cases}
   \qquad
   \text{SGD:}\quad \eta_p = \begin{cases} \eta\, m_{\mathrm{out}} / m_{\mathrm{in}}
       & \text{matrix-like} \\ \eta\, m_p & \text{vector-like (}m_p = \text{its width\_mult)} \\
       \eta & \text{scalar-like.} \end{cases}

At the base width every :math:`m = 1`: the init, the multiplier and every learning rate are
those of the standard parametrization (SP), so muP *is* SP there (up to the readout zero-init).
Not covered: weight decay (``MuAdam`` multiplies it by :math:`m_{\mathrm{in}}` where it divides
the lr; jaxlr's optimizers have none) and layers with more than 2 width dims.

Checked by mup's coordinate check in :mod:`jaxlr.coord_check` (``python -m jaxlr.coord_check``).

Example:
  >>> import jax, optax
  >>> model, params = init_mup_mlp(jax.random.key(0), 8, (256, 256), 3, base_hidden=64)
  >>> scales = mup_lr_scales(params, mlp_shapes(8, (64, 64), 3), "adam")
  >>> scales["Dense_1"]["kernel"], scales["Dense_0"]["kernel"], model.readout_mult
  (0.25, 1.0, 0.25)
  >>> tx = optax.chain(optax.scale_by_adam(), scale_by_tree(scales), optax.scale(-1e-3))

References:
  G. Yang, E. J. Hu, I. Babuschkin, S. Sidor, X. Liu, D. Farhi, N. Ryder, J. Pachocki, W. Chen,
  J. Gao. "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
  Transfer", 2022 (arXiv:2203.03466), Table 3 and Appendix D.
  microsoft/mup, https://github.com/microsoft/mup (``mup/shape.py``, ``mup/infshape.py``,
  ``mup/layer.py``, ``mup/optim.py``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlr.models import MLP, layer_sizes

Optimizer = Literal["adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")

Shape = tuple[int, ...]

# --------------------------------------------------------------------------------------------
# Shapes: which dims are widths, and their multipliers (mup/infshape.py, mup/shape.py).
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InfShape:
    """A parameter's dims in torch order ``(fan_out, fan_in, *rest)``, as ``mup.InfShape``.

    Attributes:
      dims: the target model's sizes, torch order.
      base_dims: the base size of each infinite dim, ``None`` for a finite dim.
    """

    dims: Shape
    base_dims: tuple[int | None, ...]

    def mults(self) -> tuple[float, ...]:
        """Width multiplier ``n / n_base`` of each dim (1 for finite dims)."""
        return tuple(
            1.0 if b is None else d / b for d, b in zip(self.dims, self.base_dims, strict=True)
        )

    def ninf(self) -> int:
        """Number of infinite dims."""
        return sum(b is not None for b in self.base_dims)

    def width_mult(self) -> float:
        """Multiplier of the last infinite dim (fan-in for matrix-like), else 1."""
        for m, b in zip(reversed(self.mults()), reversed(self.base_dims), strict=True):
            if b is not None:
                return m
        return 1.0

    def fanin_mult(self) -> float:
        """Multiplier of the fan-in dim (torch dim 1)."""
        return self.mults()[1]

    def fanout_mult(self) -> float:
        """Multiplier of the fan-out dim (torch dim 0)."""
        return self.mults()[0]


def _is_shape(x: Any) -> bool:
    """A tuple of ints is a shape leaf, not a pytree node."""
    return isinstance(x, tuple) and all(isinstance(d, (int, np.integer)) for d in x)


def _shape_of(x: Any) -> Shape:
    """The shape of an array, ``ShapeDtypeStruct`` or shape tuple."""
    if _is_shape(x):
        return tuple(int(d) for d in x)
    if hasattr(x, "shape"):
        return tuple(int(d) for d in x.shape)
    raise TypeError(f"expected an array, a jax.ShapeDtypeStruct or a shape tuple, got {type(x)}")


def _shapes_by_path(tree: Any, what: str) -> dict[str, Shape]:
    """``{keystr(path): shape}`` for a tree of arrays / ``ShapeDtypeStruct`` / shape tuples."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_shape)
    if not leaves:
        raise ValueError(f"{what} has no leaves")
    return {jax.tree_util.keystr(path): _shape_of(leaf) for path, leaf in leaves}


def _torch_order(shape: Shape) -> Shape:
    """Flax ``(*spatial, in, out)`` -> torch ``(out, in, *spatial)``; vectors unchanged."""
    if len(shape) < 2:
        return shape
    return (shape[-1], shape[-2], *shape[:-2])


def _zip_infshape(shape: Shape, base: Shape, delta: Shape | None, path: str) -> InfShape:
    """``mup.shape._zip_infshape_dict`` for one parameter (all shapes in Flax layout)."""
    if len(base) != len(shape) or (delta is not None and len(delta) != len(shape)):
        raise ValueError(
            f"{path}: shape {shape} vs base {base}"
            + (f" / delta {delta}" if delta else "")
            + " differ in rank; did you build the base model with the same depth?"
        )
    shape, base = _torch_order(shape), _torch_order(base)
    ref = shape if delta is None else _torch_order(delta)
    # A dim is a width iff it differs between base and delta (or base and target if no delta).
    base_dims = tuple(None if b == r else b for b, r in zip(base, ref, strict=True))
    return InfShape(shape, base_dims)


def infshapes(params: Any, base_params: Any, *, delta_params: Any = None) -> Any:
    """The :class:`InfShape` of each leaf of ``params``: ``mup.set_base_shapes`` without torch.

    Args:
      params: the target model's params (arrays, ``jax.ShapeDtypeStruct`` or shape tuples).
      base_params: same tree for the base model (e.g. ``mlp_shapes(in, base_hidden, out)`` or
        ``jax.eval_shape`` output).
      delta_params: optional same tree for a *delta* model, differing from the base model in
        exactly the width dims; without it, the dims that differ between base and target are the
        widths (so at the base width nothing is a width).

    Returns:
      A tree shaped like ``params`` with an :class:`InfShape` per leaf.
    """
    base = _shapes_by_path(base_params, "base_params")
    delta = None if delta_params is None else _shapes_by_path(delta_params, "delta_params")

    def one(path: Any, leaf: Any) -> InfShape:
        key = jax.tree_util.keystr(path)
        if key not in base or (delta is not None and key not in delta):
            raise KeyError(
                f"no base/delta shape for parameter {key}; base_params and delta_params must be "
                "trees with the same keys as params (did you pass the 'params' collection to one "
                "and not the other?)"
            )
        return _zip_infshape(_shape_of(leaf), base[key], None if delta is None else delta[key], key)

    return jax.tree_util.tree_map_with_path(one, params, is_leaf=_is_shape)


def _is_infshape(x: Any) -> bool:
    """Leaf predicate for trees of :class:`InfShape`."""
    return isinstance(x, InfShape)


# --------------------------------------------------------------------------------------------
# Optimizer scaling (mup/optim.py).
# --------------------------------------------------------------------------------------------


def _lr_scale(s: InfShape, optimizer: str) -> float:
    """One parameter's muP lr multiplier (see the module docstring)."""
    if s.ninf() > 2:
        raise NotImplementedError(f"more than 2 infinite dims: {s}")
    if optimizer == "adam":
        return 1.0 / s.width_mult() if s.ninf() == 2 else 1.0
    if optimizer == "sgd":
        if s.ninf() == 2:
            return 1.0 / (s.fanin_mult() / s.fanout_mult())
        return s.width_mult() if s.ninf() == 1 else 1.0
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")


def mup_lr_scales(
    params: Any,
    base_params: Any,
    optimizer: Optimizer = "adam",
    *,
    delta_params: Any = None,
) -> Any:
    r"""Per-parameter learning-rate multipliers of ``mup.MuAdam`` / ``mup.MuSGD``.

    Adam (and Adam-like: RMSProp, AdaGrad): :math:`\eta_p = \eta / m_{\mathrm{in}}` for
    matrix-like parameters (2 width dims), :math:`\eta` otherwise. SGD: :math:`\eta\,
    m_{\mathrm{out}}/m_{\mathrm{in}}` for matrix-like, :math:`\eta\, m_p` for vector-like (1
    width dim, :math:`m_p` its multiplier), :math:`\eta` for the rest. ``base_lr * scale`` is the
    ``lr`` of the param group mup puts the parameter in.

    Args:
      params: the target model's params tree (arrays, ``ShapeDtypeStruct`` or shape tuples).
      base_params: the base model's tree, same keys (values: arrays, ``jax.eval_shape`` output or
        shape tuples, e.g. :func:`mlp_shapes`).
      optimizer: ``"adam"`` or ``"sgd"``.
      delta_params: optional delta model tree: the width dims are those where it differs from
        ``base_params`` (as ``set_base_shapes(model, base, delta=delta)``).

    Returns:
      A tree of Python floats shaped like ``params``; all 1.0 at the base width.

    Example:
      >>> s = mup_lr_scales(mlp_shapes(4, (128,), 2), mlp_shapes(4, (32,), 2), "sgd")
      >>> s["Dense_0"]["kernel"], s["Dense_0"]["bias"], s["Dense_1"]["kernel"], s["Dense_1"]["bias"]
      (4.0, 4.0, 4.0, 1.0)
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    shapes = infshapes(params, base_params, delta_params=delta_params)
    return jax.tree.map(lambda s: _lr_scale(s, optimizer), shapes, is_leaf=_is_infshape)


def mup_layer_lrs(scales: Any, learning_rate: jax.typing.ArrayLike) -> dict[str, Any]:
    """``{"Dense_0/kernel": learning_rate * scale, ...}``: the muP rates as the ``lrs`` mapping of
    :func:`jaxlr.transforms.per_layer_lr` (``/``-joined key paths), so that
    ``per_layer_lr(mup_layer_lrs(mup_lr_scales(..., "adam"), lr), inner=optax.scale_by_adam())``
    is muAdam. ``learning_rate`` may be a traced array (vmapped sweeps).

    Example:
      >>> mup_layer_lrs({"Dense_0": {"kernel": 0.25, "bias": 1.0}}, 0.1)
      {'Dense_0/bias': 0.1, 'Dense_0/kernel': 0.025}
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(scales)
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): learning_rate * s
        for path, s in leaves
    }


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
    r"""Multiplies each update leaf by the matching leaf of ``scales``: :math:`u_p \gets s_p u_p`.

    With ``scales = mup_lr_scales(...)``, ``chain(scale_by_adam(), scale_by_tree(scales),
    scale(-lr))`` is ``mup.MuAdam`` and ``chain(scale_by_tree(scales), scale(-lr))`` is
    ``mup.MuSGD``.

    Args:
      scales: a tree with the structure of the params; leaves are scalars (floats or arrays
        broadcastable to the leaf, e.g. per-neuron vectors).

    Returns:
      A stateless ``optax.GradientTransformation``.
    """

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(
        updates: Any, state: optax.EmptyState, params: Any = None
    ) -> tuple[Any, optax.EmptyState]:
        del params
        updates = jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def mup_adam(
    learning_rate: jax.typing.ArrayLike,
    scales: Any,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    r"""``mup.MuAdam``: Adam whose update is scaled per parameter, :math:`-\eta s_p \hat m /
    (\sqrt{\hat v} + \epsilon)`, with ``scales = mup_lr_scales(..., "adam")``."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        scale_by_tree(scales),
        optax.scale_by_learning_rate(learning_rate),
    )


def mup_sgd(
    learning_rate: jax.typing.ArrayLike,
    scales: Any,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""``mup.MuSGD``: :math:`-\eta s_p g` (or its heavy-ball momentum version, as
    ``torch.optim.SGD`` with ``dampening=0``), with ``scales = mup_lr_scales(..., "sgd")``."""
    parts = [] if momentum is None else [optax.trace(decay=momentum, nesterov=nesterov)]
    return optax.chain(*parts, scale_by_tree(scales), optax.scale_by_learning_rate(learning_rate))


# --------------------------------------------------------------------------------------------
# Init and output multiplier (mup/layer.py, mup/shape.py: rescale_params=True).
# --------------------------------------------------------------------------------------------


def mup_readout_mult(
    width: int,
    base_width: int,
    *,
    delta_width: int | None = None,
    output_mult: float = 1.0,
) -> float:
    r"""``MuReadout``'s input multiplier :math:`\alpha_{\mathrm{out}} / m_L`.

    Args:
      width: the readout's fan-in (the last hidden width) in the target model.
      base_width: the same in the base model.
      delta_width: the same in the delta model, if any; the fan-in is a width dim iff it differs
        from ``base_width`` (or, without delta, iff ``width != base_width``).
      output_mult: muP's tunable output multiplier :math:`\alpha_{\mathrm{out}}`.

    Returns:
      ``output_mult * base_width / width`` if the fan-in is a width dim, else ``output_mult``.

    Example:
      >>> mup_readout_mult(1024, 64), mup_readout_mult(64, 64, output_mult=2.0)
      (0.0625, 2.0)
    """
    ref = width if delta_width is None else delta_width
    m = 1.0 if ref == base_width else width / base_width
    return output_mult / m


def mlp_shapes(in_features: int, hidden: Sequence[int], num_classes: int) -> dict:
    """The params tree of ``MLP(hidden, num_classes)`` with shape tuples as leaves.

    Example:
      >>> mlp_shapes(3, (5,), 2)
      {'Dense_0': {'kernel': (3, 5), 'bias': (5,)}, 'Dense_1': {'kernel': (5, 2), 'bias': (2,)}}
    """
    sizes = layer_sizes(in_features, hidden, num_classes)
    return {
        f"Dense_{i}": {"kernel": (a, b), "bias": (b,)}
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }


def _dense_layers(tree: Any, prefix: str = "") -> dict[str, Mapping]:
    """``{path: layer}`` for every sub-dict holding a ``"kernel"`` (a Dense layer)."""
    if not isinstance(tree, Mapping):
        return {}
    if "kernel" in tree:
        return {prefix: tree}
    out: dict[str, Mapping] = {}
    for k, v in tree.items():
        out.update(_dense_layers(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def readout_layers(params: Any, base_params: Any, *, delta_params: Any = None) -> list[str]:
    """Dense layers that muP treats as readouts: width fan-in, finite fan-out (``MuReadout``).

    ``mup.assert_hidden_size_inf`` requires every such layer to be a ``MuReadout``; for an MLP it
    is the last layer only (when its fan-in is a width).
    """
    shapes = infshapes(params, base_params, delta_params=delta_params)
    return [
        name
        for name, layer in _dense_layers(shapes).items()
        if layer["kernel"].base_dims[1] is not None and layer["kernel"].base_dims[0] is None
    ]


def mup_init_factors(params: Any, base_params: Any, *, delta_params: Any = None) -> Any:
    r"""The factors by which ``set_base_shapes(..., rescale_params=True)`` multiplies each
    torch-initialized parameter (a tree of floats shaped like ``params``; see
    :func:`mup_rescale_init`).

    Example:
      >>> f = mup_init_factors(mlp_shapes(4, (128,), 2), mlp_shapes(4, (32,), 2))
      >>> f["Dense_0"]["kernel"], f["Dense_0"]["bias"], f["Dense_1"]["kernel"], f["Dense_1"]["bias"]
      (1.0, 1.0, 2.0, 2.0)
    """
    shapes = infshapes(params, base_params, delta_params=delta_params)
    factors = jax.tree.map(lambda s: 1.0, shapes, is_leaf=_is_infshape)
    for name, layer in _dense_layers(shapes).items():
        s = layer["kernel"]
        is_readout = s.base_dims[1] is not None and s.base_dims[0] is None
        f = math.sqrt(s.width_mult() if is_readout else s.fanin_mult())
        node = factors
        for k in name.split("/"):
            node = node[k]
        if is_readout:
            node["kernel"] = f
        if "bias" in node:
            node["bias"] = f
    return factors


def mup_rescale_init(params: Any, base_params: Any, *, delta_params: Any = None) -> Any:
    r"""``set_base_shapes(..., rescale_params=True)`` on torch-initialized params.

    For each Dense layer: a readout (width fan-in, finite fan-out;
    ``MuReadout._rescale_parameters``) has kernel and bias multiplied by
    :math:`\sqrt{m_{\mathrm{in}}}`; any other layer (``rescale_linear_bias``) has its bias
    multiplied by :math:`\sqrt{m_{\mathrm{in}}}`, which turns
    :math:`U(\pm 1/\sqrt{\mathrm{fan\_in}})` into
    :math:`U(\pm 1/\sqrt{\mathrm{fan\_in}_{\mathrm{base}}})`. Zero-initialized parameters
    stay zero. Like mup's, this is not idempotent: apply it once, to a fresh init.

    Args:
      params: a params tree of ``{"kernel", "bias"}`` Dense layers (arrays).
      base_params, delta_params: as in :func:`mup_lr_scales`.

    Returns:
      The rescaled params (a new tree).
    """
    factors = mup_init_factors(params, base_params, delta_params=delta_params)
    return jax.tree.map(
        lambda p, f: p if f == 1.0 else p * jnp.asarray(f, p.dtype), params, factors
    )


def _broadcast_widths(base_hidden: int | Sequence[int], hidden: Sequence[int]) -> tuple[int, ...]:
    """An int base width applies to every hidden layer."""
    if isinstance(base_hidden, (int, np.integer)):
        return (int(base_hidden),) * len(hidden)
    if len(base_hidden) != len(hidden):
        raise ValueError(
            f"base widths {tuple(base_hidden)} vs hidden {tuple(hidden)}: lengths differ"
        )
    return tuple(int(w) for w in base_hidden)


def mup_mlp(
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    base_hidden: int | Sequence[int],
    delta_hidden: int | Sequence[int] | None = None,
    output_mult: float = 1.0,
    readout_zero_init: bool = True,
    dtype: Any = jnp.float32,
) -> tuple[MLP, Callable[[jax.Array], dict]]:
    """The muP model and a pure ``init(key) -> params``, traceable under ``jit``/``vmap`` (e.g.
    ``jax.vmap(init)(keys)`` for a batch of seeds). Arguments as in :func:`init_mup_mlp`."""
    hidden = tuple(int(w) for w in hidden)
    base = _broadcast_widths(base_hidden, hidden)
    delta = None if delta_hidden is None else _broadcast_widths(delta_hidden, hidden)
    shapes = mlp_shapes(in_features, hidden, num_classes)
    base_shapes = mlp_shapes(in_features, base, num_classes)
    delta_shapes = None if delta is None else mlp_shapes(in_features, delta, num_classes)
    readouts = readout_layers(shapes, base_shapes, delta_params=delta_shapes)
    if any(r != f"Dense_{len(hidden)}" for r in readouts):
        raise ValueError(
            f"layers {readouts} map a width to a fixed size but are not the readout "
            f"(hidden={hidden}, base_hidden={base}); pass delta_hidden so that every hidden "
            "layer you scale counts as a width, as mup.set_base_shapes(..., delta=...) does"
        )
    if hidden:
        mult = mup_readout_mult(
            hidden[-1],
            base[-1],
            delta_width=None if delta is None else delta[-1],
            output_mult=output_mult,
        )
    else:
        mult = float(output_mult)
    model = MLP(
        hidden,
        num_classes,
        init_scheme="mup" if readout_zero_init else "torch",
        readout_mult=mult,
        dtype=dtype,
    )

    def init(key: jax.Array) -> dict:
        params = model.init(key, jnp.zeros((1, in_features), dtype))["params"]
        return mup_rescale_init(params, base_shapes, delta_params=delta_shapes)

    return model, init


def init_mup_mlp(
    key: jax.Array,
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    base_hidden: int | Sequence[int],
    delta_hidden: int | Sequence[int] | None = None,
    output_mult: float = 1.0,
    readout_zero_init: bool = True,
    dtype: Any = jnp.float32,
) -> tuple[MLP, dict]:
    r"""A muP :class:`~jaxlr.models.MLP` and its params, as mup's ``MuReadout`` +
    ``set_base_shapes(model, base, delta=delta)`` on torch's default init.

    Hidden layers: torch init, biases with width fan-in rescaled to :math:`U(\pm
    1/\sqrt{\mathrm{fan\_in}_{\mathrm{base}}})`. Readout: zero (``readout_zero_init``) or torch
    init times :math:`\sqrt{m_L}`, applied to :math:`(\alpha_{\mathrm{out}}/m_L)\, h_L`
    (``model.readout_mult``). With ``hidden == base_hidden`` and ``readout_zero_init=False``
    this returns exactly ``init_mlp(key, ..., init="torch")``.

    Note: ``model.init`` alone gives the un-rescaled torch init; use the returned params.

    Args:
      key: PRNG key.
      in_features, hidden, num_classes: the model's sizes.
      base_hidden: base hidden widths (an int applies to every hidden layer).
      delta_hidden: optional delta widths deciding which hidden dims are widths.
      output_mult: :math:`\alpha_{\mathrm{out}}`.
      readout_zero_init: zero-initialize the readout (recommended by Tensor Programs V, D.2).
      dtype: parameter dtype.

    Returns:
      ``(model, params)``.
    """
    model, init = mup_mlp(
        in_features,
        hidden,
        num_classes,
        base_hidden=base_hidden,
        delta_hidden=delta_hidden,
        output_mult=output_mult,
        readout_zero_init=readout_zero_init,
        dtype=dtype,
    )
    return model, init(key)
