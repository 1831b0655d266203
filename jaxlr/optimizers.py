"""The optimizer of a program and what the sweep records of its rates.

:func:`make_optimizer` builds one lane's Optax transformation from a program's
:class:`jaxlr.engine.RunSpec`: the optimizer, the lr rule (per-layer, weight-norm, AdaGrad
per parameter or per neuron) and the parametrization's per-layer scales (muP, ``lr-exp``).
:func:`rate_quantiles` reads back, per lane and layer, the spread of the effective rates of the
rules whose rate varies within a layer (``rates.csv``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

if TYPE_CHECKING:
    from jaxlr.engine import RunSpec


RATE_RULES = ("weight-norm", "adagrad-param", "adagrad-neuron")
"""The rules whose rates vary within a layer (recorded in ``rates.csv``)."""


RATE_QUANTILES = (0.0, 0.05, 0.5, 0.95, 1.0)


RATE_SAMPLE = 16384
"""Above this many rates, the inner quantiles come from an even stride through them."""


def _quantiles(r: jax.Array, q: jax.Array) -> jax.Array:
    """``quantile(r, q)``; with more than :data:`RATE_SAMPLE` entries, the inner quantiles from
    every ``ceil(n / RATE_SAMPLE)``-th entry (a sort of the full kernel would cost as much as an
    epoch of training on a small dataset), min and max exact."""
    stride = -(-r.size // RATE_SAMPLE)
    inner = jnp.quantile(r[::stride], q)
    return inner.at[0].set(r.min()).at[-1].set(r.max())


def rate_quantiles(spec: RunSpec, params: Any, opt_state: Any, alive: jax.Array) -> jax.Array:
    r"""Quantiles :data:`RATE_QUANTILES` of each layer's effective learning rates, per lane.

    Shape ``(S, L, layers, 5)``, NaN for a diverged lane; ``(S, L, 0, 5)`` for a rule without
    per-neuron or per-parameter rates. The quantiles are over the layer's neurons
    (``weight-norm``, ``adagrad-neuron``) or over its kernel entries (``adagrad-param``; past
    :data:`RATE_SAMPLE` entries the 5/50/95% quantiles come from an even sample of them, min
    and max stay exact). A rate is the rule's own (:func:`jaxlr.learning_rates`: for
    ``weight-norm`` the rate of the next update, for the AdaGrad rules the rate before the next
    gradient) times the parametrization's per-layer multiplier (muP, ``lr-exp``); an inner
    Adam's preconditioning is not part of it.
    """
    n_s, n_l = alive.shape
    if spec.lr_rule not in RATE_RULES:
        return jnp.zeros((n_s, n_l, 0, len(RATE_QUANTILES)), jnp.float32)
    from jaxlr import transforms

    scales = {"mup": mup_scales, "lr-exp": lr_exp_scales}.get(spec.parametrization)
    scales = scales(spec) if scales is not None else None
    q = jnp.asarray(RATE_QUANTILES, jnp.float32)

    # per-neuron rules: a neuron's rate is its bias entry's, so the quantiles are over the
    # neurons (exact, and far cheaper than over the broadcast kernel); per parameter: the kernel
    leaf = "kernel" if spec.lr_rule == "adagrad-param" else "bias"

    def lane(p: Any, s: Any) -> jax.Array:
        rates = transforms.learning_rates(s, p)
        out = []
        for i in range(len(spec.hidden) + 1):
            r = rates[f"Dense_{i}"][leaf].astype(jnp.float32)
            if scales is not None:
                r = r * scales[f"Dense_{i}"][leaf]
            out.append(_quantiles(r.ravel(), q))
        return jnp.stack(out)

    stats = jax.vmap(jax.vmap(lane))(params, opt_state)
    return jnp.where(alive[..., None, None], stats, jnp.nan)


def make_optimizer(spec: RunSpec, lr: jax.Array | float) -> optax.GradientTransformation:
    """The update rule of ``spec`` with (base) learning rate ``lr`` (may be traced).

    SGD is ``-lr * g``; Adam is ``-lr * adam(g)`` (torch defaults b1=0.9, b2=0.999, eps=1e-8).
    ``lr_rule`` replaces the scalar rate by a per-layer / per-neuron / per-parameter rate from
    :mod:`jaxlr.transforms`, with Adam's direction as ``inner`` when the optimizer is Adam.
    Under muP the updates are then multiplied by :func:`jaxlr.mup.mup_lr_scales`.
    """
    inner = optax.scale_by_adam() if spec.optimizer == "adam" else None
    rule = spec.lr_rule
    if rule == "none":
        base = optax.chain(inner or optax.identity(), optax.scale(-1.0 * lr))
    else:
        from jaxlr import transforms

        if rule == "per-layer":
            assert spec.layer_lr_mults is not None
            lrs = {f"Dense_{i}": lr * m for i, m in enumerate(spec.layer_lr_mults)}
            base = transforms.per_layer_lr(lrs, inner=inner)
        elif rule == "weight-norm":
            base = transforms.weight_norm_lr(
                lr, scaling_factor=spec.weight_norm_factor, inner=inner
            )
        elif rule in ("adagrad-param", "adagrad-neuron"):
            gran = "parameter" if rule == "adagrad-param" else "neuron"
            base = transforms.adagrad_lr(lr, eps=spec.adagrad_eps, granularity=gran, inner=inner)
        else:
            raise ValueError(f"unknown lr rule {rule!r}")
    if spec.parametrization == "sp":
        return base
    from jaxlr import mup

    scales = mup_scales(spec) if spec.parametrization == "mup" else lr_exp_scales(spec)
    return optax.chain(base, mup.scale_by_tree(scales))


@functools.cache
def lr_exp_scales(spec: RunSpec) -> dict[str, dict[str, float]]:
    r"""Per-layer lr multipliers of the ``lr-exp`` parametrization (a tree of floats).

    Layer :math:`l` (``Dense_l``: the hidden layers, then the readout) trains at

    .. math:: \eta_l = \eta \, (n / n_0)^{-e_l},

    with :math:`n` the first hidden width (the ``width`` column), :math:`n_0` ``base_width`` and
    :math:`e_l` ``lr_exponents[l]`` — the per-layer learning-rate exponents of the
    abc-parametrization view (Everett et al., 2024), on SP's init and forward pass. At
    :math:`n = n_0` it is SP.
    """
    assert spec.lr_exponents is not None and spec.base_width is not None
    ratio = spec.hidden[0] / spec.base_width
    return {
        f"Dense_{i}": {"kernel": ratio ** (-e), "bias": ratio ** (-e)}
        for i, e in enumerate(spec.lr_exponents)
    }


@functools.cache
def mup_scales(spec: RunSpec) -> Any:
    """muP per-parameter lr multipliers for ``spec`` (a tree of floats)."""
    from jaxlr import mup

    shapes = mup.mlp_shapes(spec.in_features, spec.hidden, spec.num_classes)
    base_shapes = mup.mlp_shapes(spec.in_features, spec.base_hidden, spec.num_classes)
    return mup.mup_lr_scales(shapes, base_shapes, optimizer=spec.optimizer)
