"""``run(config)``: data -> plan -> one program per chunk -> results.

The host loop runs every chunk of the plan for ``config.epochs`` epochs (one jitted call per
epoch) and collects the per-epoch metrics. With ``config.out`` set it first checks the directory
can be written, then writes ``config.json``, after every chunk an up-to-date ``results.csv``
(atomically, so finished work is never lost), checkpoints of running chunks, and at the end the
tables and plots (:mod:`jaxlr.outputs`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxlr import checkpoint as ckpt
from jaxlr import compilation
from jaxlr import devices as dev
from jaxlr import plan as planning
from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig, check_resumable, check_writable
from jaxlr.data import device_data
from jaxlr.engine import RunSpec, cached_trainer, compile_epoch, to_host, train_lanes
from jaxlr.outputs import SweepOutcome, config_record, outcome_of, plan_record, write_outputs
from jaxlr.plan import Chunk

MEMORY_FRACTION = 0.5  # share of device memory the lanes of one chunk may use
AUTO_CKPT_S = 120.0  # with --checkpoint-every unset: checkpoint after 2 minutes of training


class SweepTooLong(ConfigError):
    """The sweep is estimated to take longer than the caller accepts without confirmation."""


def load_config_dataset(cfg: SweepConfig) -> Any:
    """The :class:`jaxlr.data.Dataset` that ``cfg`` asks for."""
    from jaxlr.data import load_dataset

    return load_dataset(
        cfg.dataset,
        data_dir=cfg.data_dir,
        source=cfg.data_source,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        features=cfg.features,
        num_classes=cfg.num_classes,
        data_seed=cfg.data_seed,
    )


class _Programs:
    """The plan's epoch programs, compiled ahead of time in background threads.

    Every distinct program is submitted as soon as the plan is known, so compilation overlaps
    training instead of adding to it. Only for single-device sweeps (a sharded program is
    compiled by ``jit`` on first use).
    """

    def __init__(self, data: Any, enabled: bool):
        self.data, self.enabled = data, enabled
        self.futures: dict[tuple, cf.Future] = {}
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))

    def submit(self, spec: RunSpec, n_seeds: int, n_lrs: int) -> None:
        key = (spec, n_seeds, n_lrs)
        if self.enabled and key not in self.futures:
            self.futures[key] = self.pool.submit(compile_epoch, spec, n_seeds, n_lrs, self.data)

    def get(self, spec: RunSpec, n_seeds: int, n_lrs: int) -> Callable[..., Any] | None:
        self.submit(spec, n_seeds, n_lrs)
        future = self.futures.get((spec, n_seeds, n_lrs))
        return future.result() if future is not None else None

    def compiling(self) -> int:
        return sum(not f.done() for f in self.futures.values())

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass
class _Sweep:
    """What every chunk of one sweep shares."""

    cfg: SweepConfig
    dataset: Any
    data: Any  # DeviceData
    mesh: Any
    out: Path | None
    resume: bool
    bar: Any
    writer: bool = True  # this process writes files (process 0)
    programs: _Programs | None = None
    rate_frames: list[pd.DataFrame] = dataclasses.field(default_factory=list)  # rates.csv rows

    def spec(self, chunk: Chunk) -> RunSpec:
        """The program of ``chunk``."""
        b = chunk.bucket
        spec = RunSpec.create(self.cfg, self.dataset, b.hidden, b.optimizer, b.parametrization)
        return dataclasses.replace(spec, autotune=chunk.autotune)

    def lane_lrs(self, chunk: Chunk) -> int:
        """The lr lanes ``chunk`` is compiled for: its refinement shape, padded to a multiple of
        the device count (padding lanes are inert and dropped)."""
        n = max(len(chunk.lrs), chunk.lanes_lrs)
        return n + (-n % dev.mesh_size(self.mesh))

    @property
    def steps(self) -> int:
        return self.dataset.n_train // self.cfg.batch_size


def run_sweep(
    config: SweepConfig,
    *,
    dataset: Any = None,
    progress: bool = True,
    resume: bool = False,
) -> pd.DataFrame:
    """Runs the sweep described by ``config`` and returns the long-format results table.

    Args:
      config: the sweep.
      dataset: a :class:`jaxlr.data.Dataset` to use instead of loading ``config.dataset``.
      progress: show a progress bar (runs·steps/s) on stderr.
      resume: continue the sweep in ``config.out`` from its finished chunks and its last
        valid checkpoint (the directory must hold a sweep of the same config).

    Returns:
      One row per run x epoch (columns in :mod:`jaxlr.results`). When ``config.out`` is set the
      table, the summary, the config and the plots are also written there.
    """
    return run(config, dataset=dataset, progress=progress, resume=resume).results


def run(
    cfg: SweepConfig,
    *,
    dataset: Any = None,
    progress: bool = True,
    resume: bool = False,
    confirm_long: float | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """:func:`run_sweep`, returning the results with their summary and the files written.

    ``log`` receives the plan (runs, programs, memory, estimated time) before training starts;
    with ``confirm_long`` set, a sweep estimated to take longer than that many seconds raises
    :class:`SweepTooLong` before anything is trained or written.
    """
    dev.initialize_distributed(cfg)
    writer = dev.is_writer()
    out = Path(cfg.out) if cfg.out else None
    if resume:
        check_resumable(cfg)
    elif writer:
        check_writable(cfg)
    if dataset is None:
        dataset = load_config_dataset(cfg)
    if cfg.batch_size > dataset.n_train:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({dataset.n_train} examples); use a smaller batch"
        )
    mesh = dev.lane_mesh(cfg.devices)
    chunks = _plan(cfg, dataset, mesh, confirm_long, log)
    record = config_record(cfg, dataset, chunks, dev.mesh_size(mesh))
    if out is not None and writer:
        res.write_json(out / "config.json", record)
    t0 = time.perf_counter()
    cache = compilation.use_persistent_cache(compilation.cache_dir(cfg.compilation_cache))
    data = device_data(dataset, sharding=dev.replicated(mesh))
    total = sum(c.n_lanes for c in chunks) * (dataset.n_train // cfg.batch_size) * cfg.epochs
    frames: list[pd.DataFrame] = []
    with _progress(total, progress) as bar, compilation.tracking(cache) as compiled:
        programs = _Programs(data, enabled=mesh is None)
        sweep = _Sweep(cfg, dataset, data, mesh, out, resume, bar, writer, programs)
        for c in chunks:
            programs.submit(sweep.spec(c), len(c.seeds), sweep.lane_lrs(c))
        try:
            _run_all(sweep, chunks, frames)
        finally:
            programs.close()
    record["plan"] = plan_record(chunks)
    df = res.sort_results(pd.concat(frames)) if frames else pd.DataFrame(columns=res.COLUMNS)
    record["elapsed_s"] = round(time.perf_counter() - t0, 3)
    record["compilation"] = compiled.record()
    rates = res.sort_results(pd.concat(sweep.rate_frames)) if sweep.rate_frames else None
    if out is None or not writer:
        return outcome_of(df, cfg, rates)
    return write_outputs(out, df, cfg, record, rates)


def _run_all(sweep: _Sweep, chunks: list[Chunk], frames: list) -> None:
    """The grid's chunks, then the refinement rounds (appended to ``chunks``)."""
    _run_chunks(sweep, chunks, 0, frames)
    grid = list(chunks)
    for r in range(1, sweep.cfg.refine + 1):
        new = _refinement(sweep.cfg, grid, pd.concat(frames), r)
        sweep.bar.total += sum(c.n_lanes for c in new) * sweep.steps * sweep.cfg.epochs
        _run_chunks(sweep, new, len(chunks), frames)
        chunks += new


