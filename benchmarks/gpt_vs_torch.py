r"""jaxlr's vectorized GPT sweep against PyTorch: the same width x lr x seed grid, three ways.

Every method trains the decoder-only pre-LN GPT of ``--model gpt`` (:mod:`jaxlr.gpt`; its
PyTorch twin :mod:`torch_parity.torch_gpt`) on the same byte-level corpus (the first
``--corpus-bytes`` of jaxlr's default corpus, the standard library's text, or ``--data-dir``),
with AdamW (betas 0.9/0.999, eps 1e-8, coupled weight decay ``--weight-decay`` on every
parameter, as ``torch.optim.AdamW``) under a warmup-cosine schedule, float32, for every
``(seed, lr)`` run of the grid:

* **(a) jaxlr sweep** -- the sweep's own program: :meth:`jaxlr.engine.RunSpec.create` of a
  ``--model gpt`` :class:`jaxlr.config.SweepConfig`, compiled ahead of time by
  :func:`jaxlr.engine.compile_epoch` (every lane of a width in one jitted, vmapped
  ``lax.scan``), then trained by :func:`jaxlr.training.train_lanes`. Two rows: *compiled*
  (the training alone) and *incl. compile* (plus the compile time, which is also its own
  column).
* **(b) torch, one run at a time** -- the PyTorch way: per run a ``TorchGPT`` twin,
  ``torch.optim.AdamW`` and a ``LambdaLR`` with the same multiplier; per step
  ``zero_grad(set_to_none=True); loss.backward(); optimizer.step(); scheduler.step()``, no
  per-step host sync.
* **(c) torch.func vmap** -- all runs of a width at once:
  ``vmap(vmap(grad_and_value(functional_call)))`` over seeds (each its own batch) and lrs (a
  shared batch, as jaxlr), with a hand-written functional AdamW on the stacked parameters
  (:func:`adamw_step`). Where torch has no batching rule for an op (CPU: the flash attention
  kernel of ``F.scaled_dot_product_attention``) vmap falls back to a loop over the lanes; the
  report says whether it did. ``--no-torch-func`` leaves it out.

**Same runs.** A run is ``--steps`` steps of ``--batch-size`` windows of ``--context + 1``
bytes, drawn at uniform random starts of the training part; every ``--eval-every`` steps every
method evaluates the mean next-byte cross-entropy on the same ``--eval-sequences``
validation windows (jaxlr's ``TextDataset.eval_starts``, checked equal), in chunks of
``2000 // context`` windows. Runs of one seed share their init and batches within a method
(common random numbers); jaxlr draws its own with ``jax.random``, the torch sides with
``torch.Generator(seed)`` (the same batches in (b) and (c), whose final losses are compared).
The schedule is jaxlr's ``warmup-cosine``:

.. math:: s_t = \min\!\big(1, \tfrac{t+1}{W}\big) \;(t < W), \qquad
          s_t = \tfrac12\big(1 + \cos \pi \tfrac{t - W}{T - W}\big) \;(t \ge W),

with :math:`W` = ``round(warmup * T)`` and the step's lr :math:`\eta s_t`.

**One process per framework.** The command starts a child process for jaxlr and one for
PyTorch (``--repeats R``: R of each, alternating, the fastest kept), so that XLA's and torch's
thread pools never compete. Each child uses every core the parent may use, or is pinned to the
first ``--threads N`` of them (``sched_setaffinity`` before the framework starts: XLA sizes its
pool from the mask, torch gets ``torch.set_num_threads(N)``). The parent imports neither
framework.

**FLOPs.** Per step of one run (:func:`flops_per_step`), the usual estimate
:math:`6 P B T + 12 L B T^2 w` (:math:`P` parameters, a tied matrix once: the matmul FLOPs of the
forward and backward passes of every weight, the readout included; plus the attention's
:math:`QK^\top` and :math:`AV`, :math:`2 \cdot 2 T^2 w` per sequence and layer forward, times 3
with the backward, the causal mask not subtracted since both frameworks compute the full
scores); per evaluation the forward third of it for its windows. The ceiling is the faster of
JAX's and torch's best ``n x n`` float32 matmul (``--ceiling-size``, default 2048 on a CPU, 8192
on a GPU), each measured in its own process of the same run. The rate is
``runs * steps / time`` ("runs·steps/s"); ``vs (b)`` is the rate over (b)'s at the same width.

Usage::

    python benchmarks/gpt_vs_torch.py                              # CPU: widths 32,64, minutes
    python benchmarks/gpt_vs_torch.py --repeats 2 --out cpu_gpt_vs_torch.md
    python benchmarks/gpt_vs_torch.py --device gpu --widths 128,256,512,1024 --context 64 \\
        --steps 100 --eval-every 50 --out gpu_gpt_vs_torch.md
    python benchmarks/gpt_vs_torch.py --smoke                      # tiny, for the tests

``--out NAME.md`` writes the markdown table and ``NAME.json`` (a bare file name goes into
``benchmarks/results/``). Bad arguments exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable with PYTHONPATH=. or from anywhere, no install needed
    sys.path.insert(0, str(REPO))

RESULTS_DIR = REPO / "benchmarks" / "results"
EVAL_CHUNK = 2000  # bytes per evaluation chunk: jaxlr.data.EVAL_CHUNK (checked by the jaxlr side)
WARMUP_STEPS = 3  # untimed steps of the torch methods per width before timing
BETAS = (0.9, 0.999)  # AdamW's moment decay rates on every side (jaxlr's default)
EPS = 1e-8  # AdamW's epsilon on every side (jaxlr's and torch's default)
VOCAB = 256  # byte tokens (jaxlr.text.VOCAB)

Method = Literal["jaxlr", "jaxlr_e2e", "torch_loop", "torch_func"]
LABELS: dict[str, str] = {
    "torch_loop": "(b) torch one run at a time",
    "torch_func": "(c) torch.func vmap",
    "jaxlr_e2e": "(a) jaxlr incl. compile",
    "jaxlr": "(a) jaxlr compiled",
}
ORDER = ("torch_loop", "torch_func", "jaxlr_e2e", "jaxlr")


class BenchError(ValueError):
    """A bad setting or a missing device; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time (the resolved command line)."""

    device: Literal["cpu", "gpu"] = "cpu"  # torch on cuda and JAX on its GPU backend for "gpu"
    widths: tuple[int, ...] = (32, 64)  # d_model of each program (multiples of head_dim)
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)  # the inner lane axis
    seeds: int = 2  # seeds 0..K-1 (the outer lane axis)
    depth: int = 2  # transformer blocks
    context: int = 32  # bytes per training window
    head_dim: int = 16  # heads = width / head_dim
    batch_size: int = 16  # windows per step
    steps: int = 100  # optimizer steps of every run
    eval_every: int = 50  # steps between validation evaluations
    eval_sequences: int = 64  # validation windows per evaluation
    warmup: float = 0.1  # warmup steps (a fraction of the steps if below 1)
    weight_decay: float = 0.1  # AdamW's coupled decay (theta -= lr * s_t * wd * theta)
    corpus_bytes: int = 2**20  # the first bytes of jaxlr's default corpus (0: all 8 MiB)
    data_dir: str | None = None  # a text file or directory instead of the default corpus
    torch_func: bool = True  # also time (c)
    autotune: bool = True  # GPU: XLA autotunes jaxlr's kernels (RunSpec's default; seconds each)
    repeats: int = 1  # processes per framework, alternating; the fastest of each kept
    threads: int = 0  # cores of each side's process (pinned; torch threads); 0: all it may use
    ceiling_size: int | None = None  # n of the n x n matmul ceiling (None: 8192 GPU, 2048 CPU)
    out: str | None = None  # markdown file (and .json beside it)
    note: str = ""  # free text for the report (e.g. the machine's conditions)
    smoke: bool = False  # the tiny shapes of --smoke

    @property
    def lanes(self) -> int:
        """Runs per width."""
        return self.seeds * len(self.lrs)

    @property
    def evals(self) -> int:
        """Validation evaluations per run."""
        return self.steps // self.eval_every

    @property
    def warmup_steps(self) -> int:
        """:math:`W`: ``--warmup`` in steps (jaxlr's ``registry.warmup_steps``)."""
        return round(self.warmup * self.steps) if self.warmup < 1 else int(self.warmup)

    def run_keys(self) -> list[tuple[int, float]]:
        """``(seed, lr)`` of every run of a width, seeds outer."""
        return [(s, lr) for s in range(self.seeds) for lr in self.lrs]


SMOKE = dict(
    widths=(16, 32), lrs=(1e-3, 1e-2), seeds=2, depth=1, context=8, head_dim=16, batch_size=4,
    steps=6, eval_every=3, eval_sequences=8, warmup=2, corpus_bytes=2**16, ceiling_size=256,
)  # fmt: skip
"""The shapes of ``--smoke``: every path of the benchmark in seconds."""


# --------------------------------------------------------------------------------------------
# the closed forms every side shares


def schedule_multiplier(t: int, total: int, warmup: int) -> float:
    r"""jaxlr's ``warmup-cosine`` multiplier :math:`s_t` at 0-based step ``t`` of ``total``
    (final fraction 0): :math:`\min(1, (t+1)/W)` for :math:`t < W`, then
    :math:`\tfrac12(1 + \cos \pi p)`, :math:`p = \mathrm{clip}((t - W)/(T - W), 0, 1)`."""
    if t < warmup:
        return min(1.0, (t + 1) / warmup)
    p = min(max((t - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * p))


def param_count(width: int, depth: int, context: int, vocab: int = VOCAB) -> int:
    r"""Parameters of the tied GPT: :math:`(V + T) w + L (12 w^2 + 13 w) + 2 w`."""
    return (vocab + context) * width + depth * (12 * width**2 + 13 * width) + 2 * width


def flops_per_step(width: int, depth: int, context: int, batch: int) -> float:
    r"""Training FLOPs of one step of one run: :math:`6 P B T + 12 L B T^2 w` (see the module
    docstring)."""
    p = param_count(width, depth, context)
    return 6.0 * p * batch * context + 12.0 * depth * batch * context**2 * width


def flops_per_eval(width: int, depth: int, context: int, windows: int) -> float:
    r"""FLOPs of one evaluation of ``windows`` windows: :math:`2 P n T + 4 L n T^2 w`."""
    return flops_per_step(width, depth, context, windows) / 3.0


def eval_windows(val_bytes: int, context: int, k: int) -> np.ndarray:
    """The starts of the validation windows evaluated: ``k`` of the non-overlapping windows
    ``0, T, 2T, ...`` (while ``i + T < n``), evenly spaced (all of them if fewer, or ``k = 0``)."""
    starts = np.arange(0, max(0, val_bytes - context), context, dtype=np.int32)
    if k and k < len(starts):
        starts = starts[np.linspace(0, len(starts) - 1, k).round().astype(int)]
    return starts


def eval_chunk(context: int, n: int) -> int:
    """Windows per evaluation chunk: ``max(1, min(2000 // context, n))`` (jaxlr's)."""
    return max(1, min(EVAL_CHUNK // context, n))


def corpus(cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(train bytes, validation bytes, the jaxlr.text.TextCorpus)``: jaxlr's contiguous split
    of the corpus, read with numpy only (no framework imported)."""
    from jaxlr import text

    tokens = text.load_text(cfg.data_dir, max_bytes=cfg.corpus_bytes or None)
    text.check_context(tokens, cfg.context)
    train, val = text.split(tokens.tokens)
    return np.asarray(train), np.asarray(val), tokens


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# the jaxlr side (its own process)


def sweep_config(cfg: BenchConfig) -> Any:
    """The ``--model gpt`` :class:`jaxlr.config.SweepConfig` of the grid (what
    ``python -m jaxlr.sweep --model gpt --optimizer adamw --schedule warmup-cosine ...`` builds)."""
    from jaxlr.config import SweepConfig

    return SweepConfig(
        family="gpt", widths=cfg.widths, depth=cfg.depth, context=cfg.context,
        head_dim=cfg.head_dim, batch_size=cfg.batch_size, steps=cfg.steps,
        eval_every=cfg.eval_every, eval_sequences=cfg.eval_sequences, optimizers=("adamw",),
        weight_decays=(cfg.weight_decay,), betas=BETAS, schedule="warmup-cosine",
        warmup=cfg.warmup, lrs=cfg.lrs, seeds=tuple(range(cfg.seeds)), data_dir=cfg.data_dir,
    )  # fmt: skip


def run_jaxlr(cfg: BenchConfig) -> dict[str, Any]:
    """Compiles and trains every width's lanes with jaxlr's engine; rows and the ceiling."""
    import jax
    import jax.numpy as jnp

    from jaxlr import data as data_lib
    from jaxlr import engine, training

    sweep = sweep_config(cfg)
    train, val, text_corpus = corpus(cfg)
    ds = data_lib.TextDataset(  # what jaxlr.data.load_text_dataset builds, from these bytes
        train, val, cfg.context, cfg.eval_every * cfg.batch_size, text_corpus,
        eval_sequences=cfg.eval_sequences,
    )  # fmt: skip
    if data_lib.EVAL_CHUNK != EVAL_CHUNK:
        raise BenchError(f"jaxlr's EVAL_CHUNK is {data_lib.EVAL_CHUNK}; update EVAL_CHUNK here")
    if not np.array_equal(ds.eval_starts, eval_windows(len(val), cfg.context, cfg.eval_sequences)):
        raise BenchError("jaxlr's validation windows differ from eval_windows(); update it")
    data = data_lib.device_data(ds)
    seeds = list(range(cfg.seeds))
    rows = []
    for w in cfg.widths:
        spec = engine.RunSpec.create(sweep, ds, (w,) * cfg.depth, "adamw")
        spec = dataclasses.replace(spec, autotune=cfg.autotune)
        hypers = engine.lane_hypers(spec, list(cfg.lrs), cfg.weight_decay)
        t0 = time.perf_counter()
        program = engine.compile_epoch(spec, cfg.seeds, len(cfg.lrs), data)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        state, metrics = training.train_lanes(
            spec,
            data,
            seeds,
            hypers,
            cfg.evals,
            epoch_fn=program,  # evaluations = epochs
        )
        jax.block_until_ready(state)
        train_s = time.perf_counter() - t0
        final = np.asarray(metrics["test_loss"][-1], np.float64).ravel()
        rows.append(
            {"width": w, "method": "jaxlr", "time_s": train_s, "compile_s": compile_s,
             "final_val_loss": final.tolist(), "fallback": False}
        )  # fmt: skip
        print(f"  jaxlr width {w}: compile {compile_s:.2f} s, train {train_s:.2f} s", flush=True)
    with jax.default_matmul_precision("highest"):
        n = cfg.ceiling_size or (8192 if cfg.device == "gpu" else 2048)
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        ceiling = _best_time(lambda: jax.block_until_ready(f(a)))
    return {
        "rows": rows,
        "ceiling": {"n": n, "seconds": ceiling, "flops_per_s": 2.0 * n**3 / ceiling},
        "versions": {
            "jax": jax.__version__,
            "jax_device": str(jax.devices()[0]),
            "jax_cores": _cores(),
        },
        "data": {"sha256": text_corpus.sha256, "n_eval": int(ds.n_test)},
    }


def _best_time(fn: Any, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` after one untimed call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------------------------
# the PyTorch side (its own process)


class TorchData(typing.NamedTuple):
    """The corpus as torch tensors, and the validation windows."""

    train: Any  # (n_train,) int64 bytes, on the device
    val_x: tuple[Any, ...]  # chunks of (chunk, T) int64 inputs
    val_y: tuple[Any, ...]  # their next-byte targets
    n_windows: int  # training windows: starts 0 .. n_windows - 1


def torch_data(cfg: BenchConfig, device: Any) -> TorchData:
    """The same bytes and validation windows as jaxlr's (:func:`eval_windows`)."""
    import torch

    train, val, _ = corpus(cfg)
    starts = eval_windows(len(val), cfg.context, cfg.eval_sequences)
    win = torch.from_numpy(val[starts[:, None] + np.arange(cfg.context + 1)].astype(np.int64))
    win = win.to(device)
    chunk = eval_chunk(cfg.context, len(starts))
    return TorchData(
        torch.from_numpy(train.astype(np.int64)).to(device),
        tuple(win[:, :-1].split(chunk)),
        tuple(win[:, 1:].split(chunk)),
        len(train) - cfg.context,
    )


def window_batch(data: TorchData, starts: Any, context: int) -> tuple[Any, Any]:
    """Inputs and targets ``(..., T)`` of the windows at ``starts`` (``x = s[i:i+T]``,
    ``y = s[i+1:i+T+1]``), gathered on the device."""
    import torch

    idx = starts[..., None] + torch.arange(context + 1, device=starts.device)
    w = data.train[idx]
    return w[..., :-1], w[..., 1:]


def _twin(cfg: BenchConfig, width: int, seed: int, device: Any) -> Any:
    from torch_parity.torch_gpt import TorchGPT, TwinConfig

    twin = TwinConfig(width=width, depth=cfg.depth, context=cfg.context, head_dim=cfg.head_dim)
    return TorchGPT(twin, seed).to(device)


def _next_byte_loss(logits: Any, y: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _val_loss(forward: Any, data: TorchData) -> Any:
    """Mean next-byte cross-entropy of ``forward`` (logits ``(..., n, T, V)``) over the
    validation windows, kept on the device (shape: the lane axes of the logits)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        total, count = 0.0, 0
        for x, y in zip(data.val_x, data.val_y, strict=True):
            logits = forward(x)
            lanes = logits.shape[:-3]
            ce = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                y.expand(*lanes, *y.shape).reshape(-1),
                reduction="none",
            )
            total = total + ce.reshape(*lanes, -1).sum(-1)
            count += y.numel()
        return total / count


def train_torch_loop(
    cfg: BenchConfig, width: int, data: TorchData, device: Any, runs: list, steps: int
) -> tuple[float, list[float]]:
    """(b) Each run alone: the twin, ``torch.optim.AdamW`` and ``LambdaLR``; seconds of
    training and evaluation (model construction excluded) and each run's final val loss."""
    import torch

    total_s, finals = 0.0, []
    for seed, lr in runs:
        model = _twin(cfg, width, seed, device)
        opt = torch.optim.AdamW(
            model.parameters(), lr=lr, betas=BETAS, eps=EPS, weight_decay=cfg.weight_decay
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: schedule_multiplier(t, cfg.steps, cfg.warmup_steps)
        )
        gen = torch.Generator().manual_seed(seed)
        _sync(device)
        t0 = time.perf_counter()
        val = None
        for t in range(steps):
            starts = torch.randint(
                0, data.n_windows, (cfg.batch_size,), generator=gen, device="cpu"
            )
            x, y = window_batch(data, starts.to(device), cfg.context)
            loss = _next_byte_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if (t + 1) % cfg.eval_every == 0:
                model.eval()
                val = float(_val_loss(model, data))  # one host sync per evaluation
                model.train()
        _sync(device)
        total_s += time.perf_counter() - t0
        finals.append(math.nan if val is None else val)
    return total_s, finals


def adamw_step(params: dict, grads: dict, m: dict, v: dict, lr: Any, step: int, wd: float) -> None:
    r"""One AdamW step in place on stacked parameters (``torch.optim.AdamW``'s update):

    .. math::
       m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
       v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \\
       \theta &\leftarrow \theta (1 - \eta_t \lambda) - \eta_t \frac{m / (1 - \beta_1^k)}
       {\sqrt{v / (1 - \beta_2^k)} + \epsilon}

    with :math:`k` = ``step`` (1-based) and :math:`\eta_t` = ``lr`` (per lane, broadcast
    against each leaf's trailing axes)."""
    b1, b2 = BETAS
    c1, c2 = 1.0 - b1**step, 1.0 - b2**step
    for k, g in grads.items():
        m[k].mul_(b1).add_(g, alpha=1.0 - b1)
        v[k].mul_(b2).addcmul_(g, g, value=1.0 - b2)
        eta = lr[k]
        params[k].mul_(1.0 - eta * wd)
        params[k].sub_(eta / c1 * m[k] / ((v[k] / c2).sqrt_().add_(EPS)))


def train_torch_func(
    cfg: BenchConfig, width: int, data: TorchData, device: Any, runs: list, steps: int
) -> tuple[float, list[float]]:
    """(c) Every run of a width at once (seeds outer with their own batches, lrs inner with a
    shared batch); seconds of training and evaluation, and each run's final val loss."""
    import copy

    import torch
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    seeds = sorted({s for s, _ in runs})
    lrs = [lr for s, lr in runs if s == seeds[0]]
    n_s, n_l = len(seeds), len(lrs)
    models = [_twin(cfg, width, s, device) for s in seeds for _ in lrs]
    stacked, _ = stack_module_state(models)
    params = {k: p.detach().reshape(n_s, n_l, *p.shape[1:]).clone() for k, p in stacked.items()}
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    lr_t = torch.tensor(lrs, dtype=torch.float32, device=device)

    def loss_fn(p: dict, x: Any, y: Any) -> Any:
        return _next_byte_loss(functional_call(base, p, (x,)), y)

    grad_step = vmap(vmap(grad_and_value(loss_fn), in_dims=(0, None, None)), in_dims=(0, 0, 0))
    forward = vmap(vmap(lambda p, x: functional_call(base, p, (x,)), (0, None)), (0, None))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    finals = torch.full((n_s, n_l), math.nan, device="cpu")
    _sync(device)
    t0 = time.perf_counter()
    for t in range(steps):
        starts = torch.stack([
            torch.randint(0, data.n_windows, (cfg.batch_size,), generator=g, device="cpu")
            for g in gens
        ])  # fmt: skip
        x, y = window_batch(data, starts.to(device), cfg.context)  # (S, B, T)
        grads, _ = grad_step(params, x, y)
        eta = lr_t * schedule_multiplier(t, cfg.steps, cfg.warmup_steps)
        views = {k: eta.reshape(1, n_l, *([1] * (p.dim() - 2))) for k, p in params.items()}
        with torch.no_grad():
            adamw_step(params, grads, m, v, views, t + 1, cfg.weight_decay)
        if (t + 1) % cfg.eval_every == 0:
            finals = _val_loss(lambda x: forward(params, x), data).cpu()  # one host sync
    _sync(device)
    return time.perf_counter() - t0, [float(f) for f in finals.reshape(-1)]


def run_torch(cfg: BenchConfig) -> dict[str, Any]:
    """Times (b) and (c) at every width after an untimed warm-up; rows and the ceiling."""
    import torch

    device = torch.device("cuda" if cfg.device == "gpu" else "cpu")
    if cfg.device == "gpu" and not torch.cuda.is_available():
        raise BenchError("--device gpu: torch sees no CUDA GPU; use --device cpu")
    threads = cfg.threads or _cores()
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")
    data = torch_data(cfg, device)
    runs = cfg.run_keys()
    rows = []
    fallback = False  # torch warns once per process: a fallback of one width holds for all
    # the twin makes its position indices with torch.arange(t): on the device's default
    with torch.device(device):
        for w in cfg.widths:
            warm = min(WARMUP_STEPS, cfg.steps)
            train_torch_loop(cfg, w, data, device, runs[:1], warm)
            t, finals = train_torch_loop(cfg, w, data, device, runs, cfg.steps)
            rows.append({"width": w, "method": "torch_loop", "time_s": t,
                         "final_val_loss": finals, "fallback": False})  # fmt: skip
            print(f"  torch one run at a time, width {w}: {t:.2f} s", flush=True)
            if not cfg.torch_func:
                continue
            with warnings.catch_warnings(record=True) as caught:  # vmap's loop fallback
                warnings.simplefilter("always")
                train_torch_func(cfg, w, data, device, runs, warm)
            fallback = any("batching rule" in str(c.message) for c in caught) or fallback
            t, finals = train_torch_func(cfg, w, data, device, runs, cfg.steps)
            rows.append({"width": w, "method": "torch_func", "time_s": t,
                         "final_val_loss": finals, "fallback": fallback})  # fmt: skip
            print(f"  torch.func width {w}: {t:.2f} s (loop fallback: {fallback})", flush=True)
    n = cfg.ceiling_size or (8192 if cfg.device == "gpu" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    ceiling = _best_time(lambda: (torch.mm(a, a), _sync(device)))
    return {
        "rows": rows,
        "ceiling": {"n": n, "seconds": ceiling, "flops_per_s": 2.0 * n**3 / ceiling},
        "data": {"n_eval": sum(len(x) for x in data.val_x)},
        "versions": {
            "torch": torch.__version__,
            "torch_device": str(device) + (f" ({torch.cuda.get_device_name()})"
                                           if device.type == "cuda" else ""),
            "torch_threads": threads,
        },
    }  # fmt: skip


WORKERS = {"jaxlr": run_jaxlr, "torch": run_torch}


def pin_cores(threads: int) -> list[int]:
    """Restricts this process to the first ``threads`` cores it may use (all for 0), before a
    framework starts its thread pool: XLA sizes its pool from the affinity mask, torch gets
    ``torch.set_num_threads`` of the same number. Returns the cores."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    cores = sorted(os.sched_getaffinity(0))
    if 0 < threads < len(cores):
        cores = cores[:threads]
        os.sched_setaffinity(0, cores)
    return cores


def worker_main(side: str, config_path: str, result_path: str) -> int:
    """A child process: runs one framework's side of ``config_path``'s grid, writes its JSON."""
    cfg = config_from_record(json.loads(Path(config_path).read_text()))
    pin_cores(cfg.threads)  # before JAX or torch is imported
    try:
        result = WORKERS[side](cfg)
    except BenchError as e:
        print(f"python benchmarks/gpt_vs_torch.py: error: {e}", file=sys.stderr)
        return 2
    Path(result_path).write_text(json.dumps(result))
    return 0


def config_from_record(rec: dict[str, Any]) -> BenchConfig:
    """A :class:`BenchConfig` from its ``dataclasses.asdict`` (lists back to tuples)."""
    rec = {k: tuple(v) if isinstance(v, list) else v for k, v in rec.items()}
    return BenchConfig(**rec)


# --------------------------------------------------------------------------------------------
# the parent: one process per side, then the report


def _child(side: str, cfg: BenchConfig, tmp: Path, log: Any) -> dict[str, Any]:
    """Runs side ``side`` in a fresh process; its result (raises :class:`BenchError`)."""
    config, result = tmp / "config.json", tmp / f"{side}.json"
    config.write_text(json.dumps(dataclasses.asdict(cfg)))
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if cfg.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side]
    cmd += ["--worker-config", str(config), "--worker-result", str(result)]
    t0 = time.perf_counter()
    with (tmp / f"{side}.err").open("w+") as err:  # a file: a full pipe would block the child
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in p.stdout:  # the child's progress, as it comes
            log(line.rstrip("\n"))
        rc = p.wait()
        err.seek(0)
        tail = (err.read().strip().splitlines() or ["(no output)"])[-1]
    if rc != 0 or not result.exists():
        raise BenchError(f"the {side} process failed (exit {rc}): {tail}")
    out = json.loads(result.read_text())
    out["process_s"] = time.perf_counter() - t0
    return out


def run_benchmark(cfg: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Runs the sides ``cfg.repeats`` times each (alternating processes); the result record."""
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    best: dict[tuple[int, str], dict[str, Any]] = {}
    ceilings: dict[str, dict] = {}
    versions: dict[str, Any] = {}
    process_s: dict[str, list[float]] = {"jaxlr": [], "torch": []}
    n_eval: set[int] = set()  # validation windows per evaluation, as each side counted them
    with tempfile.TemporaryDirectory(prefix="gpt-vs-torch-") as tmp:
        for r in range(cfg.repeats):
            for side in ("jaxlr", "torch"):
                log(f"{side} process ({r + 1}/{cfg.repeats})")
                out = _child(side, cfg, Path(tmp), log)
                process_s[side].append(out["process_s"])
                versions.update(out["versions"])
                c = out["ceiling"]
                if side not in ceilings or c["seconds"] < ceilings[side]["seconds"]:
                    ceilings[side] = c
                n_eval.add(out["data"]["n_eval"])
                for row in out["rows"]:  # the fastest time and, apart, the fastest compile
                    key = (row["width"], row["method"])
                    compile_s = min(
                        row.get("compile_s", 0.0), best.get(key, row).get("compile_s", 0.0)
                    )
                    if key not in best or row["time_s"] < best[key]["time_s"]:
                        best[key] = row
                    if "compile_s" in row:
                        best[key]["compile_s"] = compile_s
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_name(),
        "cores": _cores(),
        "load_average": load_start,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        **versions,
        "process_s": process_s,
        "ceilings": ceilings,
    }
    if len(n_eval) != 1:
        raise BenchError(f"the sides evaluated different numbers of windows: {sorted(n_eval)}")
    env["n_eval"] = n_eval.pop()
    return {"config": dataclasses.asdict(cfg), "environment": env,
            "rows": table_rows(cfg, best, ceilings, env["n_eval"])}  # fmt: skip


def table_rows(
    cfg: BenchConfig, best: dict[tuple[int, str], dict], ceilings: dict[str, dict], n_eval: int
) -> list[dict[str, Any]]:
    """One row per width and method (jaxlr twice), with rates, ratios and the FLOP share;
    then an "all" row per method summing the widths."""
    ceiling = max(c["flops_per_s"] for c in ceilings.values())
    rows = []
    for w in [*cfg.widths, "all"]:
        widths = cfg.widths if w == "all" else (w,)
        flops = sum(
            cfg.lanes * cfg.steps * flops_per_step(x, cfg.depth, cfg.context, cfg.batch_size)
            + cfg.lanes * cfg.evals
            * flops_per_eval(x, cfg.depth, cfg.context, n_eval)
            for x in widths
        )  # fmt: skip
        times: dict[str, tuple[float, float | None]] = {}
        losses: dict[str, list[float]] = {}
        fallback: dict[str, bool] = {}
        for method in ("torch_loop", "torch_func", "jaxlr"):
            got = [best.get((x, method)) for x in widths]
            if any(g is None for g in got):
                continue
            t = sum(g["time_s"] for g in got)
            c = sum(g["compile_s"] for g in got) if method == "jaxlr" else None
            times[method] = (t, c)
            losses[method] = [v for g in got for v in g["final_val_loss"]]
            fallback[method] = any(g["fallback"] for g in got)
        if "jaxlr" in times:
            t, c = times["jaxlr"]
            times["jaxlr_e2e"] = (t + c, c)
            losses["jaxlr_e2e"] = losses["jaxlr"]
            fallback["jaxlr_e2e"] = False
        run_steps = len(widths) * cfg.lanes * cfg.steps
        base = times.get("torch_loop", (None, None))[0]
        for method in ORDER:
            if method not in times:
                continue
            t, c = times[method]
            finite = [v for v in losses[method] if math.isfinite(v)]
            rows.append({
                "width": w, "method": method, "label": LABELS[method], "lanes": cfg.lanes,
                "steps": cfg.steps, "run_steps": run_steps, "time_s": t,
                "compile_s": c if method == "jaxlr_e2e" else None,
                "runs_steps_per_s": run_steps / t,
                "vs_b": (base / t) if base else None,
                "flops_per_s": flops / t, "share_of_ceiling": flops / t / ceiling,
                "final_val_loss_mean": float(np.mean(finite)) if finite else math.nan,
                "final_val_loss": losses[method], "vmap_fallback": fallback[method],
            })  # fmt: skip
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def b_vs_c_diff(result: dict[str, Any]) -> float | None:
    """The largest ``|final val loss (b) - (c)|`` over the runs (the same init, batches and
    update in exact arithmetic), or None without (c)."""
    rows = {(r["width"], r["method"]): r for r in result["rows"] if r["width"] != "all"}
    diffs = []
    for (w, method), r in rows.items():
        if method == "torch_func" and (w, "torch_loop") in rows:
            a = np.asarray(rows[w, "torch_loop"]["final_val_loss"])
            b = np.asarray(r["final_val_loss"])
            ok = np.isfinite(a) & np.isfinite(b)
            diffs.append(float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else math.nan)
    return max(diffs) if diffs else None


def markdown_table(result: dict[str, Any]) -> str:
    """The table: width, method, rate, time, compile, vs (b), GFLOP/s, share, final loss."""
    lines = [
        "| width | method | runs·steps/s | time (s) | compile (s) | vs (b) | GFLOP/s | share of "
        "ceiling | final val loss |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        mark = " †" if r["vmap_fallback"] else ""
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else ""
        vs = f"{r['vs_b']:.2f}x" if r["vs_b"] is not None else ""
        lines.append(
            f"| {r['width']} | {r['label']}{mark} | {r['runs_steps_per_s']:,.0f} | "
            f"{r['time_s']:.2f} | {comp} | {vs} | {_sig(r['flops_per_s'] / 1e9)} | "
            f"{_sig(100 * r['share_of_ceiling'])}% | {r['final_val_loss_mean']:.3f} |"
        )
    return "\n".join(lines)


def _sig(x: float) -> str:
    """``x`` to 3 significant digits, without an exponent (``0.0123``, ``45.6``, ``1,234``)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"


def markdown_report(result: dict[str, Any]) -> str:
    """The whole report: conditions, the table, and what its columns mean."""
    cfg = config_from_record(result["config"])
    env = result["environment"]
    ceil = env["ceilings"]

    def loads(v: Any) -> str:
        return "/".join(f"{x:.1f}" for x in v) if v else "n/a"

    diff = b_vs_c_diff(result)
    lines = [
        f"# jaxlr GPT sweep vs PyTorch ({cfg.device}{', smoke' if cfg.smoke else ''})",
        "",
        f"- Date: {env['date']}; device: {env['cpu']}; {env['cores']} cores; each side's process "
        f"on {env.get('jax_cores')} (JAX) / {env.get('torch_threads')} (torch, "
        "`torch.set_num_threads`) of them; load average at start "
        f"{loads(env['load_average'])}, at the end {loads(env['load_average_end'])} "
        "(1, 5, 15 min).",
        f"- jax {env.get('jax')} ({env.get('jax_device')}), torch {env.get('torch')} "
        f"({env.get('torch_device')}); float32, matmul precision `highest` on both; one process "
        f"per framework, {cfg.repeats} of each (alternating), the fastest kept"
        + (f"; XLA autotuning {'on' if cfg.autotune else 'off'}." if cfg.device == "gpu" else "."),
        f"- Grid: GPT (tied, pre-LN, GELU MLP 4w, SP init std 0.02), depth {cfg.depth}, "
        f"context {cfg.context}, head size {cfg.head_dim}; widths "
        f"{', '.join(map(str, cfg.widths))} x lrs {', '.join(f'{lr:g}' for lr in cfg.lrs)} x "
        f"{cfg.seeds} seed(s) = {cfg.lanes} runs per width; batch {cfg.batch_size} windows; "
        f"{cfg.steps} steps per run, AdamW (wd {cfg.weight_decay:g}), warmup-cosine "
        f"({cfg.warmup_steps} warmup steps); validation loss on {cfg.eval_sequences} windows "
        f"every {cfg.eval_every} steps on every side.",
        f"- Data: {'`' + cfg.data_dir + '`' if cfg.data_dir else 'jaxlr default corpus'}, "
        f"first {cfg.corpus_bytes:,} bytes (identical bytes on both sides).",
        f"- FLOP ceiling: JAX {ceil['jaxlr']['flops_per_s'] / 1e9:.1f} GFLOP/s, torch "
        f"{ceil['torch']['flops_per_s'] / 1e9:.1f} GFLOP/s ({ceil['jaxlr']['n']}² float32 "
        "matmul, best of 5 in each process); the share is of the faster.",
        *([f"- Note: {cfg.note}"] if cfg.note else []),
        "",
        markdown_table(result),
        "",
        "runs·steps/s = runs x steps / time (training plus the evaluations); `vs (b)` = rate / "
        "rate of (b) at the same width; GFLOP/s = the model FLOPs estimate "
        "(6·params·tokens + 12·depth·batch·context²·width per step, plus the evaluations' "
        "forward passes) / time; `all` sums the widths. jaxlr compiled excludes its compile "
        "time (column `compile (s)`, `jax.jit(...).lower(...).compile()` of the epoch program, "
        "init included); the torch methods run an untimed warm-up of "
        f"{WARMUP_STEPS} steps per width, and their model construction is not timed."
        + (" † torch.func's vmap had no batching rule for an op (the CPU flash attention of "
           "`scaled_dot_product_attention`) and looped over the lanes there."
           if any(r["vmap_fallback"] for r in result["rows"]) else ""),
    ]  # fmt: skip
    if diff is not None:
        lines.append(
            f"(b) and (c) start from the same init and see the same batches: largest "
            f"|final val loss (b) - (c)| = {diff:.2g}."
        )
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out: str) -> tuple[Path, Path]:
    """Writes ``out`` (markdown) and the JSON beside it; a bare name goes to results/."""
    path = Path(out)
    if path.parent == Path():
        path = RESULTS_DIR / path
    if path.suffix != ".md":
        path = path.with_name(path.name + ".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_report(result))
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    return path, json_path


# --------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`BenchError` (one line, exit 2)."""

    def error(self, message: str) -> typing.NoReturn:
        raise BenchError(message)


def _parser() -> argparse.ArgumentParser:
    """The benchmark's argument table (``--worker ...``: a child process's, hidden)."""
    from jaxlr.cli import parse_floats, parse_ints  # no framework imported

    d = BenchConfig()
    p = _Parser(
        prog="python benchmarks/gpt_vs_torch.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--widths", type=parse_ints, help=f"d_model values (default {d.widths})")
    p.add_argument("--lrs", type=parse_floats, help=f"learning rates (default {d.lrs})")
    p.add_argument("--seeds", type=int, help=f"seeds per lr (default {d.seeds})")
    p.add_argument("--depth", type=int, help=f"blocks (default {d.depth})")
    p.add_argument("--context", type=int, help=f"bytes per window (default {d.context})")
    p.add_argument("--head-dim", type=int, help=f"head size (default {d.head_dim})")
    p.add_argument("--batch-size", type=int, help=f"windows per step (default {d.batch_size})")
    p.add_argument("--steps", type=int, help=f"steps per run (default {d.steps})")
    p.add_argument("--eval-every", type=int, help=f"steps between evaluations ({d.eval_every})")
    p.add_argument("--eval-sequences", type=int, help=f"windows evaluated ({d.eval_sequences})")
    p.add_argument("--warmup", type=float, help=f"warmup steps or fraction (default {d.warmup})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW decay (default {d.weight_decay})")
    p.add_argument("--corpus-bytes", type=int, help=f"corpus bytes (default {d.corpus_bytes})")
    p.add_argument("--data-dir", help="a text file or directory instead of the default corpus")
    p.add_argument(
        "--torch-func", action=argparse.BooleanOptionalAction, default=True,
        help="time (c), the torch.func ensemble (default: on)",
    )  # fmt: skip
    p.add_argument(
        "--autotune", action=argparse.BooleanOptionalAction, default=True,
        help="GPU: let XLA autotune jaxlr's kernels (compile seconds; the sweep tunes only "
        "programs that train long enough to pay it back); default: on",
    )  # fmt: skip
    p.add_argument("--repeats", type=int, default=1, help="processes per framework, alternating")
    p.add_argument(
        "--threads", type=int, default=0,
        help="pin each side's process to this many cores (torch threads too); default: all",
    )  # fmt: skip
    p.add_argument("--ceiling-size", type=int, help="n of the n x n float32 matmul ceiling")
    p.add_argument("--smoke", action="store_true", help="tiny shapes (seconds), for the tests")
    p.add_argument("--note", default="", help="a note for the report (machine conditions)")
    p.add_argument("--out", help="markdown file; a .json is written beside it")
    p.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    p.add_argument("--worker-result", help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """The command line as a validated :class:`BenchConfig` (raises :class:`BenchError`)."""
    a = _parser().parse_args(argv)
    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    given = {k: v for k, v in vars(a).items() if k in fields and v is not None}
    base = dict(SMOKE) if a.smoke else {}
    cfg = BenchConfig(**{**base, **given})
    for name, v, low in (
        ("--seeds", cfg.seeds, 1), ("--depth", cfg.depth, 1), ("--context", cfg.context, 1),
        ("--head-dim", cfg.head_dim, 1), ("--batch-size", cfg.batch_size, 1),
        ("--steps", cfg.steps, 1), ("--eval-every", cfg.eval_every, 1),
        ("--eval-sequences", cfg.eval_sequences, 1), ("--repeats", cfg.repeats, 1),
        ("--threads", cfg.threads, 0), ("--corpus-bytes", cfg.corpus_bytes, 0),
        ("--ceiling-size", cfg.ceiling_size or 1, 1),
    ):  # fmt: skip
        if v < low:
            raise BenchError(f"{name} must be at least {low}, got {v}")
    if not cfg.widths or any(w < 1 or w % cfg.head_dim for w in cfg.widths):
        raise BenchError(
            f"--widths must be positive multiples of the head size {cfg.head_dim}, got {cfg.widths}"
        )
    if not cfg.lrs or any(not lr > 0 for lr in cfg.lrs):
        raise BenchError(f"--lrs must be positive, got {cfg.lrs}")
    if cfg.steps % cfg.eval_every:
        raise BenchError(
            f"--steps ({cfg.steps}) must be a multiple of --eval-every ({cfg.eval_every}), as "
            "in the sweep"
        )
    if cfg.warmup < 0 or cfg.warmup_steps > cfg.steps:
        raise BenchError(f"--warmup {cfg.warmup:g} must be between 0 and --steps {cfg.steps}")
    if cfg.weight_decay < 0:
        raise BenchError(f"--weight-decay must be >= 0, got {cfg.weight_decay}")
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv``, runs the benchmark, prints the table (and writes ``--out``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = _parser().parse_args(argv)
        if a.worker:
            return worker_main(a.worker, a.worker_config, a.worker_result)
        cfg = parse_args(argv)
        result = run_benchmark(cfg)
    except BenchError as e:
        print(f"python benchmarks/gpt_vs_torch.py: error: {e}", file=sys.stderr)
        return 2
    print()
    print(markdown_report(result))
    if cfg.out:
        md, js = write_report(result, cfg.out)
        print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
