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

A fourth group, "the sweep's optimizers and schedules", is no document's: it checks the sweep's
own update (``jaxlr.optimizers.make_optimizer`` with the schedule's multiplier at every step)
against PyTorch's optimizers and schedulers (``torch.optim.SGD``, ``AdamW``, ``Muon``,
``SequentialLR``) or, where PyTorch has none, numpy formulas (Lion, AdamW with independent
decay, Muon with its Newton-Schulz iteration in float64); see
:mod:`torch_parity.optimizer_examples`.

A fifth, "the GPT examples", does the same for the sweep's ``gpt`` family: the sweep's GPT and
its AdamW step (SP, or muP with its per-parameter rates) against the PyTorch twin
(:mod:`torch_parity.torch_gpt`) with ``torch.optim.AdamW`` or ``mup.MuAdamW``, torch's
schedulers and ``clip_grad_norm_``, on windows of a small byte corpus; see
:mod:`torch_parity.gpt_examples`.

``--group`` selects the examples of one source by a short key (:data:`GROUPS`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

WIDTH_EXAMPLES = "the width examples"
FASHION_WIDTH_EXPERIMENT = "the Fashion-MNIST width experiment"
PER_NEURON_LR_EXAMPLES = "the per-neuron learning-rate examples"
SWEEP_OPTIMIZERS = "the sweep's optimizers and schedules"
GPT_EXAMPLES = "the GPT examples"

GROUPS: dict[str, str] = {
    "width": WIDTH_EXAMPLES,
    "fashion-mnist": FASHION_WIDTH_EXPERIMENT,
    "per-neuron": PER_NEURON_LR_EXAMPLES,
    "optimizers": SWEEP_OPTIMIZERS,
    "gpt": GPT_EXAMPLES,
}
"""``--group`` key -> the source whose examples it selects."""

# --steps above this is refused: the Fashion-MNIST width experiment's own 50 epochs are
# 46,850 steps; 1e5 minibatch steps hold 51 MB of batch indices and take minutes in torch.
MAX_STEPS = 100_000

# muon-torch's bound on max |Δloss| over its 30 steps, in both dtypes: torch.optim.Muon runs
# its Newton-Schulz iteration in bfloat16, jaxlr in the parameters' dtype. Measured: 8.5e-5
# (float64, the suite's init; float32 9.7e-5), 3.9e-5 .. 1.9e-4 over eight inits (float32
# 2.1e-5 .. 2.0e-4); a wrong setting on the torch side moves it to 2.1e-3 (momentum 0.9 for
# 0.95), 2.2e-3 (no decay), 5.9e-3 (rms scaling). With the iteration in float64, torch.optim.Muon
# agrees to 2e-16.
MUON_TORCH_TOLERANCE = 5e-4


@dataclasses.dataclass(frozen=True)
class ExampleInfo:
    """One example of the suite, as listed: its name, source and default length."""

    name: str  # CLI name, e.g. "weight-norm"
    source: str  # the document it comes from (WIDTH_EXAMPLES, ...)
    summary: str  # one line for listings
    steps: int = 0  # default number of steps (full-batch examples)
    epochs: int = 0  # default number of epochs (minibatch examples)
    batch_size: int | None = None  # None: full batch on the width examples' random data
    # bound on max |Δloss| in every dtype where the reference cannot follow to rounding
    # (torch.optim.Muon's bfloat16 Newton-Schulz, clip_grad_norm_'s 1e-6); None: the suite's
    # per-dtype tolerance
    tolerance: float | None = None

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
    ExampleInfo(
        "sgd-momentum",
        SWEEP_OPTIMIZERS,
        "torch.optim.SGD 0.05, momentum 0.9; warmup-cosine (LinearLR + CosineAnnealingLR)",
        steps=30,
    ),
    ExampleInfo(
        "sgd-nesterov",
        SWEEP_OPTIMIZERS,
        "torch.optim.SGD 0.05, momentum 0.9, Nesterov, L2 weight_decay 0.01",
        steps=30,
    ),
    ExampleInfo(
        "adamw",
        SWEEP_OPTIMIZERS,
        "torch.optim.AdamW 3e-3, weight_decay 0.1; wsd (LinearLR, LambdaLR, LinearLR)",
        steps=30,
    ),
    ExampleInfo(
        "adamw-independent",
        SWEEP_OPTIMIZERS,
        "numpy AdamW 3e-3, decay 2e-3 * 16/32 independent of the lr; warmup-linear",
        steps=30,
    ),
    ExampleInfo("lion", SWEEP_OPTIMIZERS, "numpy Lion 1e-3, betas 0.9/0.99, decay 0.1", steps=30),
    ExampleInfo(
        "muon",
        SWEEP_OPTIMIZERS,
        "numpy Muon 3e-3 (float64 Newton-Schulz, rms scaling) + Adam, decay 0.1",
        steps=30,
    ),
    ExampleInfo(
        "muon-torch",
        SWEEP_OPTIMIZERS,
        "torch.optim.Muon 5e-3 (bfloat16 Newton-Schulz, original scaling) + AdamW, decay 0.1",
        steps=30,
        tolerance=MUON_TORCH_TOLERANCE,
    ),
    ExampleInfo(
        "gpt-sp-adamw-warmup",
        GPT_EXAMPLES,
        "GPT w32 d2 T16 h8 tied, SP, torch.optim.AdamW 3e-3, decay 0.1; warmup-cosine "
        "(LinearLR + CosineAnnealingLR)",
        steps=24,
    ),
    ExampleInfo(
        "gpt-mup-adamw-warmup",
        GPT_EXAMPLES,
        "GPT w64 (base 32) d2 T16 h16 tied, muP, mup.MuAdamW 5e-3, decay 0.1; warmup-cosine to 0",
        steps=24,
    ),
    ExampleInfo(
        "gpt-mup-adamw-untied",
        GPT_EXAMPLES,
        "GPT w64 (base 32) untied, depth-muP residuals, mup.MuAdamW 5e-3, decay 0.01; wsd",
        steps=24,
    ),
    ExampleInfo(
        "gpt-sp-adamw-clip",
        GPT_EXAMPLES,
        "GPT w32 untied, SP, torch.optim.AdamW 3e-3, clip_grad_norm_(0.5) vs --clip-norm 0.5",
        steps=24,
    ),
)
EXAMPLE_NAMES: tuple[str, ...] = tuple(e.name for e in CATALOG)


def info(name: str) -> ExampleInfo:
    """The catalog entry called ``name``; raises ``KeyError`` naming the choices."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown example {name!r}; choose from: {', '.join(EXAMPLE_NAMES)}")


def group_examples(groups: Sequence[str]) -> list[str]:
    """The example names of the ``--group`` values ``groups`` (each a :data:`GROUPS` key or a
    comma list of them), in suite order. Raises ``KeyError`` on an unknown or empty key."""
    keys = [k.strip() for item in groups for k in item.split(",")]
    if not all(keys):
        raise KeyError(f"empty item in --group {','.join(groups)!r}; remove the extra comma")
    unknown = [k for k in keys if k not in GROUPS]
    if unknown:
        raise KeyError(f"unknown group {', '.join(unknown)}; choose from: {', '.join(GROUPS)}")
    sources = {GROUPS[k] for k in keys}
    return [e.name for e in CATALOG if e.source in sources]


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
