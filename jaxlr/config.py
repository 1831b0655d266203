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
from collections.abc import Collection, Mapping
from typing import Any, Literal

from jaxlr import registry
from jaxlr.options import (  # noqa: F401  (re-exported: jaxlr.config is their public home)
    DATASETS,
    GROUPS,
    INITS,
    PARAMETRIZATIONS,
    PRECISIONS,
    SELECTS,
    ConfigError,
    DatasetName,
    DataSource,
    Init,
    LrRule,
    LrStar,
    ModelName,
    Optimizer,
    Parametrization,
    Precision,
    Schedule,
    Select,
    SgdUpdate,
    TrainOptions,
    _adagrad,
    _decays,
    _foldable,
    _has_optimizer,
    _independent,
    _is_gpt,
    _is_synthetic,
    _schedule_takes,
    _uses_base_width,
    optimizers_of,
    option,
    parametrizations_of,
    sgd_folds,
    weight_decays_of,
)


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
