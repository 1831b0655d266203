"""jaxlr: layer- and neuron-wise learning rates in JAX.

Optax transformations (per-layer, per-neuron weight-norm, AdaGrad per parameter / per neuron,
PyTorch-exact ReduceLROnPlateau), muP learning-rate scales, a PyTorch-compatible Flax MLP, and
vectorized width x learning-rate sweeps (:func:`jaxlr.sweep.run_sweep`).
"""

from jaxlr.models import MLP as MLP
from jaxlr.models import init_mlp as init_mlp
from jaxlr.models import param_count as param_count
from jaxlr.mup import mup_lr_scales as mup_lr_scales
from jaxlr.transforms import AdagradLRState as AdagradLRState
from jaxlr.transforms import PerLayerLRState as PerLayerLRState
from jaxlr.transforms import ReduceLROnPlateauState as ReduceLROnPlateauState
from jaxlr.transforms import WeightNormLRState as WeightNormLRState
from jaxlr.transforms import adagrad_lr as adagrad_lr
from jaxlr.transforms import per_layer_lr as per_layer_lr
from jaxlr.transforms import reduce_lr_on_plateau as reduce_lr_on_plateau
from jaxlr.transforms import weight_norm_lr as weight_norm_lr

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "AdagradLRState",
    "PerLayerLRState",
    "ReduceLROnPlateauState",
    "WeightNormLRState",
    "adagrad_lr",
    "init_mlp",
    "mup_lr_scales",
    "param_count",
    "per_layer_lr",
    "reduce_lr_on_plateau",
    "weight_norm_lr",
]
