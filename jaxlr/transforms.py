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
(such as ``value=loss``) are passed on to ``inner``. :func:`learning_rates` reads the rate that
the next update applies to each parameter out of a state.

**Layers and neurons** (``neurons=`` of :func:`weight_norm_lr` and ``adagrad_lr(granularity=
"neuron")``). A *layer* has one *weight* leaf and optionally a ``bias`` leaf beside it (same node
of the params tree: a mapping, a dataclass or an Equinox module; the ``.value`` of an
``nnx.Variable`` is looked through). A *neuron* is an output unit; the weight's *neuron axes* are
the axes that index neurons, and its other axes (the neuron's fan-in) are reduced to get one value
per neuron. The bias has one entry per neuron and shares its neuron's rate. A layer is named by the
``/``-joined keys of its node's path, e.g. ``"Dense_0"`` or ``"layers/0"``.

* ``neurons="flax"`` (default): the weight is a ``kernel`` leaf (linen, nnx, ``DenseGeneral``,
  attention projections, conv), its neurons are its output axes: the trailing axes that match the
  bias's shape, or the last axis without a bias. Leading axes shared by kernel and bias (stacks
  from ``nn.scan`` / ``nnx.vmap``) are *layer axes*: each stacked layer has its own neurons. So a
  ``Dense`` kernel ``(in, out)`` has neurons ``out``; a conv kernel ``(h, w, in, out)`` its output
  channels; an attention query/key/value kernel ``(in, heads, dim)`` with bias ``(heads, dim)``
  one neuron per ``(head, dim)``, its output kernel ``(heads, dim, out)`` one per ``out``; a
  scanned ``Dense`` kernel ``(L, in, out)`` with bias ``(L, out)`` one per ``(layer, out)``.
  Flax attention (a node holding ``query``, ``key``, ``value`` and ``out`` layers, as
  ``nn.MultiHeadDotProductAttention`` and ``nnx.MultiHeadAttention`` make) is recognized with or
  without biases. A kernel of 3 or more axes *without* a bias outside attention is read as a conv
  kernel ``(*window, in, out)``: neurons on the last axis, all other axes reduced; for a bias-free
  ``nn.scan`` / ``nnx.vmap`` stack or a bias-free ``DenseGeneral`` with several output axes that is
  wrong, so pass a callable. Shapes that fit more than one reading (e.g. kernel ``(8, 8, 8)`` with
  bias ``(8, 8)``: ``DenseGeneral`` or a stack of 8 layers) raise a ``ValueError`` saying how to
  pass ``neurons=``.
* ``neurons="torch"``: the weight is a ``weight`` leaf in PyTorch layout ``(out, in, *window)``
  (``torch.nn`` state dicts, Equinox ``Linear``/``Conv``/``Embedding``): axis 0 indexes neurons
  (for an embedding table: its rows). With a bias, the weight's leading axes matching the bias's
  shape are kept (trailing size-1 axes of the bias ignored, as in Equinox's conv bias
  ``(out, 1, 1)``), so a vmapped stack ``(L, out, in)`` with bias ``(L, out)`` has per-layer
  neurons. A 1-D ``weight`` (LayerNorm, BatchNorm) is not a layer: its leaves are per element.
