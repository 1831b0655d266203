"""The parity suite: each example run in PyTorch and in JAX from the same start, compared.

A comparison runs the torch program (:mod:`torch_parity.examples`), converts its initial
``state_dict`` to Flax params (:mod:`torch_parity.convert`), trains jaxlr's MLP with the matching
Optax transform on the same numpy data and batch order (:mod:`torch_parity.jax_runs`), and reports
(the GPT examples, :class:`GptExample`: the PyTorch twin of the sweep's GPT, its init converted
by :func:`torch_parity.torch_gpt.to_flax`, and the sweep's own GPT step on the same token
windows; see :mod:`torch_parity.gpt_examples`)

* ``max_abs_loss_diff = max_t |loss_torch(t) - loss_jax(t)|`` over every step ``t``, and
* ``max_rel_param_diff = max_leaf max|p_torch - p_jax| / max|p_torch|`` on the final params.

An example passes when ``max_abs_loss_diff <= tolerance`` (float64: 1e-10, float32: 1e-4; an
example's own larger bound where its reference cannot follow to rounding: ``muon-torch``) and
both numbers are finite. The examples and their sources are listed in
:mod:`torch_parity.catalog`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optax
import torch

from jaxlr.transforms import adagrad_lr, per_layer_lr, reduce_lr_on_plateau, weight_norm_lr
from torch_parity import examples, gpt_examples
from torch_parity import optimizer_examples as opt_examples
from torch_parity.catalog import CATALOG, EXAMPLE_NAMES, GPT_EXAMPLES, MAX_STEPS, ExampleInfo, info
from torch_parity.convert import state_dict_to_flax
from torch_parity.data import ParityData, batch_indices, image_classification, random_classification
from torch_parity.jax_runs import (
    DataShape,
    DType,
    JaxRun,
    Optimizer,
    StepTransform,
    sweep_update,
    train_batches,
    train_full_batch,
    train_minibatch,
)

__all__ = [
    "EXAMPLES",
    "EXAMPLE_NAMES",
    "JSON_KEYS",
    "TOLERANCES",
    "Example",
    "GptExample",
    "JaxOptimizer",
    "ParityResult",
    "Progress",
    "compare",
    "float32_drift",
    "format_table",
    "format_trace",
    "get_example",
    "max_rel_param_diff",
    "run_example",
    "run_suite",
    "sweep_optimizer",
    "trace_steps",
]

# progress(side, steps done, steps in all), side "torch" or "JAX": called as training goes on
Progress = Callable[[str, int, int], None]

TOLERANCES: dict[str, float] = {"float64": 1e-10, "float32": 1e-4}
TORCH_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}
JSON_KEYS: tuple[str, ...] = (
    "example",
    "steps",
    "dtype",
    "torch_final_loss",
    "jax_final_loss",
    "max_abs_loss_diff",
    "max_rel_param_diff",
    "tolerance",
    "passed",
)


# jax_optimizer(data, steps): the transform (or one per step) that should match the reference
JaxOptimizer = Callable[[ParityData, int], Optimizer]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Example(ExampleInfo):
    """One example (:class:`~torch_parity.catalog.ExampleInfo`): its torch program and the
    jaxlr optimizer that should match it."""

    torch_program: examples.TorchProgram  # the PyTorch reference
    jax_optimizer: JaxOptimizer  # the matching Optax transform, from the data and the steps

    def tolerance_for(self, dtype: str) -> float:
        """The default bound on ``max_abs_loss_diff`` in ``dtype``: the suite's
        (:data:`TOLERANCES`), or the example's own if larger."""
        return max(TOLERANCES[dtype], self.tolerance or 0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GptExample(ExampleInfo):
    """One of the GPT examples (:class:`~torch_parity.catalog.ExampleInfo`): its sweep lane,
    the twin's torch program and the sweep's update that should match it."""

    setting: gpt_examples.GptSetting  # the lane both sides train
    torch_program: gpt_examples.GptTorchProgram = gpt_examples.adamw_twin  # the reference
    # jax_update(setting, steps): the sweep's update per step
    jax_update: Callable[[gpt_examples.GptSetting, int], StepTransform] = (
        gpt_examples.sweep_gpt_update
    )

    tolerance_for = Example.tolerance_for


AnyExample = Example | GptExample


def _plateau_adam(lr: float, **plateau: Any) -> optax.GradientTransformation:
    """``Adam(lr)`` followed by ``ReduceLROnPlateau(optimizer, 'min', **plateau)``."""
    # jaxlr's multiplier starts at 1 and torch's lr at `lr`: torch's eps rule (skip reductions of
    # the lr by <= 1e-8) becomes eps / lr on the multiplier.
    return optax.chain(optax.adam(lr), reduce_lr_on_plateau(eps=1e-8 / lr, **plateau))


def _adam_direction() -> optax.GradientTransformation:
    """Adam's direction ``m_hat / (sqrt(v_hat) + eps)`` with torch's defaults."""
    return optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)


