"""From a config to the units of work: buckets, grid shards and lane chunks.

* A **lane** is one run: (architecture, optimizer, lr, seed).
* A **bucket** holds all lanes that share shapes and optimizer structure: one architecture and
  one optimizer, every lr x seed. It compiles to one program.
* A **chunk** is a rectangle ``seeds x lrs`` of a bucket small enough for the device; chunks of
  the same bucket and shape reuse the compiled program. Lanes are vmapped as ``seeds`` (outer)
  x ``lrs`` (inner), so lanes that differ only in lr share their batch, and the first layer's
  matmul runs once for all of them.
* A **program** trains one chunk, or (:func:`fuse_chunks`, on a single device) several chunks
  of one round together, one step of each per scan step; each chunk's numbers are the same as
  in its own program.
* A **grid shard** ``i/n`` (for spreading a sweep over hosts) runs a subset of the *whole*
  sweep's chunks, unchanged (chunks are dealt to shards longest first, each to the least loaded
  shard). A shard therefore runs exactly the programs, with the same lane grouping and shapes,
  that the unsharded sweep runs for those runs, and the merged shards are byte-identical to it.
  With fewer chunks than shards some shards are empty; ``--max-lanes`` splits buckets into more
  chunks (it is part of the config hash, so the whole sweep and its shards must use the same).

Memory per lane is estimated from the shapes (float32):

``bytes ≈ 4 * [P * (4 + s) + B * A * 3 + E * A]``

where ``P`` is the parameter count, ``s`` the optimizer's state slots per parameter (0 for SGD,
2 for Adam, +1 for AdaGrad rules), ``A`` the sum of layer sizes, ``B`` the batch size and ``E``
the evaluation chunk. The factor 4 on ``P`` covers params, gradients, updates and the
divergence-select copy.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable
from typing import Any

from jaxlr import registry
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import EVAL_CHUNK
from jaxlr.models import layer_sizes


@dataclasses.dataclass(frozen=True)
class Bucket:
    """All lanes of one architecture, optimizer and parametrization that this grid shard runs."""

    hidden: tuple[int, ...]
    optimizer: str
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    parametrization: str = "sp"
    weight_decay: float = 0.0  # a per-lane value: buckets that differ in it share a program

    @property
    def key(self) -> tuple[tuple[int, ...], str, str, float]:
        """What makes the bucket: (hidden, optimizer, parametrization, weight decay)."""
        return (self.hidden, self.optimizer, self.parametrization, self.weight_decay)

    @property
    def program_key(self) -> tuple[tuple[int, ...], str, str]:
        """What makes its compiled program: buckets that differ in weight decay share one."""
        return (self.hidden, self.optimizer, self.parametrization)

    @property
    def n_lanes(self) -> int:
        return len(self.lrs) * len(self.seeds)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A ``seeds x lrs`` rectangle of a bucket, run as one vmapped program."""

    bucket: Bucket
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    round: int = 0  # 0: the grid; k: the k-th refinement round
    lanes_lrs: int = 0  # compile for this many lrs (inert padding lanes), to reuse a program
    autotune: bool = True  # let XLA autotune this chunk's GPU kernels (see autotune_chunks)
    steps_per_call: int = 0  # > 0: its epochs run in device calls of this many steps

    @property
    def n_lanes(self) -> int:
        return len(self.lrs) * len(self.seeds)


def refine_lrs(tested: list[float], best: float) -> tuple[float, ...]:
    """The lrs a refinement round adds around ``best``: half the log spacing to each neighbour.

    With neighbours ``lo < best < hi`` among ``tested``, the new lrs are ``sqrt(lo * best)`` and
    ``sqrt(best * hi)``; at an edge of the tested range the missing side mirrors the other
    (``best * sqrt(best / lo)``), so the search can leave a grid that was too narrow. Values are
    rounded to 6 significant digits; lrs already tested are not repeated.
    """
    lrs = sorted(set(tested))
    k = lrs.index(best)
    lo = lrs[k - 1] if k > 0 else None
    hi = lrs[k + 1] if k + 1 < len(lrs) else None
    if lo is None and hi is None:
        return ()
    half_lo = math.sqrt(lo * best) if lo is not None else best / math.sqrt(hi / best)
    half_hi = math.sqrt(best * hi) if hi is not None else best * math.sqrt(best / lo)
    new = (float(f"{half_lo:.6g}"), float(f"{half_hi:.6g}"))
    return tuple(v for v in new if v not in lrs)


