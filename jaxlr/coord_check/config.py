"""The settings of the committed coordinate check (:class:`CoordCheckConfig`); no JAX here, so
the command line can show its defaults and refuse bad values at once."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

Parametrization = Literal["sp", "mup"]  # SP: torch init, plain Adam/SGD; muP: jaxlr.mup
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")


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

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or list(self.widths) != sorted(set(self.widths)):
            raise ValueError(f"widths {self.widths}: give at least 2 distinct widths, increasing")
        if min(self.widths) < 1 or self.base_width < 1:
            raise ValueError(f"widths {self.widths} / base width {self.base_width} must be >= 1")
        if self.depth < 1 or self.steps < 1 or self.batch < 1:
            raise ValueError(
                f"depth={self.depth}, steps={self.steps}, batch={self.batch}: each must be >= 1"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds}: give at least one seed, without repeats")
        if min(self.seeds) < 0:
            raise ValueError(f"seeds {self.seeds}: seeds must be >= 0")
        if not all(math.isfinite(lr) and lr > 0 for lr in (self.adam_lr, self.sgd_lr)):
            raise ValueError(
                f"adam_lr={self.adam_lr}, sgd_lr={self.sgd_lr}: lrs must be finite and > 0"
            )
