"""PyTorch parity suite for jaxlr: the source documents' PyTorch examples beside their JAX twins.

``python -m torch_parity`` runs every example in torch and in JAX from the same initial weights,
data and batch order, and prints the per-step loss and final-param differences (see
:mod:`torch_parity.compare`; the examples are listed in :mod:`torch_parity.catalog`). Needs
``torch`` (the ``parity`` extra).

The public names are imported on first use (a module ``__getattr__``), so ``python -m
torch_parity --help`` and its flag errors do not import torch or JAX.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time, __getattr__ below
    from torch_parity.catalog import EXAMPLE_NAMES as EXAMPLE_NAMES
    from torch_parity.compare import EXAMPLES as EXAMPLES
    from torch_parity.compare import TOLERANCES as TOLERANCES
    from torch_parity.compare import Example as Example
    from torch_parity.compare import ParityResult as ParityResult
    from torch_parity.compare import format_table as format_table
    from torch_parity.compare import run_example as run_example
    from torch_parity.compare import run_suite as run_suite
    from torch_parity.convert import flax_to_state_dict as flax_to_state_dict
    from torch_parity.convert import linear_prefixes as linear_prefixes
    from torch_parity.convert import state_dict_to_flax as state_dict_to_flax

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "EXAMPLE_NAMES": "torch_parity.catalog",
    **dict.fromkeys(
        (
            "EXAMPLES",
            "TOLERANCES",
            "Example",
            "ParityResult",
            "format_table",
            "run_example",
            "run_suite",
        ),
        "torch_parity.compare",
    ),
    **dict.fromkeys(
        ("flax_to_state_dict", "linear_prefixes", "state_dict_to_flax"), "torch_parity.convert"
    ),
}

__all__ = [
    "EXAMPLES",
    "EXAMPLE_NAMES",
    "TOLERANCES",
    "Example",
    "ParityResult",
    "flax_to_state_dict",
    "format_table",
    "linear_prefixes",
    "run_example",
    "run_suite",
    "state_dict_to_flax",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then cached in this module)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
