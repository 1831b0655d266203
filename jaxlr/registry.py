r"""The optimizers, learning-rate rules and schedules of the sweep: one entry each.

Everything the rest of jaxlr needs to know about an optimizer, a rule or a schedule is its
entry here: the command line's choices and the config's validation read the names and what
each composes with, the engine builds the update from the factories, and the memory planner
reads the state slots. Adding one is one :func:`register` call (see the Development page).

**The update of one lane.** With swept learning rate :math:`\eta`, schedule multiplier
:math:`s_t` (:data:`SCHEDULES`), the rule's rate :math:`R` (per layer, per neuron or per
parameter; :data:`RULES`), the parametrization's per-parameter multiplier :math:`c_p` (muP,
``lr-exp``; 1 in SP), the optimizer's direction :math:`d` (:data:`OPTIMIZERS`) and weight
decay :math:`\lambda`,

.. math::

    u_t = -\eta\, s_t\, c_p\, R\big(d(g_t + \tfrac{\lambda}{c_p}\theta_t)\big)
        \quad\text{(L2 decay, SGD: PyTorch's ``weight_decay``)}

    u_t = -\eta\, s_t\, c_p\, R\big(d(g_t) + \tfrac{\lambda}{c_p}\theta_t\big)
        \quad\text{(coupled decay: AdamW, Lion, Muon)}

    u_t = -\eta\, s_t\, c_p\, R\big(d(g_t)\big) - s_t\, \lambda' \theta_t
        \quad\text{(independent decay, AdamW: not scaled by the lr)}

The :math:`\lambda / c_p` is microsoft/mup's rule (``MuAdamW`` and ``MuSGD`` multiply a
group's weight decay by the inverse of its lr multiplier), so that the decay a parameter feels,
:math:`\eta\lambda`, does not change with width; in SP :math:`c_p = 1` and these are PyTorch's
``SGD(weight_decay=λ)`` and ``AdamW(weight_decay=λ)``. Independent decay's :math:`\lambda'` is
:math:`\lambda`, or :math:`\lambda\, n_0 / n` with ``--weight-decay-scaling width`` (:math:`n`
the width, :math:`n_0` ``--base-width``).

Nothing here imports JAX at import time (the command line reads the names); the factories
import Optax when called.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

ALL_RULES = ("none", "per-layer", "weight-norm", "adagrad-param", "adagrad-neuron")
"""The built-in lr rules (:data:`RULES`)."""
ALL_PARAMETRIZATIONS = ("sp", "mup", "lr-exp")


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    r"""An optimizer of the sweep.

    Attributes:
      name: the ``--optimizer`` choice.
      summary: one line for the documentation.
      direction: ``direction(spec) -> optax.GradientTransformation | None``: the lr-free
        update direction :math:`d` from the gradients (``None``: the gradient itself);
        ``spec`` is the program's :class:`jaxlr.engine.RunSpec`, which carries every option
        (e.g. ``spec.momentum``). The engine multiplies it by :math:`-\eta s_t c_p R`.
      slots: ``slots(options) -> int``: state arrays per parameter, for the memory planner.
      decay: how ``--weight-decays`` enters: ``"none"`` (refused), ``"l2"`` (added to the
        gradient before the direction, PyTorch SGD's ``weight_decay``) or ``"coupled"`` (added to
        the direction, PyTorch AdamW's).
      decay_modes: the ``--weight-decay-mode`` values it accepts (``independent``: decay not
        scaled by the lr).
      rules: the lr rules it composes with; the others are refused in one line.
      parametrizations: the parametrizations it composes with.
      mup_kind: which of microsoft/mup's scalings it takes under ``mup``: ``"adam"``
        (entrywise-normalized updates: ``MuAdam``) or ``"sgd"`` (``MuSGD``).
      options: the :class:`jaxlr.config.TrainOptions` fields that apply only to it (a field
        given for a sweep without it is refused).
    """

    name: str
    summary: str
    direction: Callable[[Any], Any]
    slots: Callable[[Any], int]
    decay: Literal["none", "l2", "coupled"] = "none"
    decay_modes: tuple[str, ...] = ("coupled",)
    rules: tuple[str, ...] = ALL_RULES
    parametrizations: tuple[str, ...] = ALL_PARAMETRIZATIONS
    mup_kind: Literal["adam", "sgd"] = "adam"
    options: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ScheduleEntry:
    r"""A learning-rate schedule: the multiplier :math:`s_t` of step :math:`t` (0-based).

    Attributes:
      name: the ``--schedule`` choice.
      summary: one line for the documentation.
      multiplier: ``multiplier(t, total, warmup, options) -> s_t``, with ``t`` a traced int32
        step, ``total`` the run's steps, ``warmup`` its warmup steps (Python ints) and
        ``options`` the program's options (``options.decay_fraction``, ...). Pure ``jnp``.
      horizon: whether :math:`s_t` depends on ``total`` (then the program is compiled for it,
        and a run cannot be extended by ``--resume`` with more epochs).
      options: the fields that apply only to it.
    """

    name: str
    summary: str
    multiplier: Callable[[Any, int, int, Any], Any] | None
    horizon: bool = True
    options: tuple[str, ...] = ()


OPTIMIZERS: dict[str, OptimizerEntry] = {}
"""The sweep's optimizers by name, in the order they were registered."""

SCHEDULES: dict[str, ScheduleEntry] = {}
"""The sweep's learning-rate schedules by name."""


def register(entry: OptimizerEntry | ScheduleEntry) -> None:
    """Adds ``entry`` to :data:`OPTIMIZERS` or :data:`SCHEDULES` (replacing one of that name).

    A sweep can use it from then on: the command line, the config's validation, the engine and
    the planner read the registry when they run."""
    table = OPTIMIZERS if isinstance(entry, OptimizerEntry) else SCHEDULES
    table[entry.name] = entry


def optimizer_names() -> tuple[str, ...]:
    """The ``--optimizer`` choices."""
    return tuple(OPTIMIZERS)


def schedule_names() -> tuple[str, ...]:
    """The ``--schedule`` choices."""
    return tuple(SCHEDULES)


def optimizer(name: str) -> OptimizerEntry:
    """The entry of optimizer ``name`` (``KeyError`` if none)."""
    return OPTIMIZERS[name]


def schedule(name: str) -> ScheduleEntry:
    """The entry of schedule ``name`` (``KeyError`` if none)."""
    return SCHEDULES[name]


def state_slots(name: str, options: Any) -> int:
    """State arrays per parameter of optimizer ``name`` with ``options``, plus the rule's."""
    return OPTIMIZERS[name].slots(options) + RULES[getattr(options, "lr_rule", "none")].slots


def betas_of(options: Any, default: tuple[float, float]) -> tuple[float, float]:
    """``options.betas`` if given, else the optimizer's ``default``."""
    betas = getattr(options, "betas", None)
    return tuple(betas) if betas is not None else default


# ------------------------------------------------------------------------------ optimizers
def _sgd_direction(spec: Any) -> Any:
    r"""SGD with PyTorch's momentum (dampening 0):
    :math:`b_t = \mu b_{t-1} + g_t` (:math:`b_1 = g_1`), direction :math:`b_t`, or
    :math:`g_t + \mu b_t` with Nesterov; the raw gradient (``None``) without momentum."""
    import optax

    if spec.momentum == 0:
        return None
    return optax.trace(decay=spec.momentum, nesterov=spec.nesterov)


def _adam_direction(spec: Any) -> Any:
    r"""Adam's direction :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)` (PyTorch's defaults
    :math:`\beta = (0.9, 0.999)`, :math:`\epsilon = 10^{-8}`)."""
    import optax

    b1, b2 = betas_of(spec, (0.9, 0.999))
    return optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8)