* a callable ``neurons(path, leaf) -> tuple[int, ...] | None``, called for every float array leaf
  with its path as a tuple of key names (e.g. ``("layers", "0", "weight")``): a tuple makes the
  leaf a weight with those neuron axes (``()``: the whole leaf is one neuron); ``None`` makes it
  per element, whatever its shape, unless it is a ``bias`` beside exactly one weight, which it then
  joins (its shape must be the weight's neuron shape, trailing size-1 axes aside).

With ``"flax"`` and ``"torch"``, a leaf of 2 or more axes that is neither a layer's weight nor its
bias (an embedding table under ``"flax"``, a LoRA factor) raises a ``ValueError`` naming its path
and how to pass ``neurons=``. Nothing falls back silently to per-element rates.

**Leaves outside any layer** of at most one axis (a LayerNorm ``scale``, a ``bias`` with no sibling
weight, a scalar) are per element: every entry is its own neuron with a fan-in of one.
:func:`weight_norm_lr` uses ``|p|`` as the norm and ``adagrad_lr(granularity="neuron")`` gives them
their own elementwise accumulator (exactly the ``"parameter"`` rule). To give such leaves a
different rule, wrap the transforms in :func:`optax.multi_transform` or :func:`optax.masked`.

**Leaves that are not float arrays** (an Equinox model's activation functions, Python numbers,
integer arrays) and ``None`` gradients pass through untouched, as in Optax: ``update(grads, state,
model)`` works with an unfiltered Equinox model as ``params``.

**Learning rates** (``lrs`` values, ``default``, ``base_lr``) may be Python floats, (traced) JAX
scalars, so that a sweep can ``jax.vmap`` over them, or Optax schedules, which receive the int32
step count kept in each state's ``rule_count`` (``0`` at the first update). The states keep the
rates of the next update (``next_lr``, ``next_lrs``), so that :func:`learning_rates` needs no
access to the schedules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

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
Path = tuple[str, ...]
NeuronAxesFn = Callable[[Path, Any], "tuple[int, ...] | None"]
Neurons = Literal["flax", "torch"] | NeuronAxesFn
_Role = Literal["weight", "bias", "element"]
_ATTENTION = ("query", "key", "value", "out")  # child names of a flax attention module


# ------------------------------------------------------------------------------------------------
# Shared private helpers: paths, leaves, learning rates, the sign flip.
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


def _flatten(tree: Any) -> tuple[list[Path], list[Any], Any]:
    """``(paths, leaves, treedef)`` with ``None`` as a leaf; paths drop an nnx ``.value``."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    paths = []
    for path, _ in with_path:
        last = path[-1] if path else None
        if isinstance(last, jax.tree_util.GetAttrKey) and last.name == "value":
            path = path[:-1]
        paths.append(tuple(_key_name(e) for e in path))
    return paths, [leaf for _, leaf in with_path], treedef


def _is_float_array(x: Any) -> bool:
    """Whether a leaf is a float (or complex) array, the only leaves the rules touch."""
    return isinstance(x, jax.Array | np.ndarray | np.generic) and jnp.issubdtype(
        x.dtype, jnp.inexact
    )


def _arrays(tree: Any) -> Iterator[tuple[Path, Any]]:
    """``(path, leaf)`` for each float array leaf of ``tree``."""
    paths, leaves, _ = _flatten(tree)
    return ((p, x) for p, x in zip(paths, leaves, strict=True) if _is_float_array(x))


def _name(path: Path) -> str:
    """A path as a ``/``-joined string."""
    return "/".join(path)


def _resolve(lr: ScalarOrSchedule, count: jax.Array) -> jax.Array | float:
    """The learning rate at step ``count``: ``lr(count)`` for a schedule, else ``lr``."""
    return lr(count) if callable(lr) else lr


def _as_float(x: Any) -> jax.Array:
    """``x`` as a scalar of the default float dtype (a state field of fixed dtype)."""
    return jnp.asarray(x, jnp.result_type(float))


def _inner(inner: optax.GradientTransformation | None) -> optax.GradientTransformationExtraArgs:
    """``inner`` (identity if None) accepting extra keyword arguments."""
    return optax.with_extra_args_support(optax.identity() if inner is None else inner)


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


# ------------------------------------------------------------------------------------------------
# Layers and neurons: the layout of a params tree (see the module docstring).
# ------------------------------------------------------------------------------------------------


class _Place(NamedTuple):
    """Where one leaf's rate comes from."""

    group: str  # key of the per-neuron values: the layer's name, or the leaf's own path
    role: _Role  # "weight" makes the group's values, "bias" shares them, "element": per entry
    reduced: tuple[int, ...]  # a weight's fan-in axes (reduced to one value per neuron); else ()


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static (array-free) part of a per-neuron rule's state: each float leaf's place."""

    places: tuple[tuple[Path, _Place], ...]

    def lookup(self, who: str) -> Callable[[Path], _Place]:
        """A function ``path -> place``, raising a ``ValueError`` for a leaf init did not see."""
        places = dict(self.places)

        def place_of(path: Path) -> _Place:
            if path not in places:
                raise ValueError(
                    f"{who}: the leaf {_name(path)!r} was not in the params passed to init; init "
                    "and update must see the same tree of float arrays (filter both the same way)."
                )
            return places[path]

        return place_of


flax.serialization.register_serialization_state(
    _Layout, lambda layout: {}, lambda layout, state: layout
)


def _strip_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` without its trailing size-1 axes (Equinox's conv bias is ``(out, 1, 1)``)."""
    while shape and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _how_to_pass(mode: str) -> str:
    """The part of an error message that says how to pass ``neurons=``."""
    other = "neurons='torch' for PyTorch/Equinox layout (a 'weight' (out, in, ...))"
    if mode == "torch":
        other = "neurons='flax' for Flax layout (a 'kernel' (in, ..., out))"
    return (
        f"Pass {other}, or neurons=f with f(path, leaf) returning a weight's neuron axes "
        "(e.g. (0,) for a row per neuron) or None for per-element rates; a 'bias' beside the "
        "weight shares its rates."
    )


def _attention_outputs(node: Path, nodes: Mapping[Path, Mapping[str, Path]]) -> int | None:
    """Number of output axes of a flax attention projection's kernel, or None if not one."""
    if not node or node[-1] not in _ATTENTION:
        return None
    parent = node[:-1]
    if not all("kernel" in nodes.get((*parent, child), {}) for child in _ATTENTION):
        return None
    return 1 if node[-1] == "out" else 2


def _flax_neuron_axes(
    shapes: Mapping[Path, tuple[int, ...]], nodes: Mapping[Path, Mapping[str, Path]], who: str
) -> dict[Path, tuple[int, ...]]:
    """``{kernel path: neuron axes (layer axes included)}`` under ``neurons="flax"``."""
    out = {}
    for node, keys in nodes.items():
        if "kernel" not in keys:
            continue
        k = shapes[keys["kernel"]]
        b = shapes.get(keys["bias"]) if "bias" in keys else None
        name, n = _name(keys["kernel"]), len(k)
        if not n:
            raise ValueError(f"{who}: kernel {name!r} is a scalar; a kernel needs an output axis")
        n_out = _attention_outputs(node, nodes)
        if n_out is not None and n >= 3:  # (*stack, in, heads, dim) or (*stack, heads, dim, out)
            kept = (*range(n - 3), *range(n - n_out, n))
        elif b is None:
            kept = (n - 1,)
        else:
            fits = [
                (*range(lead), *range(n - (len(b) - lead), n))
                for lead in range(len(b))  # leading layer axes; at least one neuron axis
                if (len(b) < n or n == 1)
                and k[:lead] == b[:lead]
                and k[n - (len(b) - lead) :] == b[lead:]
            ]
            if len(fits) != 1:
                problem = (
                    "fits none of the layouts"
                    if not fits
                    else f"is ambiguous: its neuron axes could be any of {fits}"
                )
                raise ValueError(
                    f"{who}: kernel {name!r} has shape {k} and its bias has shape {b}, which "
                    f"{problem}. With neurons='flax' a bias must have the shape of the kernel's "
                    "trailing (output) axes, after any leading layer axes it shares with the "
                    "kernel: kernel.shape[-1:] for Dense, (heads, dim) for an attention query, "
                    f"(L, out) for an nn.scan stack (L, in, out). {_how_to_pass('flax')}"
                )
            kept = fits[0]
        if b is not None and b != tuple(k[i] for i in kept):
            raise ValueError(
                f"{who}: bias of attention projection {name!r} has shape {b}, but its kernel "
                f"{k} has neuron shape {tuple(k[i] for i in kept)}. {_how_to_pass('flax')}"
            )
        out[keys["kernel"]] = kept
    return out


def _torch_neuron_axes(
    shapes: Mapping[Path, tuple[int, ...]], nodes: Mapping[Path, Mapping[str, Path]], who: str
) -> dict[Path, tuple[int, ...]]:
    """``{weight path: neuron axes (layer axes included)}`` under ``neurons="torch"``."""
    out = {}
    for keys in nodes.values():
        if "weight" not in keys or len(shapes[keys["weight"]]) < 2:
            continue  # a 1-D weight is a norm's scale: per element
        w = shapes[keys["weight"]]
        if "bias" not in keys:
            out[keys["weight"]] = (0,)
            continue
        b = _strip_ones(shapes[keys["bias"]])
        if len(b) >= len(w) or w[: len(b)] != b:
            raise ValueError(
                f"{who}: weight {_name(keys['weight'])!r} has shape {w} and its bias has shape "
                f"{shapes[keys['bias']]}: with neurons='torch' a bias must match the weight's "
                "leading (output) axes, as weight (out, in) and bias (out,). "
                + _how_to_pass("torch")
            )
        out[keys["weight"]] = tuple(range(len(b)))
    return out


def _callable_neuron_axes(
    fn: NeuronAxesFn, arrays: Sequence[tuple[Path, Any]], who: str
) -> dict[Path, tuple[int, ...]]:
    """``{weight path: neuron axes}`` from a user's ``neurons=`` function."""
    out = {}
    for path, x in arrays:
        axes = fn(path, x)
        if axes is None:
            continue
        n = jnp.ndim(x)
        axes = tuple(int(a) for a in axes)
        if any(not -n <= a < n for a in axes):
            raise ValueError(
                f"{who}: neurons({path}, leaf) returned axes {axes}, out of range for the "
                f"leaf's shape {jnp.shape(x)}"
            )
        out[path] = tuple(sorted({a % n for a in axes}))
    return out


def _layout(params: Any, neurons: Neurons, who: str) -> _Layout:
    """Each float leaf's place under ``neurons`` (see the module docstring); raises if unplaced."""
    _check_neurons(neurons, who)
    arrays = list(_arrays(params))
    shapes = {p: tuple(jnp.shape(x)) for p, x in arrays}
    nodes: dict[Path, dict[str, Path]] = {}
    for path in shapes:
        if path:
            nodes.setdefault(path[:-1], {})[path[-1]] = path
    if neurons == "flax":
        kept = _flax_neuron_axes(shapes, nodes, who)
    elif neurons == "torch":
        kept = _torch_neuron_axes(shapes, nodes, who)
    else:
        kept = _callable_neuron_axes(neurons, arrays, who)
    weights_of: dict[Path, list[Path]] = {}
    for path in kept:
        weights_of.setdefault(path[:-1], []).append(path)

    places: dict[Path, _Place] = {}
    owners: dict[str, Path] = {}
    for path, shape in shapes.items():
        node = path[:-1]
        if path in kept:
            group = _name(node) if len(weights_of[node]) == 1 else _name(path)
            owner = node if len(weights_of[node]) == 1 else path
            reduced = tuple(i for i in range(len(shape)) if i not in kept[path])
            places[path] = _Place(group, "weight", reduced)
        elif path and path[-1] == "bias" and weights_of.get(node):
            if len(weights_of[node]) > 1:
                raise ValueError(
                    f"{who}: bias {_name(path)!r} sits beside several weights "
                    f"{[_name(w) for w in weights_of[node]]}; return neuron axes for it or for "
                    "only one weight from neurons="
                )
            weight = weights_of[node][0]
            neuron_shape = tuple(shapes[weight][i] for i in kept[weight])
            if _strip_ones(shape) != _strip_ones(neuron_shape):
                raise ValueError(
                    f"{who}: bias {_name(path)!r} has shape {shape}, but its weight "
                    f"{_name(weight)!r} {shapes[weight]} has neuron axes {kept[weight]} of "
                    f"shape {neuron_shape}: one bias entry per neuron is needed."
                )
            places[path] = _Place(_name(node), "bias", ())
            owner = node
        elif len(shape) >= 2 and not callable(neurons):
            raise ValueError(
                f"{who}: cannot tell the neurons of {_name(path)!r} (shape {shape}): with "
                f"neurons={neurons!r} it is neither a layer's weight nor its bias. "
                f"{_how_to_pass(neurons)}"
            )
        else:
            places[path] = _Place(_name(path), "element", ())
            owner = path
        group = places[path].group
        if owners.setdefault(group, owner) != owner:
            raise ValueError(
                f"{who}: two parts of the params tree are both named {group!r} once their keys "
                "are joined with '/'; rename the keys so that they contain no '/'"
            )
    return _Layout(tuple(places.items()))


def _elements(params: Any) -> _Layout:
    """The layout in which every float leaf is per element (``granularity="parameter"``)."""
    return _Layout(tuple((p, _Place(_name(p), "element", ())) for p, _ in _arrays(params)))


def _onto(per_neuron: jax.Array, place: _Place, shape: tuple[int, ...]) -> jax.Array:
    """A group's per-neuron values laid onto one leaf (broadcastable to ``shape``)."""
    if place.role == "weight":
        return jnp.expand_dims(per_neuron, place.reduced)
    if place.role == "bias":
        return jnp.reshape(per_neuron, shape)
    return per_neuron


def _weight_norms(params: Any, layout: _Layout, who: str) -> dict[str, jax.Array]:
    """``{group: ||fan-in||_2 per neuron}`` (``|p|`` per element outside layers)."""
    place_of = layout.lookup(who)
    return {
        place.group: jnp.sqrt(jnp.sum(jnp.square(w), axis=place.reduced))
        for path, w in _arrays(params)
        if (place := place_of(path)).role != "bias"
    }


def _prefix_rate(path: Path, rates: Mapping[Path, Any]) -> Any:
    """The rate of the longest prefix of ``path`` in ``rates``, or None if none matches."""
    hits = [pre for pre in rates if path[: len(pre)] == pre]
    return rates[max(hits, key=len)] if hits else None


def _check_neurons(neurons: Any, who: str) -> None:
    """Raises unless ``neurons`` is ``"flax"``, ``"torch"`` or a callable."""
    if not (callable(neurons) or neurons in ("flax", "torch")):
        raise ValueError(f"{who}: neurons must be 'flax', 'torch' or a callable, got {neurons!r}")


# ------------------------------------------------------------------------------------------------
# per_layer_lr
# ------------------------------------------------------------------------------------------------


class PerLayerLRState(NamedTuple):
    """State of :func:`per_layer_lr`: step count, the next update's rates, inner state."""

    rule_count: jax.Array  # int32, shape (): number of updates so far (a schedule's step)
    next_lrs: dict[str, jax.Array]  # float, shape (): {key of lrs, "" for default: its next rate}
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
    components: ``"Dense_1"`` matches ``Dense_1/kernel`` but not ``Dense_10/kernel``. Any params
    tree works (leaves that are not float arrays and ``None`` gradients pass through).

    Args:
      lrs: maps a layer name to its learning rate. A name is a top-level key of the params
        (``"Dense_0"``) or a ``/``-joined key-path prefix (``"encoder/Dense_0"``,
        ``"Dense_0/bias"``, ``"layers/0"`` for an Equinox ``MLP``); the longest matching prefix
        wins.
      inner: transformation giving the update direction from the raw gradients (default: the
        gradient itself, i.e. SGD; ``optax.scale_by_adam()`` gives Adam).
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
      Seed 002, example 1 (Adam with one parameter group per layer);
      ``torch.optim.Optimizer`` parameter groups.
    """
    for key in lrs:
        if not isinstance(key, str) or not key:
            raise ValueError(f"per_layer_lr: keys of lrs must be non-empty strings, got {key!r}")
    by_key = dict(lrs) if default is None else {**lrs, "": default}
    prefixes = {_prefix(key): lr for key, lr in by_key.items()}
    inner_tx = _inner(inner)

    def check(tree: Any, *, unused: bool) -> None:
        paths = [path for path, _ in _arrays(tree)]
        unmatched = [_name(p) for p in paths if _prefix_rate(p, prefixes) is None]
        if unmatched:
            raise ValueError(
                f"per_layer_lr: no learning rate for {len(unmatched)} parameter(s): {unmatched}. "
                "Add their layer (a top-level key such as 'Dense_0', or a '/'-joined key-path "
                "prefix) to lrs, or pass default= for every parameter not listed."
            )
        used = {max((pre for pre in prefixes if p[: len(pre)] == pre), key=len) for p in paths}
        missing = [_name(pre) for pre in prefixes if pre and pre not in used]
        if unused and missing:
            layers = sorted({p[0] for p in paths if p})
            raise ValueError(
                f"per_layer_lr: keys {missing} of lrs match no parameter. Top-level keys of the "
                f"params are {layers}; deeper keys are '/'-joined, e.g. 'Dense_0/kernel'."
            )

    def next_lrs(count: jax.Array) -> dict[str, jax.Array]:
        return {key: _as_float(_resolve(lr, count)) for key, lr in by_key.items()}

    def init_fn(params: optax.Params) -> PerLayerLRState:
        check(params, unused=True)
        count = _zero_count()
        return PerLayerLRState(count, next_lrs(count), inner_tx.init(params))

    def update_fn(
        updates: optax.Updates,
        state: PerLayerLRState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, PerLayerLRState]:
        check(updates, unused=False)
        rates = {pre: _resolve(lr, state.rule_count) for pre, lr in prefixes.items()}
        directions, inner_state = inner_tx.update(updates, state.inner_state, params, **extra_args)
        new = _descend(directions, lambda path, d: _prefix_rate(path, rates))
        count = optax.safe_int32_increment(state.rule_count)
        return new, PerLayerLRState(count, next_lrs(count), inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _prefix(key: str) -> Path:
    """A ``/``-joined key of ``lrs`` as a path prefix (``""``, the default, matches all)."""
    return tuple(key.split("/")) if key else ()


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
        0) or a function ``(path, leaf) -> neuron axes | None``; see the module docstring.
        ``init`` raises a ``ValueError`` naming any leaf of 2 or more axes it cannot place.

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
      Seed 002, example 2 (``lr_i = base_lr * (1 + scaling_factor * ||w_i||)``).
    """
    who = "weight_norm_lr"
    _check_neurons(neurons, who)
    inner_tx = _inner(inner)

    def init_fn(params: optax.Params) -> WeightNormLRState:
        count, layout = _zero_count(), _layout(params, neurons, who)
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
        norms = _weight_norms(params, state.layout, who)
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

    ``granularity="parameter"`` (seed 002, example 3), elementwise:

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
        gradient itself; ``optax.scale_by_adam()`` gives seed 002's AdaGrad-rates-through-Adam).
      neurons: for ``"neuron"``, which axes of which leaves index neurons: ``"flax"``,
        ``"torch"`` or a function ``(path, leaf) -> neuron axes | None`` (see the module
        docstring and :func:`weight_norm_lr`); ignored by ``"parameter"``.

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
    _check_neurons(neurons, who)
    inner_tx = _inner(inner)

    def init_fn(params: optax.Params) -> AdagradLRState:
        layout = _layout(params, neurons, who) if granularity == "neuron" else _elements(params)
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


# ------------------------------------------------------------------------------------------------
# learning_rates: the rates in a state
# ------------------------------------------------------------------------------------------------

_RULE_STATES = (PerLayerLRState, WeightNormLRState, AdagradLRState)
_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)


