r"""Layers and neurons of a params tree: which leaves are weights, and which axes index neurons.

The per-neuron rules (:func:`jaxlr.weight_norm_lr`, ``jaxlr.adagrad_lr(granularity="neuron")``)
give every neuron one learning rate. Their ``neurons=`` argument says how to find the neurons of
any params tree: flax linen or NNX, Equinox or PyTorch state dicts, Haiku, or a tree of your own.

A *layer* has one *weight* leaf and optionally a *bias* leaf beside it (same node of the params
tree: a mapping, a dataclass or an Equinox module; the ``.value`` of an ``nnx.Variable`` is looked
through). A *neuron* is an output unit; the weight's *neuron axes* are the axes that index neurons,
and its other axes (the neuron's fan-in) are reduced to get one value per neuron. The bias has one
entry per neuron (trailing size-1 axes aside) and shares its neuron's rate. A layer is named by
the ``/``-joined keys of its node's path, e.g. ``"Dense_0"``, ``"layers/0"`` or, in Haiku,
``"mlp/~/linear_0"``.

``neurons=`` takes one of:

* ``"flax"`` (default): the weight is a ``kernel`` leaf and the bias a ``bias`` leaf (linen, NNX,
  ``DenseGeneral``, attention projections, conv). The neurons are the kernel's output axes: the
  trailing axes that match the bias's shape, or the last axis of a 2-D kernel without a bias.
  Leading axes shared by kernel and bias (stacks from ``nn.scan`` / ``nnx.vmap``) are *layer
  axes*: each stacked layer has its own neurons. So a ``Dense`` kernel ``(in, out)`` has neurons
  ``out``; a conv kernel ``(h, w, in, out)`` with bias its output channels; an attention
  query/key/value kernel ``(in, heads, dim)`` with bias ``(heads, dim)`` one neuron per
  ``(head, dim)``, its output kernel ``(heads, dim, out)`` one per ``out``; a scanned ``Dense``
  kernel ``(L, in, out)`` with bias ``(L, out)`` one per ``(layer, out)``. Flax attention (a node
  holding ``query``, ``key``, ``value`` and ``out`` layers, as ``nn.MultiHeadDotProductAttention``
  and ``nnx.MultiHeadAttention`` make) is recognized with or without biases.
* ``"haiku"``: the weight is a ``w`` leaf in Haiku's layout ``(in, out)`` (``hk.Linear``,
  ``hk.nets.MLP``), ``(*window, in, out)`` (``hk.ConvND``), and the bias a ``b`` leaf ``(out,)``
  (or ``(out, 1, ...)`` for channels-first convs); stacks from ``hk.layer_stack`` (``w``
  ``(L, in, out)``, ``b`` ``(L, out)``) have per-layer neurons, as under ``"flax"``. Norm
  parameters (``scale``, ``offset``, also ``hk.BatchNorm``'s ``(1, ..., C)``) are per element.
* ``"torch"``: the weight is a ``weight`` leaf in PyTorch layout ``(out, in, *window)``
  (``torch.nn`` state dicts, Equinox ``Linear``/``Conv``/``Embedding``): axis 0 indexes neurons
  (for an embedding table: its rows). With a bias, the weight's leading axes matching the bias's
  shape are kept (trailing size-1 axes of the bias ignored, as in Equinox's conv bias
  ``(out, 1, 1)``), so a vmapped stack ``(L, out, in)`` with bias ``(L, out)`` has per-layer
  neurons. A 1-D ``weight`` (LayerNorm, BatchNorm) is not a layer: its entries are per element.
* a :class:`NeuronLayout`: one of the three above plus what its shapes cannot tell:
  ``conv=True`` (a bias-free weight of 3 or more axes is a conv kernel) and ``axes={leaf: neuron
  axes}`` for single leaves (a bias-free ``nn.scan`` / ``eqx.filter_vmap`` stack, a
  ``DenseGeneral`` with several output axes, an embedding table; ``None`` makes a leaf per
  element). It is not callable, so :func:`optax.inject_hyperparams` passes it through as it is.
* a callable ``neurons(path, leaf) -> tuple[int, ...] | "bias" | None``, called for every float
  array leaf with its path as a tuple of key names (e.g. ``("layers", "0", "weight")``): a tuple
  makes the leaf a weight with those neuron axes (``()``: the whole leaf is one neuron);
  ``"bias"`` makes it the bias of the one weight beside it (e.g. Haiku's ``b``: ``lambda path,
  leaf: "bias" if path[-1] == "b" else ...``); ``None`` makes it per element, whatever its shape,
  unless it is named ``bias`` and sits beside exactly one weight, which it then joins. Under
  :func:`optax.inject_hyperparams` a callable is taken for a schedule (and called with the step
  count: a ``TypeError``) unless ``static_args=("neurons",)`` is given; a :class:`NeuronLayout`
  needs no ``static_args``.

**Nothing falls back silently.** Where the shapes fit more than one reading, ``init`` raises a
``ValueError`` that names the leaf, the readings and the ``neurons=`` that picks each: a bias-free
kernel of 3 or more axes outside attention (a conv kernel, or an ``nn.scan`` stack ``(L, in,
out)``, or a ``DenseGeneral``), a bias-free ``weight`` of 3 or more axes under ``"torch"`` (a conv
weight ``(out, in, *window)``, or an ``eqx.filter_vmap`` stack ``(L, out, in)``), a kernel
``(8, 8, 8)`` with bias ``(8, 8)`` (``DenseGeneral`` or a stack of 8 layers). Under the built-in
layouts, a leaf with two or more axes longer than 1 that is neither a layer's weight nor its bias
(an embedding table under ``"flax"``, a LoRA factor) raises too, naming its path and the fix.

**Leaves outside any layer** with at most one axis longer than 1 (a LayerNorm ``scale``, a
``bias`` with no sibling weight, a scalar) are per element: every entry is its own neuron with a
fan-in of one. :func:`jaxlr.weight_norm_lr` uses ``|p|`` as the norm and
``adagrad_lr(granularity="neuron")`` gives them their own elementwise accumulator (exactly the
``"parameter"`` rule). To give such leaves a different rule, wrap the transforms in
:func:`optax.multi_transform` or :func:`optax.masked`.

**Leaves that are not float arrays** (an Equinox model's activation functions, Python numbers,
integer arrays) are not part of any layout and pass through the rules untouched.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxlr.neurons import NeuronLayout, neuron_axes
  >>> haiku_params = {"mlp/~/linear_0": {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}}
  >>> neuron_axes(haiku_params, "haiku")  # fan-in over axis 0, b shares the neurons of w
  {'mlp/~/linear_0/b': 'bias', 'mlp/~/linear_0/w': (1,)}
  >>> stack = {"weight": jnp.ones((2, 5, 4))}  # eqx.filter_vmap over Linear(use_bias=False)
  >>> neuron_axes(stack, NeuronLayout("torch", axes={"weight": (0, 1)}))
  {'weight': (0, 1)}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NeuronAxesFn", "NeuronLayout", "Neurons", "neuron_axes"]

Path = tuple[str, ...]
Base = Literal["flax", "torch", "haiku"]
NeuronAxesFn = Callable[[Path, Any], "tuple[int, ...] | Literal['bias'] | None"]
_Role = Literal["weight", "bias", "element"]
_ATTENTION = ("query", "key", "value", "out")  # child names of a flax attention module
_BASES: dict[str, tuple[str, str]] = {  # layout: (weight leaf name, bias leaf name)
    "flax": ("kernel", "bias"),
    "haiku": ("w", "b"),
    "torch": ("weight", "bias"),
}


@dataclasses.dataclass(frozen=True)
class NeuronLayout:
    """A built-in layout plus the readings its shapes cannot tell (see the module docstring).

    Attributes:
      base: ``"flax"``, ``"torch"`` or ``"haiku"``: the names and axis order of weights and biases.
      conv: read a bias-free weight of 3 or more axes as a conv kernel: neurons on the output
        channel axis (the last under ``"flax"``/``"haiku"``, axis 0 under ``"torch"``), all other
        axes fan-in. Without it such a weight raises, as it may be a stack of layers.
      axes: ``{"/"-joined leaf path: neuron axes}`` for single leaves, overriding ``base``: a
        tuple makes the leaf a weight with those neuron axes (its bias, named as in ``base``,
        joins it), ``None`` makes it per element. Each key must name a float leaf.
    """

    base: Base = "flax"
    conv: bool = False
    axes: Mapping[str, tuple[int, ...] | None] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base not in _BASES:
            raise ValueError(
                f"NeuronLayout: base must be 'flax', 'torch' or 'haiku', got {self.base!r}"
            )
        for key, axes in dict(self.axes).items():
            if not isinstance(key, str) or not (
                axes is None
                or (isinstance(axes, tuple | list) and all(isinstance(a, int) for a in axes))
            ):
                raise ValueError(
                    "NeuronLayout: axes maps '/'-joined leaf paths to a tuple of neuron axes or "
                    f"None, got {key!r}: {axes!r}"
                )


Neurons = Literal["flax", "torch", "haiku"] | NeuronLayout | NeuronAxesFn


# ------------------------------------------------------------------------------------------------
# Paths and leaves (shared with jaxlr.transforms).
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


# ------------------------------------------------------------------------------------------------
# The layout of a params tree: each float leaf's place.
# ------------------------------------------------------------------------------------------------


class _Place(NamedTuple):
    """Where one leaf's rate comes from."""

    group: str  # key of the per-neuron values: the layer's name, or the leaf's own path
    role: _Role  # "weight" makes the group's values, "bias" shares them, "element": per entry
    reduced: tuple[int, ...]  # a weight's fan-in axes (reduced to one value per neuron); else ()


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Static (array-free) part of a rule's state: each float leaf's place."""

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


def _how_to_pass(base: str) -> str:
    """The part of an error message that says how to pass ``neurons=``."""
    others = {
        "flax": "neurons='flax' for Flax ('kernel' (in, ..., out), 'bias')",
        "torch": "neurons='torch' for PyTorch/Equinox ('weight' (out, in, ...), 'bias')",
        "haiku": "neurons='haiku' for Haiku ('w' (in, ..., out), 'b')",
    }
    listed = ", ".join(v for k, v in others.items() if k != base)
    return (
        f"Pass {listed}, neurons=jaxlr.neurons.NeuronLayout({base!r}, axes={{'<leaf path>': "
        "<its neuron axes, e.g. (0,)>}) to name one leaf's neuron axes (None: per element), or "
        "neurons=f with f(path, leaf) returning a weight's neuron axes, 'bias' or None; a bias "
        "beside the weight shares its rates."
    )


def _attention_outputs(node: Path, nodes: Mapping[Path, Mapping[str, Path]]) -> int | None:
    """Number of output axes of a flax attention projection's kernel, or None if not one."""
    if not node or node[-1] not in _ATTENTION:
        return None
    parent = node[:-1]
    if not all("kernel" in nodes.get((*parent, child), {}) for child in _ATTENTION):
        return None
    return 1 if node[-1] == "out" else 2