def _run_chunks(sweep: _Sweep, chunks: list[Chunk], first: int, frames: list) -> None:
    """Runs ``chunks`` (numbered from ``first``), appending their rows to ``frames`` and, after
    each, rewriting ``results.csv``."""
    cfg, out = sweep.cfg, sweep.out
    for i, chunk in enumerate(chunks, start=first):
        sweep.bar.set_description(
            f"[{i + 1}] {'-'.join(map(str, chunk.bucket.hidden))} {chunk.bucket.optimizer}"
            + (f" {chunk.bucket.parametrization}" if len(cfg.parametrizations) > 1 else "")
            + (f" refine {chunk.round}" if chunk.round else "")
        )
        metrics, div = _run_chunk(sweep, i, chunk)
        b = chunk.bucket
        keys = (b.hidden, b.optimizer, cfg.lr_rule, b.parametrization, chunk.seeds, chunk.lrs)
        frames.append(res.chunk_frame(*keys, metrics, div, round_=chunk.round))
        rates = metrics.get("rates")
        if rates is not None and rates.ndim == 5 and rates.shape[3]:
            sweep.rate_frames.append(res.rates_frame(*keys, rates, round_=chunk.round))
        if out is not None and sweep.writer:  # finished chunks are on disk as they finish
            res.write_csv(out / "results.csv", res.sort_results(pd.concat(frames)))


