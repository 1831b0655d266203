"""``run(config)``: data -> plan -> programs (one or several chunks each) -> results.

The host loop runs every chunk of the plan for ``config.epochs`` epochs (one jitted call per
epoch) and collects the per-epoch metrics. With ``config.out`` set it first checks the directory
can be written, then writes ``config.json``, after every chunk an up-to-date ``results.csv``
(atomically, so finished work is never lost), checkpoints of running chunks, and at the end the
tables and plots (:mod:`jaxlr.outputs`).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jaxlr import checkpoint as ckpt
from jaxlr import compilation, registry, validation
from jaxlr import data as data_lib
from jaxlr import devices as dev
from jaxlr import plan as planning
from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import device_data
from jaxlr.engine import RunSpec, train_group, train_lanes
from jaxlr.outputs import (
    SweepOutcome,
    check_resumable,
    check_writable,
    config_record,
    outcome_of,
    plan_record,
    programs_record,
    removed_if_refused,
    write_outputs,
)
from jaxlr.plan import Chunk
from jaxlr.plan import SweepTooLong as SweepTooLong  # re-exported
from jaxlr.scheduling import (
    CompilePool,
    Program,
    describe_program,
    fuse_enabled,
    parallel_programs,
    progress_bar,
    stop_on_interrupt,
    train_concurrently,
    training_order,
    warn_gpu_only,
)
from jaxlr.scheduling import warning as scheduling_warning

MEMORY_FRACTION = 0.5  # share of device memory the lanes of one chunk may use


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """What every chunk of one sweep shares (``rate_frames`` collects ``rates.csv`` rows)."""

    cfg: SweepConfig
    dataset: Any
    data: Any  # DeviceData
    mesh: Any
    out: Path | None
    resume: bool
    bar: Any
    writer: bool = True  # this process writes files (process 0)
    programs: CompilePool | None = None
    rate_frames: list[pd.DataFrame] = dataclasses.field(default_factory=list)  # rates.csv rows
    dynamics_frames: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    fuse: bool = False  # chunks of a round share programs (see jaxlr.plan.fuse_chunks)
    memory: int = 0  # device bytes a program's lanes may use
    parallel: int = 1  # programs trained at the same time (see parallel_programs)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)  # set: stop now

    @staticmethod
    def warn(msg: str) -> None:
        """A one-line note on stderr (a checkpoint that cannot be used, a resumed chunk)."""
        _warn(msg)

    def fuse_chunks(self, chunks: list[Chunk], first: int = 0) -> list[tuple[int, ...]]:
        """The programs of ``chunks`` (numbered from ``first``)."""
        nbytes = planning.chunk_bytes_of(self.cfg, self.dataset)
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
    with removed_if_refused(out if writer and not resume else None):
        if resume:
            check_resumable(cfg)
        elif writer:
            check_writable(cfg)
        if dataset is None:
            dataset = data_lib.load_config_dataset(cfg)
        if cfg.batch_size > dataset.n_train:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({dataset.n_train} examples); use a smaller batch"
            )
        if registry.schedule(cfg.schedule).horizon:  # a warmup longer than training
            validation.check_schedule_steps(cfg, cfg.epochs * (dataset.n_train // cfg.batch_size))
        warn_gpu_only(cfg)
        mesh = dev.lane_mesh(cfg.devices)
        memory = int(dev.device_memory_bytes() * MEMORY_FRACTION) * dev.mesh_size(mesh)
        fuse = fuse_enabled(cfg.fuse, mesh)
        parallel = parallel_programs(cfg.parallel, mesh)
        chunks, programs = planning.plan_sweep(cfg, dataset, mesh, memory, fuse, confirm_long, log)
    record = config_record(cfg, dataset, chunks, dev.mesh_size(mesh), programs)
    if out is not None and writer:
        res.write_json(out / "config.json", record)
    t0 = time.perf_counter()
    cache = compilation.use_persistent_cache(
        compilation.cache_dir(cfg.compilation_cache), warn=scheduling_warning
    )
    data = device_data(dataset, sharding=dev.replicated(mesh))
    total = sum(c.n_lanes for c in chunks) * (dataset.n_train // cfg.batch_size) * cfg.epochs
    frames: list[pd.DataFrame] = []
    stop = threading.Event()
    with (
        progress_bar(total, progress) as bar,
        compilation.tracking(cache) as compiled,
        stop_on_interrupt(stop, bar),
    ):
        compiler = CompilePool(data, enabled=mesh is None)
        sweep = _Sweep(
            cfg, dataset, data, mesh, out, resume, bar, writer, compiler,
            fuse=fuse, memory=memory, parallel=parallel, stop=stop,
        )  # fmt: skip
        for members in training_order(sweep, chunks, programs):  # the first to train first
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
    frames = sweep.dynamics_frames
    dynamics = res.sort_results(pd.concat(frames)) if frames else None
    if out is None or not writer:
        outcome = outcome_of(df, cfg, rates)
        outcome.dynamics = dynamics
        return outcome
    return write_outputs(out, df, cfg, record, rates, dynamics)


def _run_all(
    sweep: _Sweep, chunks: list[Chunk], programs: list[tuple[int, ...]], frames: list
) -> None:
    """The grid's programs, then the refinement rounds (appended to ``chunks`` and
    ``programs``)."""
    _run_programs(sweep, chunks, programs, frames)
    grid = list(chunks)
    for r in range(1, sweep.cfg.refine + 1):
        new = planning.refinement_chunks(sweep.cfg, grid, pd.concat(frames), r)
        sweep.bar.total += sum(c.n_lanes for c in new) * sweep.steps * sweep.cfg.epochs
        new_programs = sweep.fuse_chunks(new, first=len(chunks))
        chunks += new
        programs += new_programs
        _run_programs(sweep, chunks, new_programs, frames)


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
            at = dict(round_=chunk.round, weight_decay=b.weight_decay)
            frames.append(res.chunk_frame(*keys, metrics, div, **at))
            rates = metrics.get("rates")
            if rates is not None and rates.ndim == 5 and rates.shape[3]:
                sweep.rate_frames.append(res.rates_frame(*keys, rates, **at))
            dyn = metrics.get("dynamics")
            if dyn is not None and dyn.ndim == 5 and dyn.shape[3]:
                layers = [f"Dense_{k}" for k in range(len(b.hidden) + 1)]
                sweep.dynamics_frames.append(res.dynamics_frame(*keys, dyn, layers, **at))
        if out is not None and sweep.writer:  # finished chunks are on disk as they finish
            res.write_csv(out / "results.csv", res.sort_results(pd.concat(frames)))

    def train(indices: tuple[int, ...]) -> list[tuple[dict, Any]]:
        return _run_program(sweep, [(i, chunks[i]) for i in indices])

    if sweep.parallel <= 1 or len(programs) <= 1:
        for indices in programs:
            if sweep.stop.is_set():
                raise KeyboardInterrupt
            sweep.bar.set_description(describe_program(sweep, indices, chunks))
            record(indices, train(indices))
        return
    train_concurrently(sweep, chunks, programs, train, record)


def _compiled(sweep: _Sweep, jobs: list[ckpt.Job]) -> Callable[..., Any] | None:
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
    prepared = {i: ckpt.prepare_job(sweep, i, c) for i, c in chunks}
    jobs = [j for j in prepared.values() if isinstance(j, ckpt.Job)]
    if len(jobs) == 1 or len({(j.start, j.start_step) for j in jobs}) > 1:
        for job in jobs:
            (prepared[job.index],) = _train(sweep, [job])
    elif jobs:
        for job, done in zip(jobs, _train(sweep, jobs), strict=True):
            prepared[job.index] = done
    return [prepared[i] for i, _ in chunks]


def _train(sweep: _Sweep, jobs: list[ckpt.Job]) -> list[tuple[dict, Any]]:
    """Trains ``jobs`` in one program (:func:`jaxlr.engine.train_group`; one job:
    :func:`jaxlr.engine.train_lanes`). They checkpoint together, so that they resume together;
    when the sweep is stopped (Ctrl-C) they checkpoint after the step block in flight and
    raise :class:`KeyboardInterrupt`."""
    last = sweep.cfg.epochs

    def on_epoch(epoch: int, states: Any, metrics: Any) -> None:
        states = _members(states, jobs)
        for job, state, m in zip(jobs, states, _members(metrics, jobs), strict=True):
            job.saver.epoch_done(epoch, state, m)
        stopping = sweep.stop.is_set() and epoch + 1 < last
        if stopping or jobs[0].saver.due(epoch + 1):
            for job, state in zip(jobs, states, strict=True):
                job.saver.save(epoch + 1, 0, state)
        if stopping:
            raise KeyboardInterrupt

    def on_block(epoch: int, steps_done: int, progress: Any) -> None:
        if steps_done == sweep.steps:
            return  # the epoch's end follows at once
        for job in jobs:
            job.saver.block_done(steps_done)
        stopping = sweep.stop.is_set()
        if stopping or jobs[0].saver.due_mid_epoch():
            for job, p in zip(jobs, _members(progress, jobs), strict=True):
                job.saver.save(epoch, steps_done, p)
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
        return [ckpt.finish_job(sweep, job, state, metrics)]
    progress = tuple(j.progress for j in jobs) if jobs[0].progress is not None else None
    states, metrics = train_group(
        tuple(j.spec for j in jobs), sweep.data, tuple(j.seeds for j in jobs),
        tuple(j.lrs for j in jobs), last, states=tuple(j.state for j in jobs),
        progress=progress, **kw,
    )  # fmt: skip
    done = zip(jobs, states, metrics, strict=True)
    return [ckpt.finish_job(sweep, j, st, m) for j, st, m in done]


def _members(x: Any, jobs: list[ckpt.Job]) -> tuple:
    """Per job: the entry of a program's tuple, or the one value of a single-job program."""
    return (x,) if len(jobs) == 1 else tuple(x)


def _warn(msg: str) -> None:
    print(f"jaxlr.sweep: {msg}", file=sys.stderr)