def _fixed(make: Callable[[], optax.GradientTransformation]) -> JaxOptimizer:
    """One transform for every step, whatever the data and the run's length."""
    return lambda data, steps: make()


def sweep_optimizer(s: opt_examples.SweepSetting) -> JaxOptimizer:
    """The sweep's update of lane ``s`` on the example's data, over the run's steps
    (:func:`torch_parity.jax_runs.sweep_update`)."""

    def build(data: ParityData, steps: int) -> Optimizer:
        shape = DataShape(data.features, data.num_classes, len(data.x))
        return sweep_update(s.optimizer, s.hidden, shape, steps, s.lr, s.weight_decay, **s.options)

    return build


def _reference(program: examples.TorchProgram, name: str) -> examples.TorchProgram:
    """``program`` with setting ``name``."""
    return functools.partial(program, setting=opt_examples.SETTINGS[name])


# example name -> (its PyTorch program, the Optax transform that should match it)
_IMPLEMENTATIONS: dict[str, tuple[examples.TorchProgram, JaxOptimizer]] = {
    "narrow": (examples.narrow, _fixed(lambda: optax.adam(1e-3))),
    "wide": (examples.wide, _fixed(lambda: optax.adam(1e-2))),
    "mixed": (examples.mixed, _fixed(lambda: _plateau_adam(5e-3))),
    "mixed-plateau": (
        examples.mixed_plateau,
        _fixed(lambda: _plateau_adam(5e-3, patience=2, threshold=0.02, threshold_mode="abs")),
    ),
    "per-layer": (
        examples.per_layer,
        _fixed(
            lambda: per_layer_lr(
                {"Dense_0": 1e-3, "Dense_1": 5e-4, "Dense_2": 2e-4}, inner=_adam_direction()
            )
        ),
    ),
    "weight-norm": (
        examples.weight_norm,
        _fixed(lambda: weight_norm_lr(1e-3, scaling_factor=0.01, inner=_adam_direction())),
    ),
    "adagrad-param": (
        examples.adagrad_param,
        _fixed(
            lambda: adagrad_lr(
                examples.ADAGRAD_BASE_LR, eps=1e-8, granularity="parameter", inner=_adam_direction()
            )
        ),
    ),
    "adagrad-neuron": (
        examples.adagrad_neuron,
        _fixed(
            lambda: adagrad_lr(
                examples.ADAGRAD_BASE_LR, eps=1e-8, granularity="neuron", inner=_adam_direction()
            )
        ),
    ),
    "sgd-w64": (
        functools.partial(examples.sgd_minibatch, width=64, lr=0.1),
        _fixed(lambda: optax.sgd(0.1)),
    ),
    "sgd-w256": (
        functools.partial(examples.sgd_minibatch, width=256, lr=0.1),
        _fixed(lambda: optax.sgd(0.1)),
    ),
    **{
        name: (_reference(program, name), sweep_optimizer(opt_examples.SETTINGS[name]))
        for name, program in (
            ("sgd-momentum", opt_examples.sgd),
            ("sgd-nesterov", opt_examples.sgd),
            ("adamw", opt_examples.adamw),
            ("adamw-independent", opt_examples.adamw_independent),
            ("lion", opt_examples.lion),
            ("muon", opt_examples.muon_numpy),
            ("muon-torch", opt_examples.muon_torch),
        )
    },
}


def _example(entry: ExampleInfo) -> AnyExample:
    """The runnable example of a catalog entry."""
    if entry.source == GPT_EXAMPLES:
        return GptExample(**dataclasses.asdict(entry), setting=gpt_examples.SETTINGS[entry.name])
    return Example(
        **dataclasses.asdict(entry),
        torch_program=_IMPLEMENTATIONS[entry.name][0],
        jax_optimizer=_IMPLEMENTATIONS[entry.name][1],
    )


