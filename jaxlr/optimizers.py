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


def rate_rules() -> tuple[str, ...]:
    """The rules whose rates vary within a layer (recorded in ``rates.csv``)."""
    from jaxlr import registry

    return tuple(name for name, r in registry.RULES.items() if r.rate_leaf is not None)


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


def clip_grad_norm(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    r"""PyTorch's ``torch.nn.utils.clip_grad_norm_``: every gradient scaled by

    .. math:: \min\Big(1, \frac{c}{\lVert g \rVert_2 + \epsilon}\Big),
        \qquad \lVert g \rVert_2 = \Big(\sum_p \lVert g_p \rVert_2^2\Big)^{1/2},

    with :math:`\epsilon = 10^{-6}` (``optax.clip_by_global_norm`` has no :math:`\epsilon`, which
    differs from PyTorch by about :math:`10^{-6}` relative on every clipped step)."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + eps))
        return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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
    from jaxlr import registry

    leaf = registry.RULES[spec.lr_rule].rate_leaf
    if leaf is None:
        return jnp.zeros((n_s, n_l, 0, len(RATE_QUANTILES)), jnp.float32)
    from jaxlr import transforms

    scales = {"mup": mup_scales, "lr-exp": lr_exp_scales}.get(spec.parametrization)
    scales = scales(spec) if scales is not None else None
    q = jnp.asarray(RATE_QUANTILES, jnp.float32)

    # per-neuron rules: a neuron's rate is its bias entry's, so the quantiles are over the
    # neurons (exact, and far cheaper than over the broadcast kernel); per parameter: the kernel

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


def make_optimizer(
    spec: RunSpec,
    lr: jax.Array | float,
    weight_decay: jax.Array | float = 0.0,
    schedule: jax.Array | float = 1.0,
) -> optax.GradientTransformation:
    r"""The update rule of ``spec`` with (base) learning rate ``lr``, weight decay
    ``weight_decay`` and schedule multiplier ``schedule`` (each may be traced).

    The update is :mod:`jaxlr.registry`'s: :math:`u = -\eta s_t c_p R(d(\cdot))` with the
    optimizer's direction :math:`d` (``spec.optimizer``), the rule's rate :math:`R`
    (``spec.lr_rule``; it takes :math:`d` as its ``inner``), the parametrization's
    multipliers :math:`c_p` (:func:`mup_scales`, :func:`lr_exp_scales`) and the weight decay
    where the optimizer puts it (L2 before :math:`d`, coupled after it, both divided by
    :math:`c_p` as microsoft/mup's ``MuSGD``/``MuAdamW`` do; independent decay
    :math:`-s_t\lambda'\theta` added last). SGD is ``-lr * g``; Adam is ``-lr * adam(g)``.
    ``weight_decay`` is read only when ``spec.decays``.
    """
    from jaxlr import registry

    entry = registry.optimizer(spec.optimizer)
    eta = lr * schedule if spec.schedule != "constant" else lr
    scales = None
    if spec.parametrization != "sp":
        scales = mup_scales(spec) if spec.parametrization == "mup" else lr_exp_scales(spec)
    inner = entry.direction(spec)
    independent = spec.decays and spec.weight_decay_mode == "independent"
    if spec.decays and not independent:
        decay = _add_scaled_params(weight_decay, scales)
        if entry.decay == "l2":
            inner = optax.chain(decay, inner) if inner is not None else decay
        else:
            inner = optax.chain(inner, decay) if inner is not None else decay
    base = registry.RULES[spec.lr_rule].build(spec, eta, inner)
    if scales is not None:
        from jaxlr import mup

        base = optax.chain(base, mup.scale_by_tree(scales))
    if spec.clip_norm is not None:  # PyTorch's clip_grad_norm_ before the optimizer's step
        base = optax.chain(clip_grad_norm(spec.clip_norm), base)
    if independent:
        wd = weight_decay
        if spec.weight_decay_scaling == "width":
            assert spec.base_width is not None
            wd = wd * (spec.base_width / spec.hidden[0])
        base = optax.chain(base, _add_scaled_params(-wd * schedule, None))
    return base


def _add_scaled_params(weight: jax.Array | float, scales: Any) -> optax.GradientTransformation:
    r""":math:`u \leftarrow u + (w / c_p)\,\theta` per parameter (:math:`c_p = 1` without
    ``scales``): ``optax.add_decayed_weights`` with microsoft/mup's per-group decay."""

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if params is None:
            raise ValueError("weight decay needs the parameters: pass params to update")
        if scales is None:
            return jax.tree.map(lambda u, p: u + weight * p, updates, params), state
        out = jax.tree.map(lambda u, p, c: u + (weight / c) * p, updates, params, scales)
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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
    """muP per-parameter lr multipliers for ``spec`` (a tree of floats): its family's
    :attr:`jaxlr.families.Family.mup_lr_scales`."""
    from jaxlr import families

    scales = families.family_of(spec).mup_lr_scales
    if scales is None:
        raise ValueError(f"--model {spec.family} has no muP learning-rate multipliers")
    return scales(spec)
