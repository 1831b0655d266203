"""jaxlr: layer- and neuron-wise learning rates in JAX."""

__version__ = "0.1.0"