def refine_chunks(
    grid: list[Chunk],
    best: dict[tuple[tuple[int, ...], str, str, float], float],
    tested: dict,
    round_: int,
) -> list[Chunk]:
    """The chunks of refinement round ``round_``: per bucket, :func:`refine_lrs` around its
    ``best`` lr, in chunks shaped like the bucket's first grid chunk (same seeds and lr count,
    padded with inert lanes), so the grid's compiled program is reused."""
    out = []
    for b_key, lr_star in best.items():
        new = refine_lrs(tested[b_key], lr_star)
        shapes: dict[tuple[int, ...], Chunk] = {}  # seed slice -> its first grid chunk
        for c in grid:
            if c.bucket.key == b_key:
                shapes.setdefault(c.seeds, c)
        for first in shapes.values():
            per = len(first.lrs)
            out += [
                dataclasses.replace(first, lrs=new[k : k + per], round=round_, lanes_lrs=per)
                for k in range(0, len(new), per)
            ]
    return out


def optimizer_slots(optimizer: str, options: Any) -> int:
    """Optimizer-state arrays per parameter (for the memory estimate), from the registry's
    entries of the optimizer and of ``options.lr_rule``."""
    from jaxlr import registry

    return registry.state_slots(optimizer, options)


def _text(cfg: Any) -> bool:
    """Whether ``cfg``'s family trains on text windows (:attr:`jaxlr.families.Family.data`)."""
    from jaxlr import families

    return cfg is not None and families.family_of(cfg).data == "text"


