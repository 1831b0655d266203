"""``run(config)``: data -> plan -> programs (one or several chunks each) -> results.

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
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxlr import checkpoint as ckpt
from jaxlr import compilation
from jaxlr import devices as dev
from jaxlr import plan as planning
from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import device_data
from jaxlr.engine import (
    EpochMetrics,
    RunSpec,
    cached_trainer,
    compile_epoch,
    compile_group,
    step_blocks,
    to_host,
    train_group,
    train_lanes,
)
from jaxlr.outputs import (
    SweepOutcome,
    check_resumable,
    check_writable,
    config_record,
    outcome_of,
    plan_record,
    programs_record,
    write_outputs,
)
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


Program = tuple[tuple[RunSpec, int, int], ...]  # per chunk of a program: (spec, seeds, lrs)


class _Programs:
    """The plan's epoch programs, compiled ahead of time in background threads.

    Every distinct program is submitted as soon as the plan is known, so compilation overlaps
    training instead of adding to it. Only for single-device sweeps (a sharded program is
    compiled by ``jit`` on first use).
    """

    def __init__(self, data: Any, enabled: bool):
        self.data, self.enabled = data, enabled
        self.futures: dict[Program, cf.Future] = {}
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))

    def submit(self, key: Program) -> None:
        if key[0][0].steps_per_call > 0:
            return  # epochs in step blocks: compiled on first use (a long epoch hides it)
        if self.enabled and key not in self.futures:
            if len(key) == 1:
                self.futures[key] = self.pool.submit(compile_epoch, *key[0], self.data)
            else:
                specs = tuple(k[0] for k in key)
                shapes = tuple((k[1], k[2]) for k in key)
                self.futures[key] = self.pool.submit(compile_group, specs, shapes, self.data)

    def get(self, key: Program) -> Callable[..., Any] | None:
        self.submit(key)
        future = self.futures.get(key)
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
    fuse: bool = False  # chunks of a round share programs (see jaxlr.plan.fuse_chunks)
    memory: int = 0  # device bytes a program's lanes may use
    parallel: int = 1  # programs trained at the same time (see parallel_programs)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)  # set: stop now

    def fuse_chunks(self, chunks: list[Chunk], first: int = 0) -> list[tuple[int, ...]]:
        """The programs of ``chunks`` (numbered from ``first``)."""
        nbytes = _chunk_bytes(self.cfg, self.dataset)
        programs = planning.fuse_chunks(chunks, self.fuse, self.memory, nbytes)
        return [tuple(first + i for i in members) for members in programs]

    def program_key(self, chunks: list[Chunk]) -> Program:
        """What identifies the compiled program that trains ``chunks`` together."""
        return tuple((self.spec(c), len(c.seeds), self.lane_lrs(c)) for c in chunks)

    def spec(self, chunk: Chunk) -> RunSpec:
        """The program of ``chunk``."""
        b = chunk.bucket
        spec = RunSpec.create(self.cfg, self.dataset, b.hidden, b.optimizer, b.parametrization)
        return dataclasses.replace(
            spec, autotune=chunk.autotune, steps_per_call=chunk.steps_per_call
        )

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
    with _removed_if_refused(out if writer and not resume else None):
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
        _warn_gpu_only(cfg)
        mesh = dev.lane_mesh(cfg.devices)
        memory = int(dev.device_memory_bytes() * MEMORY_FRACTION) * dev.mesh_size(mesh)
        fuse = fuse_enabled(cfg.fuse, mesh)
        parallel = parallel_programs(cfg.parallel, mesh)
        chunks, programs = _plan(cfg, dataset, mesh, memory, fuse, confirm_long, log)
    record = config_record(cfg, dataset, chunks, dev.mesh_size(mesh), programs)
    if out is not None and writer:
        res.write_json(out / "config.json", record)
    t0 = time.perf_counter()
    cache = compilation.use_persistent_cache(
        compilation.cache_dir(cfg.compilation_cache), warn=_warning
    )
    data = device_data(dataset, sharding=dev.replicated(mesh))
    total = sum(c.n_lanes for c in chunks) * (dataset.n_train // cfg.batch_size) * cfg.epochs
    frames: list[pd.DataFrame] = []
    stop = threading.Event()
    with (
        _progress(total, progress) as bar,
        compilation.tracking(cache) as compiled,
        _stop_on_interrupt(stop, bar),
    ):
        compiler = _Programs(data, enabled=mesh is None)
        sweep = _Sweep(cfg, dataset, data, mesh, out, resume, bar, writer, compiler, stop=stop)
        sweep.fuse, sweep.memory, sweep.parallel = fuse, memory, parallel
        for members in _training_order(sweep, chunks, programs):  # the first to train first
            compiler.submit(sweep.program_key([chunks[i] for i in members]))
        try:
            _run_all(sweep, chunks, programs, frames)
        finally:
            compiler.close()
    record["plan"] = plan_record(chunks, programs)
    record["programs"] = programs_record(chunks, programs)
    df = res.sort_results(pd.concat(frames)) if frames else pd.DataFrame(columns=res.COLUMNS)
    record["elapsed_s"] = round(time.perf_counter() - t0, 3)
    record["compilation"] = compiled.record()
    rates = res.sort_results(pd.concat(sweep.rate_frames)) if sweep.rate_frames else None
    if out is None or not writer:
        return outcome_of(df, cfg, rates)
    return write_outputs(out, df, cfg, record, rates)


@contextlib.contextmanager
def _removed_if_refused(out: Path | None) -> Iterator[None]:
    """Removes the output directories that the checks created when the sweep is refused before
    anything is written (a bad flag leaves no empty directory behind)."""
    created = []
    if out is not None:
        for d in (out, *out.parents):
            if d.exists():
                break
            created.append(d)
    try:
        yield
    except BaseException:
        for d in created:  # deepest first; only while empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event, bar: Any) -> Iterator[None]:
    """While training: the first Ctrl-C (SIGINT) sets ``stop`` and says so at once; every
    program then checkpoints after its step block in flight and raises
    :class:`KeyboardInterrupt`. A second Ctrl-C interrupts at once (losing the blocks in flight).
    Only in the main thread (elsewhere Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(sig: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        bar.clear()
        print(
            "\njaxlr.sweep: stopping after the current step block... (Ctrl-C again to stop at "
            "once, losing it)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def fuse_enabled(mode: str, mesh: Any) -> bool:
    """Whether chunks share programs: ``on``, or ``auto`` on a GPU or TPU, on a single device.
    Never when the lanes are sharded over several devices (each chunk is then one sharded
    program).

    Sharing is for the GPU, where a narrow width's step is latency, not arithmetic. On the CPU,
    which runs one operation at a time either way, it is neutral (the default digits sweep on 2
    cores: 22.7 s cold, 22.4 s warm, against 23.0 s and 24.4 s with one program per width,
    medians of 3, paired ratio 0.99) and the numbers are the same bits; ``auto`` keeps one
    program per chunk there, so ``results.csv`` grows width by width.
    """
    if mode == "on" and mesh is not None:
        raise ConfigError(
            f"--fuse on needs a single device, but the runs are sharded over "
            f"{dev.mesh_size(mesh)} devices; add --devices 1, or use --fuse auto"
        )
    accelerator = jax.default_backend() in ("gpu", "tpu")
    return mesh is None and (mode == "on" or (mode == "auto" and accelerator))


def parallel_programs(requested: int | None, mesh: Any) -> int:
    """How many programs train at the same time: ``--parallel``, or by default one per core on
    the CPU (divided among the devices of a lane mesh) and one on a GPU or TPU.

    XLA runs a CPU program's lane-batched matmuls on one core, so a sweep of several programs
    uses the other cores only by training several programs at once; each program computes
    exactly what it computes alone. A GPU runs one program at a time well; several buckets
    share its steps through fused programs instead (:func:`fuse_enabled`). A multi-process
    sweep trains one program at a time: its processes must gather checkpoints in one order.
    """
    if jax.process_count() > 1:
        if requested not in (None, 1):
            raise ConfigError("a multi-process sweep trains one program at a time; drop --parallel")
        return 1
    if requested is not None:
        return requested
    if jax.default_backend() != "cpu":
        return 1
    return max(1, _cores() // dev.mesh_size(mesh))


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _run_all(
    sweep: _Sweep, chunks: list[Chunk], programs: list[tuple[int, ...]], frames: list
) -> None:
    """The grid's programs, then the refinement rounds (appended to ``chunks`` and
    ``programs``)."""
    _run_programs(sweep, chunks, programs, frames)
    grid = list(chunks)
    for r in range(1, sweep.cfg.refine + 1):
        new = _refinement(sweep.cfg, grid, pd.concat(frames), r)
        sweep.bar.total += sum(c.n_lanes for c in new) * sweep.steps * sweep.cfg.epochs
        new_programs = sweep.fuse_chunks(new, first=len(chunks))
        chunks += new
        programs += new_programs
        _run_programs(sweep, chunks, new_programs, frames)


def _describe(sweep: _Sweep, indices: tuple[int, ...], chunks: list[Chunk]) -> str:
    """The progress bar's label of a program: its chunks' numbers, architectures, optimizers."""
    cs = [chunks[i] for i in indices]
    label = ",".join(dict.fromkeys("-".join(map(str, c.bucket.hidden)) for c in cs))
    label += " " + ",".join(dict.fromkeys(c.bucket.optimizer for c in cs))
    if len(sweep.cfg.parametrizations) > 1:
        label += " " + ",".join(dict.fromkeys(c.bucket.parametrization for c in cs))
    if cs[0].round:
        label += f" refine {cs[0].round}"
    return f"[{','.join(str(i + 1) for i in indices)}] {label}"


def _run_programs(
    sweep: _Sweep, chunks: list[Chunk], programs: list[tuple[int, ...]], frames: list
) -> None:
    """Runs ``programs`` (tuples of indices into ``chunks``), appending their rows to
    ``frames`` and, after each, rewriting ``results.csv``; up to ``sweep.parallel`` at a time."""
    cfg, out = sweep.cfg, sweep.out

    def record(indices: tuple[int, ...], done: list[tuple[dict, Any]]) -> None:
        for i, (metrics, div) in zip(indices, done, strict=True):
            chunk = chunks[i]
            b = chunk.bucket
            keys = (b.hidden, b.optimizer, cfg.lr_rule, b.parametrization, chunk.seeds, chunk.lrs)
            frames.append(res.chunk_frame(*keys, metrics, div, round_=chunk.round))
            rates = metrics.get("rates")
            if rates is not None and rates.ndim == 5 and rates.shape[3]:
                sweep.rate_frames.append(res.rates_frame(*keys, rates, round_=chunk.round))
        if out is not None and sweep.writer:  # finished chunks are on disk as they finish
            res.write_csv(out / "results.csv", res.sort_results(pd.concat(frames)))

    def train(indices: tuple[int, ...]) -> list[tuple[dict, Any]]:
        return _run_program(sweep, [(i, chunks[i]) for i in indices])

    if sweep.parallel <= 1 or len(programs) <= 1:
        for indices in programs:
            if sweep.stop.is_set():
                raise KeyboardInterrupt
            sweep.bar.set_description(_describe(sweep, indices, chunks))
            record(indices, train(indices))
        return
    nbytes = _chunk_bytes(cfg, sweep.dataset)
    running: dict[tuple[int, ...], str] = {}  # the progress bar names every running program

    def started(indices: tuple[int, ...]) -> None:
        running[indices] = _describe(sweep, indices, chunks)
        sweep.bar.set_description(" | ".join(running.values()))

    def finished(indices: tuple[int, ...], done: list[tuple[dict, Any]]) -> None:
        del running[indices]
        sweep.bar.set_description(" | ".join(running.values()))
        record(indices, done)

    run_concurrently(
        programs,
        train,
        slots=sweep.parallel,
        cost=_program_cost(sweep, chunks),
        nbytes=lambda m: sum(nbytes(chunks[i]) for i in m),
        memory=sweep.memory,
        on_start=started,
        on_done=finished,
        stop=sweep.stop,
    )


def _program_cost(sweep: _Sweep, chunks: list[Chunk]) -> Callable[[tuple[int, ...]], float]:
    """The predicted training cost of a program (its chunks' :func:`planning.chunk_cost`)."""
    d_in, n_cls = sweep.dataset.in_features, sweep.dataset.num_classes
    return lambda m: sum(planning.chunk_cost(chunks[i], d_in, n_cls) for i in m)


def _training_order(
    sweep: _Sweep, chunks: list[Chunk], programs: list[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """``programs`` in the order they start training: as given one at a time, longest first
    (as :func:`run_concurrently` starts them) when several train at once."""
    if sweep.parallel <= 1 or len(programs) <= 1:
        return list(programs)
    cost = _program_cost(sweep, chunks)
    order = sorted(range(len(programs)), key=lambda k: (-cost(programs[k]), k))
    return [programs[k] for k in order]


T = TypeVar("T")
R = TypeVar("R")


def run_concurrently(
    tasks: list[T],
    run: Callable[[T], R],
    *,
    slots: int,
    cost: Callable[[T], float],
    nbytes: Callable[[T], int],
    memory: int,
    on_start: Callable[[T], None],
    on_done: Callable[[T, R], None],
    stop: threading.Event,
) -> None:
    """Runs ``run(task)`` for every task in worker threads, at most ``slots`` at a time.

    Longest first (by ``cost``; ties in the given order), so the last to finish is short. A task
    starts only while it fits in ``memory`` with the running ones (``nbytes``), or when nothing
    runs. ``on_start`` and ``on_done`` run in this thread, ``on_done`` as each task finishes.

    When a task fails, no other starts; the running ones finish and are reported, then the
    error is raised. When this thread is interrupted (Ctrl-C), ``stop`` is set, so that running
    tasks can stop early (at their next epoch), and the interruption is raised once they have.
    """
    pending = sorted(range(len(tasks)), key=lambda k: (-cost(tasks[k]), k))
    futures: dict[cf.Future, int] = {}
    failure: BaseException | None = None
    pool = cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="jaxlr-program")
    try:
        while pending or futures:
            if stop.is_set():
                pending.clear()  # interrupted: nothing new starts; the running tasks stop
            used = sum(nbytes(tasks[k]) for k in futures.values())
            for k in list(pending):
                if len(futures) >= slots:
                    break
                if futures and used + nbytes(tasks[k]) > memory:
                    continue
                pending.remove(k)
                on_start(tasks[k])
                futures[pool.submit(run, tasks[k])] = k
                used += nbytes(tasks[k])
            if not futures:
                if stop.is_set():
                    raise KeyboardInterrupt
                break
            # a short timeout, so that this thread sees a Ctrl-C that another thread received
            done, _ = cf.wait(futures, timeout=0.1, return_when=cf.FIRST_COMPLETED)
            for f in sorted(done, key=futures.__getitem__):
                k = futures.pop(f)
                try:
                    result = f.result()
                except BaseException as e:  # the running tasks still finish and are reported
                    failure = failure or e
                    pending.clear()
                    continue
                on_done(tasks[k], result)
    except BaseException:
        stop.set()
        cf.wait(futures)
        raise
    finally:
        pool.shutdown(wait=True)
    if failure is not None:
        raise failure


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


def _chunk_bytes(cfg: SweepConfig, dataset: Any) -> Callable[[Chunk], int]:
    """A chunk's estimated device memory under ``cfg`` on ``dataset``."""
    return functools.partial(
        planning.chunk_bytes,
        cfg=cfg,
        in_features=dataset.in_features,
        num_classes=dataset.num_classes,
    )


def _plan(
    cfg: SweepConfig,
    dataset: Any,
    mesh: Any,
    memory: int,
    fuse: bool,
    confirm_long: float | None,
    log: Callable[[str], None] | None,
) -> tuple[list[Chunk], list[tuple[int, ...]]]:
    """The chunks of the sweep and the programs that train them; says what they are and
    refuses a long sweep unconfirmed."""
    n_dev = dev.mesh_size(mesh)
    chunks = planning.make_plan(
        cfg, dataset.in_features, dataset.num_classes, memory_bytes=memory, multiple=n_dev
    )
    if not chunks:
        return chunks, []
    nbytes = _chunk_bytes(cfg, dataset)
    programs = planning.fuse_chunks(chunks, fuse, memory, nbytes)
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
    seconds = estimate(chunks, programs=programs)
    chunks = planning.autotune_chunks(
        chunks, cfg.autotune, lambda c: estimate([c], compile=False), programs
    )
    if n_dev == 1:  # a sharded program runs its epochs in one call each
        chunks = planning.call_steps_chunks(
            chunks,
            dataset.n_train // cfg.batch_size,
            lambda c: estimate([c], compile=False) / cfg.epochs,
            programs,
        )
    per_program = max(sum(nbytes(chunks[i]) for i in members) for members in programs)
    text = planning.describe_plan(chunks, per_program // n_dev, seconds, len(programs))
    if confirm_long is not None and seconds > confirm_long:
        raise SweepTooLong(text.replace("plan: ", "this sweep plans ", 1))
    if log is not None:
        log(text)
    return chunks, programs


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


@dataclasses.dataclass
class _Job:
    """One chunk being trained: its program, lanes, starting state and checkpoint store."""

    index: int
    chunk: Chunk
    spec: RunSpec
    seeds: jax.Array
    lrs: jax.Array  # padded to the compiled lr lanes
    state: Any  # None when it resumes mid-epoch (from ``progress``)
    start: int  # first epoch to train (after a restored checkpoint)
    history: dict[str, np.ndarray] | None  # metrics of the restored epochs
    store: ckpt.ChunkStore | None
    saver: _EpochSaver
    start_step: int = 0  # steps of epoch ``start`` already trained (a mid-epoch checkpoint)
    progress: Any = None  # the lanes' EpochProgress there


def _prepare(sweep: _Sweep, index: int, chunk: Chunk) -> _Job | tuple[dict[str, Any], Any]:
    """The job of a chunk, restored from its last checkpoint on ``--resume``; or, when the
    chunk finished in an earlier run, its ``(metrics, diverged_epoch)``."""
    if sweep.stop.is_set():
        raise KeyboardInterrupt  # interrupted before this chunk started
    cfg = sweep.cfg
    lanes = chunk.n_lanes
    store = None
    if sweep.out is not None:
        store = ckpt.ChunkStore(sweep.out, index, cfg.grid_hash(), _chunk_key(chunk), _warn)
    if store is not None and sweep.resume and (done := store.finished()) is not None:
        sweep.bar.update(lanes * sweep.steps * cfg.epochs)
        return done
    spec = sweep.spec(chunk)
    n_pad = sweep.lane_lrs(chunk)
    lrs = chunk.lrs + (chunk.lrs[-1],) * (n_pad - len(chunk.lrs))
    seeds_a = jnp.asarray(chunk.seeds, jnp.int32)
    lrs_a = dev.place_lrs(jnp.asarray(lrs, jnp.float32), sweep.mesh)
    state = cached_trainer(spec).init(seeds_a, lrs_a)
    start, start_step, history, progress = 0, 0, None, None
    found = store.latest() if store is not None and sweep.resume else None
    if found is not None:
        epochs_done, steps_done, leaves, metrics = found
        template = state
        if steps_done:
            template = jax.eval_shape(step_blocks((spec,)).begin, (state,))[0]
        if len(leaves) != len(jax.tree.leaves(template)) or (
            metrics and set(metrics) != set(EpochMetrics._fields)
        ):
            _warn(f"checkpoint of chunk {index} does not fit its program; starting over")
        else:
            tree = jax.tree.unflatten(jax.tree.structure(template), map(np.asarray, leaves))
            state, progress = (None, tree) if steps_done else (tree, None)
            start, start_step, history = epochs_done, steps_done, metrics or None
            sweep.bar.update(lanes * (sweep.steps * start + start_step))
            if steps_done:
                _warn(f"chunk {index} resumes in epoch {start + 1} from step {steps_done}")
    saver = _EpochSaver(store, cfg, history, sweep.bar, lanes, sweep.steps, sweep.writer)
    saver.counted = start_step
    state = dev.place_state(state, sweep.mesh)
    job = _Job(index, chunk, spec, seeds_a, lrs_a, state, start, history, store, saver)
    job.start_step, job.progress = start_step, progress
    return job


def _finish(sweep: _Sweep, job: _Job, state: Any, metrics: dict) -> tuple[dict[str, Any], Any]:
    """A trained chunk's metrics ``(E, S, L)`` and divergence epochs, without padding lanes;
    marks the chunk finished in its checkpoint store."""
    n_l = len(job.chunk.lrs)
    metrics = _stack(job.history, [metrics]) if job.history else metrics
    metrics = {k: v[:, :, :n_l] for k, v in metrics.items()}
    div = to_host(state.diverged_epoch)[:, :n_l]
    if job.store is not None and sweep.writer:
        job.store.finish(metrics, div)
    return metrics, div


def _compiled(sweep: _Sweep, jobs: list[_Job]) -> Callable[..., Any] | None:
    """The ahead-of-time compiled program of ``jobs``, waiting for it if it is compiling."""
    if sweep.programs is None:
        return None
    if pending := sweep.programs.compiling():
        sweep.bar.set_postfix_str(f"compiling {pending} program(s)")
    fn = sweep.programs.get(sweep.program_key([j.chunk for j in jobs]))
    sweep.bar.set_postfix_str("")
    return fn


def _run_program(sweep: _Sweep, chunks: list[tuple[int, Chunk]]) -> list[tuple[dict, Any]]:
    """Trains the chunks of one program (or restores them); per chunk, its metrics
    ``(E, S, L)`` and divergence epochs.

    Chunks that finished in an earlier run are restored; the others train together when they
    resume from the same point (epoch and step), and one by one otherwise (results are the
    same either way).
    """
    prepared = {i: _prepare(sweep, i, c) for i, c in chunks}
    jobs = [j for j in prepared.values() if isinstance(j, _Job)]
    if len(jobs) == 1 or len({(j.start, j.start_step) for j in jobs}) > 1:
        for job in jobs:
            (prepared[job.index],) = _train(sweep, [job])
    elif jobs:
        for job, done in zip(jobs, _train(sweep, jobs), strict=True):
            prepared[job.index] = done
    return [prepared[i] for i, _ in chunks]


def _train(sweep: _Sweep, jobs: list[_Job]) -> list[tuple[dict, Any]]:
    """Trains ``jobs`` in one program (:func:`jaxlr.engine.train_group`; one job:
    :func:`jaxlr.engine.train_lanes`). They checkpoint together, so that they resume together;
    when the sweep is stopped (Ctrl-C) they checkpoint after the step block in flight and
    raise :class:`KeyboardInterrupt`."""
    last = sweep.cfg.epochs

    def on_epoch(epoch: int, states: Any, metrics: Any) -> None:
        stopping = sweep.stop.is_set() and epoch + 1 < last
        save = stopping or jobs[0].saver.due(epoch + 1)
        parts = zip(jobs, _members(states, jobs), _members(metrics, jobs), strict=True)
        for job, state, m in parts:
            job.saver.epoch_done(epoch, state, m, save)
        if stopping:
            raise KeyboardInterrupt

    def on_block(epoch: int, steps_done: int, progress: Any) -> None:
        if steps_done == sweep.steps:
            return  # the epoch's end follows at once
        stopping = sweep.stop.is_set()
        save = stopping or jobs[0].saver.due_mid_epoch()
        for job, p in zip(jobs, _members(progress, jobs), strict=True):
            job.saver.block_done(epoch, steps_done, p, save)
        if stopping:
            raise KeyboardInterrupt

    kw = dict(on_epoch=on_epoch, on_block=on_block, start_epoch=jobs[0].start)
    kw.update(epoch_fn=_compiled(sweep, jobs), start_step=jobs[0].start_step)
    if len(jobs) == 1:
        (job,) = jobs
        state, metrics = train_lanes(
            job.spec, sweep.data, job.seeds, job.lrs, last, state=job.state,
            progress=job.progress, **kw,
        )  # fmt: skip
        return [_finish(sweep, job, state, metrics)]
    progress = tuple(j.progress for j in jobs) if jobs[0].progress is not None else None
    states, metrics = train_group(
        tuple(j.spec for j in jobs), sweep.data, tuple(j.seeds for j in jobs),
        tuple(j.lrs for j in jobs), last, states=tuple(j.state for j in jobs),
        progress=progress, **kw,
    )  # fmt: skip
    return [_finish(sweep, j, st, m) for j, st, m in zip(jobs, states, metrics, strict=True)]


def _members(x: Any, jobs: list[_Job]) -> tuple:
    """Per job: the entry of a program's tuple, or the one value of a single-job program."""
    return (x,) if len(jobs) == 1 else tuple(x)


class _EpochSaver:
    """A chunk's progress bar and checkpoints, after each step block and epoch."""

    def __init__(
        self,
        store: ckpt.ChunkStore | None,
        cfg: SweepConfig,
        history: Any,
        bar: Any,
        lanes: int,
        steps: int,
        write: bool,
    ):
        self.store, self.cfg, self.history, self.bar = store, cfg, history, bar
        self.lanes, self.steps = lanes, steps
        self.write = write  # every process gathers the state; process 0 writes it
        self.so_far: list[Any] = []
        self.counted = 0  # steps of the current epoch on the progress bar
        self.last_save = time.monotonic()

    def due(self, epochs_done: int) -> bool:
        """Whether to checkpoint after ``epochs_done`` epochs."""
        every = self.cfg.checkpoint_every
        if self.store is None or every == 0 or epochs_done == self.cfg.epochs:
            return False
        if every:
            return epochs_done % every == 0
        return self._time_due()

    def due_mid_epoch(self) -> bool:
        """Whether to checkpoint within an epoch (only by time, with ``--checkpoint-every``
        unset)."""
        return self.store is not None and self.cfg.checkpoint_every is None and self._time_due()

    def _time_due(self) -> bool:
        # clocks differ between processes, which must all take part in gathering the state:
        # a multi-process sweep checkpoints only with --checkpoint-every
        return jax.process_count() == 1 and time.monotonic() - self.last_save > AUTO_CKPT_S

    def block_done(self, epoch: int, steps_done: int, progress: Any, save: bool) -> None:
        """After ``steps_done`` steps of epoch ``epoch`` (0-based)."""
        self.bar.update(self.lanes * (steps_done - self.counted))
        self.counted = steps_done
        if save:
            self._save(epoch, steps_done, progress)

    def epoch_done(self, epoch: int, state: Any, metrics: Any, save: bool) -> None:
        """After epoch ``epoch`` (0-based), with its metrics."""
        self.bar.update(self.lanes * (self.steps - self.counted))
        self.counted = 0
        self.so_far.append(metrics)
        if save:
            self._save(epoch + 1, 0, state)

    def _save(self, epochs_done: int, steps_done: int, tree: Any) -> None:
        if self.store is None:
            return
        leaves = [to_host(x) for x in jax.tree.leaves(tree)]
        if self.write:
            metrics = _stack(self.history, self.so_far) if self.so_far or self.history else {}
            self.store.save(epochs_done, leaves, metrics, steps_done=steps_done)
        self.last_save = time.monotonic()


def _stack(history: dict[str, np.ndarray] | None, parts: list[Any]) -> dict[str, np.ndarray]:
    """Restored metrics (``(E0, S, L, ...)`` arrays) followed by new ones along the epoch axis:
    every field, whatever its shape. ``parts`` are per-epoch :class:`EpochMetrics` or dicts of
    already stacked ``(E, S, L, ...)`` arrays."""
    stacked = [
        {k: np.asarray(v) for k, v in p.items()}
        if isinstance(p, dict)
        else {k: np.asarray(v)[None] for k, v in p._asdict().items()}
        for p in parts
    ]
    keys = list(stacked[0]) if stacked else list(history or {})
    if history and set(history) != set(keys):
        raise ValueError(f"restored metrics {sorted(history)} differ from the program's {keys}")
    return {
        k: np.concatenate(([history[k]] if history else []) + [p[k] for p in stacked], axis=0)
        for k in keys
    }


def _warn(msg: str) -> None:
    print(f"jaxlr.sweep: {msg}", file=sys.stderr)


def _warning(msg: str) -> None:
    print(f"jaxlr.sweep: warning: {msg}", file=sys.stderr)


def _warn_gpu_only(cfg: SweepConfig) -> None:
    """Says so when a GPU-only option is set on a backend that ignores it."""
    backend = jax.default_backend()
    if backend == "gpu":
        return
    if cfg.autotune == "on":
        _warning(f"--autotune on has no effect on the {backend} (XLA autotunes GPU kernels only)")
    if not cfg.deterministic:
        _warning(f"--no-deterministic has no effect on the {backend} (it is reproducible)")
