"""The settings of the committed coordinate checks (:class:`CoordCheckConfig` for the MLP,
:class:`GPTCoordCheckConfig` for the GPT); no JAX here, so the command line can show its
defaults and refuse bad values at once."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

Parametrization = Literal["sp", "mup"]  # SP: torch init, plain Adam/SGD; muP: jaxlr.mup
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "sgd")  # jaxlr.mup.OPTIMIZERS, without JAX


def _check_common(cfg: CoordCheckConfig | GPTCoordCheckConfig) -> None:
    """The checks both configs share (widths, depth, steps, batch, seeds, lrs, choices)."""
    if len(cfg.widths) < 2 or list(cfg.widths) != sorted(set(cfg.widths)):
        raise ValueError(f"widths {cfg.widths}: give at least 2 distinct widths, increasing")
    if min(cfg.widths) < 1 or cfg.base_width < 1:
        raise ValueError(f"widths {cfg.widths} / base width {cfg.base_width} must be >= 1")
    if cfg.depth < 1 or cfg.steps < 1 or cfg.batch < 1:
        raise ValueError(
            f"depth={cfg.depth}, steps={cfg.steps}, batch={cfg.batch}: each must be >= 1"
        )
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds {cfg.seeds}: give at least one seed, without repeats")
    if min(cfg.seeds) < 0:
        raise ValueError(f"seeds {cfg.seeds}: seeds must be >= 0")
    if not all(math.isfinite(lr) and lr > 0 for lr in (cfg.adam_lr, cfg.sgd_lr)):
        raise ValueError(f"adam_lr={cfg.adam_lr}, sgd_lr={cfg.sgd_lr}: lrs must be finite and > 0")
    for what, given, known in (
        ("optimizer", cfg.optimizers, OPTIMIZER_NAMES),
        ("parametrization", cfg.parametrizations, PARAMETRIZATIONS),
    ):
        if not given or len(set(given)) != len(given) or not set(given) <= set(known):
            raise ValueError(
                f"{what}s {','.join(given)}: choose one or more of {','.join(known)}, "
                "without repeats"
            )


@dataclasses.dataclass(frozen=True)
class CoordCheckConfig:
    """Settings of :func:`~jaxlr.coord_check.run_coord_check` (the defaults are the committed
    run's)."""

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)  # hidden widths, increasing
    base_width: int = 64  # muP base width
    depth: int = 2  # hidden layers
    steps: int = 4  # optimizer steps on the fixed batch
    seeds: tuple[int, ...] = (0, 1, 2)  # init seeds
    batch: int = 256  # digits training examples in the fixed batch (the first ones)
    adam_lr: float = 1e-2  # base lr for Adam
    sgd_lr: float = 1.0  # base lr for SGD
    optimizers: tuple[str, ...] = OPTIMIZER_NAMES  # "adam", "sgd" or both
    parametrizations: tuple[str, ...] = PARAMETRIZATIONS  # "sp", "mup" or both

    def __post_init__(self) -> None:
        _check_common(self)


@dataclasses.dataclass(frozen=True)
class GPTCoordCheckConfig:
    """Settings of :func:`~jaxlr.coord_check.run_gpt_coord_check` (the defaults are the
    committed run's)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)  # d_model, increasing, multiples of head_dim
    base_width: int = 32  # muP base width
    depth: int = 2  # transformer blocks
    head_dim: int = 16  # size of one attention head (heads = width / head_dim)
    context: int = 32  # tokens (bytes) per sequence
    steps: int = 4  # optimizer steps on the fixed batch
    seeds: tuple[int, ...] = (0, 1, 2)  # init seeds
    batch: int = 8  # sequences in the fixed batch (evenly spaced windows of the corpus)
    adam_lr: float = 1e-2  # base lr for Adam
    sgd_lr: float = 0.3  # base lr for SGD (1.0 diverges SP at width 256)
    optimizers: tuple[str, ...] = OPTIMIZER_NAMES  # "adam", "sgd" or both
    parametrizations: tuple[str, ...] = PARAMETRIZATIONS  # "sp", "mup" or both
    data_dir: str | None = None  # a text file or directory; None: the built-in corpus

    def __post_init__(self) -> None:
        _check_common(self)
        if self.head_dim < 1 or self.context < 1:
            raise ValueError(f"head_dim={self.head_dim}, context={self.context}: each must be >= 1")
        off = [f"width {w}" for w in self.widths if w % self.head_dim]
        if self.base_width % self.head_dim:
            off.append(f"base width {self.base_width}")
        if off:
            raise ValueError(
                f"{', '.join(off)}: not a multiple of the head size {self.head_dim}; choose "
                f"multiples of {self.head_dim}, or another --head-dim"
            )