def lane_bytes(
    in_features: int,
    hidden: tuple[int, ...],
    num_classes: int,
    *,
    batch_size: int,
    slots: int,
    eval_chunk: int = EVAL_CHUNK,
    cfg: Any = None,
) -> int:
    """Estimated device bytes one lane needs (see the module docstring); ``cfg`` says the
    model family (:func:`footprint`)."""
    p, a, _ = footprint(cfg, in_features, hidden, num_classes)
    if _text(cfg):  # evaluated in chunks of eval_chunk bytes
        eval_chunk = max(1, eval_chunk // cfg.context)
    return 4 * (p * (4 + slots) + batch_size * a * 3 + eval_chunk * a)


def footprint(
    cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> tuple[int, int, int]:
    """``(parameters, activations per example, multiply-adds of one example's forward pass)``
    of ``hidden`` in ``cfg``'s model family (:func:`jaxlr.families.footprint_of`: the MLP's
    layer sizes, the GPT's closed form, a user family's parameter count)."""
    from jaxlr import families

    return families.footprint_of(cfg, in_features, hidden, num_classes)


def make_buckets(cfg: SweepConfig) -> list[Bucket]:
    """The buckets of ``cfg``'s whole grid (every shard), in a stable order."""
    return [
        Bucket(tuple(hidden), opt, tuple(cfg.lrs), tuple(cfg.seeds), par, wd)
        for hidden in cfg.architectures
        for opt in cfg.optimizers
        for par in cfg.parametrizations
        for wd in (cfg.weight_decays if registry.optimizer(opt).decay != "none" else (0.0,))
    ]


def chunk_cost(chunk: Chunk, in_features: int, num_classes: int) -> int:
    """Relative cost of a chunk: lanes x multiply-adds of one example's forward pass."""
    sizes = layer_sizes(in_features, chunk.bucket.hidden, num_classes)
    return chunk.n_lanes * sum(a * b for a, b in itertools.pairwise(sizes))


def shard_of_chunks(chunks: list[Chunk], n: int, in_features: int, num_classes: int) -> list[int]:
    """The grid shard (``0..n-1``) of each chunk: longest chunks first, each to the least
    loaded shard (ties to the lower index). Deterministic, so every host agrees."""
    load = [0] * n
    owner = [0] * len(chunks)
    order = sorted(
        range(len(chunks)), key=lambda k: (-chunk_cost(chunks[k], in_features, num_classes), k)
    )
    for k in order:
        i = min(range(n), key=lambda j: (load[j], j))
        owner[k] = i
        load[i] += chunk_cost(chunks[k], in_features, num_classes)
    return owner


def split_bucket(bucket: Bucket, max_lanes: int, multiple: int = 1) -> list[Chunk]:
    """Splits a bucket into ``seeds x lrs`` chunks of at most ``max_lanes`` lanes.

    All seeds stay together when they fit (so lrs share batches); otherwise each chunk holds one
    lr and a slice of the seeds. ``multiple`` rounds the lr count per chunk down to a multiple of
    the device count where possible, so chunks shard evenly.
    """
    max_lanes = max(1, max_lanes)
    n_s = len(bucket.seeds)
    if n_s <= max_lanes:
        per = max(1, max_lanes // n_s)
        if per >= multiple:
            per -= per % multiple
        per = min(per, len(bucket.lrs))
        n_chunks = math.ceil(len(bucket.lrs) / per)
        per = math.ceil(len(bucket.lrs) / n_chunks)  # balance chunk sizes
        if multiple > 1 and per % multiple and per + (multiple - per % multiple) <= max_lanes:
            per += multiple - per % multiple
        return [
            Chunk(bucket, bucket.seeds, bucket.lrs[k : k + per])
            for k in range(0, len(bucket.lrs), per)
        ]
    return [
        Chunk(bucket, bucket.seeds[k : k + max_lanes], (lr,))
        for lr in bucket.lrs
        for k in range(0, n_s, max_lanes)
    ]


def make_plan(
    cfg: SweepConfig,
    in_features: int,
    num_classes: int,
    *,
    memory_bytes: int,
    multiple: int = 1,
) -> list[Chunk]:
    """All chunks of the sweep, sized so that each fits in ``memory_bytes``.

    ``cfg.max_lanes``, when set, overrides the estimate. Raises :class:`ConfigError` when a
    single run does not fit.
    """
    chunks = []
    for b in make_buckets(cfg):
        per_lane = lane_bytes(
            in_features,
            b.hidden,
            num_classes,
            batch_size=cfg.batch_size,
            slots=optimizer_slots(b.optimizer, cfg),
            cfg=cfg,
        )
        if per_lane > memory_bytes:
            raise ConfigError(
                f"one run of hidden {'-'.join(map(str, b.hidden))} needs about "
                f"{_bytes(per_lane)} but the device offers {_bytes(memory_bytes)}; "
                "use smaller widths or a smaller --batch-size"
            )
        max_lanes = cfg.max_lanes if cfg.max_lanes is not None else memory_bytes // per_lane
        chunks.extend(split_bucket(b, max_lanes, multiple))
    i, n = cfg.shard
    if n == 1:
        return chunks
    owner = shard_of_chunks(chunks, n, in_features, num_classes)
    return [c for c, o in zip(chunks, owner, strict=True) if o == i]


# rough sustained float32 rates and per-step latencies, for the plan's time estimate only
_FLOPS = {"cpu": 5e10, "gpu": 2e13, "tpu": 5e13}
_STEP_LATENCY_S = {"cpu": 2e-5, "gpu": 3e-5, "tpu": 3e-5}  # per program step
_LANE_STEP_S = {"cpu": 5e-5, "gpu": 5e-7, "tpu": 5e-7}  # per run and step, besides matmuls
_COMPILE_S = 3.0


def estimate_seconds(
    chunks: list[Chunk],
    cfg: SweepConfig,
    in_features: int,
    num_classes: int,
    *,
    steps_per_epoch: int,
    n_test: int,
    backend: str,
    devices: int = 1,
    compile: bool = True,
    programs: list[tuple[int, ...]] | None = None,
) -> float:
    """A rough wall time for the plan: matmul FLOPs at a typical rate plus per-step latency.

    Per lane, a step costs ``6 B M`` FLOPs and an evaluation ``2 n_test M``, where ``M`` is the
    number of weights (multiply-adds of one example's forward pass), plus a fixed cost per lane
    and step (the elementwise work of small layers) and a latency per program step. Each distinct
    program adds a compile time. With ``programs`` (from :func:`fuse_chunks`), chunks that share
    a program share its per-step latency. Good to a factor of a few: it tells minutes from
    hours.
    """
    rate = _FLOPS.get(backend, _FLOPS["cpu"]) * max(devices, 1)
    latency = _STEP_LATENCY_S.get(backend, _STEP_LATENCY_S["cpu"])
    lane_step = _LANE_STEP_S.get(backend, _LANE_STEP_S["cpu"]) / max(devices, 1)
    total = 0.0
    for c in chunks:
        m = footprint(cfg, in_features, c.bucket.hidden, num_classes)[2]
        flops = c.n_lanes * m * (6 * cfg.batch_size * steps_per_epoch + 2 * n_test)
        steps = steps_per_epoch * c.n_lanes * lane_step
        total += cfg.epochs * (flops / rate + steps)
    if programs is None:
        programs = [(i,) for i in range(len(chunks))]
    total += cfg.epochs * steps_per_epoch * latency * len(programs)
    distinct = {
        tuple((chunks[i].bucket.program_key, chunks[i].n_lanes) for i in m) for m in programs
    }
    return total + (_COMPILE_S * len(distinct) if compile else 0.0)


AUTOTUNE_MIN_S = 20.0  # autotune a GPU program predicted to train at least this long


def autotune_chunks(
    chunks: list[Chunk],
    mode: str,
    seconds: Callable[[Chunk], float],
    programs: list[tuple[int, ...]] | None = None,
) -> list[Chunk]:
    """Decides per program whether XLA autotunes its GPU kernels.

    Autotuning picks the fastest kernels by timing candidates while compiling: several seconds
    per program on an H100, which made the width-1024 step of the seed-001 grid 3.5x faster but
    is most of the compile time of small programs. ``"auto"`` autotunes a program when its
    predicted training time (the sum of ``seconds(chunk)`` over its chunks, without
    compilation) is at least :data:`AUTOTUNE_MIN_S`; ``"on"`` and ``"off"`` decide for all.
    ``programs`` (from :func:`fuse_chunks`) groups chunks into programs; by default each chunk
    is one. Every chunk of a program gets the program's decision. The CPU ignores it.
    """
    if programs is None:
        programs = [(i,) for i in range(len(chunks))]
    out = list(chunks)
    for members in programs:
        if mode in ("on", "off"):
            on = mode == "on"
        else:
            on = sum(seconds(chunks[i]) for i in members) >= AUTOTUNE_MIN_S
        for i in members:
            out[i] = dataclasses.replace(chunks[i], autotune=on)
    return out


CALL_S = float(os.environ.get("JAXLR_CALL_S", "3"))
"""The longest device call the plan aims for, in (estimated) seconds: a longer epoch runs in
step blocks, so a Ctrl-C is honoured and a checkpoint can be taken within about this long
(``$JAXLR_CALL_S`` overrides it; results do not depend on it under XLA's default code
generation; ``XLA_FLAGS`` that change it, such as ``--xla_cpu_use_fusion_emitters=false``,
can move an Adam lane's last bit)."""


def call_steps_chunks(
    chunks: list[Chunk],
    steps_per_epoch: int,
    epoch_seconds: Callable[[Chunk], float],
    programs: list[tuple[int, ...]] | None = None,
) -> list[Chunk]:
    r"""Decides per program how many steps one device call runs.

    A program whose epoch is predicted (the sum of ``epoch_seconds`` over its chunks) to take
    :math:`T > ` :data:`CALL_S` seconds runs each epoch in :math:`n = \lceil T / CALL\_S \rceil`
    calls of :math:`\lceil S / n \rceil` steps (``S = steps_per_epoch``; the last call is
    shorter); others in one call (``steps_per_call = 0``). Every chunk of a program gets the
    program's size.
    """
    if programs is None:
        programs = [(i,) for i in range(len(chunks))]
    out = list(chunks)
    for members in programs:
        seconds = sum(epoch_seconds(chunks[i]) for i in members)
        size = 0
        if seconds > CALL_S and steps_per_epoch > 1:
            calls = math.ceil(seconds / CALL_S)
            size = math.ceil(steps_per_epoch / calls)
            size = 0 if size >= steps_per_epoch else size
        for i in members:
            out[i] = dataclasses.replace(chunks[i], steps_per_call=size)
    return out


MAX_FUSED = 8  # buckets per fused program at most (its compile time grows with each)


def fuse_chunks(
    chunks: list[Chunk], enabled: bool, memory_bytes: int, nbytes: Callable[[Chunk], int]
) -> list[tuple[int, ...]]:
    """Groups the chunks into programs: indices into ``chunks``, one tuple per program.

    With ``enabled``, chunks of the same refinement round share one program (every scan step
    runs one step of each: narrow widths ride along with the widest instead of paying their own
    per-step latency), as long as the program's lanes fit in ``memory_bytes`` together and it
    trains at most :data:`MAX_FUSED` chunks. Chunks are placed largest first into the first
    program with room, so the split is deterministic. Otherwise each chunk is its own program.
    """
    if not enabled:
        return [(i,) for i in range(len(chunks))]
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i].round, -nbytes(chunks[i]), i))
    programs: list[list[int]] = []
    used: list[int] = []
    for i in order:
        for k, members in enumerate(programs):
            same_round = chunks[members[0]].round == chunks[i].round
            room = used[k] + nbytes(chunks[i]) <= memory_bytes and len(members) < MAX_FUSED
            if same_round and room:
                members.append(i)
                used[k] += nbytes(chunks[i])
                break
        else:
            programs.append([i])
            used.append(nbytes(chunks[i]))
    return sorted(tuple(sorted(m)) for m in programs)