def _ambiguous_bias_free(base: str, name: str, shape: tuple[int, ...], who: str) -> ValueError:
    """The error for a bias-free weight of 3 or more axes, whose neurons the shape cannot tell."""
    n = len(shape)
    if base == "torch":
        readings = (
            "a conv weight (out, in, *window) has one neuron per entry of axis 0; a stack of "
            f"{shape[0]} layers (L, out, in) from eqx.filter_vmap / jax.vmap has one per "
            "(layer, out), axes (0, 1)"
        )
        stack = (0, 1)
    else:
        maker = "nn.scan / nnx.vmap" if base == "flax" else "hk.layer_stack"
        readings = (
            "a conv kernel (*window, in, out) has one neuron per output channel (the last axis); "
            f"a stack of {shape[0]} layers (L, in, out) from {maker} has one per (layer, out), "
            f"axes (0, {n - 1}); a DenseGeneral (in, *out) one per output entry"
        )
        stack = (0, n - 1)
    return ValueError(
        f"{who}: weight {name!r} has shape {shape} and no bias, so its neurons are ambiguous: "
        f"{readings}. Pass neurons=jaxlr.neurons.NeuronLayout({base!r}, conv=True) if every "
        f"bias-free weight of 3 or more axes is a conv kernel, or "
        f"neurons=jaxlr.neurons.NeuronLayout({base!r}, axes={{{name!r}: {stack}}}) for a stack."
    )


