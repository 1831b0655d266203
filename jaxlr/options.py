"""The options that change the compiled training program: :class:`TrainOptions`.

Every option is one dataclass field made by :func:`option` (its type, default, help text,
command-line group and when it applies). :class:`TrainOptions` is the base class of both the
engine's static program description (:class:`jaxlr.engine.RunSpec`) and the sweep's
:class:`jaxlr.config.SweepConfig`, so an option added here reaches the command line, the JSON
record and the compiled program at once. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Collection
from typing import Any, Literal

from jaxlr import families, registry

Optimizer = str  # a name in jaxlr.registry.OPTIMIZERS (the choices are read from the registry)
LrRule = str  # a name in jaxlr.registry.RULES
Schedule = str  # a name in jaxlr.registry.SCHEDULES
Parametrization = Literal["sp", "mup", "lr-exp"]
Init = Literal["torch", "flax", "mup"]
Precision = Literal["highest", "high", "default"]
DatasetName = Literal["digits", "fashion_mnist", "mnist", "synthetic"]
ModelName = str  # a name in jaxlr.families.FAMILIES (mlp, gpt, or one registered)
DataSource = Literal["idx", "tfds"]
Select = Literal["test_loss", "train_loss"]
LrStar = Literal["local-quadratic", "parabola", "argmin"]
SgdUpdate = Literal["generic", "folded"]

PARAMETRIZATIONS: tuple[str, ...] = typing.get_args(Parametrization)
INITS: tuple[str, ...] = typing.get_args(Init)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
DATASETS: tuple[str, ...] = typing.get_args(DatasetName)
SELECTS: tuple[str, ...] = typing.get_args(Select)

GROUPS = ("data", "grid", "training", "execution")


class ConfigError(ValueError):
    """An invalid sweep configuration; the message is one line saying how to fix it."""


def option(
    default: Any,
    help: str,
    *,
    group: str,
    flag: str | None = None,
    metavar: str | None = None,
    applies: Callable[[Any], bool] | None = None,
    applies_to: str | None = None,
    shown_default: str | None = None,
    cli: bool = True,
    choices: Callable[[], Collection[str]] | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A config field with what the CLI, the docs and the checks need to know about it.

    Args:
      default: the default value (immutable: tuples, not lists).
      help: one sentence for ``--help``; the default is appended by the CLI.
      group: the ``--help`` section, one of :data:`GROUPS`.
      flag: the command-line flag (default: ``--`` + the field name with dashes).
      metavar: the placeholder shown in ``--help``.
      applies: ``applies(config) -> bool``; a value other than the default where it does not
        apply is an error (a flag that would be silently ignored).
      applies_to: what ``applies`` means, for the error message (e.g. ``"--lr-rule weight-norm"``).
      shown_default: what the default means, for ``--help`` (default: the value itself).
      cli: whether the option has a flag.
      choices: ``choices() -> names``: the allowed values of a ``str`` field (or of each item
        of a tuple of ``str``), read when a value is checked, e.g. from :mod:`jaxlr.registry`.
      aliases: more flags for the same option (``--weight-decays`` for ``--weight-decay``).
    """
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}")
    meta = dict(
        help=help,
        group=group,
        flag=flag,
        metavar=metavar,
        applies=applies,
        applies_to=applies_to,
        shown_default=shown_default,
        cli=cli,
        choices=choices,
        aliases=aliases,
    )
    return dataclasses.field(default=default, metadata=meta)


def _is_gpt(c: Any) -> bool:
    return getattr(c, "family", "mlp") == "gpt"


def _is_synthetic(c: Any) -> bool:
    return c.dataset == "synthetic"


def _adagrad(c: Any) -> bool:
    return c.lr_rule.startswith("adagrad")


def parametrizations_of(c: Any) -> tuple[str, ...]:
    """The parametrizations of a :class:`SweepConfig` (its axis), of one program (``RunSpec``),
    or of bare :class:`TrainOptions` (SP)."""
    if hasattr(c, "parametrizations"):
        return c.parametrizations
    return (getattr(c, "parametrization", "sp"),)


def optimizers_of(c: Any) -> tuple[str, ...]:
    """The optimizers of a :class:`SweepConfig` (its axis) or of one program (``RunSpec``)."""
    if hasattr(c, "optimizers"):
        return c.optimizers
    return (getattr(c, "optimizer", "sgd"),)


def sgd_folds(optimizer: str, lr_rule: str, parametrization: str, c: Any = None) -> bool:
    """Whether a program can take ``--sgd-update folded``: plain SGD (no rate rule, no momentum,
    no weight decay) in SP."""
    plain = c is None or (
        getattr(c, "momentum", 0.0) == 0
        and not any(weight_decays_of(c))
        and not getattr(c, "decays", False)
    )
    return optimizer == "sgd" and lr_rule == "none" and parametrization == "sp" and plain


