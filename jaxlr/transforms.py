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
(such as ``value=loss``) are passed on to ``inner``.

**Layers and neurons.** A *layer* is a mapping in the params pytree that holds a ``kernel`` leaf
and optionally a ``bias`` leaf: Flax linen ``Dense``/``Conv`` params, ``nnx.State`` (the
``.value`` of an ``nnx.Variable`` is looked through) and plain nested dicts all qualify. A layer
is named by the ``/``-joined keys of its path, e.g. ``"Dense_0"`` or ``"encoder/layers/0"``. A
*neuron* is an output unit: an index ``j`` of the kernel's last axis (Flax's ``(in, out)`` layout,
or a conv kernel's output channel) and of the bias's only axis, so a bias must have shape
``(kernel.shape[-1],)``. Neuron ``j``'s fan-in weights are ``kernel[..., j]``.

**Leaves outside any layer** (a LayerNorm ``scale``, a ``bias`` with no sibling ``kernel``, an
embedding table) are treated by the per-neuron rules as a layer in which every entry is its own
neuron with a fan-in of one: :func:`weight_norm_lr` uses ``|p|`` as the norm and
``adagrad_lr(granularity="neuron")`` gives them their own elementwise accumulator (exactly the
``"parameter"`` rule). Nothing is silently skipped; to give such leaves a different rule, wrap the
transforms in :func:`optax.multi_transform` or :func:`optax.masked`.

**Learning rates** (``lrs`` values, ``default``, ``base_lr``) may be Python floats, (traced) JAX
scalars, so that a sweep can ``jax.vmap`` over them, or Optax schedules, which receive the int32
step count kept in each state (``0`` at the first update).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "AdagradLRState",
    "PerLayerLRState",
    "ReduceLROnPlateauState",
    "WeightNormLRState",
    "adagrad_lr",
    "per_layer_lr",
    "reduce_lr_on_plateau",
    "weight_norm_lr",
]

ScalarOrSchedule = optax.ScalarOrSchedule
Granularity = Literal["parameter", "neuron"]
_Kind = Literal["kernel", "bias", "other"]


# ------------------------------------------------------------------------------------------------
# Shared private helpers: paths, layers/neurons, learning rates, the sign flip.
# ------------------------------------------------------------------------------------------------


def _key_name(entry: Any) -> str:
    """The name of one key-path entry (dict key, attribute, sequence index)."""
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def _flatten(tree: Any) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    """``(paths, leaves, treedef)``; a path drops the trailing ``.value`` of an nnx Variable."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = []
    for path, _ in with_path:
        last = path[-1] if path else None
        if isinstance(last, jax.tree_util.GetAttrKey) and last.name == "value":
            path = path[:-1]
        paths.append(tuple(_key_name(e) for e in path))
    return paths, [leaf for _, leaf in with_path], treedef


def _neuron_groups(
    paths: Sequence[tuple[str, ...]], leaves: Sequence[Any]
) -> list[tuple[str, _Kind]]:
    """``(group, kind)`` per leaf: its layer's name for a kernel/bias, else its own path."""
    kernels = {
        p[:-1]: jnp.shape(x) for p, x in zip(paths, leaves, strict=True) if p and p[-1] == "kernel"
    }
    groups: list[tuple[str, _Kind]] = []
    for path, leaf in zip(paths, leaves, strict=True):
        name, layer, shape = "/".join(path), path[:-1], jnp.shape(leaf)
        if path and path[-1] == "kernel":
            if not shape:
                raise ValueError(f"kernel {name!r} is a scalar; a kernel needs an output axis")
            groups.append(("/".join(layer), "kernel"))
        elif path and path[-1] == "bias" and layer in kernels:
            if shape != kernels[layer][-1:]:
                raise ValueError(
                    f"bias {name!r} has shape {shape}, but its layer's kernel has shape "
                    f"{kernels[layer]}: a bias must have shape (kernel.shape[-1],), one entry "
                    "per output neuron"
                )
            groups.append(("/".join(layer), "bias"))
        else:
            groups.append((name, "other"))
    owners: dict[str, tuple[str, ...]] = {}
    for (group, kind), path in zip(groups, paths, strict=True):
        owner = path[:-1] if kind != "other" else path
        if owners.setdefault(group, owner) != owner:
            raise ValueError(
                f"two parts of the params tree are both named {group!r} once their keys are "
                "joined with '/'; rename the keys so that they contain no '/'"
            )
    return groups