def _bias_fits(k: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each reading of ``k``'s neuron axes (layer axes first) whose shape is the bias's ``b``."""
    n = len(k)
    return [
        (*range(lead), *range(n - (len(b) - lead), n))
        for lead in range(len(b))  # leading layer axes; at least one neuron axis
        if (len(b) < n or n == 1) and k[:lead] == b[:lead] and k[n - (len(b) - lead) :] == b[lead:]
    ]


def _trailing_neuron_axes(
    shapes: Mapping[Path, tuple[int, ...]],
    nodes: Mapping[Path, Mapping[str, Path]],
    spec: NeuronLayout,
    who: str,
) -> dict[Path, tuple[int, ...]]:
    """``{weight path: neuron axes (layer axes included)}`` for ``"flax"`` and ``"haiku"``."""
    weight, bias = _BASES[spec.base]
    out = {}
    for node, keys in nodes.items():
        if weight not in keys or _name(keys[weight]) in spec.axes:
            continue
        k = shapes[keys[weight]]
        b = shapes[keys[bias]] if bias in keys else None
        name, n = _name(keys[weight]), len(k)
        if not n:
            raise ValueError(f"{who}: weight {name!r} is a scalar; a weight needs an output axis")
        n_out = _attention_outputs(node, nodes) if spec.base == "flax" else None
        if n_out is not None and n >= 3:  # (*stack, in, heads, dim) or (*stack, heads, dim, out)
            kept = (*range(n - 3), *range(n - n_out, n))
            if b is not None and b != tuple(k[i] for i in kept):
                raise ValueError(
                    f"{who}: bias of attention projection {name!r} has shape {b}, but its kernel "
                    f"{k} has neuron shape {tuple(k[i] for i in kept)}. {_how_to_pass('flax')}"
                )
        elif b is None:
            if n >= 3 and not spec.conv:
                raise _ambiguous_bias_free(spec.base, name, k, who)
            kept = (n - 1,)
        else:
            # Haiku's channels-first conv bias is (out, 1, ...): read without its trailing ones
            fits = _bias_fits(k, b) or (
                _bias_fits(k, _strip_ones(b)) if spec.base == "haiku" else []
            )
            if len(fits) != 1:
                problem = (
                    "fits none of the layouts"
                    if not fits
                    else f"is ambiguous: its neuron axes could be any of {fits}"
                )
                raise ValueError(
                    f"{who}: weight {name!r} has shape {k} and its bias has shape {b}, which "
                    f"{problem}. With neurons={spec.base!r} a bias must have the shape of the "
                    "weight's trailing (output) axes, after any leading layer axes it shares with "
                    "the weight: weight.shape[-1:] for a dense layer, (heads, dim) for an "
                    f"attention query, (L, out) for a stack (L, in, out). {_how_to_pass(spec.base)}"
                )
            kept = fits[0]
        out[keys[weight]] = kept
    return out


def _torch_neuron_axes(
    shapes: Mapping[Path, tuple[int, ...]],
    nodes: Mapping[Path, Mapping[str, Path]],
    spec: NeuronLayout,
    who: str,
) -> dict[Path, tuple[int, ...]]:
    """``{weight path: neuron axes (layer axes included)}`` under ``"torch"``."""
    out = {}
    for keys in nodes.values():
        if "weight" not in keys or _name(keys["weight"]) in spec.axes:
            continue
        w, name = shapes[keys["weight"]], _name(keys["weight"])
        if len(w) < 2:
            continue  # a 1-D weight is a norm's scale: per element
        if "bias" not in keys:
            if len(w) >= 3 and not spec.conv:
                raise _ambiguous_bias_free("torch", name, w, who)
            out[keys["weight"]] = (0,)
            continue
        b = _strip_ones(shapes[keys["bias"]])
        if len(b) >= len(w) or w[: len(b)] != b:
            raise ValueError(
                f"{who}: weight {name!r} has shape {w} and its bias has shape "
                f"{shapes[keys['bias']]}: with neurons='torch' a bias must match the weight's "
                "leading (output) axes, as weight (out, in) and bias (out,). "
                + _how_to_pass("torch")
            )
        out[keys["weight"]] = tuple(range(len(b)))
    return out


def _checked_axes(path: Path, x: Any, axes: Sequence[int], who: str) -> tuple[int, ...]:
    """``axes`` as sorted non-negative ints, raising if one is out of range for ``x``."""
    n = jnp.ndim(x)
    axes = tuple(int(a) for a in axes)
    if any(not -n <= a < n for a in axes):
        raise ValueError(
            f"{who}: neuron axes {axes} of {_name(path)!r} are out of range for the leaf's shape "
            f"{jnp.shape(x)}"
        )
    return tuple(sorted({a % n for a in axes}))


def _callable_neuron_axes(
    fn: NeuronAxesFn, arrays: Sequence[tuple[Path, Any]], who: str
) -> tuple[dict[Path, tuple[int, ...]], set[Path]]:
    """``({weight path: neuron axes}, {paths the function calls a bias})`` from ``neurons=f``."""
    kept, biases = {}, set()
    for path, x in arrays:
        axes = fn(path, x)
        if axes is None:
            continue
        if isinstance(axes, str):
            if axes != "bias":
                raise ValueError(
                    f"{who}: neurons({path}, leaf) returned {axes!r}; it may return a tuple of "
                    "neuron axes, 'bias' or None"
                )
            biases.add(path)
            continue
        kept[path] = _checked_axes(path, x, axes, who)
    return kept, biases


def _spec(neurons: Any, who: str) -> NeuronLayout | NeuronAxesFn:
    """``neurons`` as a :class:`NeuronLayout` or a callable; raises if it is neither."""
    if isinstance(neurons, NeuronLayout) or callable(neurons):
        return neurons
    if isinstance(neurons, str) and neurons in _BASES:
        return NeuronLayout(neurons)  # type: ignore[arg-type]
    raise ValueError(
        f"{who}: neurons must be 'flax', 'torch', 'haiku', a jaxlr.neurons.NeuronLayout or a "
        f"callable, got {neurons!r}"
    )


def _vector_like(shape: tuple[int, ...]) -> bool:
    """Whether at most one axis is longer than 1 (a norm's scale, hk.BatchNorm's (1, ..., C))."""
    return sum(d > 1 for d in shape) <= 1


def _layout(params: Any, neurons: Neurons, who: str) -> _Layout:
    """Each float leaf's place under ``neurons`` (see the module docstring); raises if unplaced."""
    spec = _spec(neurons, who)
    arrays = list(_arrays(params))
    shapes = {p: tuple(jnp.shape(x)) for p, x in arrays}
    nodes: dict[Path, dict[str, Path]] = {}
    for path in shapes:
        if path:
            nodes.setdefault(path[:-1], {})[path[-1]] = path
    said_bias: set[Path] = set()
    if isinstance(spec, NeuronLayout):
        by_name = {_name(p): (p, x) for p, x in arrays}
        unknown = [key for key in spec.axes if key not in by_name]
        if unknown:
            raise ValueError(
                f"{who}: NeuronLayout axes {unknown} name no float leaf of the params; keys are "
                f"'/'-joined leaf paths such as {sorted(by_name)[:3]}"
            )
        infer = _torch_neuron_axes if spec.base == "torch" else _trailing_neuron_axes
        kept = infer(shapes, nodes, spec, who)
        for key, axes in spec.axes.items():
            if axes is not None:
                kept[by_name[key][0]] = _checked_axes(*by_name[key], axes, who)
        bias_name = _BASES[spec.base][1]
        elements = {by_name[key][0] for key, axes in spec.axes.items() if axes is None}
    else:
        kept, said_bias = _callable_neuron_axes(spec, arrays, who)
        bias_name, elements = "bias", set()
    weights_of: dict[Path, list[Path]] = {}
    for path in kept:
        weights_of.setdefault(path[:-1], []).append(path)

    places: dict[Path, _Place] = {}
    owners: dict[str, Path] = {}
    for path, shape in shapes.items():
        node = path[:-1]
        is_bias = path in said_bias or (path and path[-1] == bias_name and path not in elements)
        if path in kept:
            group = _name(node) if len(weights_of[node]) == 1 else _name(path)
            owner = node if len(weights_of[node]) == 1 else path
            reduced = tuple(i for i in range(len(shape)) if i not in kept[path])
            places[path] = _Place(group, "weight", reduced)
        elif is_bias and (weights_of.get(node) or path in said_bias):
            if len(weights_of.get(node, [])) != 1:
                raise ValueError(
                    f"{who}: bias {_name(path)!r} sits beside "
                    f"{len(weights_of.get(node, []))} weights "
                    f"{[_name(w) for w in weights_of.get(node, [])]}, not one (several weights "
                    "or none); give neuron axes for exactly one weight beside it, or make the "
                    "bias per element (None)"
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
        elif isinstance(spec, NeuronLayout) and path not in elements and not _vector_like(shape):
            raise ValueError(
                f"{who}: cannot tell the neurons of {_name(path)!r} (shape {shape}): with "
                f"neurons={spec.base!r} it is neither a layer's weight nor its bias. "
                f"{_how_to_pass(spec.base)}"
            )
        else:
            places[path] = _Place(_name(path), "element", ())
            owner = path
        group = places[path].group
        if owners.setdefault(group, owner) != owner:
            raise ValueError(
                f"{who}: two parts of the params tree are both named {group!r} once their keys "
                "are joined with '/'; rename the keys so that no joined names collide"
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


def neuron_axes(params: Any, neurons: Neurons = "flax") -> dict[str, tuple[int, ...] | str]:
    """What ``neurons=`` makes of ``params``: each weight's neuron axes, and its bias.

    A way to check a layout before training with it: the same reading the per-neuron rules make
    at ``init``, with the same errors.

    Args:
      params: a params tree (non-float leaves are skipped).
      neurons: as for :func:`jaxlr.weight_norm_lr` (see the module docstring).

    Returns:
      ``{"/"-joined leaf path: neuron axes}`` for each weight and ``{path: "bias"}`` for each
      bias that shares its weight's rates; leaves not listed are per element.
    """
    out: dict[str, tuple[int, ...] | str] = {}
    ndim = {path: jnp.ndim(x) for path, x in _arrays(params)}
    for path, place in _layout(params, neurons, "neuron_axes").places:
        if place.role == "weight":
            out[_name(path)] = tuple(i for i in range(ndim[path]) if i not in place.reduced)
        elif place.role == "bias":
            out[_name(path)] = "bias"
    return out
