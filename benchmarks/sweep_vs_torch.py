"""jaxlr's vectorized sweep against PyTorch: the same width x learning-rate grid, four ways.

Every method trains the MLP ``784-w-w-10`` of the Fashion-MNIST width experiment (ReLU,
cross-entropy, plain SGD, batch 64, PyTorch's default init) on the same synthetic data
(``jaxlr.data.load_dataset("synthetic")``: 60,000 x 784 float32 Gaussian inputs, 10 random
classes, 10,000 test examples), for every learning rate (and seed) of the grid, in one process:

* **(a) torch DataLoader** -- the experiment's own loop: one run at a time, a
  ``DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)`` over host tensors (each batch
  moved to the device), ``optimizer.zero_grad(); loss.backward(); optimizer.step()`` and a
  ``loss.item()`` per step.
* **(b) torch in-memory** -- one run at a time, data pre-made on the device, batches gathered
  by a per-epoch permutation, no ``DataLoader`` and no per-step host sync.
* **(c) jaxlr sweep** -- :func:`jaxlr.engine.train_lanes`: every (seed, lr) lane of a width in
  one jitted, vmapped ``lax.scan`` program. Reported twice: end to end including compilation,
  and compiled (steady state); the difference is the compile time.
* **(d) torch.func ensemble** -- ``stack_module_state`` + ``vmap(grad_and_value(
  functional_call))`` over all lanes (seeds outer, lrs inner, sharing each seed's batch as jaxlr
  does), manual SGD update per lr, data on the device: the strongest plain-PyTorch way.
  On by default with ``--device gpu``, opt-in (``--torch-func``) on the CPU.

jaxlr's programs are built from the library's own options: ``--batch-size``, ``--precision``,
``--sgd-update`` and ``--deterministic`` are the sweep's flags (generated from
:class:`jaxlr.config.TrainOptions` by :func:`jaxlr.cli.add_option_flags`), and each jaxlr
program is :meth:`jaxlr.engine.RunSpec.create` of those options, as in the sweep. PyTorch's
matmul precision follows jaxlr's: ``highest`` -> float32 (``"highest"``), ``high`` and
``default`` -> TF32 (``"high"``). ``--compare OPTION=VALUE`` (repeatable) re-runs jaxlr's
programs with one library option changed (``precision=default``, ``sgd-update=folded``,
``no-deterministic``) and reports their time and final-loss drift against the first run; the
precision each program was compiled with is read back from its lowered HLO and reported.

Steps are counted per run. A run of ``--steps N`` is ``E = ceil(N / S)`` epochs of
``S = min(N, n_train // 64)`` steps (N is rounded up to whole epochs); after every epoch each
method evaluates the loss and accuracy on the full test set (jaxlr's ``train_lanes`` always
does, so the PyTorch sides do too, at the same frequency, in chunks of 2,000). The rate is
``runs * steps / time`` ("runs·steps/s"); speed-ups are rate ratios. Before timing, each
PyTorch method runs a short untimed warm-up at each width (allocator, BLAS and kernel caches).

``--workload fashion-width-sgd`` is the Fashion-MNIST width grid end to end (its shapes, on
synthetic data): widths 64/256/1024 x 8 lrs x 3 seeds x 50 epochs of 937 steps, compile
included. jaxlr runs all of it; the PyTorch baselines run ``--baseline-steps`` steps of every
run (default one epoch on a GPU) and their full-workload time is extrapolated from the measured
time per step and per evaluation. It also times a large float32 matmul on the device (the FLOP
ceiling), reports the share of it that each width's program reaches (matmul FLOPs only:
forward, weight gradients and input gradients of layers 2..L, plus the per-epoch test-set
forward passes), and trains the whole grid as one program.

Usage::

    python benchmarks/sweep_vs_torch.py                      # CPU, ~3-5 min on 2 cores
    python benchmarks/sweep_vs_torch.py --torch-func --out cpu_sweep_vs_torch.md
    python benchmarks/sweep_vs_torch.py --device gpu --out gpu_sweep_vs_torch.md
    python benchmarks/sweep_vs_torch.py --device gpu --workload fashion-width-sgd \\
        --compare precision=default --compare sgd-update=folded --out gpu_fashion_width_sgd.md
    python benchmarks/sweep_vs_torch.py --workload fashion-width-sgd --epochs 1 --baseline-steps 50

``--out NAME.md`` writes the markdown table and ``NAME.json`` (a bare file name goes into
``benchmarks/results/``). Bad arguments exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable with PYTHONPATH=. or from anywhere, no install needed
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
LRS: tuple[float, ...] = (1.0, 0.5, 0.1, 0.05, 0.01, 1e-3, 1e-4, 1e-5)
from jaxlr.cli import add_option_flags, given_options, parse_floats, parse_ints  # noqa: E402
from jaxlr.config import GROUPS, ConfigError, TrainOptions  # noqa: E402
from jaxlr.data import EVAL_CHUNK  # noqa: E402  (test examples per forward pass, both sides)
from jaxlr.results import atomic_write  # noqa: E402

WARMUP_STEPS = 3  # untimed steps per PyTorch method and width before timing
WORKLOADS = ("grid", "fashion-width-sgd")
# the library's options that shape the benchmark's jaxlr programs (flags generated from
# TrainOptions); the rest of TrainOptions (init, rate rules, muP, ...) would leave the workload
# that PyTorch trains, so the benchmark keeps their defaults
OPTION_FLAGS = ("batch_size", "precision", "sgd_update", "deterministic")
COMPARABLE = ("precision", "sgd_update", "deterministic")  # what --compare may change

Method = Literal["torch_dataloader", "torch_memory", "torch_func", "jaxlr_e2e", "jaxlr"]
LABELS: dict[str, str] = {
    "torch_dataloader": "(a) torch DataLoader",
    "torch_memory": "(b) torch in-memory",
    "jaxlr_e2e": "(c) jaxlr incl. compile",
    "jaxlr": "(c) jaxlr compiled",
    "torch_func": "(d) torch.func vmap",
}
BASELINES: dict[str, str] = {"a": "torch_dataloader", "b": "torch_memory", "d": "torch_func"}


class BenchError(ValueError):
    """A bad setting or a missing device; the message says how to fix it."""


def torch_precision(precision: str) -> str:
    """``torch.set_float32_matmul_precision`` matching jaxlr's ``--precision``: ``highest``
    (full float32) -> ``"highest"``; ``high`` and ``default`` (TF32 on a GPU's matmul units)
    -> ``"high"``."""
    return "highest" if precision == "highest" else "high"


class Variant(NamedTuple):
    """A ``--compare`` item: jaxlr's programs again with some library options changed."""

    label: str  # as given, e.g. "precision=default"
    changes: dict[str, Any]  # TrainOptions field -> value


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time (the resolved command line): the benchmark's own knobs, plus the library's
    :class:`TrainOptions` that every jaxlr program is built from."""

    # batch size, precision, SGD step, determinism: the library's options of every jaxlr program
    options: TrainOptions = dataclasses.field(default_factory=TrainOptions)
    device: Literal["cpu", "gpu"] = "cpu"  # torch on cuda and JAX on its GPU backend for "gpu"
    workload: Literal["grid", "fashion-width-sgd"] = "grid"  # a timed grid, or the width grid
    widths: tuple[int, ...] = (64, 256, 1024)  # hidden widths w of 784-w-w-10
    lrs: tuple[float, ...] = LRS  # learning rates (the inner lane axis)
    seeds: int = 1  # seeds 0..K-1 (the outer lane axis): K * len(lrs) runs per width
    steps: int = 150  # SGD steps per run (rounded up to whole epochs); CLI on gpu: 937
    n_train: int = 60_000  # synthetic training examples
    n_test: int = 10_000  # synthetic test examples (evaluated after every epoch)
    features: int = 784
    num_classes: int = 10
    torch_func: bool = False  # also time (d), the torch.func ensemble
    baseline_steps: int | None = None  # steps per run the torch baselines run (None: all)
    variants: tuple[Variant, ...] = ()  # jaxlr re-run with these option changes
    compare_widths: tuple[int, ...] | None = None  # widths the variants re-run (None: all)
    fused: bool = True  # fashion-width-sgd: also train every width in one program
    autotune_widths: tuple[int, ...] | None = None  # widths whose programs XLA autotunes (GPU)
    repeats: int = 1  # timings per method and width, interleaved; the fastest is kept
    threads: int = 0  # torch.set_num_threads; 0: the number of cores this process may use
    ceiling_size: int | None = None  # n of the n x n matmul ceiling (None: 8192 GPU, 2048 CPU)
    out: str | None = None  # markdown file (and .json beside it)
    note: str = ""  # free text for the report (e.g. the machine's conditions)

    @property
    def batch_size(self) -> int:
        """Examples per step (the library's ``--batch-size``)."""
        return self.options.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Steps between test-set evaluations: ``min(steps, n_train // batch_size)``."""
        return min(self.steps, self.n_train // self.batch_size)

    @property
    def epochs(self) -> int:
        """Epochs per run; ``steps`` is rounded up to ``epochs * steps_per_epoch``."""
        return -(-self.steps // self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        """Steps per run actually trained."""
        return self.epochs * self.steps_per_epoch

    @property
    def lanes(self) -> int:
        """Runs per width."""
        return self.seeds * len(self.lrs)

    def variant_widths(self) -> tuple[int, ...]:
        """The widths that ``--compare`` re-runs."""
        if self.compare_widths is None:
            return self.widths
        return tuple(w for w in self.widths if w in self.compare_widths)

    def variant_options(self, v: Variant) -> TrainOptions:
        """The library options of variant ``v``."""
        return dataclasses.replace(self.options, **v.changes)


@dataclasses.dataclass
class Row:
    """One method at one width."""

    width: int
    method: Method  # a key of LABELS
    lanes: int  # runs trained
    steps: int  # steps per run the time stands for
    time_s: float  # wall time for lanes x steps (extrapolated when measured_steps < steps)
    compile_s: float | None = None  # jaxlr: end-to-end minus compiled time
    measured_steps: int | None = None  # steps per run actually timed (extrapolated baselines)
    final_test_loss: list[float] = dataclasses.field(default_factory=list)  # per lane, measured
    hlo_precision: list[str] | None = None  # jaxlr: the dot precisions in the program's HLO

    @property
    def run_steps(self) -> int:
        """Runs x steps."""
        return self.lanes * self.steps

    @property
    def rate(self) -> float:
        """Runs·steps per second."""
        return self.run_steps / self.time_s

    @property
    def extrapolated(self) -> bool:
        """Whether ``time_s`` is extrapolated from fewer steps."""
        return self.measured_steps is not None and self.measured_steps < self.steps

    def record(self) -> dict[str, Any]:
        """The row as a JSON-ready dict."""
        return {
            **dataclasses.asdict(self),
            "label": LABELS[self.method],
            "run_steps": self.run_steps,
            "runs_steps_per_s": self.rate,
            "extrapolated": self.extrapolated,
        }


@dataclasses.dataclass
class BenchResult:
    """Rows plus what the machine and the workload were."""

    config: BenchConfig
    rows: list[Row]
    environment: dict[str, Any]
    workload: dict[str, Any] = dataclasses.field(default_factory=dict)  # fashion-width-sgd extras
    variants: dict[str, Any] = dataclasses.field(default_factory=dict)  # --compare re-runs


# --------------------------------------------------------------------------------------------
# devices and data


class Devices(NamedTuple):
    """The JAX device and the torch device of the run."""

    jax: Any
    torch: Any


def resolve_devices(kind: str) -> Devices:
    """JAX's and torch's device for ``--device kind``; raises :class:`BenchError` if absent."""
    import torch

    if kind == "cpu":
        return Devices(jax.devices("cpu")[0], torch.device("cpu"))
    if kind != "gpu":
        raise BenchError(f"unknown --device {kind!r}; choose cpu or gpu")
    if not torch.cuda.is_available():
        raise BenchError(
            "--device gpu: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "install a CUDA build of torch on a GPU machine, or use --device cpu"
        )
    try:
        gpus = jax.devices("gpu")
    except RuntimeError as e:
        raise BenchError(
            f"--device gpu: JAX has no GPU backend ({e}); install JAX's CUDA build "
            "(pip install -e '.[cuda]'), or use --device cpu"
        ) from None
    return Devices(gpus[0], torch.device("cuda"))


class TorchData(NamedTuple):
    """The dataset for the PyTorch sides (host copies for the DataLoader, device copies else)."""

    x_host: Any  # (n_train, d) float32, CPU
    y_host: Any  # (n_train,) int64, CPU
    x_train: Any  # on the device
    y_train: Any
    x_test: tuple[Any, ...]  # chunks of EVAL_CHUNK on the device
    y_test: tuple[Any, ...]
    n_test: int


def torch_data(ds: Any, device: Any) -> TorchData:
    """``ds`` (a :class:`jaxlr.data.Dataset`) as torch tensors; the same numbers as jaxlr's."""
    import torch

    x_host = torch.from_numpy(np.ascontiguousarray(ds.x_train, np.float32))
    y_host = torch.from_numpy(np.asarray(ds.y_train, np.int64))
    x_test = torch.from_numpy(np.ascontiguousarray(ds.x_test, np.float32)).to(device)
    y_test = torch.from_numpy(np.asarray(ds.y_test, np.int64)).to(device)
    return TorchData(
        x_host,
        y_host,
        x_host.to(device),
        y_host.to(device),
        tuple(x_test.split(EVAL_CHUNK)),
        tuple(y_test.split(EVAL_CHUNK)),
        int(ds.n_test),
    )


# --------------------------------------------------------------------------------------------
# the PyTorch sides


class TorchTiming(NamedTuple):
    """Measured time of a PyTorch method over all lanes of one width."""

    train_s: float  # time in training steps (including data loading)
    eval_s: float  # time in test-set evaluations
    steps: int  # steps per run timed
    evals: int  # evaluations per run timed
    final_test_loss: list[float]  # per lane, at the last evaluation


def torch_mlp(width: int, cfg: BenchConfig, seed: int, device: Any) -> Any:
    """``784-w-w-10`` with ``nn.Linear``'s default init drawn from seed ``seed``."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(cfg.features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, cfg.num_classes),
        )
    return model.to(device)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torch_eval(forward: Callable[[Any], Any], data: TorchData) -> Any:
    """Mean test cross-entropy of ``forward`` (logits ``(..., n, classes)``), kept on device."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        total = 0.0
        for x, y in zip(data.x_test, data.y_test, strict=True):
            logits = forward(x)
            flat = logits.reshape(-1, logits.shape[-1])
            ce = F.cross_entropy(flat, y.expand(*logits.shape[:-1]).reshape(-1), reduction="none")
            total = total + ce.reshape(logits.shape[:-1]).sum(-1)
        return total / data.n_test


def _epoch_schedule(steps: int, steps_per_epoch: int) -> list[int]:
    """Step counts of the epochs of a run of ``steps`` steps (the last may be partial)."""
    full, rest = divmod(steps, steps_per_epoch)
    return [steps_per_epoch] * full + ([rest] if rest else [])


def train_torch_dataloader(
    width: int, cfg: BenchConfig, data: TorchData, device: Any, steps: int, lanes=None
) -> TorchTiming:
    """(a) The experiment's own loop: one run at a time, ``DataLoader`` batches, ``.item()``
    per step."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(data.x_host, data.y_host)
    train_s = eval_s = 0.0
    losses = []
    for seed, lr in lanes or _lanes(cfg):
        model = torch_mlp(width, cfg, seed, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        criterion = nn.CrossEntropyLoss()
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,  # as jaxlr: every step a full batch
            generator=torch.Generator().manual_seed(seed),
        )
        epochs = _epoch_schedule(steps, cfg.steps_per_epoch)
        for n in epochs:
            _sync(device)
            t0 = time.perf_counter()
            model.train()
            running = 0.0
            for xb, yb in itertools.islice(loader, n):
                xb, yb = xb.to(device), yb.to(device)
                optimizer.zero_grad()
                loss = criterion(model(xb), yb)
                loss.backward()
                optimizer.step()
                running += loss.item()
            t1 = time.perf_counter()
            model.eval()
            test_loss = float(_torch_eval(model, data))
            t2 = time.perf_counter()
            train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
        losses.append(test_loss)
    return TorchTiming(train_s, eval_s, steps, len(epochs), losses)


def train_torch_memory(
    width: int, cfg: BenchConfig, data: TorchData, device: Any, steps: int, lanes=None
) -> TorchTiming:
    """(b) One run at a time, data on the device, a permutation per epoch, no per-step sync."""
    import torch
    import torch.nn.functional as F

    train_s = eval_s = 0.0
    losses = []
    n, b = data.x_train.shape[0], cfg.batch_size
    for seed, lr in lanes or _lanes(cfg):
        model = torch_mlp(width, cfg, seed, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        epochs = _epoch_schedule(steps, cfg.steps_per_epoch)
        for n_steps in epochs:
            _sync(device)
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            running = torch.zeros((), device=device)
            for i in range(n_steps):
                idx = perm[i * b : (i + 1) * b]
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                loss.backward()
                optimizer.step()
                running += loss.detach()
            _sync(device)
            t1 = time.perf_counter()
            test_loss = float(_torch_eval(model, data))  # one host sync per epoch
            t2 = time.perf_counter()
            train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
        losses.append(test_loss)
    return TorchTiming(train_s, eval_s, steps, len(epochs), losses)


def train_torch_func(
    width: int, cfg: BenchConfig, data: TorchData, device: Any, steps: int, lanes=None
) -> TorchTiming:
    """(d) All lanes at once: ``vmap`` over seeds (own batches) and lrs (shared batch).

    ``params[k]`` has leading axes ``(S, L)``; one step is
    ``g, loss = vmap(vmap(grad_and_value(loss_fn), (0, None, None)))(params, x, y)`` then
    ``params[k] -= lr[None, :, ...] * g[k]`` in place. Seed ``s``'s lanes start from the same
    init and see the same batches as run ``(s, lr)`` of :func:`train_torch_memory`.
    """
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    lanes = lanes or _lanes(cfg)
    seeds = sorted({s for s, _ in lanes})
    lrs = [lr for s, lr in lanes if s == seeds[0]]
    n_s, n_l = len(seeds), len(lrs)
    models = [torch_mlp(width, cfg, s, device) for s in seeds for _ in lrs]
    stacked, _ = stack_module_state(models)
    params = {k: v.detach().reshape(n_s, n_l, *v.shape[1:]).clone() for k, v in stacked.items()}
    base = copy.deepcopy(models[0]).to("meta")
    lr_t = torch.tensor(lrs, dtype=torch.float32, device=device)
    lr_views = {k: lr_t.reshape(1, n_l, *([1] * (v.dim() - 2))) for k, v in params.items()}

    def loss_fn(p: dict[str, Any], x: Any, y: Any) -> Any:
        return F.cross_entropy(functional_call(base, p, (x,)), y)

    step = vmap(vmap(grad_and_value(loss_fn), in_dims=(0, None, None)), in_dims=(0, 0, 0))
    forward = vmap(vmap(lambda p, x: functional_call(base, p, (x,)), (0, None)), (0, None))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    n, b = data.x_train.shape[0], cfg.batch_size
    train_s = eval_s = 0.0
    epochs = _epoch_schedule(steps, cfg.steps_per_epoch)
    for n_steps in epochs:
        _sync(device)
        t0 = time.perf_counter()
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        running = torch.zeros((n_s, n_l), device=device)
        for i in range(n_steps):
            idx = perms[:, i * b : (i + 1) * b]  # (S, B)
            grads, loss = step(params, data.x_train[idx], data.y_train[idx])
            with torch.no_grad():
                for k, g in grads.items():
                    params[k].sub_(lr_views[k] * g)
            running += loss
        _sync(device)
        t1 = time.perf_counter()
        test_loss = _torch_eval(lambda x: forward(params, x), data).cpu().numpy()
        t2 = time.perf_counter()
        train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
    return TorchTiming(train_s, eval_s, steps, len(epochs), [float(v) for v in test_loss.ravel()])


TORCH_METHODS: dict[str, Callable[..., TorchTiming]] = {
    "torch_dataloader": train_torch_dataloader,
    "torch_memory": train_torch_memory,
    "torch_func": train_torch_func,
}


def _lanes(cfg: BenchConfig) -> list[tuple[int, float]]:
    """``(seed, lr)`` of every run, seeds outer."""
    return [(s, lr) for s in range(cfg.seeds) for lr in cfg.lrs]


def time_torch(
    method: str, width: int, cfg: BenchConfig, data: TorchData, device: Any, warmup: bool = True
) -> tuple[Row, TorchTiming]:
    """Warms ``method`` up (untimed), then times it over every lane of ``width``.

    When ``cfg.baseline_steps`` is below the run length the time is extrapolated as
    ``steps * train_s / measured_steps + epochs * eval_s / measured_evals``.
    """
    fn = TORCH_METHODS[method]
    warm_lanes = [(s, lr) for s, lr in _lanes(cfg) if s == 0][:2]
    if warmup:
        warm_cfg = dataclasses.replace(cfg, steps=min(WARMUP_STEPS, cfg.steps))
        fn(width, warm_cfg, data, device, warm_cfg.total_steps, warm_lanes)
    steps = cfg.total_steps
    measured = min(steps, cfg.baseline_steps or steps)
    timing = fn(width, cfg, data, device, measured)
    if measured == steps:
        total = timing.train_s + timing.eval_s
    else:
        total = steps * timing.train_s / measured + cfg.epochs * timing.eval_s / timing.evals
    row = Row(
        width,
        method,
        cfg.lanes,
        steps,
        total,
        measured_steps=measured,
        final_test_loss=timing.final_test_loss,
    )
    return row, timing


# --------------------------------------------------------------------------------------------
# jaxlr


def jaxlr_spec(width: int, cfg: BenchConfig, ds: Any, options: TrainOptions | None = None) -> Any:
    """The :class:`jaxlr.engine.RunSpec` of width ``width``, built from the library options
    ``options`` (default ``cfg.options``) as the sweep builds it; an epoch is
    ``cfg.steps_per_epoch`` steps, and XLA autotunes its GPU kernels unless ``width`` is left
    out of ``cfg.autotune_widths`` (a program of several widths autotunes when one of them
    does, as in the sweep)."""
    from jaxlr.engine import RunSpec

    spec = RunSpec.create(options or cfg.options, ds, (width, width), "sgd")
    tune = cfg.autotune_widths is None or width in cfg.autotune_widths
    return dataclasses.replace(spec, steps_per_epoch=cfg.steps_per_epoch, autotune=tune)


_DOT_PRECISION = re.compile(r"dot_general[^\n]*?precision = \[(\w+), (\w+)\]")


def hlo_precisions(text: str) -> list[str]:
    """The distinct operand precisions of the matrix products in a lowered program's text
    (``jax.jit(f).lower(...).as_text()``), e.g. ``["HIGHEST"]``; a product without a
    precision attribute counts as ``DEFAULT``."""
    found = set()
    for line in text.splitlines():
        if "dot_general" not in line:
            continue
        m = _DOT_PRECISION.search(line)
        found.update(m.groups() if m else ("DEFAULT",))
    return sorted(found)


def program_precisions(specs: tuple[Any, ...], data: Any, seeds: int, lrs: int) -> list[str]:
    """:func:`hlo_precisions` of the epoch program that trains ``specs`` (one spec: its own
    program; several: them all in one program) for ``seeds x lrs`` lanes each: what the
    benchmark times, lowered again (tracing only, no compilation)."""
    from jaxlr.engine import cached_trainer, group_epoch

    s = jax.ShapeDtypeStruct((seeds,), jnp.int32)
    lr = jax.ShapeDtypeStruct((lrs,), jnp.float32)
    epoch = jax.ShapeDtypeStruct((), jnp.int32)
    states = tuple(cached_trainer(spec).abstract_init(s, lr) for spec in specs)
    if len(specs) == 1:
        lowered = cached_trainer(specs[0]).epoch.lower(states[0], s, lr, epoch, data)
    else:
        n = len(specs)
        lowered = group_epoch(tuple(specs)).lower(states, (s,) * n, (lr,) * n, epoch, data)
    return hlo_precisions(lowered.as_text())


def _timed_training(
    train: Callable[..., tuple[Any, Any]], epochs: int
) -> tuple[Any, Any, float, float, np.ndarray]:
    """Runs ``train(on_epoch=...)`` once, timed: ``(state, metrics, end_to_end_s, compiled_s,
    epoch_s)``. The first call compiles and runs (end to end). The compiled time is the median
    epoch after the first times the epoch count, or, for a one-epoch run, a second (cached)
    call. The precision is the program's own (the engine pins it from the spec)."""
    stamps: list[float] = []
    t0 = time.perf_counter()
    state, metrics = train(on_epoch=lambda *_: stamps.append(time.perf_counter()))
    jax.block_until_ready(state)
    e2e = time.perf_counter() - t0
    epoch_s = np.diff([t0, *stamps])
    if epochs >= 2:
        compiled = float(statistics.median(epoch_s[1:])) * epochs
    else:
        t1 = time.perf_counter()
        jax.block_until_ready(train()[0])
        compiled = time.perf_counter() - t1
    return state, metrics, e2e, compiled, epoch_s


def time_jaxlr(
    width: int, cfg: BenchConfig, data: Any, ds: Any, options: TrainOptions | None = None
) -> tuple[Row, Row, dict[str, Any]]:
    """Times ``train_lanes`` on every lane of ``width`` under ``options`` (default
    ``cfg.options``): end to end, and compiled."""
    from jaxlr import engine

    spec = jaxlr_spec(width, cfg, ds, options)
    seeds, lrs = list(range(cfg.seeds)), list(cfg.lrs)
    train = functools.partial(engine.train_lanes, spec, data, seeds, lrs, cfg.epochs)
    state, metrics, e2e, compiled, epoch_s = _timed_training(train, cfg.epochs)
    hlo = program_precisions((spec,), data, cfg.seeds, len(lrs))
    losses = [float(v) for v in np.asarray(metrics["test_loss"][-1]).ravel()]
    steps = cfg.total_steps
    compile_s = max(e2e - compiled, 0.0)
    e2e_row = Row(width, "jaxlr_e2e", cfg.lanes, steps, e2e, compile_s, steps, losses, hlo)
    row = Row(width, "jaxlr", cfg.lanes, steps, compiled, None, steps, losses, hlo)
    extra = {
        "epoch_s": [float(t) for t in epoch_s],
        "test_loss": np.asarray(metrics["test_loss"]).tolist(),
        "diverged": (~np.asarray(state.alive)).tolist(),
    }
    return e2e_row, row, extra


def time_jaxlr_fused(cfg: BenchConfig, data: Any, ds: Any) -> dict[str, Any]:
    """Every width of the grid in one program (``jaxlr.engine.train_group``, what the sweep
    runs on a single device): end to end, compiled, and each width's final test losses."""
    from jaxlr import engine

    specs = tuple(jaxlr_spec(w, cfg, ds) for w in cfg.widths)
    seeds = (list(range(cfg.seeds)),) * len(specs)
    lrs = (list(cfg.lrs),) * len(specs)
    train = functools.partial(engine.train_group, specs, data, seeds, lrs, cfg.epochs)
    _, metrics, e2e, compiled, _ = _timed_training(train, cfg.epochs)
    return {
        "time_s": e2e,
        "compiled_s": compiled,
        "hlo_precision": program_precisions(specs, data, cfg.seeds, len(cfg.lrs)),
        "test_loss": {str(w): m["test_loss"][-1] for w, m in zip(cfg.widths, metrics, strict=True)},
    }


def retime_jaxlr(
    width: int, cfg: BenchConfig, data: Any, ds: Any, options: TrainOptions | None = None
) -> float:
    """One more (compiled, cached) ``train_lanes`` call of ``width``: its wall time."""
    from jaxlr import engine

    spec = jaxlr_spec(width, cfg, ds, options)
    t0 = time.perf_counter()
    state, _ = engine.train_lanes(spec, data, list(range(cfg.seeds)), list(cfg.lrs), cfg.epochs)
    jax.block_until_ready(state)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# FLOPs


def matmul_flops(cfg: BenchConfig, width: int) -> tuple[float, float]:
    """Matmul FLOPs of ``(one training step, one test-set evaluation)`` of one run.

    With ``M = sum_l fan_in_l * fan_out_l``: a step is ``2 B M`` (forward) ``+ 2 B M`` (weight
    gradients) ``+ 2 B (M - d w)`` (input gradients; layer 1's is not needed); an evaluation is
    ``2 n_test M``. Bias adds, ReLU and the softmax are not counted.
    """
    dims = [cfg.features, width, width, cfg.num_classes]
    m = sum(a * b for a, b in itertools.pairwise(dims))
    b = cfg.batch_size
    return 2.0 * b * (3 * m - dims[0] * dims[1]), 2.0 * cfg.n_test * m


def matmul_ceiling(device: Any, precision: str, n: int | None = None, repeats: int = 10) -> dict:
    """Measured float32 matmul FLOP/s on ``device``: best of ``repeats`` ``(n, n) @ (n, n)``."""
    n = n or (8192 if device.platform == "gpu" else 2048)
    with jax.default_device(device), jax.default_matmul_precision(precision):
        ka, kb = jax.random.split(jax.random.PRNGKey(0))
        a = jax.random.normal(ka, (n, n), jnp.float32)
        b = jax.random.normal(kb, (n, n), jnp.float32)
        f = jax.jit(lambda a, b: a @ b)
        jax.block_until_ready(f(a, b))
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(a, b))
            best = min(best, time.perf_counter() - t0)
    return {"n": n, "precision": precision, "seconds": best, "flops_per_s": 2.0 * n**3 / best}


# --------------------------------------------------------------------------------------------
# the benchmark


def environment(cfg: BenchConfig, devices: Devices, threads: int) -> dict[str, Any]:
    """Versions, devices and thread counts, for the report."""
    import torch

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_name(),
        "cores": _cores(),
        "torch_threads": threads,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "jax_device": str(devices.jax),
        "torch_device": str(devices.torch),
        "precision": cfg.options.precision,
        "torch_matmul_precision": torch_precision(cfg.options.precision),
    }
    if devices.torch.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(devices.torch)
    return env


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_benchmark(cfg: BenchConfig, *, log: Callable[[str], None] = print) -> BenchResult:
    """Times every method at every width of ``cfg`` in this process; returns the rows."""
    import torch

    devices = resolve_devices(cfg.device)
    old_threads, old_prec = torch.get_num_threads(), torch.get_float32_matmul_precision()
    threads = cfg.threads or _cores()
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(torch_precision(cfg.options.precision))
    try:
        env = environment(cfg, devices, threads)
        log(
            f"device {cfg.device}: jax {env['jax_device']}, torch {env['torch_device']}"
            f"{' (' + env['gpu'] + ')' if 'gpu' in env else ''}; torch.set_num_threads({threads})"
            f" ({env['cores']} cores); matmul precision {cfg.options.precision} (torch "
            f"{env['torch_matmul_precision']})"
        )
        ds, jdata, tdata, env["data_to_device_s"] = _benchmark_data(cfg, devices, log)
        log(
            f"grid: widths {list(cfg.widths)} x {len(cfg.lrs)} lrs x {cfg.seeds} seed(s) = "
            f"{cfg.lanes} runs per width; {cfg.total_steps} steps per run ({cfg.epochs} epoch(s)"
            f" of {cfg.steps_per_epoch}, test-set evaluation after each), batch {cfg.batch_size}"
        )
        rows: list[Row] = []
        jax_extra: dict[str, Any] = {}
        for width in cfg.widths:
            rows += _time_width(width, cfg, devices, (ds, jdata, tdata), jax_extra, log)
        if hasattr(os, "getloadavg"):
            env["load_average_end"] = list(os.getloadavg())
        result = BenchResult(cfg, rows, env)
        for v in cfg.variants:
            result.variants[v.label] = _variant_run(
                v, cfg, rows, devices, jdata, ds, jax_extra, log
            )
        if cfg.workload == "fashion-width-sgd":
            result.workload = workload_extras(cfg, rows, devices, jdata, ds, jax_extra, log)
        return result
    finally:
        torch.set_num_threads(old_threads)
        torch.set_float32_matmul_precision(old_prec)


def _benchmark_data(
    cfg: BenchConfig, devices: Devices, log: Callable[[str], None]
) -> tuple[Any, Any, Any, float]:
    """The synthetic dataset, on the JAX and the torch device; returns (ds, jax, torch, secs)."""
    from jaxlr.data import device_data, load_dataset

    ds = load_dataset(
        "synthetic",
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        features=cfg.features,
        num_classes=cfg.num_classes,
    )
    with jax.default_device(devices.jax):
        t0 = time.perf_counter()
        jdata = jax.block_until_ready(device_data(ds))
        tdata = torch_data(ds, devices.torch)
        _sync(devices.torch)
        data_s = time.perf_counter() - t0
    log(
        f"data: synthetic {cfg.n_train:,} x {cfg.features} train, {cfg.n_test:,} test, "
        f"{cfg.num_classes} classes; on the devices in {data_s:.2f} s"
    )
    return ds, jdata, tdata, data_s


def _time_width(
    width: int,
    cfg: BenchConfig,
    devices: Devices,
    data: tuple[Any, Any, Any],
    jax_extra: dict[str, Any],
    log: Callable[[str], None],
) -> list[Row]:
    """Every method at one width, repeats interleaved; each method's fastest repeat is kept."""
    ds, jdata, tdata = data
    methods = ["torch_dataloader", "torch_memory"] + (["torch_func"] if cfg.torch_func else [])
    best: dict[str, Row] = {}
    for rep in range(cfg.repeats):
        tag = f" (repeat {rep + 1}/{cfg.repeats})" if cfg.repeats > 1 else ""
        for method in methods:
            row, timing = time_torch(method, width, cfg, tdata, devices.torch, warmup=rep == 0)
            log(_progress_line(row, timing) + tag)
            if method not in best or row.time_s < best[method].time_s:
                best[method] = row
        with jax.default_device(devices.jax):
            if rep == 0:
                e2e, row, extra = time_jaxlr(width, cfg, jdata, ds)
                best["jaxlr_e2e"], best["jaxlr"] = e2e, row
                jax_extra[str(width)] = extra
                log(_progress_line(e2e) + tag)
            else:
                row = dataclasses.replace(best["jaxlr"], time_s=retime_jaxlr(width, cfg, jdata, ds))
                best["jaxlr"] = min(best["jaxlr"], row, key=lambda r: r.time_s)
            log(_progress_line(row) + tag)
    e2e = best["jaxlr_e2e"]
    e2e.compile_s = max(e2e.time_s - best["jaxlr"].time_s, 0.0)
    return [best[m] for m in (*methods, "jaxlr_e2e", "jaxlr")]


def _final_loss_drift(loss: Any, ref: Any) -> dict[str, Any]:
    """How far the final test losses ``loss`` are from ``ref`` (same runs), over the runs
    finite in both: the largest absolute and relative difference (None if there is none), and
    how many runs were compared."""
    loss, ref = np.asarray(loss), np.asarray(ref)
    both = np.isfinite(loss) & np.isfinite(ref)
    diff = np.abs(loss - ref)[both]
    rel = diff / np.abs(ref[both])
    return {
        "max_abs_final_test_loss_diff": float(diff.max()) if diff.size else None,
        "max_rel_final_test_loss_diff": float(rel.max()) if diff.size else None,
        "finite_runs": int(both.sum()),
        "runs": int(loss.size),
    }


def _variant_run(
    v: Variant,
    cfg: BenchConfig,
    rows: list[Row],
    devices: Devices,
    jdata: Any,
    ds: Any,
    jax_extra: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """jaxlr's programs again under variant ``v`` (``--compare``), at ``cfg.variant_widths()``:
    per width the time end to end and compiled (fastest of ``cfg.repeats``), the ratio of the
    compiled times to the first run's, the precision in the program's HLO, and the final test
    losses' largest difference from the first run on the runs finite under both. A variant of
    another precision also measures the matmul ceiling at that precision and each width's
    share of it."""
    options = cfg.variant_options(v)
    ceiling = None
    if options.precision != cfg.options.precision:
        ceiling = matmul_ceiling(devices.jax, options.precision, cfg.ceiling_size)
    per_width = {}
    for w in cfg.variant_widths():
        with jax.default_device(devices.jax):
            e2e, row, extra = time_jaxlr(w, cfg, jdata, ds, options)
            compiled = row.time_s
            for _ in range(cfg.repeats - 1):
                compiled = min(compiled, retime_jaxlr(w, cfg, jdata, ds, options))
        base = {r.method: r for r in rows if r.width == w}
        ref = np.asarray(jax_extra[str(w)]["test_loss"][-1])
        per_width[str(w)] = {
            "time_s": e2e.time_s,
            "compiled_s": compiled,
            "compiled_vs_base": compiled / base["jaxlr"].time_s,
            "base_compiled_s": base["jaxlr"].time_s,
            "steps_per_s": row.run_steps / compiled,
            "hlo_precision": row.hlo_precision,
            **_final_loss_drift(extra["test_loss"][-1], ref),
        }
        if ceiling is not None:
            step_f, eval_f = matmul_flops(cfg, w)
            flops = row.lanes * (row.steps * step_f + cfg.epochs * eval_f)
            per_width[str(w)]["share_of_ceiling"] = flops / compiled / ceiling["flops_per_s"]
        r = per_width[str(w)]
        log(
            f"{v.label}: width {w}: {compiled:.3f} s compiled vs {base['jaxlr'].time_s:.3f} s "
            f"(x{r['compiled_vs_base']:.2f}); HLO precision {'/'.join(row.hlo_precision or [])}"
            f"; max |d final test loss| {r['max_abs_final_test_loss_diff']}"
        )
    return {
        "changes": v.changes,
        "options": dataclasses.asdict(options),
        "ceiling": ceiling,
        "widths": per_width,
        "total_s": sum(r["time_s"] for r in per_width.values()),
        "compiled_total_s": sum(r["compiled_s"] for r in per_width.values()),
    }


def _variant_lines(result: BenchResult) -> list[str]:
    """The report's section on the ``--compare`` re-runs."""
    cfg = result.config
    lines: list[str] = []
    for label, v in result.variants.items():
        ceiling = v["ceiling"]
        lines += [
            "",
            f"## jaxlr with `{label}` (against `{_options_label(cfg.options)}` above)",
            "",
            *(
                [f"Matmul ceiling at `{ceiling['precision']}`: "
                 f"{ceiling['flops_per_s'] / 1e12:.2f} TFLOP/s.", ""]
                if ceiling
                else []
            ),
            "| width | compiled (s) | first run compiled (s) | ratio | incl. compile (s) | "
            "HLO precision | max abs diff final test loss (finite runs) |"
            + (" share of ceiling |" if ceiling else ""),
            "|---:|---:|---:|---:|---:|:---|---:|" + ("---:|" if ceiling else ""),
        ]  # fmt: skip
        for w, r in v["widths"].items():
            d = r["max_abs_final_test_loss_diff"]
            lines.append(
                f"| {w} | {_secs(r['compiled_s'])} | {_secs(r['base_compiled_s'])} | "
                f"{r['compiled_vs_base']:.2f} | {_secs(r['time_s'])} | "
                f"{'/'.join(r['hlo_precision'] or [])} | "
                f"{'n/a' if d is None else f'{d:.2g}'} ({r['finite_runs']}/{r['runs']}) |"
                + (f" {100 * r['share_of_ceiling']:.1f}% |" if ceiling else "")
            )
    return lines


def _options_label(o: TrainOptions) -> str:
    return (
        f"precision={o.precision}, sgd-update={o.sgd_update}"
        f"{'' if o.deterministic else ', no-deterministic'}"
    )


def workload_extras(
    cfg: BenchConfig,
    rows: list[Row],
    devices: Devices,
    jdata: Any,
    ds: Any,
    jax_extra: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The Fashion-MNIST width grid's extras: totals, the FLOP ceiling and each program's share
    of it, the grid as one program, targets."""
    ceiling = matmul_ceiling(devices.jax, cfg.options.precision, cfg.ceiling_size)
    log(
        f"matmul ceiling ({ceiling['n']}^2 float32, precision {ceiling['precision']}): "
        f"{ceiling['flops_per_s'] / 1e12:.2f} TFLOP/s"
    )
    totals = {}
    for method in LABELS:
        mrows = [r for r in rows if r.method == method]
        if mrows:
            t = sum(r.time_s for r in mrows)
            totals[method] = {"time_s": t, "runs_steps_per_s": sum(r.run_steps for r in mrows) / t}
    flops = {}
    for r in rows:
        if r.method in ("jaxlr", "jaxlr_e2e"):
            step_f, eval_f = matmul_flops(cfg, r.width)
            total_f = r.lanes * (r.steps * step_f + cfg.epochs * eval_f)
            flops.setdefault(str(r.width), {})[r.method] = {
                "flops": total_f,
                "flops_per_s": total_f / r.time_s,
                "share_of_ceiling": total_f / r.time_s / ceiling["flops_per_s"],
            }
    base_loss = {str(w): np.asarray(jax_extra[str(w)]["test_loss"][-1]) for w in cfg.widths}
    fused = _fused_run(cfg, rows, devices, jdata, ds, base_loss, log) if cfg.fused else {}
    j = totals.get("jaxlr_e2e", {}).get("time_s")
    targets = {
        "grid_under_60s": j is not None and j < 60.0,
        "at_least_50x_vs_a": _ratio(totals, "jaxlr_e2e", "torch_dataloader", 50.0),
        "ahead_of_torch_func": _ratio(totals, "jaxlr_e2e", "torch_func", 1.0),
    }
    return {
        "ceiling": ceiling,
        "totals": totals,
        "flops": flops,
        "fused": fused,
        "targets": targets,
        "jaxlr_epochs": jax_extra,
    }


def _fused_run(
    cfg: BenchConfig,
    rows: list[Row],
    devices: Devices,
    jdata: Any,
    ds: Any,
    base_loss: dict[str, np.ndarray],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The grid as one program: its times against the separate programs' and the widest's."""
    with jax.default_device(devices.jax):
        f = time_jaxlr_fused(cfg, jdata, ds)
    compiled = {r.width: r.time_s for r in rows if r.method == "jaxlr"}
    diffs = [
        float(np.nanmax(np.abs(np.asarray(f["test_loss"][str(w)]) - base_loss[str(w)]), initial=0))
        for w in cfg.widths
    ]
    out = {
        "time_s": f["time_s"],
        "compiled_s": f["compiled_s"],
        "separate_compiled_s": sum(compiled.values()),
        "widest_compiled_s": compiled[max(compiled)],
        "vs_widest": f["compiled_s"] / compiled[max(compiled)],
        "hlo_precision": f["hlo_precision"],
        "max_abs_final_test_loss_diff": max(diffs),
    }
    log(
        f"all widths in one program: {f['time_s']:.2f} s end to end, {f['compiled_s']:.2f} s "
        f"compiled (separate programs {out['separate_compiled_s']:.2f} s; the widest alone "
        f"{out['widest_compiled_s']:.2f} s: x{out['vs_widest']:.2f}); max |Δ final test loss| "
        f"vs separate {out['max_abs_final_test_loss_diff']:.3g}"
    )
    return out


def _ratio(totals: dict, num: str, den: str, at_least: float) -> bool | None:
    if num not in totals or den not in totals:
        return None
    return totals[num]["runs_steps_per_s"] / totals[den]["runs_steps_per_s"] >= at_least


def _progress_line(row: Row, timing: TorchTiming | None = None) -> str:
    extra = ""
    if timing is not None:
        extra = f" [train {timing.train_s:.2f} s + eval {timing.eval_s:.2f} s"
        extra += f", {timing.steps} steps/run measured]" if row.extrapolated else "]"
    if row.compile_s is not None:
        extra = f" [compile ~{row.compile_s:.2f} s]"
    return (
        f"  w={row.width:<5d} {LABELS[row.method]:<24s} {row.rate:>12,.0f} runs·steps/s "
        f"{row.time_s:>9.2f} s{' (extrapolated)' if row.extrapolated else ''}{extra}"
    )


# --------------------------------------------------------------------------------------------
# the report


def table_rows(result: BenchResult) -> list[dict[str, Any]]:
    """One dict per row with the speed-ups against (a), (b) and (d) at the same width."""
    by = {(r.width, r.method): r for r in result.rows}
    out = []
    for r in result.rows:
        rec = r.record()
        for key, method in BASELINES.items():
            base = by.get((r.width, method))
            rec[f"vs_{key}"] = r.rate / base.rate if base is not None else None
        out.append(rec)
    return out


def markdown_table(result: BenchResult) -> str:
    """The table as GitHub markdown."""
    cols = ["width", "method", "runs·steps/s", "time (s)", "compile (s)", "vs (a)", "vs (b)"]
    has_d = any(r.method == "torch_func" for r in result.rows)
    if has_d:
        cols.append("vs (d)")
    lines = [
        "| " + " | ".join(cols) + " |",
        "|---:|:---|" + "|".join("---:" for _ in cols[2:]) + "|",
    ]
    for rec in table_rows(result):
        time_s = _secs(rec["time_s"]) + (" *" if rec["extrapolated"] else "")
        cells = [
            str(rec["width"]),
            rec["label"],
            f"{rec['runs_steps_per_s']:,.0f}",
            time_s,
            _secs(rec["compile_s"]) if rec["compile_s"] is not None else "",
            _x(rec["vs_a"]),
            _x(rec["vs_b"]),
        ]
        if has_d:
            cells.append(_x(rec["vs_d"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _secs(t: float) -> str:
    return f"{t:.2f}" if t >= 1 else f"{t:.3f}"


def _loads(v: list[float] | None) -> str:
    return "/".join(f"{x:.1f}" for x in v) if v else "n/a"


def _x(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def _workload_lines(w: dict[str, Any]) -> list[str]:
    """The fashion-width-sgd section of the report: totals, FLOP ceiling shares, one program."""
    c = w["ceiling"]
    lines = [
        "",
        "## fashion-width-sgd workload",
        "",
        f"Matmul ceiling: {c['n']}x{c['n']} float32 matmul at precision `{c['precision']}`: "
        f"{c['flops_per_s'] / 1e12:.2f} TFLOP/s.",
        "",
        "| method | total time (s) | runs·steps/s |",
        "|:---|---:|---:|",
    ]
    for method, t in w["totals"].items():
        lines.append(f"| {LABELS[method]} | {t['time_s']:.1f} | {t['runs_steps_per_s']:,.0f} |")
    lines += ["", "| width | jaxlr | matmul TFLOP/s | share of ceiling |", "|---:|:---|---:|---:|"]
    for width, per in w["flops"].items():
        for method, f in per.items():
            lines.append(
                f"| {width} | {LABELS[method]} | {f['flops_per_s'] / 1e12:.2f} | "
                f"{100 * f['share_of_ceiling']:.1f}% |"
            )
    f = w.get("fused")
    if f:
        lines += [
            "",
            f"All widths in one program (as the sweep runs them on one device): "
            f"{f['time_s']:.1f} s end to end, {f['compiled_s']:.1f} s compiled, against "
            f"{f['separate_compiled_s']:.1f} s for the separate programs and "
            f"{f['widest_compiled_s']:.1f} s for the widest alone (x{f['vs_widest']:.2f}); "
            f"max |Δ final test loss| vs the separate programs "
            f"{f['max_abs_final_test_loss_diff']:.3g}.",
        ]
    t = w["targets"]
    lines += [
        "",
        f"Targets: whole grid < 60 s: {t['grid_under_60s']}; >= 50x (a): "
        f"{t['at_least_50x_vs_a']}; ahead of (d): {t['ahead_of_torch_func']}.",
    ]
    return lines


def markdown_report(result: BenchResult) -> str:
    """The full markdown report: conditions, the table, the ``--compare`` re-runs and the
    fashion-width-sgd extras if any."""
    cfg, env = result.config, result.environment
    dev = env.get("gpu", env["cpu"])
    hlo = sorted({p for r in result.rows for p in (r.hlo_precision or [])})
    lines = [
        f"# jaxlr sweep vs PyTorch ({cfg.device}, {cfg.workload})",
        "",
        f"- Date: {env['date']}; device: {dev}; {env['cores']} cores; "
        f"`torch.set_num_threads({env['torch_threads']})`; load average at start "
        f"{_loads(env.get('load_average'))}, at the end {_loads(env.get('load_average_end'))} "
        "(1, 5, 15 min).",
        f"- jax {env['jax']} ({env['jax_device']}), torch {env['torch']} ({env['torch_device']}); "
        f"jaxlr options {_options_label(cfg.options)} (the programs' HLO: "
        f"{'/'.join(hlo) or 'n/a'}); torch matmul precision `{env['torch_matmul_precision']}`.",
        f"- Grid: 784-w-w-10 ReLU MLP, SGD, cross-entropy, torch init; widths "
        f"{', '.join(map(str, cfg.widths))} x lrs {', '.join(f'{lr:g}' for lr in cfg.lrs)} x "
        f"{cfg.seeds} seed(s) = {cfg.lanes} runs per width; batch {cfg.batch_size}; "
        f"{cfg.total_steps} steps per run = {cfg.epochs} epoch(s) of {cfg.steps_per_epoch} "
        f"steps, full test-set evaluation after each epoch on every side.",
        f"- Data: synthetic {cfg.n_train:,} x {cfg.features} float32 Gaussian train, "
        f"{cfg.n_test:,} test, {cfg.num_classes} random classes (identical arrays on all sides).",
        *([f"- Note: {cfg.note}"] if cfg.note else []),
        "",
        markdown_table(result),
        "",
        "runs·steps/s = runs x steps / time; `vs (x)` = rate / rate of (x) at the same width. "
        "PyTorch methods run a short untimed warm-up first; jaxlr's compile (s) = incl. compile "
        "minus compiled."
        + (
            f" Each time is the fastest of {cfg.repeats} interleaved repeats (jaxlr incl. "
            "compile: the first call)."
            if cfg.repeats > 1
            else ""
        ),
    ]
    if any(r.extrapolated for r in result.rows):
        steps = {r.measured_steps for r in result.rows if r.extrapolated}
        lines.append(
            f"`*` extrapolated to the full run from {', '.join(map(str, sorted(steps)))} "
            "measured steps per run (time per step and per evaluation)."
        )
    lines += _variant_lines(result)
    if result.workload:
        lines += _workload_lines(result.workload)
    return "\n".join(lines) + "\n"


def write_report(result: BenchResult, out: str) -> tuple[Path, Path]:
    """Writes ``out`` (markdown) and the JSON beside it; a bare name goes to results/."""
    path = Path(out)
    if path.parent == Path():
        path = RESULTS_DIR / path
    if path.suffix != ".md":
        path = path.with_suffix(path.suffix + ".md") if path.suffix else path.with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    md = markdown_report(result)
    record = {
        "config": dataclasses.asdict(result.config),
        "environment": result.environment,
        "rows": table_rows(result),
        "workload": result.workload,
        "variants": result.variants,
    }
    json_path = path.with_suffix(".json")
    _atomic_write(path, md)
    _atomic_write(json_path, json.dumps(record, indent=1, default=_json_default) + "\n")
    return path, json_path


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic | np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v)}")


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


# --------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`BenchError` (one line, exit 2)."""

    def error(self, message: str) -> typing.NoReturn:
        raise BenchError(message)


def _parser() -> argparse.ArgumentParser:
    """The benchmark's argument table: its own knobs, then the library's option flags."""
    p = _Parser(
        prog="python benchmarks/sweep_vs_torch.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="grid",
        help="grid: time --steps steps per run; fashion-width-sgd: the Fashion-MNIST width grid "
        "end to end (3 widths x 8 lrs x 3 seeds x 50 epochs of 937 steps), baselines "
        "extrapolated",
    )
    p.add_argument("--widths", type=parse_ints, help="hidden widths (default 64,256,1024)")
    p.add_argument(
        "--steps", type=int, help="steps per run (grid default: 150 on cpu, 937 = an epoch on gpu)"
    )
    p.add_argument("--epochs", type=int, help="fashion-width-sgd: epochs (default 50)")
    p.add_argument("--lrs-count", type=int, help="first K of 1,.5,.1,.05,.01,1e-3,1e-4,1e-5")
    p.add_argument(
        "--lrs", type=parse_floats, help="explicit learning rates (overrides --lrs-count)"
    )
    p.add_argument("--seeds", type=int, help="seeds per lr (grid default 1, fashion-width-sgd 3)")
    p.add_argument("--n-train", type=int, default=60_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument(
        "--torch-func",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time (d), the torch.func ensemble (default: on for --device gpu, off on cpu)",
    )
    p.add_argument(
        "--baseline-steps",
        type=int,
        help="steps per run the torch baselines run; the rest is extrapolated "
        "(fashion-width-sgd default: one epoch on gpu, 50 on cpu; grid default: all)",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="re-run jaxlr's programs with one of the options below changed and compare speed "
        "and final losses, e.g. precision=default, sgd-update=folded, no-deterministic "
        "(repeatable: one re-run each)",
    )
    p.add_argument(
        "--compare-widths",
        type=parse_ints,
        help="the widths --compare re-runs (default: every width)",
    )
    p.add_argument(
        "--fused",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fashion-width-sgd: also train every width in one program (default: on)",
    )
    p.add_argument(
        "--autotune-widths",
        type=parse_ints,
        help="GPU: the widths whose programs XLA autotunes (seconds of compile each; the sweep "
        "tunes only programs that train long enough to pay it back); default: every width",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time every method R times per width, interleaved, and keep each one's fastest "
        "(damps the noise of a shared machine)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument(
        "--ceiling-size", type=int, help="n of the timed n x n float32 matmul (FLOP ceiling)"
    )
    p.add_argument("--note", default="", help="a note for the report (machine conditions)")
    p.add_argument("--out", help="markdown file; a .json is written beside it")
    g = p.add_argument_group(
        "jaxlr's options (the sweep's own flags; PyTorch's matmul precision follows --precision)"
    )
    add_option_flags(dict.fromkeys(GROUPS, g), TrainOptions, only=OPTION_FLAGS)
    return p


def _options(given: dict[str, Any]) -> TrainOptions:
    """The library options ``given``, validated by :class:`TrainOptions` itself."""
    try:
        return TrainOptions(**given)
    except ConfigError as e:
        raise BenchError(str(e)) from None


def parse_variant(item: str) -> Variant:
    """A ``--compare`` item as a :class:`Variant`: ``OPTION=VALUE`` or a boolean's
    ``[no-]OPTION``, parsed by the library's own flag for ``OPTION`` (``--OPTION=VALUE``)."""
    p = _Parser(prog="--compare", add_help=False)
    names = add_option_flags(p, TrainOptions, only=COMPARABLE)
    try:
        changes = given_options(p.parse_args(["--" + item.strip()]), names)
    except BenchError as e:
        raise BenchError(
            f"--compare {item!r}: {e}; give one of "
            f"{', '.join(n.replace('_', '-') for n in COMPARABLE)} as OPTION=VALUE "
            "(booleans: deterministic / no-deterministic)"
        ) from None
    return Variant(item.strip(), changes)


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """The command line as a validated :class:`BenchConfig` (raises :class:`BenchError`)."""
    a = _parser().parse_args(argv)
    options = _options(given_options(a, OPTION_FLAGS))
    variants = tuple(parse_variant(item) for item in a.compare)
    for v in variants:
        _options({**dataclasses.asdict(options), **v.changes})
        if all(getattr(options, k) == val for k, val in v.changes.items()):
            raise BenchError(f"--compare {v.label} changes nothing: it is the first run's option")
    if len({tuple(sorted(v.changes.items())) for v in variants}) != len(variants):
        raise BenchError("--compare is given the same change twice; give each once")
    if a.compare_widths is not None and not a.compare:
        raise BenchError("--compare-widths only applies with --compare; remove it")
    if a.lrs:
        lrs = a.lrs
    else:
        k = a.lrs_count if a.lrs_count is not None else len(LRS)
        if k < 1:
            raise BenchError(f"--lrs-count must be at least 1, got {k}")
        lrs = LRS[:k] if k <= len(LRS) else tuple(float(v) for v in np.geomspace(1.0, 1e-5, k))
    if any(not lr > 0 for lr in lrs):
        raise BenchError(f"learning rates must be positive, got {lrs}")
    steps_per_epoch = a.n_train // options.batch_size
    if a.workload == "fashion-width-sgd":
        if a.steps is not None:
            raise BenchError(
                "--workload fashion-width-sgd runs whole epochs; use --epochs, not --steps"
            )
        epochs = a.epochs if a.epochs is not None else 50
        steps = epochs * steps_per_epoch
        seeds = a.seeds if a.seeds is not None else 3
        baseline = a.baseline_steps
        if baseline is None:
            baseline = steps_per_epoch if a.device == "gpu" else min(50, steps_per_epoch)
    else:
        if a.epochs is not None:
            raise BenchError("--epochs is for --workload fashion-width-sgd; use --steps for grid")
        if not a.fused:
            raise BenchError("--no-fused is for --workload fashion-width-sgd; remove it")
        default_steps = steps_per_epoch if a.device == "gpu" else BenchConfig.steps
        steps = a.steps if a.steps is not None else default_steps
        seeds = a.seeds if a.seeds is not None else 1
        baseline = a.baseline_steps
    cfg = BenchConfig(
        options=options,
        device=a.device,
        workload=a.workload,
        widths=a.widths or BenchConfig.widths,
        lrs=tuple(lrs),
        seeds=seeds,
        steps=steps,
        n_train=a.n_train,
        n_test=a.n_test,
        torch_func=a.torch_func if a.torch_func is not None else a.device == "gpu",
        baseline_steps=baseline,
        variants=variants,
        compare_widths=a.compare_widths,
        fused=a.fused,
        autotune_widths=a.autotune_widths,
        repeats=a.repeats,
        threads=a.threads,
        ceiling_size=a.ceiling_size,
        out=a.out,
        note=a.note,
    )
    for name, v, low in (
        ("--steps/--epochs", cfg.steps, 1),
        ("--seeds", cfg.seeds, 1),
        ("--n-test", cfg.n_test, 1),
        ("--threads", cfg.threads, 0),
        ("--repeats", cfg.repeats, 1),
        ("--baseline-steps", cfg.baseline_steps or 1, 1),
        ("--ceiling-size", cfg.ceiling_size or 1, 1),
    ):
        if v < low:
            raise BenchError(f"{name} must be at least {low}, got {v}")
    if not cfg.widths or any(w < 1 for w in cfg.widths):
        raise BenchError(f"--widths must be positive integers, got {cfg.widths}")
    if cfg.compare_widths is not None and not cfg.variant_widths():
        raise BenchError(f"--compare-widths {cfg.compare_widths} names none of --widths")
    if cfg.n_train < cfg.batch_size:
        raise BenchError(f"--n-train {cfg.n_train} is smaller than one batch of {cfg.batch_size}")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv``, runs the benchmark, prints the table (and writes ``--out``)."""
    # leave GPU memory for torch when JAX shares the GPU (read when JAX's backend starts)
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    try:
        cfg = parse_args(argv)
        result = run_benchmark(cfg)
    except BenchError as e:
        print(f"python benchmarks/sweep_vs_torch.py: error: {e}", file=sys.stderr)
        return 2
    print()
    print(markdown_report(result))
    if cfg.out:
        md, js = write_report(result, cfg.out)
        print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
