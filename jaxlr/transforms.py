r"""Per-layer and per-neuron learning-rate rules as Optax gradient transformations.

Every learning-rate rule here is a factory that returns an :class:`optax.GradientTransformation`
whose update is

.. math::

    u_t = -\eta_t \odot \mathrm{inner}(g_t),

where :math:`g_t` is the raw gradient, ``inner`` is any Optax transformation that gives the update
direction (default: the identity, i.e. SGD; ``optax.scale_by_adam()`` gives Adam) and
:math:`\eta_t` is the rule's learning rate: one value per layer, per neuron or per parameter,
computed from the *raw* gradients and the params. The sign flip happens here and nowhere else, so
the result goes straight into :func:`optax.apply_updates`. Extra keyword arguments of ``update``
(such as ``value=loss``) are passed on to ``inner``. :func:`learning_rates` reads each
parameter's rate out of a state (it says exactly which rate for each rule).

**The direction** ``inner`` is an Optax transformation *object* that keeps the gradient's sign: a
``scale_by_*`` direction (``optax.scale_by_adam()``, ``optax.scale_by_rms()``), or ``None`` for
SGD. Not a full optimizer: ``optax.sgd(1.0)`` or ``optax.adam(lr)`` already contain the step
``-lr``, so the rule's own sign flip would make them ascend. ``init`` therefore runs ``inner``
once on a probe gradient of ones (eagerly, also under ``jit``) and raises a ``ValueError`` if the
direction it gives points against the gradient; where the probe cannot run (an ``inner`` that
needs ``value=``, for instance) there is no such check. A factory passed without calling it
(``inner=optax.scale_by_adam``) raises a ``TypeError`` saying to write
``inner=optax.scale_by_adam()``.

**Layers and neurons** (``neurons=`` of :func:`weight_norm_lr` and ``adagrad_lr(granularity=
"neuron")``): ``"flax"`` (default), ``"torch"`` (PyTorch and Equinox), ``"haiku"``, a
:class:`jaxlr.neurons.NeuronLayout` for what the shapes cannot tell (bias-free conv kernels and
stacks), or a callable; see :mod:`jaxlr.neurons`, which also says which leaves are per element
and where an ambiguous layout raises. Nothing falls back silently to per-element rates.

**Leaves that are not float arrays** (an Equinox model's activation functions, Python numbers,
integer arrays) and ``None`` gradients pass through untouched, as in Optax: ``update(grads, state,
model)`` works with an unfiltered Equinox model as ``params``.

**Learning rates** (``lrs`` values, ``default``, ``base_lr``) may be Python floats, (traced) JAX
scalars, so that a sweep can ``jax.vmap`` over them, or Optax schedules, which receive the int32
step count kept in each state's ``rule_count`` (``0`` at the first update). The states keep the
base rates of the next update (``next_lr``, ``next_lrs``), so that :func:`learning_rates` needs no
access to the schedules.

**Inside other optax code.** The rules are ordinary :class:`optax.GradientTransformationExtraArgs`
and compose with :func:`optax.chain`, :func:`optax.masked`, :func:`optax.multi_transform`
(:func:`learning_rates` reads the rates of every leaf a rule covers there and ``None`` for the
others), :class:`optax.MultiSteps` (which passes ``value=`` on; so does :class:`TrainState`) and
:func:`optax.inject_hyperparams`. Under ``inject_hyperparams``, a callable ``neurons=`` would be
taken for a schedule (and called with the step count: a ``TypeError``): pass
``static_args=("neurons",)``, or a :class:`~jaxlr.neurons.NeuronLayout`, which is not callable;
strings (``neurons="haiku"``, ``granularity="neuron"``) pass through as they are.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxlr.neurons import NeuronAxesFn as NeuronAxesFn
from jaxlr.neurons import NeuronLayout as NeuronLayout
from jaxlr.neurons import Neurons as Neurons
from jaxlr.neurons import (
    Path,
    _arrays,
    _elements,
    _flatten,
    _is_float_array,
    _Layout,
    _layout,
    _name,
    _onto,
    _Place,
    _spec,
)

__all__ = [
    "AdagradLRState",
    "PerLayerLRState",
    "ReduceLROnPlateauState",
    "TrainState",
    "WeightNormLRState",
    "adagrad_lr",
    "learning_rates",
    "per_layer_lr",
    "reduce_lr_on_plateau",
    "weight_norm_lr",
]

ScalarOrSchedule = optax.ScalarOrSchedule
Granularity = Literal["parameter", "neuron"]


# ------------------------------------------------------------------------------------------------
# Shared private helpers: learning rates, the inner direction, the sign flip.
# ------------------------------------------------------------------------------------------------


def _resolve(lr: ScalarOrSchedule, count: jax.Array) -> jax.Array | float:
    """The learning rate at step ``count``: ``lr(count)`` for a schedule, else ``lr``."""
    return lr(count) if callable(lr) else lr


def _as_float(x: Any) -> jax.Array:
    """``x`` as a scalar of the default float dtype (a state field of fixed dtype)."""
    return jnp.asarray(x, jnp.result_type(float))


def _inner(inner: Any, who: str) -> optax.GradientTransformationExtraArgs:
    """``inner`` (identity if None) accepting extra keyword arguments; raises if not a transform."""
    if inner is None:
        return optax.with_extra_args_support(optax.identity())
    if not (hasattr(inner, "init") and hasattr(inner, "update")):
        name = getattr(inner, "__name__", None)
        name = f"optax.{name}" if name and getattr(optax, name, None) is inner else name
        fix = f"call the factory: inner={name}()" if callable(inner) and name else "pass one"
        raise TypeError(
            f"{who}: inner must be an optax transformation such as optax.scale_by_adam(), got "
            f"{inner!r}; {fix}"
        )
    return optax.with_extra_args_support(inner)


def _check_direction(inner: Any, inner_tx: Any, params: Any, who: str) -> None:
    """Raises if ``inner`` turns a gradient of ones against itself (a full optimizer's ``-lr``).

    Runs ``inner`` eagerly (also while ``init`` is traced) on ones shaped like the float leaves
    of ``params``; skipped where that cannot run or gives no concrete values.
    """
    if inner is None:
        return
    paths, leaves, treedef = _flatten(params)
    floats = [_is_float_array(x) for x in leaves]
    with jax.ensure_compile_time_eval():
        ones = treedef.unflatten(
            [
                jnp.ones(jnp.shape(x), x.dtype) if f else None
                for x, f in zip(leaves, floats, strict=True)
            ]
        )
        try:
            directions, _ = inner_tx.update(ones, inner_tx.init(ones), ones)
            _, out, _ = _flatten(directions)
            sums = {
                _name(p): (float(jnp.sum(d)), float(jnp.sum(jnp.abs(d))))
                for p, d, f in zip(paths, out, floats, strict=True)
                if f and _is_float_array(d)
            }
        except Exception:  # an inner that needs value= etc.: no check
            return
    against = [name for name, (total, size) in sums.items() if total < -1e-6 * size]
    if against:
        raise ValueError(
            f"{who}: inner reverses the sign of the gradient (its direction for a gradient of "
            f"ones is negative on {against[:3]}): it looks like a full optimizer such as "
            "optax.sgd(lr) or optax.adam(lr), which already includes the step -lr, and the rule's "
            "own sign flip would make it ascend. Pass the direction alone: "
            "inner=optax.scale_by_adam() for Adam, inner=None for SGD."
        )


def _descend(directions: Any, rate_of: Callable[[Path, Any], Any]) -> Any:
    """The one sign flip: ``-rate * d`` per float leaf, in ``d``'s dtype; other leaves unchanged."""
    paths, leaves, treedef = _flatten(directions)
    new = [
        (-rate_of(p, d) * d).astype(jnp.result_type(d)) if _is_float_array(d) else d
        for p, d in zip(paths, leaves, strict=True)
    ]
    return treedef.unflatten(new)


def _zero_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], jnp.int32)


