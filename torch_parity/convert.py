"""Converting ``torch.nn.Linear`` stacks to jaxlr/Flax params and back.

A torch ``state_dict`` of an MLP holds, for each ``nn.Linear`` (in registration order, which is
the forward order for every network here), ``"<prefix>.weight"`` of shape ``[out, in]`` and
``"<prefix>.bias"`` of shape ``[out]``; the prefix is an attribute name (``fc1``) or a
``nn.Sequential`` index (``0``, ``2``, ...). The Flax tree of :class:`jaxlr.models.MLP` is
``{"Dense_i": {"kernel": [in, out], "bias": [out]}}``, so the ``i``-th linear layer maps to
``Dense_i`` with

    kernel = weight.T,    bias = bias.

The conversion is a pure relabelling and transposition, exact in every dtype. Nothing here imports
torch: tensors are read through ``.detach().cpu().numpy()``, and the reverse direction returns
numpy arrays (wrap them with ``torch.from_numpy`` to load them into a module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Params = dict[str, dict[str, np.ndarray]]


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy copy of a torch tensor, a jax array or an array-like."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def linear_prefixes(state_dict: Mapping[str, Any]) -> list[str]:
    """The module prefixes of the ``nn.Linear`` layers of ``state_dict``, in their order.

    Raises:
      ValueError: if a key is not ``<prefix>.weight`` / ``<prefix>.bias`` or a layer lacks one.
    """
    prefixes: list[str] = []
    for key in state_dict:
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias") or not prefix:
            raise ValueError(
                f"state_dict key {key!r} is not '<layer>.weight' or '<layer>.bias'; only stacks "
                "of nn.Linear layers (with bias) can be converted"
            )
        if prefix not in prefixes:
            prefixes.append(prefix)
    for prefix in prefixes:
        for leaf in ("weight", "bias"):
            if f"{prefix}.{leaf}" not in state_dict:
                raise ValueError(
                    f"layer {prefix!r} has no {leaf!r}; did you build nn.Linear(..., bias=False)?"
                )
    return prefixes


def state_dict_to_flax(state_dict: Mapping[str, Any]) -> Params:
    """Converts a torch MLP ``state_dict`` to the ``{"Dense_i": {"kernel", "bias"}}`` tree.

    ``Dense_i.kernel = weight_i.T`` and ``Dense_i.bias = bias_i`` for the ``i``-th ``nn.Linear``
    in ``state_dict`` order. Leaves are numpy arrays with the tensors' dtype.

    Args:
      state_dict: a ``nn.Module.state_dict()`` (tensors) or a mapping of the same keys to arrays.

    Returns:
      The Flax params tree (without the ``"params"`` collection wrapper).

    Raises:
      ValueError: if the layers are not linear or their shapes do not chain.

    Example:
      >>> sd = {"fc1.weight": np.ones((3, 2)), "fc1.bias": np.zeros(3)}
      >>> state_dict_to_flax(sd)["Dense_0"]["kernel"].shape
      (2, 3)
    """
    params: Params = {}
    fan_out: int | None = None
    for i, prefix in enumerate(linear_prefixes(state_dict)):
        weight = _to_numpy(state_dict[f"{prefix}.weight"])
        bias = _to_numpy(state_dict[f"{prefix}.bias"])
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(
                f"layer {prefix!r}: expected weight [out, in] and bias [out], got "
                f"{weight.shape} and {bias.shape}"
            )
        if fan_out is not None and weight.shape[1] != fan_out:
            raise ValueError(
                f"layer {prefix!r} takes {weight.shape[1]} inputs but the previous layer gives "
                f"{fan_out}; is the state_dict in forward order?"
            )
        fan_out = weight.shape[0]
        params[f"Dense_{i}"] = {"kernel": weight.T.copy(), "bias": bias}
    return params


def _dense_index(name: str) -> int:
    """``"Dense_3" -> 3``; raises on any other layer name."""
    head, _, index = name.partition("_")
    if head != "Dense" or not index.isdigit():
        raise ValueError(f"param {name!r} is not 'Dense_<i>'; expected a jaxlr.models.MLP tree")
    return int(index)


def flax_to_state_dict(params: Mapping[str, Any], prefixes: Sequence[str] | None = None) -> dict:
    """Converts a ``{"Dense_i": {"kernel", "bias"}}`` tree to a torch-style ``state_dict``.

    The inverse of :func:`state_dict_to_flax`: ``weight_i = kernel_i.T``, ``bias_i = bias``.

    Args:
      params: Flax params (numpy or jax leaves), without the ``"params"`` wrapper.
      prefixes: the torch module names of the layers in order, e.g. ``linear_prefixes(sd)``;
        ``None`` gives ``fc1, fc2, ...``.

    Returns:
      A dict ``{"<prefix>.weight": array [out, in], "<prefix>.bias": array [out]}`` of numpy
      arrays; load it with ``module.load_state_dict({k: torch.from_numpy(v) ...})``.
    """
    names = sorted(params, key=_dense_index)
    if [_dense_index(n) for n in names] != list(range(len(names))):
        raise ValueError(f"params must be Dense_0 ... Dense_{len(names) - 1}; got {names}")
    if prefixes is None:
        prefixes = [f"fc{i + 1}" for i in range(len(names))]
    if len(prefixes) != len(names):
        raise ValueError(f"{len(prefixes)} prefixes given for {len(names)} layers")
    state_dict: dict[str, np.ndarray] = {}
    for prefix, name in zip(prefixes, names, strict=True):
        state_dict[f"{prefix}.weight"] = _to_numpy(params[name]["kernel"]).T.copy()
        state_dict[f"{prefix}.bias"] = _to_numpy(params[name]["bias"])
    return state_dict
