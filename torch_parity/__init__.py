"""PyTorch parity suite for jaxlr: the seeds' PyTorch examples rerun next to their JAX twins.

``python -m torch_parity`` runs every example in torch and in JAX from the same initial weights,
data and batch order, and prints the per-step loss and final-param differences (see
:mod:`torch_parity.compare`). Needs ``torch`` (the ``parity`` extra).
"""

from torch_parity.compare import EXAMPLE_NAMES as EXAMPLE_NAMES
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
