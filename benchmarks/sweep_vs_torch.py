"""jaxlr's vectorized sweep against PyTorch: the same width x learning-rate grid, four ways.

Every method trains the seed-001 MLP ``784-w-w-10`` (ReLU, cross-entropy, plain SGD, batch 64,
PyTorch's default init) on the same synthetic data (``jaxlr.data.load_dataset("synthetic")``:
60,000 x 784 float32 Gaussian inputs, 10 random classes, 10,000 test examples), for every
learning rate (and seed) of the grid, in one process:

* **(a) torch DataLoader** -- the seed's way: one run at a time, a
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

Steps are counted per run. A run of ``--steps N`` is ``E = ceil(N / S)`` epochs of
``S = min(N, n_train // 64)`` steps (N is rounded up to whole epochs); after every epoch each
method evaluates the loss and accuracy on the full test set (jaxlr's ``train_lanes`` always
does, so the PyTorch sides do too, at the same frequency, in chunks of 2,000). The rate is
``runs * steps / time`` ("runs·steps/s"); speed-ups are rate ratios. Before timing, each
PyTorch method runs a short untimed warm-up at each width (allocator, BLAS and kernel caches).

``--workload seed-001`` (issue 6, part 5) is the seed-001 grid end to end: widths 64/256/1024 x
8 lrs x 3 seeds x 50 epochs of 937 steps, compile included. jaxlr runs all of it; the PyTorch
baselines run ``--baseline-steps`` steps of every run (default one epoch on a GPU) and their
full-workload time is extrapolated from the measured time per step and per evaluation. It also
times a large float32 matmul on the device (the FLOP ceiling) and reports the share of it that
the 1024 bucket reaches (matmul FLOPs only: forward, weight gradients and input gradients of
layers 2..L, plus the per-epoch test-set forward passes).

Usage::

    python benchmarks/sweep_vs_torch.py                      # CPU, ~3-5 min on 2 cores
    python benchmarks/sweep_vs_torch.py --torch-func --out cpu_sweep_vs_torch.md
    python benchmarks/sweep_vs_torch.py --device gpu --out gpu_sweep_vs_torch.md
    python benchmarks/sweep_vs_torch.py --device gpu --workload seed-001 --out gpu_seed001.md
    python benchmarks/sweep_vs_torch.py --workload seed-001 --epochs 1 --baseline-steps 50

``--out NAME.md`` writes the markdown table and ``NAME.json`` (a bare file name goes into
``benchmarks/results/``).
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
PRECISIONS: tuple[str, ...] = ("highest", "high", "default", "tensorfloat32", "bfloat16")
# jax.default_matmul_precision -> torch.set_float32_matmul_precision
TORCH_PRECISION = {
    "highest": "highest",
    "float32": "highest",
    "high": "high",
    "default": "high",
    "tensorfloat32": "high",
    "bfloat16": "medium",
}
from jaxlr.cli import parse_floats, parse_ints  # noqa: E402
from jaxlr.config import SgdUpdate  # noqa: E402
from jaxlr.data import EVAL_CHUNK  # noqa: E402  (test examples per forward pass, both sides)
from jaxlr.results import atomic_write  # noqa: E402

SGD_UPDATES: tuple[str, ...] = typing.get_args(SgdUpdate)
WARMUP_STEPS = 3  # untimed steps per PyTorch method and width before timing

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


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time (the resolved command line)."""

    device: Literal["cpu", "gpu"] = "cpu"  # torch on cuda and JAX on its GPU backend for "gpu"
    workload: Literal["grid", "seed-001"] = "grid"  # a timed grid, or issue 6's seed-001 workload
    widths: tuple[int, ...] = (64, 256, 1024)  # hidden widths w of 784-w-w-10
    lrs: tuple[float, ...] = LRS  # learning rates (the inner lane axis)
    seeds: int = 1  # seeds 0..K-1 (the outer lane axis): K * len(lrs) runs per width
    steps: int = 150  # SGD steps per run (rounded up to whole epochs); CLI on gpu: 937
    batch_size: int = 64
    n_train: int = 60_000  # synthetic training examples
    n_test: int = 10_000  # synthetic test examples (evaluated after every epoch)
    features: int = 784
    num_classes: int = 10
    torch_func: bool = False  # also time (d), the torch.func ensemble
    baseline_steps: int | None = None  # steps per run the torch baselines run (None: all)
    precision: str = "highest"  # jax.default_matmul_precision; torch's matmul precision matches
    extra_precisions: tuple[str, ...] = ()  # seed-001: jaxlr re-run under these (speed, losses)
    sgd_update: str = "generic"  # jaxlr's SGD step (jaxlr.engine._make_step): generic or folded
    extra_updates: tuple[str, ...] = ()  # jaxlr re-run with these SGD steps (speed, losses)
    repeats: int = 1  # timings per method and width, interleaved; the fastest is kept
    threads: int = 0  # torch.set_num_threads; 0: the number of cores this process may use
    ceiling_size: int | None = None  # seed-001: n of the n x n matmul (None: 8192 GPU, 2048 CPU)
    out: str | None = None  # markdown file (and .json beside it)
    note: str = ""  # free text for the report (e.g. the machine's conditions)

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


