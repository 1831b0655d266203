"""``python -m jaxlr.sweep``: the vectorized width x learning-rate x seed sweep.

From Python, use :func:`run_sweep` with a :class:`SweepConfig`::

    from jaxlr.sweep import SweepConfig, run_sweep
    df = run_sweep(SweepConfig(widths=(64, 256), lrs=(0.1, 0.01), epochs=5))
"""

from __future__ import annotations

import sys

from jaxlr.cli import main
from jaxlr.config import SweepConfig
from jaxlr.runner import run_sweep

__all__ = ["SweepConfig", "main", "run_sweep"]

if __name__ == "__main__":
    sys.exit(main())