def _lion_direction(spec: Any) -> Any:
    r"""Lion (Chen et al., 2023): :math:`d_t = \mathrm{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)`,
    :math:`m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t`, :math:`\beta = (0.9, 0.99)`."""
    import optax

    b1, b2 = betas_of(spec, (0.9, 0.99))
    return optax.scale_by_lion(b1=b1, b2=b2)


def _muon_direction(spec: Any) -> Any:
    """Muon for the hidden matrices, Adam for the rest (:func:`jaxlr.muon.muon_direction`)."""
    from jaxlr import muon

    b1, b2 = betas_of(spec, (0.9, 0.999))
    return muon.muon_direction(
        momentum=spec.muon_momentum, scaling=spec.muon_scaling, adam_b1=b1, adam_b2=b2
    )


register(
    OptimizerEntry(
        "sgd",
        "SGD, with PyTorch's momentum and Nesterov (--momentum, --nesterov) and L2 weight decay",
        _sgd_direction,
        slots=lambda o: 1 if getattr(o, "momentum", 0.0) else 0,
        decay="l2",
        mup_kind="sgd",
        options=("momentum", "nesterov"),
    )
)
register(
    OptimizerEntry(
        "adam",
        "Adam (PyTorch's defaults); for weight decay use adamw",
        _adam_direction,
        slots=lambda o: 2,
    )
)
register(
    OptimizerEntry(
        "adamw",
        "AdamW: coupled decay (PyTorch's AdamW) or independent decay (not scaled by the lr)",
        _adam_direction,
        slots=lambda o: 2,
        decay="coupled",
        decay_modes=("coupled", "independent"),
    )
)
register(
    OptimizerEntry(
        "muon",
        "Muon (momentum, Newton-Schulz orthogonalization) for the hidden matrices, Adam for the "
        "rest, coupled decay as PyTorch's Muon",
        _muon_direction,
        slots=lambda o: 2,
        decay="coupled",
        rules=("none", "per-layer"),
        parametrizations=("sp",),
        options=("muon_scaling", "muon_momentum"),
    )
)
register(
    OptimizerEntry(
        "lion",
        "Lion (sign of an interpolated momentum), coupled decay",
        _lion_direction,
        slots=lambda o: 1,
        decay="coupled",
        rules=("none", "per-layer", "weight-norm"),
    )
)


