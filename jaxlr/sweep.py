"""``python -m jaxlr.sweep``: the vectorized width x learning-rate x seed sweep.

From Python, use :func:`run_sweep` with a :class:`SweepConfig`::

    from jaxlr.sweep import SweepConfig, run_sweep
    df = run_sweep(SweepConfig(widths=(64, 256), lrs=(0.1, 0.01), epochs=5))

:func:`run_sweep` (and with it JAX) is imported on first use, so that ``--help`` and a bad flag
answer without importing JAX.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from jaxlr.cli import main
from jaxlr.config import SweepConfig

if TYPE_CHECKING:
    from jaxlr.runner import run_sweep as run_sweep

__all__ = ["SweepConfig", "main", "run_sweep"]


def __getattr__(name: str) -> Any:
    """``run_sweep``, imported from :mod:`jaxlr.runner` on first use."""
    if name == "run_sweep":
        from jaxlr.runner import run_sweep

        return run_sweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if __name__ == "__main__":
    sys.exit(main())