def _per_neuron(
    fn: Callable[[jax.Array, tuple[int, ...]], jax.Array],
    groups: Sequence[tuple[str, _Kind]],
    leaves: Sequence[Any],
) -> dict[str, jax.Array]:
    """``{group: fn(x, fan_in_axes)}``: a kernel's fan-in is all axes but the last, else ``()``."""
    return {
        group: fn(jnp.asarray(x), tuple(range(jnp.ndim(x) - 1)) if kind == "kernel" else ())
        for (group, kind), x in zip(groups, leaves, strict=True)
        if kind != "bias"
    }


def _onto_leaves(
    per_group: Mapping[str, jax.Array], groups: Sequence[tuple[str, _Kind]]
) -> list[jax.Array]:
    """Each leaf's per-neuron values; a ``(out,)`` vector broadcasts over ``kernel[..., j]``."""
    return [per_group[group] for group, _ in groups]


def _resolve(lr: ScalarOrSchedule, count: jax.Array) -> jax.Array | float:
    """The learning rate at step ``count``: ``lr(count)`` for a schedule, else ``lr``."""
    return lr(count) if callable(lr) else lr


def _inner(inner: optax.GradientTransformation | None) -> optax.GradientTransformationExtraArgs:
    """``inner`` (identity if None) accepting extra keyword arguments."""
    return optax.with_extra_args_support(optax.identity() if inner is None else inner)


def _descend(rates: Sequence[Any], directions: Sequence[Any]) -> list[jax.Array]:
    """The one sign flip: ``-lr * d`` per leaf, in the direction's dtype."""
    return [(-lr * d).astype(jnp.result_type(d)) for lr, d in zip(rates, directions, strict=True)]


def _zero_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], jnp.int32)


# ------------------------------------------------------------------------------------------------
# per_layer_lr
# ------------------------------------------------------------------------------------------------


class PerLayerLRState(NamedTuple):
    """State of :func:`per_layer_lr`: the step count and the inner transform's state."""

    count: jax.Array  # int32, shape (): number of updates so far
    inner_state: optax.OptState