@dataclasses.dataclass
class Row:
    """One method at one width."""

    width: int
    method: Method  # a key of LABELS
    lanes: int  # runs trained
    steps: int  # steps per run the time stands for
    time_s: float  # wall time for lanes x steps (extrapolated when measured_steps < steps)
    compile_s: float | None = None  # jaxlr: end-to-end minus compiled time
    measured_steps: int | None = None  # steps per run actually timed (baselines of seed-001)
    final_test_loss: list[float] = dataclasses.field(default_factory=list)  # per lane, measured

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
    workload: dict[str, Any] = dataclasses.field(default_factory=dict)  # seed-001 extras
    updates: dict[str, Any] = dataclasses.field(default_factory=dict)  # other SGD steps


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
    """(a) The seed's loop: one run at a time, ``DataLoader`` batches, ``.item()`` per step."""
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


def jaxlr_spec(width: int, cfg: BenchConfig, ds: Any, update: str | None = None) -> Any:
    """The :class:`jaxlr.engine.RunSpec` of width ``width``: an epoch is ``steps_per_epoch``;
    SGD's step is ``update`` (default ``cfg.sgd_update``)."""
    from jaxlr.config import TrainOptions
    from jaxlr.engine import RunSpec

    options = TrainOptions(batch_size=cfg.batch_size, sgd_update=update or cfg.sgd_update)
    spec = RunSpec.create(options, ds, (width, width), "sgd")
    return dataclasses.replace(spec, steps_per_epoch=cfg.steps_per_epoch)


def _timed_training(
    train: Callable[..., tuple[Any, Any]], epochs: int, precision: str
) -> tuple[Any, Any, float, float, np.ndarray]:
    """Runs ``train(on_epoch=...)`` once, timed: ``(state, metrics, end_to_end_s, compiled_s,
    epoch_s)``. The first call compiles and runs (end to end). The compiled time is the median
    epoch after the first times the epoch count, or, for a one-epoch run, a second (cached)
    call."""
    with jax.default_matmul_precision(precision):
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
    width: int, cfg: BenchConfig, data: Any, ds: Any, precision: str, update: str | None = None
) -> tuple[Row, Row, dict[str, Any]]:
    """Times ``train_lanes`` on every lane of ``width``: end to end, and compiled."""
    from jaxlr.engine import train_lanes

    spec = jaxlr_spec(width, cfg, ds, update)
    seeds, lrs = list(range(cfg.seeds)), list(cfg.lrs)
    train = functools.partial(train_lanes, spec, data, seeds, lrs, cfg.epochs)
    state, metrics, e2e, compiled, epoch_s = _timed_training(train, cfg.epochs, precision)
    losses = [float(v) for v in np.asarray(metrics["test_loss"][-1]).ravel()]
    steps = cfg.total_steps
    compile_s = max(e2e - compiled, 0.0)
    e2e_row = Row(width, "jaxlr_e2e", cfg.lanes, steps, e2e, compile_s, steps, losses)
    row = Row(width, "jaxlr", cfg.lanes, steps, compiled, None, steps, losses)
    extra = {
        "epoch_s": [float(t) for t in epoch_s],
        "test_loss": np.asarray(metrics["test_loss"]).tolist(),
        "diverged": (~np.asarray(state.alive)).tolist(),
    }
    return e2e_row, row, extra