def describe_plan(
    chunks: list[Chunk], per_chunk_bytes: int, seconds: float, n_programs: int | None = None
) -> str:
    """One line: runs, programs, chunks, device memory and estimated time."""
    runs = sum(c.n_lanes for c in chunks)
    if n_programs is None:
        n_programs = len({(c.bucket.program_key, c.n_lanes) for c in chunks})
    return (
        f"plan: {runs} runs in {len(chunks)} chunk(s) of {n_programs} compiled program(s); "
        f"up to {_bytes(per_chunk_bytes)} of device memory per program; "
        f"roughly {format_duration(seconds)}"
    )


def chunk_bytes(chunk: Chunk, cfg: SweepConfig, in_features: int, num_classes: int) -> int:
    """Estimated device memory of one chunk."""
    per_lane = lane_bytes(
        in_features,
        chunk.bucket.hidden,
        num_classes,
        batch_size=cfg.batch_size,
        slots=optimizer_slots(chunk.bucket.optimizer, cfg),
        cfg=cfg,
    )
    return per_lane * chunk.n_lanes


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def refinement_chunks(cfg: SweepConfig, grid: list[Chunk], df: Any, round_: int) -> list:
    """The chunks of refinement round ``round_`` (:func:`refine_chunks`), around each bucket's
    best lr in the results ``df`` so far."""
    import numpy as np

    from jaxlr import results as res

    summary = res.summarize(df, select=cfg.select)
    best, tested = {}, {}
    for _, row in summary.iterrows():
        if not np.isfinite(row["best_lr"]):
            continue  # every lr diverged: nothing to refine around
        hidden = tuple(int(w) for w in str(row["hidden"]).split("-"))
        wd = float(row["weight_decay"])
        key = (hidden, row["optimizer"], row["parametrization"], wd)
        best[key] = float(row["best_lr"])
        runs = df[
            (df["hidden"] == row["hidden"])
            & (df["optimizer"] == row["optimizer"])
            & (df["parametrization"] == row["parametrization"])
            & (df["weight_decay"] == wd)
        ]
        tested[key] = sorted(float(v) for v in runs["lr"].unique())
    return refine_chunks(grid, best, tested, round_)