# ------------------------------------------------------------------------------- schedules
def _warmup(t: Any, warmup: int) -> Any:
    """:math:`\\min(1, (t + 1) / W)`: linear warmup that reaches the full rate at step W - 1."""
    import jax.numpy as jnp

    if warmup <= 0:
        return jnp.asarray(1.0)
    return jnp.minimum(1.0, (t + 1).astype(jnp.result_type(float)) / warmup)


def _progress(t: Any, start: int, total: int) -> Any:
    """:math:`p = \\mathrm{clip}((t - T_0) / (T - T_0), 0, 1)`."""
    import jax.numpy as jnp

    span = max(total - start, 1)
    return jnp.clip((t - start).astype(jnp.result_type(float)) / span, 0.0, 1.0)


def _warmup_cosine(t: Any, total: int, warmup: int, o: Any) -> Any:
    r""":math:`s_t = \min(1, (t+1)/W)` for :math:`t < W`, then
    :math:`f + (1 - f)\,\tfrac12(1 + \cos \pi p)` with :math:`p = (t - W)/(T - W)` and
    :math:`f` ``--final-lr-fraction``."""
    import jax.numpy as jnp

    f = o.final_lr_fraction
    cos = f + (1 - f) * 0.5 * (1 + jnp.cos(math.pi * _progress(t, warmup, total)))
    return jnp.where(t < warmup, _warmup(t, warmup), cos)


def _warmup_linear(t: Any, total: int, warmup: int, o: Any) -> Any:
    r"""Warmup as in ``warmup-cosine``, then :math:`1 - (1 - f)\,p`."""
    import jax.numpy as jnp

    f = o.final_lr_fraction
    lin = 1 - (1 - f) * _progress(t, warmup, total)
    return jnp.where(t < warmup, _warmup(t, warmup), lin)


def decay_start(total: int, decay_fraction: float) -> int:
    """The first step of ``wsd``'s decay: :math:`T_d = T - \\mathrm{round}(\\phi T)`."""
    return total - round(decay_fraction * total)