def _collect(
    tree: Any,
    hyperparams: Mapping[str, Any],
    rules: list[tuple[Any, Mapping[str, Any]]],
    multipliers: list[jax.Array],
) -> None:
    """Appends each jaxlr rule state in ``tree`` (with injected hyperparams) and plateau scale."""
    stop = lambda x: isinstance(x, (*_RULE_STATES, ReduceLROnPlateauState, *_INJECT_STATES))
    for node in jax.tree.leaves(tree, is_leaf=stop):
        if isinstance(node, _RULE_STATES):
            rules.append((node, hyperparams))
            _collect(node.inner_state, {}, rules, multipliers)
        elif isinstance(node, ReduceLROnPlateauState):
            multipliers.append(node.multiplier)
        elif isinstance(node, _INJECT_STATES):
            direct = isinstance(node.inner_state, _RULE_STATES)
            _collect(node.inner_state, node.hyperparams if direct else {}, rules, multipliers)


def learning_rates(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    r"""The learning rate that the next update will apply to each parameter, shaped like ``params``.

    ``opt_state`` is the state of a jaxlr rule, alone or anywhere inside :func:`optax.chain`,
    :func:`optax.inject_hyperparams`, an ``inner=`` or any other pytree of states; ``params`` are
    the current parameters (the tree given to ``init``; an unfiltered Equinox model is fine). Each
    float leaf gets an array of its own shape, per-neuron rates broadcast over the neuron's fan-in
    weights and bias; other leaves get ``None``. The rate :math:`\eta` is the rule's multiplier in
    :math:`u = -\eta \odot \mathrm{inner}(g)`, at the step of the next update (``rule_count``):

    * :func:`per_layer_lr`: :math:`\eta_{\ell(p)}` at that step (schedules evaluated there).
    * :func:`weight_norm_lr`: :math:`\eta_{\text{base}} (1 + s \lVert W_j \rVert_2)` with the
      norms of the ``params`` given here, exactly what ``update(..., params)`` would use.
    * :func:`adagrad_lr`: :math:`\eta_{\text{base}} / (\sqrt{G} + \epsilon)` with :math:`G` the
      state's accumulator, the sum of squares through the last update (at init :math:`G = 0`,
      so :math:`\eta_{\text{base}} / \epsilon`). The next update first adds its own gradient's
      square to :math:`G`, so it will apply at most this rate.

    Not included: the direction ``inner`` (Adam's :math:`1/(\sqrt{\hat v} + \epsilon)`
    preconditioning is not a learning rate) and stateless scalings in the chain (``optax.scale``,
    :func:`jaxlr.mup.scale_by_tree`). Included: the multiplier of every
    :func:`reduce_lr_on_plateau` state in ``opt_state`` (exact when it scales the rule's output or
    its direction, as in ``chain(rule, reduce_lr_on_plateau())`` or ``rule(inner=chain(
    scale_by_adam(), reduce_lr_on_plateau()))``). Inside :func:`optax.inject_hyperparams`, the
    hyperparameters stored in its state (``base_lr``, ``scaling_factor``, ``eps``) are used, so a
    value set there by hand counts; for a schedule given to ``inject_hyperparams`` that is the
    value of the last update, not the next.

    Args:
      opt_state: a state holding exactly one jaxlr rate rule's state.
      params: the current parameters.

    Returns:
      A tree shaped like ``params`` of float arrays (the rates) and ``None`` (non-float leaves).

    Raises:
      ValueError: if ``opt_state`` holds no jaxlr rule state or more than one (e.g. under
        :func:`optax.multi_transform`; call this on each sub-state with its params then).

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
    rules: list[tuple[Any, Mapping[str, Any]]] = []
    multipliers: list[jax.Array] = []
    _collect(opt_state, {}, rules, multipliers)
    if len(rules) != 1:
        raise ValueError(
            f"learning_rates: found {len(rules)} jaxlr rule states (per_layer_lr, "
            "weight_norm_lr, adagrad_lr) in opt_state; it reads exactly one. Under "
            "optax.multi_transform, pass each inner state with its own params."
        )
    state, hyper = rules[0]
    if isinstance(state, PerLayerLRState):
        table = {_prefix(key): lr for key, lr in state.next_lrs.items()}

        def rate_of(path: Path, leaf: Any) -> Any:
            rate = _prefix_rate(path, table)
            if rate is None:
                raise ValueError(
                    f"learning_rates: no rate for {_name(path)!r} in this per_layer_lr state; "
                    "pass the params that init saw."
                )
            return rate

    elif isinstance(state, WeightNormLRState):
        lr = hyper.get("base_lr", state.next_lr)
        factor = hyper.get("scaling_factor", state.norm_factor)
        norms = _weight_norms(params, state.layout, "learning_rates")
        rate_of = _rate_lookup(
            {g: lr * (1.0 + factor * n) for g, n in norms.items()}, state.layout, "learning_rates"
        )
    else:
        lr, eps = hyper.get("base_lr", state.next_lr), hyper.get("eps", state.epsilon)
        per_neuron = {k: lr / (jnp.sqrt(s) + eps) for k, s in state.sum_sq.items()}
        rate_of = _rate_lookup(per_neuron, state.layout, "learning_rates")
    scale = math.prod(multipliers, start=jnp.ones([], jnp.result_type(float)))
    paths, leaves, treedef = _flatten(params)
    rates = [
        jnp.broadcast_to(scale * rate_of(p, x), jnp.shape(x)) if _is_float_array(x) else None
        for p, x in zip(paths, leaves, strict=True)
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
    arguments. Everything else is flax's ``TrainState``.

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
        tx = optax.with_extra_args_support(self.tx)
        updates, opt_state = tx.update(g, self.opt_state, p, **extra)
        new = optax.apply_updates(p, updates)
        if nested:
            new = {"params": new, overwrite: grads[overwrite]}
        return self.replace(step=self.step + 1, params=new, opt_state=opt_state, **replace)