def _refinement(cfg: SweepConfig, grid: list[Chunk], df: pd.DataFrame, round_: int) -> list:
    """The chunks of refinement round ``round_``, from the results so far."""
    summary = res.summarize(df, select=cfg.select)
    best, tested = {}, {}
    for _, row in summary.iterrows():
        if not np.isfinite(row["best_lr"]):
            continue  # every lr diverged: nothing to refine around
        hidden = tuple(int(w) for w in str(row["hidden"]).split("-"))
        key = (hidden, row["optimizer"], row["parametrization"])
        best[key] = float(row["best_lr"])
        runs = df[
            (df["hidden"] == row["hidden"])
            & (df["optimizer"] == row["optimizer"])
            & (df["parametrization"] == row["parametrization"])
        ]
        tested[key] = sorted(float(v) for v in runs["lr"].unique())
    return planning.refine_chunks(grid, best, tested, round_)


def _plan(
    cfg: SweepConfig,
    dataset: Any,
    mesh: Any,
    confirm_long: float | None,
    log: Callable[[str], None] | None,
) -> list[Chunk]:
    """The chunks of the sweep; says what they are and refuses a long sweep unconfirmed."""
    n_dev = dev.mesh_size(mesh)
    memory = int(dev.device_memory_bytes() * MEMORY_FRACTION)
    chunks = planning.make_plan(
        cfg,
        dataset.in_features,
        dataset.num_classes,
        memory_bytes=memory * n_dev,
        multiple=n_dev,
    )
    if not chunks:
        return chunks
    estimate = functools.partial(
        planning.estimate_seconds,
        cfg=cfg,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
        steps_per_epoch=dataset.n_train // cfg.batch_size,
        n_test=dataset.n_test,
        backend=jax.default_backend(),
        devices=n_dev,
    )
    seconds = estimate(chunks)
    chunks = planning.autotune_chunks(chunks, cfg.autotune, lambda c: estimate([c], compile=False))
    per_chunk = max(
        planning.chunk_bytes(c, cfg, dataset.in_features, dataset.num_classes) for c in chunks
    )
    text = planning.describe_plan(chunks, per_chunk // n_dev, seconds)
    if confirm_long is not None and seconds > confirm_long:
        raise SweepTooLong(text.replace("plan: ", "this sweep plans ", 1))
    if log is not None:
        log(text)
    return chunks


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        unit=" run·steps",
        unit_scale=True,
        disable=not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        yield bar
    finally:
        bar.close()


def _chunk_key(chunk: Chunk) -> str:
    b = chunk.bucket
    return f"{b.hidden}|{b.optimizer}|{b.parametrization}|{chunk.seeds}|{chunk.lrs}"


def _run_chunk(sweep: _Sweep, index: int, chunk: Chunk) -> tuple[dict[str, np.ndarray], Any]:
    """Trains one chunk (or restores it); returns its metrics ``(E, S, L)`` and divergence."""
    cfg, n_l = sweep.cfg, len(chunk.lrs)
    lane_steps = chunk.n_lanes * sweep.steps
    store = None
    if sweep.out is not None:
        store = ckpt.ChunkStore(sweep.out, index, cfg.grid_hash(), _chunk_key(chunk), _warn)
    if store is not None and sweep.resume and (done := store.finished()) is not None:
        sweep.bar.update(lane_steps * cfg.epochs)
        return done
    spec = sweep.spec(chunk)
    n_pad = sweep.lane_lrs(chunk)
    lrs = chunk.lrs + (chunk.lrs[-1],) * (n_pad - n_l)
    seeds_a = jnp.asarray(chunk.seeds, jnp.int32)
    lrs_a = dev.place_lrs(jnp.asarray(lrs, jnp.float32), sweep.mesh)
    state = cached_trainer(spec).init(seeds_a, lrs_a)
    start, history = 0, None
    if store is not None and sweep.resume:
        found = store.latest(len(jax.tree.leaves(state)))
        if found is not None:
            start, leaves, history = found
            treedef = jax.tree.structure(state)
            state = jax.tree.unflatten(treedef, [np.asarray(x) for x in leaves])
            sweep.bar.update(lane_steps * start)
    saver = _EpochSaver(store, cfg, history, sweep.bar, lane_steps, sweep.writer)
    if sweep.programs is not None and (pending := sweep.programs.compiling()):
        sweep.bar.set_postfix_str(f"compiling {pending} program(s)")
    epoch_fn = sweep.programs.get(spec, len(chunk.seeds), n_pad) if sweep.programs else None
    sweep.bar.set_postfix_str("")
    state, metrics = train_lanes(
        spec,
        sweep.data,
        seeds_a,
        lrs_a,
        cfg.epochs,
        on_epoch=saver,
        state=dev.place_state(state, sweep.mesh),
        start_epoch=start,
        epoch_fn=epoch_fn,
    )
    metrics = _stack(history, [metrics]) if history else metrics
    metrics = {k: v[:, :, :n_l] for k, v in metrics.items()}
    div = to_host(state.diverged_epoch)[:, :n_l]
    if store is not None and sweep.writer:
        store.finish(metrics, div)
    return metrics, div


class _EpochSaver:
    """Called after each epoch: advances the progress bar and checkpoints when due."""

    def __init__(
        self,
        store: ckpt.ChunkStore | None,
        cfg: SweepConfig,
        history: Any,
        bar: Any,
        steps: int,
        write: bool,
    ):
        self.store, self.cfg, self.history, self.bar, self.steps = store, cfg, history, bar, steps
        self.write = write  # every process gathers the state; process 0 writes it
        self.so_far: list[Any] = []
        self.last_save = time.monotonic()

    def _due(self, epochs_done: int) -> bool:
        every = self.cfg.checkpoint_every
        if self.store is None or every == 0 or epochs_done == self.cfg.epochs:
            return False
        if every:
            return epochs_done % every == 0
        # clocks differ between processes, which must all take part in gathering the state:
        # a multi-process sweep checkpoints only with --checkpoint-every
        return jax.process_count() == 1 and time.monotonic() - self.last_save > AUTO_CKPT_S

    def __call__(self, epoch: int, state: Any, metrics: Any) -> None:
        self.bar.update(self.steps)
        self.so_far.append(metrics)
        if self._due(epoch + 1):
            leaves = [to_host(x) for x in jax.tree.leaves(state)]
            if self.write:
                self.store.save(epoch + 1, leaves, _stack(self.history, self.so_far))
            self.last_save = time.monotonic()


def _stack(history: dict[str, np.ndarray] | None, parts: list[Any]) -> dict[str, np.ndarray]:
    """Concatenates restored metrics with new ones along the epoch axis."""
    out = {}
    for k in ("train_loss", "test_loss", "test_accuracy"):
        new = [np.asarray(p[k] if isinstance(p, dict) else getattr(p, k)) for p in parts]
        new = [x[None] if x.ndim == 2 else x for x in new]
        old = [history[k]] if history else []
        out[k] = np.concatenate(old + new, axis=0)
    return out


def _warn(msg: str) -> None:
    print(f"jaxlr.sweep: {msg}", file=sys.stderr)