def _weight_norms(
    arrays: Iterable[tuple[Path, Any]], layout: _Layout, who: str
) -> dict[str, jax.Array]:
    """``{group: ||fan-in||_2 per neuron}`` (``|p|`` per element outside layers)."""
    place_of = layout.lookup(who)
    return {
        place.group: jnp.sqrt(jnp.sum(jnp.square(w), axis=place.reduced))
        for path, w in arrays
        if (place := place_of(path)).role != "bias"
    }


def _key_of(path: Path, keys: Collection[str]) -> str | None:
    """The longest key that is the ``/``-join of a prefix of ``path`` (``""``: all), or None."""
    for i in range(len(path), -1, -1):
        if (key := _name(path[:i])) in keys:
            return key
    return None


# ------------------------------------------------------------------------------------------------
# per_layer_lr
# ------------------------------------------------------------------------------------------------


class PerLayerLRState(NamedTuple):
    """State of :func:`per_layer_lr`: step count, the next update's rates, inner state, layout."""

    rule_count: jax.Array  # int32, shape (): number of updates so far (a schedule's step)
    next_lrs: dict[str, jax.Array]  # float, shape (): {key of lrs, "" for default: its next rate}
    inner_state: optax.OptState
    layout: _Layout = _Layout(())  # static, no arrays: each leaf init saw and its key of lrs