def weight_decays_of(c: Any) -> tuple[float, ...]:
    """The weight decays of a :class:`SweepConfig` (its axis); ``()`` for a program."""
    return tuple(getattr(c, "weight_decays", ()))


def _foldable(c: Any) -> bool:
    """Whether ``--sgd-update folded`` applies to some program of ``c``."""
    return any(
        sgd_folds(o, c.lr_rule, p, c) for o in optimizers_of(c) for p in parametrizations_of(c)
    )


def _has_optimizer(*names: str) -> Callable[[Any], bool]:
    return lambda c: bool(set(names) & set(optimizers_of(c)))


def _decays(c: Any) -> bool:
    """Whether some optimizer of ``c`` takes weight decay."""
    entries = (registry.OPTIMIZERS.get(o) for o in optimizers_of(c))
    return any(e is not None and e.decay != "none" for e in entries)


def _schedule_takes(name: str) -> Callable[[Any], bool]:
    def applies(c: Any) -> bool:
        entry = registry.SCHEDULES.get(c.schedule)
        return entry is not None and name in entry.options

    return applies


def _independent(c: Any) -> bool:
    return c.weight_decay_mode == "independent" and "adamw" in optimizers_of(c)


def _uses_base_width(c: Any) -> bool:
    return bool({"mup", "lr-exp"} & set(parametrizations_of(c))) or (
        getattr(c, "weight_decay_scaling", "none") == "width"
    )


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The options that change the compiled training program (besides the shapes).

    Both the engine's static program description (:class:`jaxlr.engine.RunSpec`) and
    :class:`SweepConfig` extend this class, so an option added here reaches the command line, the
    JSON record and the compiled program at once.
    """

    family: ModelName = option(
        "mlp",
        "the model family (jaxlr.families): mlp (in-w-...-w-out ReLU MLP on --dataset) or gpt "
        "(a decoder-only pre-LayerNorm transformer of width d_model and --depth blocks, on "
        "byte-level text)",
        group="grid",
        flag="--model",
        choices=families.family_names,
    )
    batch_size: int = option(
        64,
        "examples per step (gpt: sequences); the last partial batch of an epoch is dropped",
        group="training",
    )
    context: int = option(
        64,
        "gpt: tokens (bytes) per training sequence",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    head_dim: int = option(
        16,
        "gpt: the size of one attention head; heads = width / head-dim",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    tied: bool = option(
        True,
        "gpt: the readout shares the token embedding",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    depth_exponent: float = option(
        0.0,
        "gpt: residual branches scaled by depth^(-a): 0.5 depth-muP, 1 CompleteP",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    base_depth: int = option(
        1,
        "gpt: the depth at which the residual multiplier (depth/base-depth)^(-a) is 1",
        group="training",
        applies=lambda c: _is_gpt(c) and c.depth_exponent != 0,
        applies_to="--model gpt with --depth-exponent",
    )
    zero_readout: bool = option(
        False,
        "gpt: zero-initialize the untied readout (muP's option; needs --no-tied)",
        group="training",
        applies=lambda c: _is_gpt(c) and not c.tied,
        applies_to="--model gpt --no-tied",
    )
    zero_query: bool = option(
        False,
        "gpt: zero-initialize the query matrices (muP's option)",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    clip_norm: float | None = option(
        None,
        "clip each lane's gradient to this global L2 norm before the optimizer (any optimizer)",
        group="training",
        shown_default="no clipping",
    )
    init: Init = option("torch", "initialization scheme (see jaxlr.models)", group="training")
    lr_rule: LrRule = option(
        "none",
        "per-layer / per-neuron / per-parameter rate rule; the swept lr is its base lr",
        group="training",
        choices=registry.rule_names,
    )
    momentum: float = option(
        0.0,
        "sgd: PyTorch's momentum (dampening 0), b = momentum * b + g",
        group="training",
        applies=_has_optimizer("sgd"),
        applies_to="--optimizer sgd",
    )
    nesterov: bool = option(
        False,
        "sgd: Nesterov momentum, direction g + momentum * b (needs --momentum)",
        group="training",
        applies=_has_optimizer("sgd"),
        applies_to="--optimizer sgd",
    )
    betas: tuple[float, float] | None = option(
        None,
        "the moment decay rates (beta1, beta2) of adam, adamw, lion and muon's Adam part",
        group="training",
        metavar="B1,B2",
        shown_default="adam/adamw/muon 0.9,0.999; lion 0.9,0.99",
        applies=_has_optimizer("adam", "adamw", "lion", "muon"),
        applies_to="--optimizer adam, adamw, lion or muon",
    )
    weight_decay_mode: Literal["coupled", "independent"] = option(
        "coupled",
        "adamw: coupled (PyTorch's AdamW: the decay is multiplied by the lr) or independent "
        "(theta -= schedule * wd * theta, not scaled by the lr)",
        group="training",
        applies=_has_optimizer("adamw"),
        applies_to="--optimizer adamw",
    )
    weight_decay_scaling: Literal["none", "width"] = option(
        "none",
        "independent decay: none, or width (wd * base_width / width; needs --base-width)",
        group="training",
        applies=_independent,
        applies_to="--optimizer adamw with --weight-decay-mode independent",
    )
    muon_scaling: Literal["spectral", "rms"] = option(
        "rms",
        "muon's shape factor: spectral = sqrt(max(1, out/in)), rms = 0.2 sqrt(max(out, in)) "
        "(the RMS of an AdamW update, so that one lr serves the Muon and the Adam parameters)",
        group="training",
        applies=_has_optimizer("muon"),
        applies_to="--optimizer muon",
    )
    muon_momentum: float = option(
        0.95,
        "muon: the momentum of its Nesterov buffer, b = m * b + (1 - m) * g",
        group="training",
        applies=_has_optimizer("muon"),
        applies_to="--optimizer muon",
    )
    schedule: Schedule = option(
        "constant",
        "the learning-rate schedule, a multiplier of every lane's lr at each step",
        group="training",
        choices=registry.schedule_names,
    )
    warmup: float = option(
        0.0,
        "warmup steps, or a fraction of the training steps if below 1",
        group="training",
        applies=_schedule_takes("warmup"),
        applies_to="--schedule warmup-cosine, warmup-linear or wsd",
    )
    decay_fraction: float = option(
        0.2,
        "wsd: the fraction of the training steps over which the lr decays",
        group="training",
        applies=_schedule_takes("decay_fraction"),
        applies_to="--schedule wsd",
    )
    final_lr_fraction: float = option(
        0.0,
        "the lr at the end of the decay, as a fraction of the swept lr",
        group="training",
        applies=_schedule_takes("final_lr_fraction"),
        applies_to="--schedule warmup-cosine, warmup-linear or wsd",
    )
    layer_lr_mults: tuple[float, ...] | None = option(
        None,
        "per-layer: one multiplier per layer, lr_l = lr * mult_l (mlp: hidden layers + readout; "
        "gpt: embeddings, each block's attention and MLP, readout)",
        group="training",
        metavar="M1,M2,...",
        applies=lambda c: c.lr_rule == "per-layer",
        applies_to="--lr-rule per-layer",
    )
    weight_norm_factor: float = option(
        0.01,
        "weight-norm: lr_j = lr * (1 + factor * ||w_j||)",
        group="training",
        applies=lambda c: c.lr_rule == "weight-norm",
        applies_to="--lr-rule weight-norm",
    )
    adagrad_eps: float = option(
        1e-8,
        "adagrad-*: lr / (sqrt(sum g^2) + eps)",
        group="training",
        applies=_adagrad,
        applies_to="--lr-rule adagrad-param or adagrad-neuron",
    )
    base_width: int | None = option(
        None,
        "muP / lr-exp base width: at this width both equal SP",
        group="training",
        shown_default="required with mup and lr-exp",
        applies=_uses_base_width,
        applies_to="--parametrization mup or lr-exp, or --weight-decay-scaling width",
    )
    lr_exponents: tuple[float, ...] | None = option(
        None,
        "lr-exp: layer l trains at lr * (width / base_width)^(-e_l), one exponent per layer "
        "(hidden layers, then the readout), e.g. 0,1,1",
        group="training",
        metavar="E1,E2,...",
        shown_default="required with lr-exp",
        applies=lambda c: "lr-exp" in parametrizations_of(c),
        applies_to="--parametrization lr-exp",
    )
    divergence_loss: float = option(
        100.0,
        "a run whose batch loss is non-finite or >= this is frozen as diverged",
        group="training",
    )
    precision: Precision = option(
        "highest",
        "jax.default_matmul_precision of the training programs (highest = full float32)",
        group="training",
    )
    sgd_update: SgdUpdate = option(
        "generic",
        "plain SGD's step: generic (gradient, then W - lr*g) or folded (the backward pass seeded "
        "with -lr, so that W + x^T(-lr*delta) is one product with an addend, which a GPU GEMM "
        "computes in place; equal up to float32 rounding)",
        group="training",
        applies=_foldable,
        applies_to="--optimizer sgd with --lr-rule none and --parametrization sp",
    )

    dynamics: bool = option(
        False,
        "record, per run, layer and epoch, the epoch's relative update ||dW||_F / ||W||_F and "
        "the RMS of the layer's output on a fixed probe batch (dynamics.csv): the coordinate "
        "check measured during real training, at every lr",
        group="training",
    )

    deterministic: bool = option(
        True,
        "GPU: deterministic reductions and scatters (XLA's xla_gpu_deterministic_ops), so the "
        "same command gives the same bytes; off may be faster",
        group="execution",
    )

    def __post_init__(self) -> None:
        from jaxlr import validation

        validation.coerce_fields(self)
        validation.validate_train(self)