def time_jaxlr_fused(cfg: BenchConfig, data: Any, ds: Any, precision: str) -> dict[str, Any]:
    """Every width of the grid in one program (``jaxlr.engine.train_group``, what the sweep
    runs on a single device): end to end, compiled, and each width's final test losses."""
    from jaxlr.engine import train_group

    specs = tuple(jaxlr_spec(w, cfg, ds) for w in cfg.widths)
    seeds = (list(range(cfg.seeds)),) * len(specs)
    lrs = (list(cfg.lrs),) * len(specs)
    train = functools.partial(train_group, specs, data, seeds, lrs, cfg.epochs)
    _, metrics, e2e, compiled, _ = _timed_training(train, cfg.epochs, precision)
    return {
        "time_s": e2e,
        "compiled_s": compiled,
        "test_loss": {str(w): m["test_loss"][-1] for w, m in zip(cfg.widths, metrics, strict=True)},
    }


def retime_jaxlr(
    width: int, cfg: BenchConfig, data: Any, ds: Any, precision: str, update: str | None = None
) -> float:
    """One more (compiled, cached) ``train_lanes`` call of ``width``: its wall time."""
    from jaxlr.engine import train_lanes

    spec = jaxlr_spec(width, cfg, ds, update)
    with jax.default_matmul_precision(precision):
        t0 = time.perf_counter()
        state, _ = train_lanes(spec, data, list(range(cfg.seeds)), list(cfg.lrs), cfg.epochs)
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
        "precision": cfg.precision,
        "torch_matmul_precision": TORCH_PRECISION[cfg.precision],
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
    torch.set_float32_matmul_precision(TORCH_PRECISION[cfg.precision])
    try:
        env = environment(cfg, devices, threads)
        log(
            f"device {cfg.device}: jax {env['jax_device']}, torch {env['torch_device']}"
            f"{' (' + env['gpu'] + ')' if 'gpu' in env else ''}; torch.set_num_threads({threads})"
            f" ({env['cores']} cores); matmul precision {cfg.precision} (torch "
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
        for update in cfg.extra_updates:
            result.updates[update] = _update_run(
                update, cfg, rows, devices, jdata, ds, jax_extra, log
            )
        if cfg.workload == "seed-001":
            result.workload = seed001_extras(cfg, rows, devices, jdata, ds, jax_extra, log)
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
                e2e, row, extra = time_jaxlr(width, cfg, jdata, ds, cfg.precision)
                best["jaxlr_e2e"], best["jaxlr"] = e2e, row
                jax_extra[str(width)] = extra
                log(_progress_line(e2e) + tag)
            else:
                row = dataclasses.replace(
                    best["jaxlr"], time_s=retime_jaxlr(width, cfg, jdata, ds, cfg.precision)
                )
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


def _update_run(
    update: str,
    cfg: BenchConfig,
    rows: list[Row],
    devices: Devices,
    jdata: Any,
    ds: Any,
    jax_extra: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The jaxlr grid again with SGD step ``update``: per width, the time end to end and
    compiled (fastest of ``cfg.repeats``), the ratio to ``cfg.sgd_update``'s, and the final
    test losses' largest difference from it on the runs finite under both."""
    per_width = {}
    for w in cfg.widths:
        with jax.default_device(devices.jax):
            e2e, row, extra = time_jaxlr(w, cfg, jdata, ds, cfg.precision, update)
            compiled = row.time_s
            for _ in range(cfg.repeats - 1):
                compiled = min(compiled, retime_jaxlr(w, cfg, jdata, ds, cfg.precision, update))
        base = {r.method: r for r in rows if r.width == w}
        ref = np.asarray(jax_extra[str(w)]["test_loss"][-1])
        per_width[str(w)] = {
            "time_s": e2e.time_s,
            "compiled_s": compiled,
            "compiled_vs_base": compiled / base["jaxlr"].time_s,
            "base_compiled_s": base["jaxlr"].time_s,
            "steps_per_s": row.run_steps / compiled,
            **_final_loss_drift(extra["test_loss"][-1], ref),
        }
        v = per_width[str(w)]
        log(
            f"sgd update {update}: width {w}: {compiled:.3f} s compiled vs "
            f"{base['jaxlr'].time_s:.3f} s {cfg.sgd_update} (x{v['compiled_vs_base']:.2f}); "
            f"max |d final test loss| {v['max_abs_final_test_loss_diff']}"
        )
    return per_width


def _update_lines(result: BenchResult) -> list[str]:
    """The report's section on the other SGD steps (``--sgd-update``)."""
    cfg = result.config
    lines: list[str] = []
    for update, per_width in result.updates.items():
        lines += [
            "",
            f"## jaxlr with `--sgd-update {update}` (against `{cfg.sgd_update}` above)",
            "",
            f"| width | {update} compiled (s) | {cfg.sgd_update} compiled (s) | ratio | "
            "incl. compile (s) | max abs diff final test loss (finite runs) |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for w, v in per_width.items():
            d = v["max_abs_final_test_loss_diff"]
            lines.append(
                f"| {w} | {_secs(v['compiled_s'])} | {_secs(v['base_compiled_s'])} | "
                f"{v['compiled_vs_base']:.2f} | {_secs(v['time_s'])} | "
                f"{'n/a' if d is None else f'{d:.2g}'} ({v['finite_runs']}/{v['runs']}) |"
            )
    return lines


def _precision_run(
    prec: str,
    cfg: BenchConfig,
    devices: Devices,
    jdata: Any,
    ds: Any,
    base_loss: dict[str, np.ndarray],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The grid again at matmul precision ``prec``: times and final-loss drift per width."""
    per_width = {}
    for w in cfg.widths:
        with jax.default_device(devices.jax):
            e2e, row, extra = time_jaxlr(w, cfg, jdata, ds, prec)
        per_width[str(w)] = {
            "time_s": e2e.time_s,
            "compiled_s": row.time_s,
            **_final_loss_drift(extra["test_loss"][-1], base_loss[str(w)]),
        }
        log(
            f"precision {prec}: width {w}: {e2e.time_s:.2f} s end to end; max |d final test "
            f"loss| vs {cfg.precision}: {per_width[str(w)]['max_abs_final_test_loss_diff']}"
        )
    return {
        "ceiling": matmul_ceiling(devices.jax, prec, cfg.ceiling_size),
        "widths": per_width,
        "total_s": sum(v["time_s"] for v in per_width.values()),
    }


def seed001_extras(
    cfg: BenchConfig,
    rows: list[Row],
    devices: Devices,
    jdata: Any,
    ds: Any,
    jax_extra: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Issue 6 part 5: totals, the FLOP ceiling and its share, extra precisions, targets."""
    ceiling = matmul_ceiling(devices.jax, cfg.precision, cfg.ceiling_size)
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
    fused = _fused_run(cfg, rows, devices, jdata, ds, base_loss, log)
    precisions = {
        prec: _precision_run(prec, cfg, devices, jdata, ds, base_loss, log)
        for prec in cfg.extra_precisions
    }
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
        "precisions": precisions,
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
        f = time_jaxlr_fused(cfg, jdata, ds, cfg.precision)
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


def _workload_lines(w: dict[str, Any], precision: str) -> list[str]:
    """The seed-001 section of the report: totals, FLOP ceiling shares, other precisions."""
    c = w["ceiling"]
    lines = [
        "",
        "## seed-001 workload",
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
    for prec, p in w["precisions"].items():
        lines += [
            "",
            f"Precision `{prec}` (ceiling {p['ceiling']['flops_per_s'] / 1e12:.2f} TFLOP/s): "
            f"jaxlr end to end {p['total_s']:.1f} s.",
        ]
        for width, v in p["widths"].items():
            lines.append(
                f"- width {width}: {v['time_s']:.2f} s; max |Δ final test loss| vs "
                f"`{precision}` {v['max_abs_final_test_loss_diff']} "
                f"(relative {v['max_rel_final_test_loss_diff']})"
            )
    t = w["targets"]
    lines += [
        "",
        f"Targets: whole grid < 60 s: {t['grid_under_60s']}; >= 50x (a): "
        f"{t['at_least_50x_vs_a']}; ahead of (d): {t['ahead_of_torch_func']}.",
    ]
    return lines


def markdown_report(result: BenchResult) -> str:
    """The full markdown report: conditions, the table, and the seed-001 extras if any."""
    cfg, env = result.config, result.environment
    dev = env.get("gpu", env["cpu"])
    lines = [
        f"# jaxlr sweep vs PyTorch ({cfg.device}, {cfg.workload})",
        "",
        f"- Date: {env['date']}; device: {dev}; {env['cores']} cores; "
        f"`torch.set_num_threads({env['torch_threads']})`; load average at start "
        f"{_loads(env.get('load_average'))}, at the end {_loads(env.get('load_average_end'))} "
        "(1, 5, 15 min).",
        f"- jax {env['jax']} ({env['jax_device']}), torch {env['torch']} ({env['torch_device']}); "
        f"matmul precision `{cfg.precision}` (torch `{env['torch_matmul_precision']}`).",
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
    lines += _update_lines(result)
    if result.workload:
        lines += _workload_lines(result.workload, cfg.precision)
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
        "updates": result.updates,
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


def _parser() -> argparse.ArgumentParser:
    """The benchmark's argument table."""
    p = argparse.ArgumentParser(
        prog="python benchmarks/sweep_vs_torch.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--workload",
        choices=("grid", "seed-001"),
        default="grid",
        help="grid: time --steps steps per run; seed-001: the seed-001 grid end to end "
        "(3 widths x 8 lrs x 3 seeds x 50 epochs of 937 steps), baselines extrapolated",
    )
    p.add_argument("--widths", type=parse_ints, help="hidden widths (default 64,256,1024)")
    p.add_argument(
        "--steps", type=int, help="steps per run (grid default: 150 on cpu, 937 = an epoch on gpu)"
    )
    p.add_argument("--epochs", type=int, help="seed-001: epochs (default 50)")
    p.add_argument("--lrs-count", type=int, help="first K of 1,.5,.1,.05,.01,1e-3,1e-4,1e-5")
    p.add_argument(
        "--lrs", type=parse_floats, help="explicit learning rates (overrides --lrs-count)"
    )
    p.add_argument("--seeds", type=int, help="seeds per lr (grid default 1, seed-001 3)")
    p.add_argument("--batch-size", type=int, default=64)
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
        "(seed-001 default: one epoch on gpu, 50 on cpu; grid default: all)",
    )
    p.add_argument(
        "--precision",
        default="highest",
        help="jax.default_matmul_precision (torch matches): highest (float32), high / default / "
        "tensorfloat32 (TF32), bfloat16. seed-001 accepts a list: the first for everything, "
        "the rest re-run jaxlr to compare speed and losses, e.g. highest,tensorfloat32",
    )
    p.add_argument(
        "--sgd-update",
        default="generic",
        help="jaxlr's SGD step (python -m jaxlr.sweep --sgd-update): generic or folded; a list "
        "re-runs jaxlr with the rest and compares speed and final losses, e.g. generic,folded",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="time every method R times per width, interleaved, and keep each one's fastest "
        "(damps the noise of a shared machine)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--ceiling-size", type=int, help="seed-001: n of the timed n x n float32 matmul")
    p.add_argument("--note", default="", help="a note for the report (machine conditions)")
    p.add_argument("--out", help="markdown file; a .json is written beside it")
    return p


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """The command line as a validated :class:`BenchConfig` (raises :class:`BenchError`)."""
    a = _parser().parse_args(argv)

    precisions = tuple(v.strip() for v in a.precision.split(",") if v.strip())
    for prec in precisions:
        if prec not in PRECISIONS:
            raise BenchError(f"unknown --precision {prec!r}; choose from {', '.join(PRECISIONS)}")
    if not precisions:
        raise BenchError("--precision is empty; use e.g. highest")
    if len(precisions) > 1 and a.workload != "seed-001":
        raise BenchError("several --precision values are for --workload seed-001 only")
    updates = tuple(v.strip() for v in a.sgd_update.split(",") if v.strip())
    for update in updates:
        if update not in SGD_UPDATES:
            raise BenchError(
                f"unknown --sgd-update {update!r}; choose from {', '.join(SGD_UPDATES)}"
            )
    if not updates or len(set(updates)) != len(updates):
        raise BenchError(f"--sgd-update needs distinct values, e.g. generic,folded; got {updates}")
    if a.lrs:
        lrs = a.lrs
    else:
        k = a.lrs_count if a.lrs_count is not None else len(LRS)
        if k < 1:
            raise BenchError(f"--lrs-count must be at least 1, got {k}")
        lrs = LRS[:k] if k <= len(LRS) else tuple(float(v) for v in np.geomspace(1.0, 1e-5, k))
    if any(not lr > 0 for lr in lrs):
        raise BenchError(f"learning rates must be positive, got {lrs}")
    steps_per_epoch = a.n_train // max(a.batch_size, 1)
    if a.workload == "seed-001":
        if a.steps is not None:
            raise BenchError("--workload seed-001 runs whole epochs; use --epochs, not --steps")
        epochs = a.epochs if a.epochs is not None else 50
        steps = epochs * steps_per_epoch
        seeds = a.seeds if a.seeds is not None else 3
        baseline = a.baseline_steps
        if baseline is None:
            baseline = steps_per_epoch if a.device == "gpu" else min(50, steps_per_epoch)
    else:
        if a.epochs is not None:
            raise BenchError("--epochs is for --workload seed-001; use --steps for the grid")
        default_steps = steps_per_epoch if a.device == "gpu" else BenchConfig.steps
        steps = a.steps if a.steps is not None else default_steps
        seeds = a.seeds if a.seeds is not None else 1
        baseline = a.baseline_steps
    cfg = BenchConfig(
        device=a.device,
        workload=a.workload,
        widths=a.widths or BenchConfig.widths,
        lrs=tuple(lrs),
        seeds=seeds,
        steps=steps,
        batch_size=a.batch_size,
        n_train=a.n_train,
        n_test=a.n_test,
        torch_func=a.torch_func if a.torch_func is not None else a.device == "gpu",
        baseline_steps=baseline,
        precision=precisions[0],
        extra_precisions=precisions[1:],
        sgd_update=updates[0],
        extra_updates=updates[1:],
        repeats=a.repeats,
        threads=a.threads,
        ceiling_size=a.ceiling_size,
        out=a.out,
        note=a.note,
    )
    for name, v, low in (
        ("--steps/--epochs", cfg.steps, 1),
        ("--seeds", cfg.seeds, 1),
        ("--batch-size", cfg.batch_size, 1),
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
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(markdown_report(result))
    if cfg.out:
        md, js = write_report(result, cfg.out)
        print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