def per_layer_lr(
    lrs: Mapping[str, ScalarOrSchedule],
    *,
    inner: optax.GradientTransformation | None = None,
    default: ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""One learning rate per layer (per parameter group), as in PyTorch parameter groups.

    .. math::

        u_p = -\eta_{\ell(p)} \, \mathrm{inner}(g)_p,

    where :math:`\ell(p)` is the longest key of ``lrs`` that equals the keys of a prefix of
    parameter ``p``'s key path joined with ``/``, or ``default`` if no key matches. Keys match
    whole path components: ``"Dense_1"`` matches ``Dense_1/kernel`` but not ``Dense_10/kernel``.
    A key may itself contain ``/``: Haiku's module name ``"mlp/~/linear_0"`` (a top-level key of
    a Haiku params tree) matches its ``w`` and ``b``, and ``"mlp/~/linear_0/w"`` the ``w`` alone.
    Any params tree works (leaves that are not float arrays and ``None`` gradients pass through).

    Args:
      lrs: maps a layer name to its learning rate. A name is a top-level key of the params
        (``"Dense_0"``, ``"mlp/~/linear_0"``) or a ``/``-joined key-path prefix
        (``"encoder/Dense_0"``, ``"Dense_0/bias"``, ``"layers/0"`` for an Equinox ``MLP``); the
        longest matching name wins.
      inner: a transformation giving the update direction from the raw gradients (default: the
        gradient itself, i.e. SGD; ``optax.scale_by_adam()`` gives Adam); see the module
        docstring for what not to pass.
      default: learning rate of parameters that match no key. If None, every parameter must
        match a key.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`. ``init`` and ``update`` raise a
      ``ValueError`` listing the unmatched paths if some parameter matches no key and ``default``
      is None; ``init`` raises one naming the key if a key matches no parameter (likely a typo).
      The state's ``next_lrs`` holds each rate at the next update's step.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}, "Dense_1": {"kernel": jnp.ones(2)}}
      >>> tx = per_layer_lr({"Dense_0": 0.1}, default=0.01)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)
      >>> print(updates["Dense_0"]["kernel"][0], updates["Dense_1"]["kernel"])
      [-0.1 -0.1] [-0.01 -0.01]

    References:
      The per-neuron learning-rate examples, example 1 (Adam with one parameter group per
      layer); ``torch.optim.Optimizer`` parameter groups.
    """
    for key in lrs:
        if not isinstance(key, str) or not key:
            raise ValueError(f"per_layer_lr: keys of lrs must be non-empty strings, got {key!r}")
    by_key = dict(lrs) if default is None else {**lrs, "": default}
    inner_tx = _inner(inner, "per_layer_lr")

    def check(tree: Any, *, unused: bool) -> dict[Path, str]:
        keys = {path: _key_of(path, by_key) for path, _ in _arrays(tree)}
        unmatched = [_name(p) for p, key in keys.items() if key is None]
        if unmatched:
            raise ValueError(
                f"per_layer_lr: no learning rate for {len(unmatched)} parameter(s): {unmatched}. "
                "Add their layer (a top-level key such as 'Dense_0', or a '/'-joined key-path "
                "prefix) to lrs, or pass default= for every parameter not listed."
            )
        missing = [key for key in by_key if key and key not in set(keys.values())]
        if unused and missing:
            layers = sorted({p[0] for p in keys if p})
            raise ValueError(
                f"per_layer_lr: keys {missing} of lrs match no parameter. Top-level keys of the "
                f"params are {layers}; deeper keys are '/'-joined, e.g. 'Dense_0/kernel'."
            )
        return keys  # type: ignore[return-value]

    def next_lrs(count: jax.Array) -> dict[str, jax.Array]:
        return {key: _as_float(_resolve(lr, count)) for key, lr in by_key.items()}

    def init_fn(params: optax.Params) -> PerLayerLRState:
        keys = check(params, unused=True)
        _check_direction(inner, inner_tx, params, "per_layer_lr")
        count = _zero_count()
        layout = _Layout(tuple((p, _Place(key, "element", ())) for p, key in keys.items()))
        return PerLayerLRState(count, next_lrs(count), inner_tx.init(params), layout)

    def update_fn(
        updates: optax.Updates,
        state: PerLayerLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, PerLayerLRState]:
        keys = check(updates, unused=False)
        rates = {key: _resolve(lr, state.rule_count) for key, lr in by_key.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(directions, lambda path, d: rates[keys[path]])
        count = optax.safe_int32_increment(state.rule_count)
        return new, PerLayerLRState(count, next_lrs(count), inner_state, state.layout)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------
# weight_norm_lr
# ------------------------------------------------------------------------------------------------


class WeightNormLRState(NamedTuple):
    """State of :func:`weight_norm_lr`: step count, next base rate, factor, layout, inner state."""

    rule_count: jax.Array  # int32, shape (): number of updates so far (a schedule's step)
    next_lr: jax.Array  # float, shape (): base_lr at step rule_count, the next update's
    norm_factor: jax.Array  # float, shape (): scaling_factor
    layout: _Layout  # static, no arrays: each leaf's layer and fan-in axes (from neurons=)
    inner_state: optax.OptState


def weight_norm_lr(
    base_lr: ScalarOrSchedule,
    *,
    scaling_factor: jax.typing.ArrayLike = 0.01,
    inner: optax.GradientTransformation | None = None,
    neurons: Neurons = "flax",
) -> optax.GradientTransformationExtraArgs:
    r"""Per-neuron learning rates that grow with the norm of each neuron's fan-in weights.

    For neuron :math:`j` of each layer, with :math:`W` the layer's weight in the current params:

    .. math::

        \eta_j = \eta_{\text{base}} \bigl(1 + s \, \lVert W_{j} \rVert_2\bigr),
        \qquad u_{j} = -\eta_j \, \mathrm{inner}(g)_{j},

    where :math:`W_j` is neuron :math:`j`'s fan-in: the weight's entries at neuron index
    :math:`j`, all non-neuron axes (see ``neurons``). For a Flax ``Dense`` kernel ``(in, out)``
    that is the column ``kernel[:, j]``; for a PyTorch/Equinox ``weight`` ``(out, in)`` the row
    ``weight[j]``. :math:`\eta_j` is applied to the neuron's fan-in weights and to ``bias[j]``.
    Leaves outside any layer use :math:`\eta = \eta_{\text{base}}(1 + s|p|)` elementwise (see the
    module docstring). The rates are recomputed at every update from the ``params`` passed to
    ``update``.

    Args:
      base_lr: base learning rate :math:`\eta_{\text{base}}` (float, traced scalar or schedule).
      scaling_factor: :math:`s`, how strongly the weight norm raises the rate.
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself, i.e. SGD; ``optax.scale_by_adam()`` gives Adam).
      neurons: which axes of which leaves index neurons: ``"flax"`` (``kernel`` leaves, neurons
        on the output axes), ``"torch"`` (``weight`` leaves ``(out, in, ...)``, neurons on axis
        0), ``"haiku"`` (``w`` ``(in, ..., out)`` with its ``b``), a
        :class:`~jaxlr.neurons.NeuronLayout` (bias-free conv kernels, stacks, single leaves) or
        a function ``(path, leaf) -> neuron axes | "bias" | None``; see :mod:`jaxlr.neurons`.
        ``init`` raises a ``ValueError`` naming any leaf it cannot place or whose layout is
        ambiguous, and the ``neurons=`` that fixes it.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; its ``update`` requires ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]),
      ...                       "bias": jnp.zeros(2)}}
      >>> tx = weight_norm_lr(0.1, scaling_factor=0.2)
      >>> state = tx.init(params)
      >>> grads = {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
      >>> updates, state = tx.update(grads, state, params)
      >>> print(updates["Dense_0"]["bias"])  # -0.1 * (1 + 0.2 * [5, 1])
      [-0.2  -0.12]
      >>> torch_layout = {"weight": jnp.array([[3.0, 4.0], [0.0, 1.0]]), "bias": jnp.zeros(2)}
      >>> tx = weight_norm_lr(0.1, scaling_factor=0.2, neurons="torch")
      >>> torch_grads = {"weight": jnp.ones((2, 2)), "bias": jnp.ones(2)}
      >>> updates, _ = tx.update(torch_grads, tx.init(torch_layout), torch_layout)
      >>> print(updates["bias"])  # the same layer with the weight transposed
      [-0.2  -0.12]

    References:
      The per-neuron learning-rate examples, example 2
      (``lr_i = base_lr * (1 + scaling_factor * ||w_i||)``).
    """
    who = "weight_norm_lr"
    _spec(neurons, who)
    inner_tx = _inner(inner, who)

    def init_fn(params: optax.Params) -> WeightNormLRState:
        count, layout = _zero_count(), _layout(params, neurons, who)
        _check_direction(inner, inner_tx, params, who)
        next_lr = _as_float(_resolve(base_lr, count))
        return WeightNormLRState(
            count, next_lr, _as_float(scaling_factor), layout, inner_tx.init(params)
        )

    def update_fn(
        updates: optax.Updates,
        state: WeightNormLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, WeightNormLRState]:
        if params is None:
            raise ValueError(
                "weight_norm_lr computes its rates from the current params: call "
                "update(updates, state, params) (optax.chain passes params on)."
            )
        lr = _resolve(base_lr, state.rule_count)
        norms = _weight_norms(_arrays(params), state.layout, who)
        per_neuron = {g: lr * (1.0 + scaling_factor * n) for g, n in norms.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(directions, _rate_lookup(per_neuron, state.layout, who))
        count = optax.safe_int32_increment(state.rule_count)
        next_lr = _as_float(_resolve(base_lr, count))
        return new, WeightNormLRState(
            count, next_lr, _as_float(scaling_factor), state.layout, inner_state
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _rate_lookup(
    per_neuron: Mapping[str, jax.Array], layout: _Layout, who: str
) -> Callable[[Path, Any], jax.Array]:
    """``(path, leaf) -> the leaf's rates``, broadcastable to the leaf, from per-group values."""
    place_of = layout.lookup(who)

    def rate_of(path: Path, leaf: Any) -> jax.Array:
        place = place_of(path)
        return _onto(per_neuron[place.group], place, jnp.shape(leaf))

    return rate_of


# ------------------------------------------------------------------------------------------------
# adagrad_lr
# ------------------------------------------------------------------------------------------------


class AdagradLRState(NamedTuple):
    """State of :func:`adagrad_lr`: count, next base rate, eps, sums of squares, layout, inner."""

    rule_count: jax.Array  # int32, shape (): number of updates so far (a schedule's step)
    next_lr: jax.Array  # float, shape (): base_lr at step rule_count, the next update's
    epsilon: jax.Array  # float, shape (): eps
    sum_sq: dict[str, jax.Array]  # {layer name: neuron shape} per neuron, {leaf path: leaf shape}
    layout: _Layout  # static, no arrays: each leaf's group and fan-in axes
    inner_state: optax.OptState


def adagrad_lr(
    base_lr: ScalarOrSchedule,
    *,
    eps: jax.typing.ArrayLike = 1e-8,
    granularity: Granularity = "parameter",
    inner: optax.GradientTransformation | None = None,
    neurons: Neurons = "flax",
) -> optax.GradientTransformationExtraArgs:
    r"""AdaGrad learning rates from accumulated squared raw gradients, per parameter or per neuron.

    ``granularity="parameter"`` (the per-neuron learning-rate examples, example 3), elementwise:

    .. math::

        G \leftarrow G + g^2, \qquad \eta = \frac{\eta_{\text{base}}}{\sqrt{G} + \epsilon}.

    ``granularity="neuron"`` (row-wise AdaGrad), one accumulator per neuron :math:`j` of each
    layer, fed by the mean square of the neuron's fan-in weight gradients (all non-neuron axes of
    the weight, see ``neurons``; for a Flax ``Dense`` kernel ``(in, out)`` the column
    ``g[:, j]``):

    .. math::

        G_j \leftarrow G_j + \operatorname{mean}_i g_{i, j}^2, \qquad
        \eta_j = \frac{\eta_{\text{base}}}{\sqrt{G_j} + \epsilon},

    shared by the neuron's fan-in weights and ``bias[j]`` (the bias gradient does not enter
    :math:`G_j`). A leaf outside any layer gets its own elementwise accumulator, i.e. the
    ``"parameter"`` rule. In both cases :math:`G` includes the current step and the update is
    :math:`u = -\eta \odot \mathrm{inner}(g)`; with ``inner=None`` and ``"parameter"`` this is
    ``torch.optim.Adagrad(lr=base_lr, eps=eps)``. A ``None`` gradient leaves its accumulator
    unchanged.

    Args:
      base_lr: :math:`\eta_{\text{base}}` (float, traced scalar or schedule).
      eps: :math:`\epsilon`, added to :math:`\sqrt{G}`.
      granularity: ``"parameter"`` (one accumulator per entry) or ``"neuron"`` (one per neuron).
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself; ``optax.scale_by_adam()`` gives the per-neuron learning-rate
        examples' AdaGrad rates through Adam).
      neurons: for ``"neuron"``, which axes of which leaves index neurons: ``"flax"``,
        ``"torch"``, ``"haiku"``, a :class:`~jaxlr.neurons.NeuronLayout` or a function
        ``(path, leaf) -> neuron axes | "bias" | None`` (see :mod:`jaxlr.neurons`); ignored by
        ``"parameter"``. Under ``"haiku"`` a ``b`` shares its ``w``'s accumulator.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`. Its state's ``sum_sq`` maps each layer
      name to its accumulator of the weight's neuron shape (``"neuron"``; ``(out,)`` for a
      ``Dense``) or each leaf path to an array of the leaf's shape (``"parameter"`` and leaves
      outside layers).

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}}
      >>> grads = {"Dense_0": {"kernel": jnp.array([[1.0, 1.0], [7.0, 1.0]]),
      ...                      "bias": jnp.ones(2)}}
      >>> tx = adagrad_lr(1.0, granularity="neuron")
      >>> state = tx.init(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> print(state.sum_sq["Dense_0"])  # [mean([1, 49]), mean([1, 1])]
      [25.  1.]
      >>> print(updates["Dense_0"]["bias"])  # -1 / sqrt(G_j) * g_bias
      [-0.2 -1. ]

    References:
      J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 12 (2011). Row-wise AdaGrad: FBGEMM's
      ``EXACT_ROWWISE_ADAGRAD``; M. Naumov et al., "Deep Learning Recommendation Model for
      Personalization and Recommendation Systems" (DLRM), arXiv:1906.00091 (2019).
    """
    who = "adagrad_lr"
    if granularity not in ("parameter", "neuron"):
        raise ValueError(f"granularity must be 'parameter' or 'neuron', got {granularity!r}")
    _spec(neurons, who)
    inner_tx = _inner(inner, who)

    def init_fn(params: optax.Params) -> AdagradLRState:
        layout = _layout(params, neurons, who) if granularity == "neuron" else _elements(params)
        _check_direction(inner, inner_tx, params, who)
        place_of = layout.lookup(who)
        sum_sq = {
            place.group: jnp.zeros(
                [d for i, d in enumerate(jnp.shape(x)) if i not in place.reduced], x.dtype
            )
            for path, x in _arrays(params)
            if (place := place_of(path)).role != "bias"
        }
        count = _zero_count()
        next_lr = _as_float(_resolve(base_lr, count))
        return AdagradLRState(count, next_lr, _as_float(eps), sum_sq, layout, inner_tx.init(params))

    def update_fn(
        updates: optax.Updates,
        state: AdagradLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AdagradLRState]:
        place_of = state.layout.lookup(who)
        mean_sq = {
            place.group: jnp.mean(jnp.square(g), axis=place.reduced)
            for path, g in _arrays(updates)
            if (place := place_of(path)).role != "bias"
        }
        sum_sq = {
            k: (s + mean_sq[k]).astype(s.dtype) if k in mean_sq else s
            for k, s in state.sum_sq.items()
        }
        lr = _resolve(base_lr, state.rule_count)
        per_neuron = {k: lr / (jnp.sqrt(s) + eps) for k, s in sum_sq.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(directions, _rate_lookup(per_neuron, state.layout, who))
        count = optax.safe_int32_increment(state.rule_count)
        next_lr = _as_float(_resolve(base_lr, count))
        return new, AdagradLRState(
            count, next_lr, _as_float(eps), sum_sq, state.layout, inner_state
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------
# reduce_lr_on_plateau
# ------------------------------------------------------------------------------------------------


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_lr_on_plateau`: torch's scheduler attributes as arrays."""

    multiplier: jax.Array  # float, shape (): scale of the next update (torch's lr, from 1.0)
    best: jax.Array  # float, shape (): best value seen so far (+inf at start)
    num_bad_epochs: jax.Array  # int32, shape (): consecutive evaluations without improvement
    cooldown_counter: jax.Array  # int32, shape (): evaluations left in the cooldown


def reduce_lr_on_plateau(
    factor: jax.typing.ArrayLike = 0.1,
    patience: jax.typing.ArrayLike = 10,
    threshold: jax.typing.ArrayLike = 1e-4,
    threshold_mode: Literal["rel", "abs"] = "rel",
    cooldown: jax.typing.ArrayLike = 0,
    min_lr: jax.typing.ArrayLike = 0.0,
    eps: jax.typing.ArrayLike = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales updates by a multiplier that drops when a monitored value stops improving.

    This is ``torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", ...)`` with the
    multiplier :math:`m` in the role of torch's learning rate (starting at 1.0, ``min_lr`` a floor
    on :math:`m`). Call ``update(updates, state, params, value=loss)``; it returns
    :math:`m_t \cdot` ``updates``, where :math:`m_t` depends only on the values of earlier calls,
    and then processes ``value`` as torch's ``scheduler.step(value)`` does. This matches the loop
    ``optimizer.step(); scheduler.step(loss)``. Per value :math:`v`, with best :math:`b`:

    .. math::

        \text{better} = v < b(1 - \tau) \ (\texttt{rel}) \text{ or }
        v < b - \tau \ (\texttt{abs}); \quad
        \text{if better: } b \leftarrow v,\ n \leftarrow 0 \text{ else } n \leftarrow n + 1;

    in cooldown (:math:`c > 0`): :math:`c \leftarrow c - 1,\ n \leftarrow 0`; then if
    :math:`n > \text{patience}`: :math:`m' = \max(m \cdot \text{factor}, \text{min\_lr})`,
    :math:`m \leftarrow m'` only if :math:`m - m' > \epsilon` (torch's eps rule), and in any case
    :math:`c \leftarrow \text{cooldown},\ n \leftarrow 0`. :math:`b` starts at :math:`+\infty`.

    Differences from ``optax.contrib.reduce_on_plateau`` (optax 0.2.8, checked in the tests):

    * Timing: optax.contrib processes ``value`` first and applies the new scale to the same
      call's updates; here (and in torch) a reduction triggered by the value of call :math:`t`
      first scales the updates of call :math:`t + 1`.
    * Patience: optax.contrib reduces when the plateau count *equals* ``patience``, torch when
      ``num_bad_epochs > patience``; so optax.contrib reduces one evaluation earlier and then
      every ``patience`` evaluations, torch every ``patience + 1``. On a flat loss with
      ``patience=2`` this transform gives multipliers 1, 1, 1, 1, .1, .1, .1, .01 and
      optax.contrib gives 1, 1, .1, .1, .01, .01, .001, .001.
    * ``patience=0``: torch reduces after every non-improving evaluation. In optax.contrib the
      plateau count is 0 only right after an improvement, so it reduces at every *improving*
      evaluation (including the first, which always beats :math:`+\infty`) and never on a
      plateau (flat loss: .1 from the first update on, then constant).
    * ``min_lr``: here a floor applied only when a reduction happens, and a reduction of at most
      ``eps`` is ignored; optax.contrib applies ``max(scale, min_scale)`` at every evaluation
      outside cooldown (so ``min_scale > 1`` raises the scale at once) and has no eps rule.
    * Threshold: one ``threshold`` with ``threshold_mode`` here; optax.contrib combines both,
      :math:`v < (1 - r)b - a`, requires ``rtol <= 1`` and not both zero, and can average
      ``accumulation_size`` values before each evaluation (here every value is one evaluation).

    Args:
      factor: multiplier of each reduction, ``< 1``.
      patience: number of non-improving evaluations tolerated; the next one reduces.
      threshold: :math:`\tau`, the improvement required to count as better.
      threshold_mode: ``"rel"`` (:math:`v < b(1-\tau)`) or ``"abs"`` (:math:`v < b-\tau`).
      cooldown: evaluations after a reduction during which bad evaluations are not counted.
      min_lr: floor on the multiplier.
      eps: reductions of the multiplier by at most ``eps`` are skipped.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`; ``update`` requires ``value=``. It
      composes with the other transforms, e.g. ``optax.chain(per_layer_lr(...),
      reduce_lr_on_plateau())``, since :func:`optax.chain` passes ``value`` through.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = reduce_lr_on_plateau(factor=0.5, patience=1)
      >>> state = tx.init({"w": jnp.zeros(())})
      >>> multipliers = []
      >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0]:
      ...     updates, state = tx.update({"w": jnp.ones(())}, state, value=loss)
      ...     multipliers.append(float(updates["w"]))
      >>> multipliers  # 2.0 is bad twice (> patience) before the 5th update
      [1.0, 1.0, 1.0, 1.0, 0.5]

    References:
      ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (PyTorch 2.x); the width examples, example 3.
    """
    if isinstance(factor, int | float) and factor >= 1.0:
        raise ValueError(f"factor should be < 1.0, got {factor}")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")

    def init_fn(params: optax.Params) -> ReduceLROnPlateauState:
        del params
        dtype = jnp.result_type(float)
        return ReduceLROnPlateauState(
            multiplier=jnp.ones([], dtype),
            best=jnp.full([], jnp.inf, dtype),
            num_bad_epochs=_zero_count(),
            cooldown_counter=_zero_count(),
        )

    def update_fn(
        updates: optax.Updates,
        state: ReduceLROnPlateauState,
        params: optax.Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, ReduceLROnPlateauState]:
        del params, extra_args
        if value is None:
            raise ValueError(
                "reduce_lr_on_plateau needs the monitored value: call "
                "update(updates, state, params, value=loss)."
            )
        value = jnp.asarray(value, state.best.dtype)
        if value.ndim:
            raise ValueError(f"value must be a scalar, got shape {value.shape}")
        m = state.multiplier
        scaled = jax.tree.map(lambda u: (m * u).astype(jnp.result_type(u)), updates)

        if threshold_mode == "rel":
            better = value < state.best * (1.0 - threshold)
        else:
            better = value < state.best - threshold
        best = jnp.where(better, value, state.best)
        bad = jnp.where(better, 0, optax.safe_int32_increment(state.num_bad_epochs))
        in_cooldown = state.cooldown_counter > 0
        cool = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        reduced = jnp.maximum(m * factor, min_lr).astype(m.dtype)
        new_m = jnp.where(reduce & (m - reduced > eps), reduced, m)
        cool = jnp.where(reduce, cooldown, cool).astype(jnp.int32)
        bad = jnp.where(reduce, 0, bad).astype(jnp.int32)
        return scaled, ReduceLROnPlateauState(new_m, best, bad, cool)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------
# learning_rates: the rates in a state
# ------------------------------------------------------------------------------------------------

_RULE_STATES = (PerLayerLRState, WeightNormLRState, AdagradLRState)
_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
_Scope = tuple[tuple[int, Any], ...]  # the masks entered: (id of the mask, multi_transform label)


class _Found(NamedTuple):
    """A state found inside ``opt_state``, with the masks around it."""

    state: Any  # a jaxlr rule's state, or a ReduceLROnPlateauState
    hyper: Mapping[str, Any]  # hyperparameters injected by optax.inject_hyperparams
    scope: _Scope


def _collect(tree: Any, hyper: Mapping[str, Any], scope: _Scope, found: list[_Found]) -> None:
    """Appends each jaxlr rule and plateau state in ``tree``, with its injected hyperparams."""
    stop = (*_RULE_STATES, ReduceLROnPlateauState, *_INJECT_STATES)
    masks = (optax.MaskedState, optax.MultiTransformState)
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, (*stop, *masks))):
        if isinstance(node, (*_RULE_STATES, ReduceLROnPlateauState)):
            found.append(_Found(node, hyper, scope))
            if isinstance(node, _RULE_STATES):
                _collect(node.inner_state, {}, scope, found)
        elif isinstance(node, _INJECT_STATES):
            direct = isinstance(node.inner_state, _RULE_STATES)
            _collect(node.inner_state, node.hyperparams if direct else {}, scope, found)
        elif isinstance(node, optax.MultiTransformState):
            for label, masked in node.inner_states.items():
                _collect(masked.inner_state, {}, (*scope, (id(node), label)), found)
        elif isinstance(node, optax.MaskedState):
            _collect(node.inner_state, {}, (*scope, (id(node), None)), found)


def _applies(plateau: _Scope, rule: _Scope) -> bool:
    """Whether a plateau multiplier in scope ``plateau`` scales the leaves of a rule in ``rule``."""
    if rule[: len(plateau)] == plateau:
        return True
    for a, b in zip(plateau, rule, strict=False):
        if a != b:
            if a[0] == b[0] and a[1] is not None:
                return False  # another group of the same multi_transform: other leaves
            break
    raise ValueError(
        "learning_rates: a reduce_lr_on_plateau inside an optax.masked (or a multi_transform "
        "group) that does not hold the rule scales some of the rule's leaves and not others, "
        "which the states do not record; put it in the same optax.masked or multi_transform "
        "group as the rule."
    )


def _rule_rates(found: _Found, params: Any) -> Callable[[Path, Any], Any]:
    """``(path, leaf) -> rate`` of one rule state, before any plateau multiplier."""
    state, hyper = found.state, found.hyper
    if isinstance(state, PerLayerLRState):
        place_of = state.layout.lookup("learning_rates")
        return lambda path, leaf: state.next_lrs[place_of(path).group]
    if isinstance(state, WeightNormLRState):
        lr = hyper.get("base_lr", state.next_lr)
        factor = hyper.get("scaling_factor", state.norm_factor)
        covered = dict(state.layout.places)
        arrays = [(p, x) for p, x in _arrays(params) if p in covered]
        norms = _weight_norms(arrays, state.layout, "learning_rates")
        per_neuron = {g: lr * (1.0 + factor * n) for g, n in norms.items()}
    else:
        lr, eps = hyper.get("base_lr", state.next_lr), hyper.get("eps", state.epsilon)
        per_neuron = {k: lr / (jnp.sqrt(s) + eps) for k, s in state.sum_sq.items()}
    return _rate_lookup(per_neuron, state.layout, "learning_rates")


def learning_rates(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    r"""The learning rate of each parameter in a state, shaped like ``params``.

    ``opt_state`` is the state of jaxlr rules, alone or anywhere inside :func:`optax.chain`,
    :func:`optax.inject_hyperparams`, :func:`optax.masked`, :func:`optax.multi_transform`, an
    ``inner=`` or any other pytree of states; ``params`` are the current parameters (the whole
    tree; an unfiltered Equinox model is fine). Each float leaf gets an array of its own shape,
    per-neuron rates broadcast over the neuron's fan-in weights and bias; other leaves get
    ``None``, and so do the leaves that a mask keeps from every jaxlr rule (under
    ``optax.masked``, or in a ``multi_transform`` group of another optimizer). The rate
    :math:`\eta` is the rule's multiplier in :math:`u = -\eta \odot \mathrm{inner}(g)`:

    * :func:`per_layer_lr`: :math:`\eta_{\ell(p)}` at the step of the next update
      (``rule_count``; schedules evaluated there): the rate the next update applies.
    * :func:`weight_norm_lr`: :math:`\eta_{\text{base}} (1 + s \lVert W_j \rVert_2)` with the
      norms of the ``params`` given here and the base rate at the next step: exactly what the
      next ``update(..., params)`` applies.
    * :func:`adagrad_lr`: :math:`\eta_{\text{base}}(t) / (\sqrt{G_{t-1}} + \epsilon)`, where
      :math:`G_{t-1}` is the accumulator through the *last* update and :math:`\eta_{\text{base}}
      (t)` the base rate at the next step. The next update first adds its own gradient's square
      to :math:`G`, so this is the rate it would apply to a zero gradient, an upper bound on the
      rate it does apply; with a constant ``base_lr`` it is the rate the last update applied. At
      ``init`` (:math:`G = 0`) it is :math:`\eta_{\text{base}} / \epsilon`: ``1e7`` for base
      ``0.1`` and the default ``eps=1e-8``.

    Not included: the direction ``inner`` (Adam's :math:`1/(\sqrt{\hat v} + \epsilon)`
    preconditioning is not a learning rate) and stateless scalings in the chain (``optax.scale``,
    :func:`jaxlr.mup.scale_by_tree`). Included: the multiplier of every
    :func:`reduce_lr_on_plateau` state that scales the rule's leaves (exact when it scales the
    rule's output or its direction, as in ``chain(rule, reduce_lr_on_plateau())`` or ``rule(inner=
    chain(scale_by_adam(), reduce_lr_on_plateau()))``; one in another ``multi_transform`` group
    does not count). Inside :func:`optax.inject_hyperparams`, the hyperparameters stored in its
    state (``base_lr``, ``scaling_factor``, ``eps``) are used, so a value set there by hand
    counts. ``inject_hyperparams`` stores the values its *last* update used: for a schedule given
    to it (``inject_hyperparams(weight_norm_lr)(base_lr=schedule)``) that is the last step's
    value, not the next (at ``init``, the value at step 0). To get the next step's rate, give the
    schedule to the rule itself (``weight_norm_lr(schedule)``).

    Args:
      opt_state: a state holding at least one jaxlr rate rule's state, and one for each leaf.
      params: the current parameters.

    Returns:
      A tree shaped like ``params`` of float arrays (the rates) and ``None`` (non-float leaves,
      and leaves masked away from every rule).

    Raises:
      ValueError: if ``opt_state`` holds no jaxlr rule state, or several for one leaf (e.g.
        ``chain(adagrad_lr(...), weight_norm_lr(...))``), or if a leaf outside any mask was not
        in the params that the rule's ``init`` saw.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> params = {"Dense_0": {"kernel": jnp.array([[3.0, 0.0], [4.0, 1.0]]),
      ...                       "bias": jnp.zeros(2)}}
      >>> tx = optax.chain(weight_norm_lr(0.1, scaling_factor=0.2), reduce_lr_on_plateau())
      >>> rates = learning_rates(tx.init(params), params)
      >>> print(rates["Dense_0"]["kernel"])  # 0.1 * (1 + 0.2 * [5, 1]) on each column
      [[0.2  0.12]
       [0.2  0.12]]
    """
    found: list[_Found] = []
    _collect(opt_state, {}, (), found)
    rules = [f for f in found if isinstance(f.state, _RULE_STATES)]
    plateaus = [f for f in found if isinstance(f.state, ReduceLROnPlateauState)]
    if not rules:
        raise ValueError(
            "learning_rates: found 0 jaxlr rule states (per_layer_lr, weight_norm_lr, "
            "adagrad_lr) in opt_state; it reads the rates of those rules."
        )
    one = jnp.ones([], jnp.result_type(float))
    scales = [
        math.prod((p.state.multiplier for p in plateaus if _applies(p.scope, r.scope)), start=one)
        for r in rules
    ]
    covers = [dict(r.state.layout.places) for r in rules]
    rate_fns = [_rule_rates(r, params) for r in rules]

    def rate_of(path: Path, leaf: Any) -> jax.Array | None:
        mine = [i for i, places in enumerate(covers) if path in places]
        if len(mine) > 1:
            raise ValueError(
                f"learning_rates: found {len(mine)} jaxlr rule states (per_layer_lr, "
                f"weight_norm_lr, adagrad_lr) for the leaf {_name(path)!r}; it reads exactly one "
                "per leaf. Call it on each rule's own part of opt_state."
            )
        if not mine:
            if all(r.scope for r in rules):  # masked away from every rule
                return None
            rate_fns[next(i for i, r in enumerate(rules) if not r.scope)](path, leaf)  # raises
        i = mine[0]
        return jnp.broadcast_to(scales[i] * rate_fns[i](path, leaf), jnp.shape(leaf))

    paths, leaves, treedef = _flatten(params)
    rates = [
        rate_of(p, x) if _is_float_array(x) else None for p, x in zip(paths, leaves, strict=True)
    ]
    return treedef.unflatten(rates)


# ------------------------------------------------------------------------------------------------
# TrainState
# ------------------------------------------------------------------------------------------------


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` whose ``apply_gradients`` passes extra arguments to ``tx.update``.

    ``flax.training.train_state.TrainState.apply_gradients(grads=g, **kwargs)`` gives ``kwargs``
    to ``.replace``, so a transform that needs ``update(..., value=loss)`` (such as
    :func:`reduce_lr_on_plateau`) cannot be used through it. Here keyword arguments that name a
    field of the state (``step``, ``params``, ..., or a field of a subclass such as
    ``batch_stats``) are still ``.replace``-d, and all others go to ``tx.update`` as Optax's extra
    arguments: to any ``tx`` whose ``update`` takes them, also one that is not an
    :class:`optax.GradientTransformationExtraArgs` (an :class:`optax.MultiSteps` object or its
    ``.gradient_transformation()``, which pass them on to the wrapped optimizer). If ``tx.update``
    takes no such argument, ``apply_gradients`` raises a ``TypeError`` rather than drop it.
    Everything else is flax's ``TrainState``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.chain(optax.sgd(0.25), reduce_lr_on_plateau(factor=0.5, patience=0))
      >>> state = TrainState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=tx)
      >>> for loss in [1.0, 1.0, 1.0]:  # flat: the 2nd value is bad, the 3rd step is halved
      ...     state = state.apply_gradients(grads={"w": jnp.ones(2)}, value=loss)
      >>> print(state.params["w"], int(state.step))  # 1 - 0.25 - 0.25 - 0.125
      [0.375 0.375] 3
    """

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
        """``tx.update(grads, opt_state, params, **extra)``, then ``apply_updates`` and step + 1.

        Args:
          grads: gradients with the structure of ``params``.
          **kwargs: fields of the state to ``.replace`` and, for all other names, extra
            arguments of ``tx.update`` (e.g. ``value=loss``).

        Returns:
          The new state.
        """
        fields = {f.name for f in dataclasses.fields(self)}
        replace = {k: v for k, v in kwargs.items() if k in fields}
        extra = {k: v for k, v in kwargs.items() if k not in fields}
        overwrite = train_state.OVERWRITE_WITH_GRADIENT
        nested = isinstance(grads, Mapping) and overwrite in grads
        g = grads["params"] if nested else grads
        p = self.params["params"] if nested else self.params
        updates, opt_state = _update_passing(self.tx, extra)(g, self.opt_state, p)
        new = optax.apply_updates(p, updates)
        if nested:
            new = {"params": new, overwrite: grads[overwrite]}
        return self.replace(step=self.step + 1, params=new, opt_state=opt_state, **replace)


def _update_passing(tx: Any, extra: Mapping[str, Any]) -> Callable[..., Any]:
    """``(grads, state, params) -> tx.update(grads, state, params, **extra)``; raises rather than
    drop an ``extra`` argument that ``tx.update`` does not take."""
    update = tx.update
    if extra and not isinstance(tx, optax.GradientTransformationExtraArgs):
        try:
            parameters = inspect.signature(update).parameters
        except (TypeError, ValueError):  # no signature to read: let tx.update say
            parameters = None
        if parameters is not None and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        ):
            dropped = sorted(set(extra) - set(parameters))
            if dropped:
                raise TypeError(
                    f"TrainState.apply_gradients: {dropped} are not fields of the state, and "
                    f"tx.update takes no such argument (its parameters are {list(parameters)}), "
                    "so it would be dropped. Build tx from transforms that take it (optax.chain "
                    "passes value= on to jaxlr.reduce_lr_on_plateau) or do not pass it."
                )
    return lambda g, state, params: update(g, state, params, **extra)
