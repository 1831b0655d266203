"""Typed, frozen, validated configuration of a sweep.

A :class:`SweepConfig` is the single description of a sweep: the grid (widths x learning rates x
seeds x optimizers), the model, the data and the training schedule. It is validated on
construction; every problem raises :class:`ConfigError` with a one-line message that says what
was wrong and how to fix it. Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Literal

Optimizer = Literal["sgd", "adam"]
LrRule = Literal["none", "per-layer", "weight-norm", "adagrad-param", "adagrad-neuron"]
Parametrization = Literal["sp", "mup"]
Precision = Literal["highest", "high", "default"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
LR_RULES: tuple[str, ...] = ("none", "per-layer", "weight-norm", "adagrad-param", "adagrad-neuron")
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")
INITS: tuple[str, ...] = ("torch", "flax", "mup")
PRECISIONS: tuple[str, ...] = ("highest", "high", "default")
DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "synthetic")


class ConfigError(ValueError):
    """An invalid sweep configuration; the message is one line saying how to fix it."""


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep. Swept axes are tuples; the rest are scalars."""

    # --- data
    dataset: str = "digits"  # one of DATASETS
    data_dir: str | None = None  # where IDX/TFDS files live (else $JAXLR_DATA_DIR, then cache)
    data_source: Literal["idx", "tfds"] = "idx"  # reader for fashion_mnist / mnist
    n_train: int | None = None  # synthetic size, or a subsample of a real dataset
    n_test: int | None = None  # synthetic size, or a subsample of a real dataset
    features: int | None = None  # synthetic only: input dimension
    num_classes: int | None = None  # synthetic only: number of classes
    data_seed: int = 0  # synthetic data generator seed
    # --- grid
    widths: tuple[int, ...] = (16, 64, 256)  # hidden width w: every hidden layer has w units
    depth: int = 2  # number of hidden layers
    hidden: tuple[tuple[int, ...], ...] | None = None  # explicit architectures (overrides widths)
    lrs: tuple[float, ...] = tuple(2.0**k for k in range(-9, 2))  # the swept (base) rates
    seeds: tuple[int, ...] = (0, 1, 2)  # model-init and batch-order seeds
    optimizers: tuple[str, ...] = ("sgd",)  # one bucket per optimizer
    # --- training
    epochs: int = 20
    batch_size: int = 64  # the last partial batch of an epoch is dropped (reshuffled each epoch)
    init: str = "torch"  # torch | flax | mup (see jaxlr.models)
    lr_rule: str = "none"  # see LR_RULES and jaxlr.transforms
    layer_lr_mults: tuple[float, ...] | None = None  # per-layer: lr_l = lr * mult_l
    weight_norm_factor: float = 0.01  # weight-norm: lr_j = lr (1 + factor ||w_j||)
    adagrad_eps: float = 1e-8  # adagrad-*: lr / (sqrt(G) + eps)
    parametrization: str = "sp"  # sp | mup
    base_width: int | None = None  # muP base width (required for mup)
    divergence_loss: float = 100.0  # a lane whose batch loss is non-finite or >= this is frozen
    precision: str = "highest"  # jax.default_matmul_precision for the whole run
    # --- execution
    max_lanes: int | None = None  # override the memory-based lanes-per-chunk estimate
    devices: int | None = None  # shard lanes across this many local devices (default: all)
    checkpoint_every: int | None = None  # epochs between checkpoints; None: every 2 min; 0: off
    shard: tuple[int, int] = (0, 1)  # (i, n): run the i-th of n grid shards
    out: str | None = None  # output directory (default runs/<timestamp>)
    preset: str | None = None  # name of the preset this config came from

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------ derived
    @property
    def architectures(self) -> tuple[tuple[int, ...], ...]:
        """The hidden-width tuples swept, one bucket (per optimizer) each."""
        if self.hidden is not None:
            return self.hidden
        return tuple((w,) * self.depth for w in self.widths)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def grid_hash(self) -> str:
        """Hash of everything that changes results (not out/devices/max_lanes/shard)."""
        d = self.to_dict()
        for k in ("out", "devices", "max_lanes", "checkpoint_every", "shard", "preset"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> SweepConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def _fail(msg: str) -> None:
    raise ConfigError(msg)


def _validate(c: SweepConfig) -> None:
    if c.dataset not in DATASETS:
        _fail(f"unknown dataset {c.dataset!r}; choose one of {', '.join(DATASETS)}")
    if c.data_source not in ("idx", "tfds"):
        _fail(f"unknown data source {c.data_source!r}; choose idx or tfds")
    for name in ("n_train", "n_test", "features", "num_classes"):
        v = getattr(c, name)
        if v is not None and v <= 0:
            _fail(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if c.num_classes is not None and c.num_classes < 2:
        _fail(f"--num-classes must be at least 2, got {c.num_classes}")
    if c.hidden is None:
        if not c.widths:
            _fail("the grid is empty: give at least one width, e.g. --widths 64,256")
        if any(w <= 0 for w in c.widths):
            _fail(f"widths must be positive integers, got {list(c.widths)}")
        if c.depth < 1:
            _fail(f"--depth must be at least 1, got {c.depth}")
    else:
        if not c.hidden or any(not h for h in c.hidden):
            _fail("the grid is empty: give at least one architecture, e.g. --hidden 64-16")
        if any(w <= 0 for h in c.hidden for w in h):
            _fail(f"hidden widths must be positive integers, got {c.hidden}")
    if not c.lrs:
        _fail("the grid is empty: give learning rates with --lrs or --lr-grid")
    if any(not (math.isfinite(lr) and lr > 0) for lr in c.lrs):
        _fail(f"learning rates must be positive and finite, got {list(c.lrs)}")
    if len(set(c.lrs)) != len(c.lrs):
        _fail(f"learning rates must be distinct, got {list(c.lrs)}")
    if not c.seeds:
        _fail("the grid is empty: --seeds must be at least 1")
    if any(s < 0 for s in c.seeds) or len(set(c.seeds)) != len(c.seeds):
        _fail(f"seeds must be distinct non-negative integers, got {list(c.seeds)}")
    if not c.optimizers:
        _fail("the grid is empty: give at least one optimizer")
    for o in c.optimizers:
        if o not in OPTIMIZERS:
            _fail(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")
    if len(set(c.optimizers)) != len(c.optimizers):
        _fail(f"optimizers must be distinct, got {list(c.optimizers)}")
    if c.epochs < 1:
        _fail(f"--epochs must be at least 1, got {c.epochs}")
    if c.batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {c.batch_size}")
    if c.init not in INITS:
        _fail(f"unknown init {c.init!r}; choose from {', '.join(INITS)}")
    if c.lr_rule not in LR_RULES:
        _fail(f"unknown lr rule {c.lr_rule!r}; choose from {', '.join(LR_RULES)}")
    if c.lr_rule == "per-layer":
        if c.layer_lr_mults is None:
            _fail("--lr-rule per-layer needs --layer-lr-mults, e.g. 1,0.5,0.2 (one per layer)")
        n_layers = {len(h) + 1 for h in c.architectures}
        if len(n_layers) != 1 or len(c.layer_lr_mults) not in n_layers:
            _fail(
                f"--layer-lr-mults has {len(c.layer_lr_mults)} values but the model has "
                f"{sorted(n_layers)} layers (hidden + readout); give one multiplier per layer"
            )
        if any(not (math.isfinite(m) and m >= 0) for m in c.layer_lr_mults):
            _fail(f"--layer-lr-mults must be non-negative, got {list(c.layer_lr_mults)}")
    elif c.layer_lr_mults is not None:
        _fail("--layer-lr-mults only applies to --lr-rule per-layer")
    if not (c.adagrad_eps > 0):
        _fail(f"--adagrad-eps must be positive, got {c.adagrad_eps}")
    if not math.isfinite(c.weight_norm_factor):
        _fail(f"--weight-norm-factor must be finite, got {c.weight_norm_factor}")
    if c.parametrization not in PARAMETRIZATIONS:
        _fail(f"unknown parametrization {c.parametrization!r}; choose sp or mup")
    if c.parametrization == "mup":
        if c.base_width is None or c.base_width <= 0:
            _fail("--parametrization mup needs a positive --base-width, e.g. --base-width 64")
    elif c.base_width is not None:
        _fail("--base-width only applies to --parametrization mup")
    if not (c.divergence_loss > 0):
        _fail(f"--divergence-loss must be positive, got {c.divergence_loss}")
    if c.precision not in PRECISIONS:
        _fail(f"unknown precision {c.precision!r}; choose from {', '.join(PRECISIONS)}")
    if c.max_lanes is not None and c.max_lanes < 1:
        _fail(f"--max-lanes must be at least 1, got {c.max_lanes}")
    if c.devices is not None and c.devices < 1:
        _fail(f"--devices must be at least 1, got {c.devices}")
    if c.checkpoint_every is not None and c.checkpoint_every < 0:
        _fail(f"--checkpoint-every must be >= 0, got {c.checkpoint_every}")
    i, n = c.shard
    if not (n >= 1 and 0 <= i < n):
        _fail(f"--shard must be i/n with 0 <= i < n, got {i}/{n}")