def _wsd(t: Any, total: int, warmup: int, o: Any) -> Any:
    r"""Warmup-stable-decay: warmup as in ``warmup-cosine``, then 1 until
    :math:`T_d = T - \mathrm{round}(\phi T)` (:math:`\phi` ``--decay-fraction``), then
    :math:`1 - (1 - f)\,(t - T_d)/(T - T_d)`."""
    import jax.numpy as jnp

    f, start = o.final_lr_fraction, decay_start(total, o.decay_fraction)
    lin = 1 - (1 - f) * _progress(t, start, total)
    return jnp.where(t < warmup, _warmup(t, warmup), jnp.where(t < start, 1.0, lin))


register(ScheduleEntry("constant", "the swept lr at every step", None, horizon=False))
register(
    ScheduleEntry(
        "warmup-cosine",
        "linear warmup, then cosine decay to --final-lr-fraction of the lr",
        _warmup_cosine,
        options=("warmup", "final_lr_fraction"),
    )
)
register(
    ScheduleEntry(
        "warmup-linear",
        "linear warmup, then linear decay to --final-lr-fraction of the lr",
        _warmup_linear,
        options=("warmup", "final_lr_fraction"),
    )
)
register(
    ScheduleEntry(
        "wsd",
        "warmup-stable-decay: warmup, the full lr, then a linear decay over the last "
        "--decay-fraction of training",
        _wsd,
        options=("warmup", "decay_fraction", "final_lr_fraction"),
    )
)


def warmup_steps(warmup: float, total: int) -> int:
    """``--warmup`` in steps: a value below 1 is a fraction of the ``total`` steps."""
    return round(warmup * total) if warmup < 1 else int(warmup)


# ---------------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class RuleEntry:
    r"""A learning-rate rule: how the lane's rate :math:`R` is laid over the parameters.

    Attributes:
      name: the ``--lr-rule`` choice.
      build: ``build(spec, lr, inner) -> optax.GradientTransformation``: the descent update
        :math:`-\eta R(d)` from the direction ``inner`` (``None``: the raw gradient) and the
        (traced) lr.
      rate_leaf: where its rates vary within a layer, the leaf whose rates ``rates.csv``
        summarizes (``"bias"``: one rate per neuron; ``"kernel"``: one per parameter);
        ``None`` for one rate per layer.
      slots: state arrays per parameter it adds.
    """

    name: str
    build: Callable[[Any, Any, Any], Any]
    rate_leaf: str | None = None
    slots: int = 0


RULES: dict[str, RuleEntry] = {}
"""The sweep's lr rules by name."""


def _no_rule(spec: Any, lr: Any, inner: Any) -> Any:
    import optax

    return optax.chain(inner or optax.identity(), optax.scale(-1.0 * lr))


def _per_layer(spec: Any, lr: Any, inner: Any) -> Any:
    from jaxlr import transforms
    from jaxlr.families import family_of

    assert spec.layer_lr_mults is not None
    layers = family_of(spec).layers(spec)
    mults = dict(zip(layers, spec.layer_lr_mults, strict=True))
    lrs = {path: lr * mults[name] for name, paths in layers.items() for path in paths}
    return transforms.per_layer_lr(lrs, inner=inner)


def _weight_norm(spec: Any, lr: Any, inner: Any) -> Any:
    from jaxlr import transforms

    return transforms.weight_norm_lr(lr, scaling_factor=spec.weight_norm_factor, inner=inner)


def _adagrad(granularity: str) -> Callable[[Any, Any, Any], Any]:
    def build(spec: Any, lr: Any, inner: Any) -> Any:
        from jaxlr import transforms

        return transforms.adagrad_lr(lr, eps=spec.adagrad_eps, granularity=granularity, inner=inner)

    return build


def register_rule(entry: RuleEntry) -> None:
    """Adds ``entry`` to :data:`RULES`."""
    RULES[entry.name] = entry


register_rule(RuleEntry("none", _no_rule))
register_rule(RuleEntry("per-layer", _per_layer))
register_rule(RuleEntry("weight-norm", _weight_norm, rate_leaf="bias"))
register_rule(RuleEntry("adagrad-param", _adagrad("parameter"), rate_leaf="kernel", slots=1))
register_rule(RuleEntry("adagrad-neuron", _adagrad("neuron"), rate_leaf="bias", slots=1))


def rule_names() -> tuple[str, ...]:
    """The ``--lr-rule`` choices."""
    return tuple(RULES)
