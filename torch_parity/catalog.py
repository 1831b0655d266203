"""The parity suite's examples by name: what each one is and how long it runs by default.

This table is all that ``python -m torch_parity --help`` / ``--list`` and the checks of the
command line need, so it imports neither torch nor JAX; :mod:`torch_parity.compare` attaches to
each entry its PyTorch program and the Optax transform that should match it.

The examples come from three source documents:

* "the width examples": 10-w-2 and 10-64-16-2 MLPs trained full-batch with Adam on 100 random
  points with random labels, one with ``ReduceLROnPlateau``;
* "the Fashion-MNIST width experiment": ``784-w-w-10`` MLPs, plain SGD, batches of 64;
* "the per-neuron learning-rate examples": Adam parameter groups per layer, per-neuron rates
  from the weight norm, AdaGrad rates per parameter and per neuron.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

WIDTH_EXAMPLES = "the width examples"
FASHION_WIDTH_EXPERIMENT = "the Fashion-MNIST width experiment"
PER_NEURON_LR_EXAMPLES = "the per-neuron learning-rate examples"

# --steps above this is refused: the Fashion-MNIST width experiment's own 50 epochs are
# 46,850 steps; 1e5 minibatch steps hold 51 MB of batch indices and take minutes in torch.
MAX_STEPS = 100_000


@dataclasses.dataclass(frozen=True)
class ExampleInfo:
    """One example of the suite, as listed: its name, source and default length."""

    name: str  # CLI name, e.g. "weight-norm"
    source: str  # the document it comes from (WIDTH_EXAMPLES, ...)
    summary: str  # one line for listings
    steps: int = 0  # default number of steps (full-batch examples)
    epochs: int = 0  # default number of epochs (minibatch examples)
    batch_size: int | None = None  # None: full batch on the width examples' random data

    @property
    def on_images(self) -> bool:
        """Whether the example trains on image data (``--dataset`` / ``--data-dir`` apply)."""
        return self.batch_size is not None

    @property
    def default_length(self) -> str:
        """``"10 steps"`` or ``"2 epochs"``."""
        return f"{self.epochs} epochs" if self.on_images else f"{self.steps} steps"


CATALOG: tuple[ExampleInfo, ...] = (
    ExampleInfo("narrow", WIDTH_EXAMPLES, "10-32-2, Adam 1e-3", steps=10),
    ExampleInfo("wide", WIDTH_EXAMPLES, "10-256-2, Adam 1e-2", steps=10),
    ExampleInfo(
        "mixed", WIDTH_EXAMPLES, "10-64-16-2, Adam 5e-3, ReduceLROnPlateau('min')", steps=20
    ),
    ExampleInfo(
        "mixed-plateau",
        WIDTH_EXAMPLES,
        "mixed, plateau patience=2, abs threshold 0.02: 6 lr cuts",
        steps=100,
    ),
    ExampleInfo(
        "per-layer", PER_NEURON_LR_EXAMPLES, "10-20-10-2, Adam groups 1e-3 / 5e-4 / 2e-4", steps=200
    ),
    ExampleInfo(
        "weight-norm",
        PER_NEURON_LR_EXAMPLES,
        "lr_i = 1e-3 (1 + 0.01 ||w_i||) through Adam",
        steps=200,
    ),
    ExampleInfo(
        "adagrad-param",
        PER_NEURON_LR_EXAMPLES,
        "lr = 1e-5 / (sqrt(sum g^2) + 1e-8) per parameter, through Adam",
        steps=200,
    ),
    ExampleInfo(
        "adagrad-neuron",
        PER_NEURON_LR_EXAMPLES,
        "row-wise AdaGrad rates (one per neuron), base 1e-5, through Adam",
        steps=200,
    ),
    ExampleInfo(
        "sgd-w64",
        FASHION_WIDTH_EXPERIMENT,
        "in-64-64-10, SGD 0.1, batches of 64",
        epochs=2,
        batch_size=64,
    ),
    ExampleInfo(
        "sgd-w256",
        FASHION_WIDTH_EXPERIMENT,
        "in-256-256-10, SGD 0.1, batches of 64",
        epochs=2,
        batch_size=64,
    ),
)
EXAMPLE_NAMES: tuple[str, ...] = tuple(e.name for e in CATALOG)


def info(name: str) -> ExampleInfo:
    """The catalog entry called ``name``; raises ``KeyError`` naming the choices."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown example {name!r}; choose from: {', '.join(EXAMPLE_NAMES)}")


def selected_examples(requested: Sequence[str] | None) -> list[str]:
    """The example names to run, in suite order (all when ``requested`` is None).

    ``requested`` holds the values of a repeatable ``--example``, each a name or a comma list;
    a name given twice runs once. Raises ``KeyError`` on an unknown name, an empty item
    (``narrow,,wide``) or an ``--example`` that names none.
    """
    if requested is None:
        return list(EXAMPLE_NAMES)
    items = [n.strip() for item in requested for n in item.split(",")]
    if not any(items):
        raise KeyError(
            f"--example {' '.join(map(repr, requested))} names no example; choose from: "
            f"{', '.join(EXAMPLE_NAMES)} (or leave --example out to run them all)"
        )
    if not all(items):
        given = ",".join(requested)
        raise KeyError(f"empty item in --example {given!r}; remove the extra comma")
    unknown = [n for n in items if n not in EXAMPLE_NAMES]
    if unknown:
        raise KeyError(
            f"unknown example {', '.join(unknown)}; choose from: {', '.join(EXAMPLE_NAMES)}"
        )
    return [n for n in EXAMPLE_NAMES if n in items]