EXAMPLES: tuple[AnyExample, ...] = tuple(_example(entry) for entry in CATALOG)


def get_example(name: str) -> AnyExample:
    """The example called ``name``; raises ``KeyError`` naming the choices."""
    return EXAMPLES[EXAMPLE_NAMES.index(info(name).name)]


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """The comparison of one example's torch and JAX runs."""

    example: str  # example name
    steps: int  # optimizer steps taken by each side
    dtype: str  # "float64" or "float32"
    torch_final_loss: float  # loss of the last step, torch
    jax_final_loss: float  # loss of the last step, JAX
    max_abs_loss_diff: float  # max over steps of |loss_torch - loss_jax|
    max_rel_param_diff: float  # max over leaves of max|Δp| / max|p_torch|, final params
    tolerance: float  # bound on max_abs_loss_diff
    passed: bool  # max_abs_loss_diff <= tolerance, all finite
    dataset: str  # "random", the image dataset's name or the GPT examples' text
    torch_losses: np.ndarray = dataclasses.field(repr=False)  # float64 [steps]
    jax_losses: np.ndarray = dataclasses.field(repr=False)  # float64 [steps]

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` record (:data:`JSON_KEYS`); non-finite floats become null."""
        record = {key: getattr(self, key) for key in JSON_KEYS}
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                record[key] = None
        return record


def max_rel_param_diff(reference: dict, other: dict, *, scale_floor: float = 0.0) -> float:
    """``max`` over leaves of ``max|reference - other| / max(max|reference|, scale_floor)`` (inf
    if non-finite), for params trees of nested dicts (the MLP's ``{"Dense_i": {...}}``, the
    GPT's deeper tree). ``scale_floor`` keeps a leaf that stays at rounding level (the GPT's key
    biases) from dividing its rounding by itself."""
    worst = 0.0
    for key, ref in reference.items():
        if isinstance(ref, dict):
            worst = max(worst, max_rel_param_diff(ref, other[key], scale_floor=scale_floor))
            continue
        ref = np.asarray(ref, np.float64)
        diff = np.max(np.abs(ref - np.asarray(other[key], np.float64)))
        scale = max(np.max(np.abs(ref)), scale_floor)
        rel = diff / scale if scale > 0 else diff
        worst = max(worst, float(rel) if np.isfinite(rel) else math.inf)
    return worst


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What both sides of one run are given."""

    example: Example
    data: ParityData
    steps: int
    batches: np.ndarray | None  # int64 [steps, batch_size], None for full batch
    batches_per_epoch: int  # 0 for full batch


def _setup(example: Example, steps: int | None, dataset: str, data_dir: str | None) -> _Setup:
    """The example, its data (the width examples' random set or the Fashion-MNIST width
    experiment's images) and its batch order."""
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_STEPS:,}, got {steps}")
    if example.batch_size is None:
        return _Setup(example, random_classification(0), steps or example.steps, None, 0)
    data = image_classification(dataset, data_dir)
    per_epoch = len(data.x) // example.batch_size
    steps = steps or example.epochs * per_epoch
    batches = batch_indices(0, len(data.x), example.batch_size, steps)
    return _Setup(example, data, steps, batches, per_epoch)


def _run_torch(setup: _Setup, dtype: DType, progress: Progress | None = None) -> examples.TorchRun:
    """The example's PyTorch program, single-threaded; ``progress("torch", t, steps)`` after
    each step ``t``."""
    on_step = None if progress is None else lambda t: progress("torch", t, setup.steps)
    with examples.torch_threads(1):
        return setup.example.torch_program(
            setup.data, setup.steps, TORCH_DTYPES[dtype], setup.batches, on_step=on_step
        )


def run_example(
    name: str,
    *,
    dtype: DType = "float64",
    steps: int | None = None,
    tolerance: float | None = None,
    dataset: str = "auto",
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> ParityResult:
    """Runs example ``name`` in torch and in JAX from the same init and data, and compares.

    Args:
      name: one of :data:`EXAMPLE_NAMES`.
      dtype: ``"float64"`` or ``"float32"``, for both sides.
      steps: number of optimizer steps (default: the example's own; at most
        :data:`~torch_parity.catalog.MAX_STEPS`).
      tolerance: bound on ``max_abs_loss_diff`` (default :meth:`Example.tolerance_for`: the
        suite's :data:`TOLERANCES` ``[dtype]``, or the example's own larger bound).
      dataset: the image examples' dataset (``"auto"``: Fashion-MNIST if on disk, else digits).
      data_dir: where the Fashion-MNIST/MNIST IDX files are (see :mod:`jaxlr.data`).
      progress: called as ``progress(side, steps_done, steps)`` while each side trains (side
        ``"torch"`` or ``"JAX"``), e.g. to print how far a long run is.

    Returns:
      A :class:`ParityResult`.
    """
    return compare(
        get_example(name),
        dtype=dtype,
        steps=steps,
        tolerance=tolerance,
        dataset=dataset,
        data_dir=data_dir,
        progress=progress,
    )


def compare(
    example: AnyExample,
    *,
    dtype: DType = "float64",
    steps: int | None = None,
    tolerance: float | None = None,
    dataset: str = "auto",
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> ParityResult:
    """:func:`run_example` for an :class:`Example` that need not be in the suite, e.g. one with
    a deliberately wrong reference: ``dataclasses.replace(get_example(name), torch_program=...)``.
    """
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {tuple(TOLERANCES)}, got {dtype!r}")
    if isinstance(example, GptExample):
        return _compare_gpt(example, dtype, steps, tolerance, progress)
    setup = _setup(example, steps, dataset, data_dir)
    data = setup.data
    ref = _run_torch(setup, dtype, progress)
    params = state_dict_to_flax(ref.init_state)
    tx = example.jax_optimizer(data, setup.steps)
    on_step = None if progress is None else lambda t: progress("JAX", t, setup.steps)
    if setup.batches is None:
        run = train_full_batch(params, tx, data.x, data.y, setup.steps, dtype, on_step=on_step)
    else:
        run = train_minibatch(
            params, tx, data.x, data.y, setup.batches, setup.batches_per_epoch, dtype,
            on_step=on_step,
        )  # fmt: skip
    final = state_dict_to_flax(ref.final_state)
    return _result(example, dtype, tolerance, ref.losses, final, run, data.name)


def _steps_of(example: ExampleInfo, steps: int | None) -> int:
    """``steps`` (checked against :data:`MAX_STEPS`) or the example's own."""
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_STEPS:,}, got {steps}")
    return steps or example.steps


def _gpt_torch(
    example: GptExample, steps: int, dtype: DType, progress: Progress | None = None
) -> gpt_examples.GptTorchRun:
    """The GPT example's torch program on the sweep's windows, single-threaded."""
    xs, ys = gpt_examples.window_batches(example.setting, steps)
    on_step = None if progress is None else lambda t: progress("torch", t, steps)
    with examples.torch_threads(1):
        return example.torch_program(example.setting, xs, ys, TORCH_DTYPES[dtype], on_step=on_step)


def _compare_gpt(
    example: GptExample,
    dtype: DType,
    steps: int | None,
    tolerance: float | None,
    progress: Progress | None,
) -> ParityResult:
    r""":func:`compare` for a GPT example: the twin's run, then the sweep's GPT step in
    ``lax.scan`` from the twin's init on the same windows (loss :func:`next_token_loss`).

    The final params are compared per leaf relative to ``max(max|p|, init_std)``: the key
    biases' gradient is 0 in exact arithmetic (softmax ignores the shift :math:`q \cdot b_k`
    shared by every key of a query), so both sides leave them at rounding level (1e-14)."""
    from jaxlr.gpt import next_token_loss

    steps = _steps_of(example, steps)
    ref = _gpt_torch(example, steps, dtype, progress)
    xs, ys = gpt_examples.window_batches(example.setting, steps)
    model = gpt_examples.gpt_model(example.setting, steps, dtype)
    tx = example.jax_update(example.setting, steps)
    on_step = None if progress is None else lambda t: progress("JAX", t, steps)
    run = train_batches(
        model, ref.init_params, tx, xs, ys, dtype, loss=next_token_loss, on_step=on_step
    )
    return _result(
        example, dtype, tolerance, ref.losses, ref.final_params, run, gpt_examples.TEXT_DATA,
        scale_floor=model.init_std,
    )  # fmt: skip


def _result(
    example: AnyExample,
    dtype: DType,
    tolerance: float | None,
    torch_losses: np.ndarray,
    torch_final: dict,
    run: JaxRun,
    dataset: str,
    *,
    scale_floor: float = 0.0,
) -> ParityResult:
    """The comparison of a torch run (its losses, final params as a Flax tree) with a JAX run
    (``scale_floor``: see :func:`max_rel_param_diff`)."""
    diffs = np.abs(torch_losses - run.losses)
    max_loss_diff = float(np.max(diffs)) if np.all(np.isfinite(diffs)) else math.inf
    param_diff = max_rel_param_diff(torch_final, run.final_params, scale_floor=scale_floor)
    tol = example.tolerance_for(dtype) if tolerance is None else float(tolerance)
    return ParityResult(
        example=example.name,
        steps=len(torch_losses),
        dtype=dtype,
        torch_final_loss=float(torch_losses[-1]),
        jax_final_loss=float(run.losses[-1]),
        max_abs_loss_diff=max_loss_diff,
        max_rel_param_diff=param_diff,
        tolerance=tol,
        passed=bool(max_loss_diff <= tol and math.isfinite(param_diff)),
        dataset=dataset,
        torch_losses=torch_losses,
        jax_losses=run.losses,
    )


def float32_drift(
    name: str,
    *,
    steps: int | None = None,
    dataset: str = "auto",
    data_dir: str | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``|loss_torch_float32(t) - loss_torch_float64(t)|`` per step: float32's own error.

    The same torch program, from the same float32-drawn init, in both dtypes. This is the scale
    below which no float32 implementation can be expected to follow torch's float32 run.
    """
    example = get_example(name)
    if isinstance(example, GptExample):
        n = _steps_of(example, steps)
        float32, float64 = (
            _gpt_torch(example, n, d, progress).losses for d in ("float32", "float64")
        )
        return np.abs(float32 - float64)
    setup = _setup(example, steps, dataset, data_dir)
    float32, float64 = (_run_torch(setup, d, progress).losses for d in ("float32", "float64"))
    return np.abs(float32 - float64)


def run_suite(
    names: Sequence[str] = EXAMPLE_NAMES,
    *,
    dtype: DType = "float64",
    steps: int | None = None,
    tolerance: float | None = None,
    dataset: str = "auto",
    data_dir: str | None = None,
) -> list[ParityResult]:
    """:func:`run_example` for each name, in order."""
    kwargs = {"dtype": dtype, "steps": steps, "tolerance": tolerance}
    return [run_example(n, dataset=dataset, data_dir=data_dir, **kwargs) for n in names]


def format_table(results: Sequence[ParityResult]) -> str:
    """A fixed-width text table of the results, one row per example."""
    header = (
        "example",
        "steps",
        "torch final loss",
        "JAX final loss",
        "max |Δloss|",
        "max rel Δparam",
        "tolerance",
        "result",
    )
    rows = [
        (
            r.example,
            str(r.steps),
            f"{r.torch_final_loss:.10g}",
            f"{r.jax_final_loss:.10g}",
            f"{r.max_abs_loss_diff:.2e}",
            f"{r.max_rel_param_diff:.2e}",
            f"{r.tolerance:.0e}",
            "PASS" if r.passed else "FAIL",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    rule = "-+-".join("-" * w for w in widths)
    title = " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()
    data = sorted({r.dataset for r in results} - {"random", gpt_examples.TEXT_DATA})
    footer = [f"image data: {', '.join(data)}"] if data else []
    return "\n".join([title, rule, *lines, *footer])


def trace_steps(steps: int) -> list[int]:
    """Steps 1, 2, 5, 10, 20, 50, ... up to ``steps`` (and ``steps`` itself), 1-based."""
    marks, base = [], 1
    while base <= steps:
        marks += [m for m in (base, 2 * base, 5 * base) if m <= steps]
        base *= 10
    return sorted({*marks, steps})


def format_trace(diffs: np.ndarray, label: str) -> str:
    """``label``, then ``max(diffs[:t])`` at steps ``t`` = 1, 2, 5, 10, ..., and the last step."""
    running = np.maximum.accumulate(diffs)
    cells = [f"{t}:{running[t - 1]:.1e}" for t in trace_steps(len(diffs))]
    return f"{label} " + " ".join(cells)
