"""The Flax MLP used throughout jaxlr, with PyTorch-compatible initialization.

Layers are named ``Dense_0 ... Dense_{L}`` (``L`` = number of hidden layers); each holds a
``kernel`` of shape ``(fan_in, fan_out)`` (Flax layout, the transpose of ``torch.nn.Linear``'s
``weight``) and a ``bias`` of shape ``(fan_out,)``.

Init schemes (``init_scheme=``):

* ``"torch"``: ``torch.nn.Linear``'s default. ``kaiming_uniform_(a=sqrt(5))`` on the weight gives
  ``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the bias is ``b ~ U(-1/sqrt(fan_in),
  1/sqrt(fan_in))``.
* ``"flax"``: Flax's default: ``W ~ lecun_normal = N(0, 1/fan_in)`` (truncated), ``b = 0``.
* ``"mup"``: like ``"torch"`` for every layer, except the readout, which is zero-initialized
  (the recommended muP readout init, Yang et al. 2022, Tensor Programs V, D.2). This is only
  the readout part of muP: the full muP init (hidden biases rescaled as
  ``mup.set_base_shapes(..., rescale_params=True)`` does) and the output multiplier come from
  :func:`jaxlr.mup.init_mup_mlp` / :func:`jaxlr.mup.mup_mlp`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

InitScheme = Literal["torch", "flax", "mup"]
INIT_SCHEMES: tuple[str, ...] = ("torch", "flax", "mup")


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: ``nn.Linear``'s default for weight and bias."""
    bound = 1.0 / (fan_in**0.5)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


class MLP(nn.Module):
    """A ReLU multilayer perceptron ``in -> hidden[0] -> ... -> hidden[-1] -> num_classes``.

    ``logits = Dense_L(readout_mult * h_{L})`` where ``h_{l+1} = relu(Dense_l(h_l))``. The
    ``readout_mult`` (1 for standard parametrization) is muP's output multiplier, applied to the
    readout's input so that the readout bias is not scaled, as in ``mup.MuReadout``.

    Attributes:
      hidden: widths of the hidden layers, e.g. ``(64, 16)`` for 10-64-16-2.
      num_classes: number of outputs.
      init_scheme: ``"torch"``, ``"flax"`` or ``"mup"`` (see module docstring).
      readout_mult: multiplier on the readout's input (muP's ``output_mult / width_mult``).
      dtype: parameter and computation dtype.
    """

    hidden: Sequence[int]
    num_classes: int
    init_scheme: InitScheme = "torch"
    readout_mult: float = 1.0
    dtype: Any = jnp.float32

    def _dense(self, fan_in: int, features: int, readout: bool, name: str) -> nn.Dense:
        if self.init_scheme == "flax":
            k_init, b_init = nn.initializers.lecun_normal(), nn.initializers.zeros_init()
        elif self.init_scheme == "torch" or not readout:
            k_init, b_init = torch_uniform(fan_in), torch_uniform(fan_in)
        elif self.init_scheme == "mup":
            k_init, b_init = nn.initializers.zeros_init(), nn.initializers.zeros_init()
        else:
            raise ValueError(f"unknown init {self.init_scheme!r}; choose one of {INIT_SCHEMES}")
        return nn.Dense(
            features,
            kernel_init=k_init,
            bias_init=b_init,
            dtype=self.dtype,
            param_dtype=self.dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        for i, w in enumerate(self.hidden):
            x = nn.relu(self._dense(fan_in, w, False, f"Dense_{i}")(x))
            fan_in = w
        if self.readout_mult != 1.0:
            x = x * jnp.asarray(self.readout_mult, x.dtype)
        return self._dense(fan_in, self.num_classes, True, f"Dense_{len(self.hidden)}")(x)


def layer_sizes(in_features: int, hidden: Sequence[int], num_classes: int) -> list[int]:
    """``[in, *hidden, out]``: the sizes of all activations, input and logits included."""
    return [in_features, *hidden, num_classes]


def param_count(in_features: int, hidden: Sequence[int], num_classes: int) -> int:
    """Number of parameters, equal to PyTorch's for the same ``nn.Linear`` stack."""
    sizes = layer_sizes(in_features, hidden, num_classes)
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def init_mlp(
    key: jax.Array,
    in_features: int,
    hidden: Sequence[int],
    num_classes: int,
    *,
    init: InitScheme = "torch",
    readout_mult: float = 1.0,
    dtype: Any = jnp.float32,
) -> tuple[MLP, dict]:
    """Builds an :class:`MLP` and initializes its params from ``key``.

    Returns:
      ``(model, params)`` where ``params`` is the ``{"Dense_i": {"kernel", "bias"}}`` tree
      (without the ``"params"`` collection wrapper).
    """
    model = MLP(
        tuple(hidden), num_classes, init_scheme=init, readout_mult=readout_mult, dtype=dtype
    )
    params = model.init(key, jnp.zeros((1, in_features), dtype))["params"]
    return model, params


def apply_mlp(model: MLP, params: dict, x: jax.Array) -> jax.Array:
    """Logits of ``model`` for the inputs ``x`` (params without the collection wrapper)."""
    return model.apply({"params": params}, x)
