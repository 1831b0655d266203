"""jaxlr: layer- and neuron-wise learning rates in JAX.

Optax transformations (per-layer, per-neuron weight-norm, AdaGrad per parameter / per neuron,
PyTorch-exact ReduceLROnPlateau), :func:`learning_rates` to read the rates out of a state, a
Flax ``TrainState`` that passes ``value=loss`` to them, muP learning-rate scales, a
PyTorch-compatible Flax MLP, and vectorized width x learning-rate sweeps
(:func:`jaxlr.sweep.run_sweep`).

The public names are imported on first use (a module ``__getattr__``), so ``import jaxlr`` and
``python -m jaxlr.sweep --help`` do not pay for JAX, Optax, Flax and pandas until something needs
them; ``from jaxlr import per_layer_lr`` and ``jaxlr.per_layer_lr`` work as with eager imports.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from jaxlr.coord_check import coord_check as coord_check
    from jaxlr.models import MLP as MLP
    from jaxlr.models import init_mlp as init_mlp
    from jaxlr.models import param_count as param_count
    from jaxlr.mup import init_mup_mlp as init_mup_mlp
    from jaxlr.mup import mup_adam as mup_adam
    from jaxlr.mup import mup_lr_scales as mup_lr_scales
    from jaxlr.mup import mup_mlp as mup_mlp
    from jaxlr.mup import mup_readout_mult as mup_readout_mult
    from jaxlr.mup import mup_sgd as mup_sgd
    from jaxlr.mup import scale_by_tree as scale_by_tree
    from jaxlr.neurons import NeuronLayout as NeuronLayout
    from jaxlr.neurons import neuron_axes as neuron_axes
    from jaxlr.transforms import AdagradLRState as AdagradLRState
    from jaxlr.transforms import PerLayerLRState as PerLayerLRState
    from jaxlr.transforms import ReduceLROnPlateauState as ReduceLROnPlateauState
    from jaxlr.transforms import TrainState as TrainState
    from jaxlr.transforms import WeightNormLRState as WeightNormLRState
    from jaxlr.transforms import adagrad_lr as adagrad_lr
    from jaxlr.transforms import learning_rates as learning_rates
    from jaxlr.transforms import per_layer_lr as per_layer_lr
    from jaxlr.transforms import reduce_lr_on_plateau as reduce_lr_on_plateau
    from jaxlr.transforms import weight_norm_lr as weight_norm_lr

__version__ = "0.1.0"

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "coord_check": "jaxlr.coord_check",
    **dict.fromkeys(("MLP", "init_mlp", "param_count"), "jaxlr.models"),
    **dict.fromkeys(
        (
            "init_mup_mlp",
            "mup_adam",
            "mup_lr_scales",
            "mup_mlp",
            "mup_readout_mult",
            "mup_sgd",
            "scale_by_tree",
        ),
        "jaxlr.mup",
    ),
    **dict.fromkeys(("NeuronLayout", "neuron_axes"), "jaxlr.neurons"),
    **dict.fromkeys(
        (
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
        ),
        "jaxlr.transforms",
    ),
}

__all__ = [
    "MLP",
    "AdagradLRState",
    "NeuronLayout",
    "PerLayerLRState",
    "ReduceLROnPlateauState",
    "TrainState",
    "WeightNormLRState",
    "adagrad_lr",
    "coord_check",
    "init_mlp",
    "init_mup_mlp",
    "learning_rates",
    "mup_adam",
    "mup_lr_scales",
    "mup_mlp",
    "mup_readout_mult",
    "mup_sgd",
    "neuron_axes",
    "param_count",
    "per_layer_lr",
    "reduce_lr_on_plateau",
    "scale_by_tree",
    "weight_norm_lr",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached in this module); a
    submodule (``jaxlr.plots``) imported on first attribute access, as eager imports allowed."""
    if name in _SOURCES:
        value = getattr(importlib.import_module(_SOURCES[name]), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: ``jaxlr.coord_check`` stays the function of that name.

    Importing the submodule ``jaxlr.coord_check`` (``python -m jaxlr.coord_check``, ``from
    jaxlr.coord_check import ...``) makes the import system bind the submodule as this package's
    attribute ``coord_check``; with eager imports the function then replaced it, and here the
    binding is redirected to the function, so ``jaxlr.coord_check(...)`` works in either order.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "coord_check" and isinstance(value, types.ModuleType):
            value = value.coord_check
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