def per_layer_lr(
    lrs: Mapping[str, ScalarOrSchedule],
    *,
    inner: optax.GradientTransformation | None = None,
    default: ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""One learning rate per layer (per parameter group), as in PyTorch parameter groups.

    .. math::

        u_p = -\eta_{\ell(p)} \, \mathrm{inner}(g)_p,

    where :math:`\ell(p)` is the longest key of ``lrs`` that is a prefix of parameter ``p``'s key
    path (components joined with ``/``), or ``default`` if no key matches. Keys match whole path
    components: ``"Dense_1"`` matches ``Dense_1/kernel`` but not ``Dense_10/kernel``.

    Args:
      lrs: maps a layer name to its learning rate. A name is a top-level key of the params
        (``"Dense_0"``) or a ``/``-joined key-path prefix (``"encoder/Dense_0"``,
        ``"Dense_0/bias"``); the longest matching prefix wins.
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself, i.e. SGD; ``optax.scale_by_adam()`` gives Adam).
      default: learning rate of parameters that match no key. If None, every parameter must
        match a key.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`. ``init`` and ``update`` raise a
      ``ValueError`` listing the unmatched paths if some parameter matches no key and ``default``
      is None, and one naming the key if a key matches no parameter (likely a typo).

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}, "Dense_1": {"kernel": jnp.ones(2)}}
      >>> tx = per_layer_lr({"Dense_0": 0.1}, default=0.01)
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params)
      >>> print(updates["Dense_0"]["kernel"][0], updates["Dense_1"]["kernel"])
      [-0.1 -0.1] [-0.01 -0.01]

    References:
      Seed 002, example 1 (Adam with one parameter group per layer);
      ``torch.optim.Optimizer`` parameter groups.
    """
    for key in lrs:
        if not isinstance(key, str) or not key:
            raise ValueError(f"per_layer_lr: keys of lrs must be non-empty strings, got {key!r}")
    prefixes = {tuple(key.split("/")): lr for key, lr in lrs.items()}
    inner_tx = _inner(inner)

    def rates_for(tree: Any) -> list[ScalarOrSchedule]:
        paths, _, _ = _flatten(tree)
        rates, unmatched, used = [], [], set()
        for path in paths:
            hits = [pre for pre in prefixes if path[: len(pre)] == pre]
            if hits:
                best = max(hits, key=len)
                used.add(best)
                rates.append(prefixes[best])
            else:
                unmatched.append("/".join(path))
                rates.append(default)
        if unmatched and default is None:
            raise ValueError(
                f"per_layer_lr: no learning rate for {len(unmatched)} parameter(s): {unmatched}. "
                "Add their layer (a top-level key such as 'Dense_0', or a '/'-joined key-path "
                "prefix) to lrs, or pass default= for every parameter not listed."
            )
        unused = ["/".join(pre) for pre in prefixes if pre not in used]
        if unused:
            layers = sorted({p[0] for p in paths if p})
            raise ValueError(
                f"per_layer_lr: keys {unused} of lrs match no parameter. Top-level keys of the "
                f"params are {layers}; deeper keys are '/'-joined, e.g. 'Dense_0/kernel'."
            )
        return rates

    def init_fn(params: optax.Params) -> PerLayerLRState:
        rates_for(params)
        return PerLayerLRState(_zero_count(), inner_tx.init(params))

    def update_fn(
        updates: optax.Updates,
        state: PerLayerLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, PerLayerLRState]:
        rates = [_resolve(lr, state.count) for lr in rates_for(updates)]
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        treedef = jax.tree.structure(updates)
        new = _descend(rates, treedef.flatten_up_to(directions))
        count = optax.safe_int32_increment(state.count)
        return treedef.unflatten(new), PerLayerLRState(count, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------
# weight_norm_lr
# ------------------------------------------------------------------------------------------------


class WeightNormLRState(NamedTuple):
    """State of :func:`weight_norm_lr`: the step count and the inner transform's state."""

    count: jax.Array  # int32, shape (): number of updates so far
    inner_state: optax.OptState


def weight_norm_lr(
    base_lr: ScalarOrSchedule,
    *,
    scaling_factor: jax.typing.ArrayLike = 0.01,
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Per-neuron learning rates that grow with the norm of each neuron's fan-in weights.

    For neuron :math:`j` of each layer, with :math:`W` the layer's kernel in the current params:

    .. math::

        \eta_j = \eta_{\text{base}} \bigl(1 + s \, \lVert W_{\ldots, j} \rVert_2\bigr),
        \qquad u_{\ldots, j} = -\eta_j \, \mathrm{inner}(g)_{\ldots, j},

    the norm taken over all kernel axes but the last (the neuron's fan-in), and :math:`\eta_j`
    applied to ``kernel[..., j]`` and ``bias[j]``. Leaves outside any layer use
    :math:`\eta = \eta_{\text{base}}(1 + s|p|)` elementwise (see the module docstring). The rates
    are recomputed at every update from the ``params`` passed to ``update``.

    Args:
      base_lr: base learning rate :math:`\eta_{\text{base}}` (float, traced scalar or schedule).
      scaling_factor: :math:`s`, how strongly the weight norm raises the rate.
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself, i.e. SGD; ``optax.scale_by_adam()`` gives Adam).

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

    References:
      Seed 002, example 2 (``lr_i = base_lr * (1 + scaling_factor * ||w_i||)``).
    """
    inner_tx = _inner(inner)

    def init_fn(params: optax.Params) -> WeightNormLRState:
        _neuron_groups(*_flatten(params)[:2])
        return WeightNormLRState(_zero_count(), inner_tx.init(params))

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
        paths, weights, treedef = _flatten(params)
        groups = _neuron_groups(paths, weights)
        lr = _resolve(base_lr, state.count)
        norms = _per_neuron(
            lambda w, ax: jnp.sqrt(jnp.sum(jnp.square(w), axis=ax)), groups, weights
        )
        per_neuron = {g: lr * (1.0 + scaling_factor * n) for g, n in norms.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(_onto_leaves(per_neuron, groups), treedef.flatten_up_to(directions))
        count = optax.safe_int32_increment(state.count)
        return treedef.unflatten(new), WeightNormLRState(count, inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------------------
# adagrad_lr
# ------------------------------------------------------------------------------------------------


class AdagradLRState(NamedTuple):
    """State of :func:`adagrad_lr`: step count, sums of squared raw gradients, inner state."""

    count: jax.Array  # int32, shape (): number of updates so far
    sum_sq: dict[str, jax.Array]  # {layer name: (out,)} per neuron, {leaf path: leaf shape} else
    inner_state: optax.OptState


def adagrad_lr(
    base_lr: ScalarOrSchedule,
    *,
    eps: jax.typing.ArrayLike = 1e-8,
    granularity: Granularity = "parameter",
    inner: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaGrad learning rates from accumulated squared raw gradients, per parameter or per neuron.

    ``granularity="parameter"`` (seed 002, example 3), elementwise:

    .. math::

        G \leftarrow G + g^2, \qquad \eta = \frac{\eta_{\text{base}}}{\sqrt{G} + \epsilon}.

    ``granularity="neuron"`` (row-wise AdaGrad), one accumulator per neuron :math:`j` of each
    layer, fed by the mean square of the neuron's fan-in kernel gradients (all axes but the last):

    .. math::

        G_j \leftarrow G_j + \operatorname{mean}_i g_{i, j}^2, \qquad
        \eta_j = \frac{\eta_{\text{base}}}{\sqrt{G_j} + \epsilon},

    shared by ``kernel[..., j]`` and ``bias[j]`` (the bias gradient does not enter :math:`G_j`).
    A leaf outside any layer gets its own elementwise accumulator, i.e. the ``"parameter"`` rule.
    In both cases :math:`G` includes the current step and the update is
    :math:`u = -\eta \odot \mathrm{inner}(g)`; with ``inner=None`` and ``"parameter"`` this is
    ``torch.optim.Adagrad(lr=base_lr, eps=eps)``.

    Args:
      base_lr: :math:`\eta_{\text{base}}` (float, traced scalar or schedule).
      eps: :math:`\epsilon`, added to :math:`\sqrt{G}`.
      granularity: ``"parameter"`` (one accumulator per entry) or ``"neuron"`` (one per neuron).
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself; ``optax.scale_by_adam()`` gives seed 002's AdaGrad-rates-through-Adam).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`. Its state's ``sum_sq`` maps each layer
      name to its ``(out,)`` accumulator (``"neuron"``) or each leaf path to an array of the leaf's
      shape (``"parameter"`` and leaves outside layers).

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
    if granularity not in ("parameter", "neuron"):
        raise ValueError(f"granularity must be 'parameter' or 'neuron', got {granularity!r}")
    inner_tx = _inner(inner)

    def groups_of(tree: Any) -> tuple[list[tuple[str, _Kind]], list[Any], Any]:
        paths, leaves, treedef = _flatten(tree)
        if granularity == "neuron":
            return _neuron_groups(paths, leaves), leaves, treedef
        return [("/".join(p), "other") for p in paths], leaves, treedef

    def init_fn(params: optax.Params) -> AdagradLRState:
        groups, leaves, _ = groups_of(params)
        sum_sq = _per_neuron(
            lambda x, ax: jnp.zeros([d for i, d in enumerate(x.shape) if i not in ax], x.dtype),
            groups,
            leaves,
        )
        return AdagradLRState(_zero_count(), sum_sq, inner_tx.init(params))

    def update_fn(
        updates: optax.Updates,
        state: AdagradLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AdagradLRState]:
        groups, grads, treedef = groups_of(updates)
        mean_sq = _per_neuron(lambda g, ax: jnp.mean(jnp.square(g), axis=ax), groups, grads)
        sum_sq = {
            k: (state.sum_sq[k] + v).astype(state.sum_sq[k].dtype) for k, v in mean_sq.items()
        }
        lr = _resolve(base_lr, state.count)
        per_neuron = {k: lr / (jnp.sqrt(s) + eps) for k, s in sum_sq.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(_onto_leaves(per_neuron, groups), treedef.flatten_up_to(directions))
        count = optax.safe_int32_increment(state.count)
        return treedef.unflatten(new), AdagradLRState(count, sum_sq, inner_state)

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
      ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (PyTorch 2.x); seed 000, example 3.
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