def chunk_bytes_of(cfg: SweepConfig, dataset: Any) -> Callable[[Chunk], int]:
    """A chunk's estimated device memory under ``cfg`` on ``dataset``."""
    return functools.partial(
        chunk_bytes,
        cfg=cfg,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
    )


class SweepTooLong(ConfigError):
    """The sweep is estimated to take longer than the caller accepts without confirmation."""


def plan_sweep(
    cfg: SweepConfig,
    dataset: Any,
    mesh: Any,
    memory: int,
    fuse: bool,
    confirm_long: float | None,
    log: Callable[[str], None] | None,
) -> tuple[list[Chunk], list[tuple[int, ...]]]:
    """The chunks of the sweep and the programs that train them (on ``mesh``, within
    ``memory`` bytes, fused if ``fuse``); says what they are to ``log`` and refuses a sweep
    estimated longer than ``confirm_long`` seconds (:class:`SweepTooLong`)."""
    import jax

    from jaxlr import devices as dev

    n_dev = dev.mesh_size(mesh)
    chunks = make_plan(
        cfg, dataset.in_features, dataset.num_classes, memory_bytes=memory, multiple=n_dev
    )
    if not chunks:
        return chunks, []
    nbytes = chunk_bytes_of(cfg, dataset)
    programs = fuse_chunks(chunks, fuse, memory, nbytes)
    estimate = functools.partial(
        estimate_seconds,
        cfg=cfg,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
        steps_per_epoch=dataset.n_train // cfg.batch_size,
        n_test=dataset.n_test,
        backend=jax.default_backend(),
        devices=n_dev,
    )
    seconds = estimate(chunks, programs=programs)
    chunks = autotune_chunks(chunks, cfg.autotune, lambda c: estimate([c], compile=False), programs)
    if n_dev == 1:  # a sharded program runs its epochs in one call each
        chunks = call_steps_chunks(
            chunks,
            dataset.n_train // cfg.batch_size,
            lambda c: estimate([c], compile=False) / cfg.epochs,
            programs,
        )
    per_program = max(sum(nbytes(chunks[i]) for i in members) for members in programs)
    text = describe_plan(chunks, per_program // n_dev, seconds, len(programs))
    if confirm_long is not None and seconds > confirm_long:
        raise SweepTooLong(text.replace("plan: ", "this sweep plans ", 1))
    if log is not None:
        log(text)
    return chunks, programs
