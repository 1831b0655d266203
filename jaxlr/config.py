"""Typed, frozen, validated configuration of a sweep: the single source of every option.

A :class:`SweepConfig` is the single description of a sweep: the grid (widths x learning rates x
seeds x optimizers), the model, the data, the training schedule and how it is executed. Every
option is declared **once**, as a dataclass field made by :func:`option`: its type, default, help
text, command-line group and the condition under which it applies. Everything else is derived
from those declarations:

* the command line (:mod:`jaxlr.cli` builds one flag per field, with its help and default);
* the static program description of the engine (:class:`TrainOptions`, the fields that change
  the compiled training program, is the base class of :class:`SweepConfig`);
* the JSON record (:meth:`SweepConfig.to_dict` / :meth:`SweepConfig.from_dict`), the config
  hash and the field-by-field difference used when resuming (:func:`config_diff`).

Adding an option is one field here plus its use. Validation happens on construction; every
problem raises :class:`ConfigError` with a one-line message saying what was wrong and how to fix
it. Lists are accepted wherever tuples are declared (``SweepConfig(widths=[64, 256])``) and are
stored as tuples, so a config is hashable. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import typing
from collections.abc import Callable, Collection, Mapping
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
        "per-layer: one multiplier per layer (hidden + readout), lr_l = lr * mult_l",
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


@dataclasses.dataclass(frozen=True)
class SweepConfig(TrainOptions):
    """Everything that defines a sweep. Swept axes are tuples; the rest are scalars."""

    # --- data
    dataset: DatasetName = option("digits", "the dataset", group="data")
    data_dir: str | None = option(
        None,
        "directory holding the dataset files; when given, the only place searched",
        group="data",
        shown_default="search $JAXLR_DATA_DIR, the cache, /usr/share/datasets; gpt: the Python "
        "standard library's text",
        applies=lambda c: c.dataset in ("fashion_mnist", "mnist") or _is_gpt(c),
        applies_to="--dataset fashion_mnist or mnist, or --model gpt (a text file or directory)",
    )
    data_source: DataSource = option(
        "idx",
        "reader for fashion_mnist/mnist: IDX files or a prepared TFDS dataset",
        group="data",
        applies=lambda c: c.dataset in ("fashion_mnist", "mnist"),
        applies_to="--dataset fashion_mnist or mnist",
    )
    n_train: int | None = option(
        None,
        "training examples: synthetic size, or the first N of a real dataset",
        group="data",
        shown_default="all (synthetic: 60000)",
    )
    n_test: int | None = option(
        None,
        "test examples: synthetic size, or the first N of a real dataset",
        group="data",
        shown_default="all (synthetic: 10000)",
    )
    features: int | None = option(
        None,
        "synthetic input dimension",
        group="data",
        shown_default="784",
        applies=_is_synthetic,
        applies_to="--dataset synthetic",
    )
    num_classes: int | None = option(
        None,
        "synthetic number of classes",
        group="data",
        shown_default="10",
        applies=_is_synthetic,
        applies_to="--dataset synthetic",
    )
    data_seed: int = option(
        0,
        "synthetic data generator seed",
        group="data",
        applies=_is_synthetic,
        applies_to="--dataset synthetic",
    )
    # --- grid
    widths: tuple[int, ...] = option(
        (16, 64, 256),
        "hidden widths; every hidden layer has w units",
        group="grid",
        metavar="W1,W2,...",
        applies=lambda c: c.hidden is None,
        applies_to="uniform widths (not with --hidden)",
    )
    depth: int = option(
        2,
        "hidden layers of every width",
        group="grid",
        applies=lambda c: c.hidden is None,
        applies_to="uniform widths (not with --hidden)",
    )
    depths: tuple[int, ...] | None = option(
        None,
        "several depths in one sweep: every width at each depth (hidden layers; gpt: blocks), "
        "with the best lrs and the width exponent per depth",
        group="grid",
        metavar="D1,D2,...",
        applies=lambda c: c.hidden is None,
        applies_to="uniform widths (not with --hidden)",
        shown_default="--depth only",
    )
    hidden: tuple[tuple[int, ...], ...] | None = option(
        None,
        "explicit architectures instead of --widths/--depth, e.g. 64-16,128-32",
        group="grid",
        metavar="A-B,C-D,...",
    )
    lrs: tuple[float, ...] = option(
        tuple(2.0**k for k in range(-9, 2)),
        "the swept (base) learning rates",
        group="grid",
        metavar="LR1,LR2,...",
    )
    seeds: tuple[int, ...] = option(
        (0, 1, 2),
        "model-init and batch-order seeds: a count N (seeds --first-seed..+N-1) or a list",
        group="grid",
        metavar="N|S1,S2,...",
    )
    optimizers: tuple[Optimizer, ...] = option(
        ("sgd",),
        "one or more optimizers",
        group="grid",
        flag="--optimizer",
        metavar="OPT[,OPT]",
        choices=registry.optimizer_names,
    )
    weight_decays: tuple[float, ...] = option(
        (0.0,),
        "weight decay values, a sweep axis like the lrs (one program serves them all): "
        "sgd's L2 decay, adamw's, lion's and muon's decay",
        group="grid",
        flag="--weight-decay",
        aliases=("--weight-decays",),
        metavar="WD[,WD]",
        applies=_decays,
        applies_to="--optimizer sgd, adamw, lion or muon",
    )
    parametrizations: tuple[Parametrization, ...] = option(
        ("sp",),
        "one or more of sp (standard), mup (muP; needs --base-width), lr-exp (SP with per-layer "
        "rates lr * (width/base)^(-e_l); needs --base-width and --lr-exponents)",
        group="grid",
        flag="--parametrization",
        metavar="P[,P]",
    )
    refine: int = option(
        0,
        "rounds that each add lrs around every bucket's best lr at half the previous log "
        "spacing, reusing the compiled programs",
        group="grid",
    )
    select: Select = option(
        "test_loss",
        "the final loss that picks the best lr (muP-style studies use train_loss)",
        group="grid",
    )
    lr_star: LrStar = option(
        "local-quadratic",
        "how each seed's lr* is read off its final-loss curve for the width exponent and "
        "transfer.csv: local-quadratic (a quadratic in log loss over >= 5 grid points around the "
        "minimum, diverged and chance-level runs censored), parabola (3 points) or argmin",
        group="grid",
        applies=lambda c: (
            len(set(c.widths) if c.hidden is None else {h[0] for h in c.hidden if len(set(h)) == 1})
            >= 3
        ),
        applies_to="sweeps of 3 widths or more (one width per architecture)",
    )
    # --- training
    steps: int = option(
        200,
        "gpt: optimizer steps of every run",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    eval_every: int = option(
        50,
        "gpt: steps between validation evaluations (each is an 'epoch' row of results.csv)",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    eval_sequences: int = option(
        256,
        "gpt: validation windows of --context bytes evaluated each time, evenly spaced over the "
        "validation part (0: all of them)",
        group="training",
        applies=_is_gpt,
        applies_to="--model gpt",
    )
    epochs: int = option(
        20,
        "passes over the training set; a list (10,20,40) trains the longest and reports the "
        "best lrs, the width exponent and the transfer regret at each (constant schedule only)",
        group="training",
        metavar="N[,N]",
    )
    horizons: tuple[int, ...] = option(
        (),
        "the epochs at which the answer is reported (from --epochs 10,20,40); empty: the last",
        group="training",
        cli=False,
    )
    # --- execution
    max_lanes: int | None = option(
        None,
        "runs per compiled chunk; it sets the lane grouping, which float32 rounding depends on, "
        "so shards of one sweep must share it",
        group="execution",
        shown_default="from a device-memory estimate",
    )
    devices: int | None = option(
        None, "local devices to shard runs over", group="execution", shown_default="all"
    )
    checkpoint_every: int | None = option(
        None,
        "epochs between checkpoints (0: none)",
        group="execution",
        shown_default="every 2 minutes of training",
    )
    shard: tuple[int, int] = option(
        (0, 1),
        "run grid shard i of n (0-based), e.g. 0/4; merge the outputs with `merge`",
        group="execution",
        shown_default="0/1, the whole grid",
        metavar="I/N",
    )
    out: str | None = option(
        None, "output directory", group="execution", shown_default="runs/<timestamp>"
    )
    autotune: Literal["auto", "on", "off"] = option(
        "auto",
        "GPU kernel autotuning: auto tunes programs predicted to train for 20 s or more",
        group="execution",
    )
    fuse: Literal["auto", "on", "off"] = option(
        "auto",
        "train the chunks of a round (e.g. every width) in one program when they fit in memory "
        "together, instead of one program each (results are unchanged); auto: on a single "
        "GPU or TPU",
        group="execution",
    )
    parallel: int | None = option(
        None,
        "programs trained at the same time on one device (results are unchanged); XLA runs a "
        "CPU program's lane-batched matmuls on one core, so several programs use several cores",
        group="execution",
        shown_default="CPU: one per core; GPU/TPU: 1",
    )
    compilation_cache: bool = option(
        True,
        "keep compiled programs in JAX's persistent cache (off: also JAXLR_COMPILATION_CACHE=0)",
        group="execution",
        shown_default="on, in ${XDG_CACHE_HOME:-~/.cache}/jaxlr/xla",
    )
    coordinator_address: str | None = option(
        None,
        "jax.distributed: HOST:PORT of process 0; one sweep runs over every process's devices "
        "and process 0 writes the outputs (needs --num-processes and --process-id)",
        group="execution",
        metavar="HOST:PORT",
    )
    num_processes: int | None = option(
        None, "jax.distributed: number of processes", group="execution"
    )
    process_id: int | None = option(None, "jax.distributed: this process's id", group="execution")
    distributed: bool = option(
        False,
        "call jax.distributed.initialize() with its cluster auto-detection (e.g. Slurm)",
        group="execution",
    )
    preset: str | None = option(
        None, "the preset this config started from", group="grid", cli=False
    )

    def __post_init__(self) -> None:  # runs instead of TrainOptions.__post_init__
        from jaxlr import validation

        validation.coerce_fields(self)
        validation.derive_gpt_epochs(self)
        validation.validate(self)

    # ------------------------------------------------------------------ derived
    @property
    def architectures(self) -> tuple[tuple[int, ...], ...]:
        """The hidden-width tuples swept, one bucket (per optimizer) each."""
        if self.hidden is not None:
            return self.hidden
        return tuple((w,) * d for d in self.depths_swept for w in self.widths)

    @property
    def depths_swept(self) -> tuple[int, ...]:
        """The depths of the grid: ``depths``, or ``(depth,)``."""
        return self.depths or (self.depth,)

    def train_options(self) -> dict[str, Any]:
        """The :class:`TrainOptions` fields of this config (they shape the compiled program)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainOptions)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepConfig:
        """The config of a :meth:`to_dict` record (e.g. ``config.json``'s ``"config"``).

        Unknown keys are an error (a record from another jaxlr version); missing keys take their
        defaults.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        if "parametrization" in d and "parametrizations" not in d:  # a record before the axis
            d = {("parametrizations" if k == "parametrization" else k): v for k, v in d.items()}
            d["parametrizations"] = [d["parametrizations"]]
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config field(s) {', '.join(unknown)}: the record was written by "
                "another jaxlr version; rerun the sweep with this version's flags"
            )
        return cls(**d)

    def grid_hash(self) -> str:
        """Hash of everything that changes results (not the execution options)."""
        d = {k: v for k, v in self.to_dict().items() if k in result_fields()}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> SweepConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


# fields that do not change any number of a sweep's results
EXECUTION_FIELDS = frozenset(
    {
        "out",
        "devices",
        "checkpoint_every",
        "shard",
        "preset",
        "compilation_cache",
        "autotune",
        "fuse",
        "parallel",
        "coordinator_address",
        "num_processes",
        "process_id",
        "distributed",
    }
)


@functools.cache
def result_fields() -> tuple[str, ...]:
    """The fields whose values change results (and the config hash)."""
    return tuple(f.name for f in dataclasses.fields(SweepConfig) if f.name not in EXECUTION_FIELDS)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_types() -> dict[str, Any]:
    """The resolved type of every :class:`SweepConfig` field."""
    return _hints(SweepConfig)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of a field."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _flag(name: str) -> str:
    return flag_of(next(f for f in dataclasses.fields(SweepConfig) if f.name == name))


def config_diff(a: SweepConfig, b: SweepConfig) -> list[str]:
    """The result-changing fields where ``a`` and ``b`` differ, as ``--flag A -> B`` strings."""
    da, db = a.to_dict(), b.to_dict()
    return [
        f"{_flag(k)} {_show(da[k])} vs {_show(db[k])}" for k in result_fields() if da[k] != db[k]
    ]


def _show(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(_show(x) for x in v) if v else "(none)"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def check_applies(c: Any, given: Collection[str] = ()) -> None:
    """Refuses an option that does not apply (it would be silently ignored): one whose value is
    not the default, or that is named in ``given`` (set explicitly, e.g. on the command line)."""
    for f in dataclasses.fields(c):
        applies = f.metadata.get("applies")
        if applies is None or applies(c):
            continue
        if f.name in given or getattr(c, f.name) != f.default:
            raise ConfigError(f"{flag_of(f)} only applies to {f.metadata['applies_to']}; remove it")
