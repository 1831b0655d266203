"""jaxlr: layer- and neuron-wise learning rates in JAX.

Optax transformations (per-layer, per-neuron weight-norm, AdaGrad per parameter / per neuron,
PyTorch-exact ReduceLROnPlateau), :func:`learning_rates` to read the rates out of a state, a
Flax ``TrainState`` that passes ``value=loss`` to them, muP learning-rate scales, a
PyTorch-compatible Flax MLP, and vectorized width x learning-rate sweeps
(:func:`jaxlr.sweep.run_sweep`).
"""

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

__all__ = [
    "MLP",
    "AdagradLRState",
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
    "param_count",
    "per_layer_lr",
    "reduce_lr_on_plateau",
    "scale_by_tree",
    "weight_norm_lr",
]
