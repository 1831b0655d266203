"""How a sweep's programs share the machine: which train at once, in what order, compiled where.

* :func:`fuse_enabled` -- whether the chunks of a round share one program (a GPU or TPU);
* :func:`parallel_programs` -- how many programs train at the same time (one per core on the CPU);
* :func:`training_order` and :func:`run_concurrently` -- longest first, within the memory budget,
  in worker threads;
* :class:`CompilePool` -- every program compiled ahead of time in background threads;
* :func:`stop_on_interrupt` -- the first Ctrl-C asks every program to stop after its step block.

Nothing here changes a number of the results: each program computes exactly what it computes
alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax

from jaxlr import devices as dev
from jaxlr import plan as planning
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.engine import RunSpec, compile_epoch, compile_group
from jaxlr.plan import Chunk

Program = tuple[tuple[RunSpec, int, int], ...]  # per chunk of a program: (spec, seeds, lrs)


class CompilePool:
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


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event, bar: Any) -> Iterator[None]:
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


def program_cost(sweep: Any, chunks: list[Chunk]) -> Callable[[tuple[int, ...]], float]:
    """The predicted training cost of a program (its chunks' :func:`planning.chunk_cost`)."""
    d_in, n_cls = sweep.dataset.in_features, sweep.dataset.num_classes
    return lambda m: sum(planning.chunk_cost(chunks[i], d_in, n_cls) for i in m)


def training_order(
    sweep: Any, chunks: list[Chunk], programs: list[tuple[int, ...]]
) -> list[tuple[int, ...]]:
    """``programs`` in the order they start training: as given one at a time, longest first
    (as :func:`run_concurrently` starts them) when several train at once."""
    if sweep.parallel <= 1 or len(programs) <= 1:
        return list(programs)
    cost = program_cost(sweep, chunks)
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


def describe_program(sweep: Any, indices: tuple[int, ...], chunks: list[Chunk]) -> str:
    """The progress bar's label of a program: its chunks' numbers, architectures, optimizers."""
    cs = [chunks[i] for i in indices]
    label = ",".join(dict.fromkeys("-".join(map(str, c.bucket.hidden)) for c in cs))
    label += " " + ",".join(dict.fromkeys(c.bucket.optimizer for c in cs))
    if len(sweep.cfg.parametrizations) > 1:
        label += " " + ",".join(dict.fromkeys(c.bucket.parametrization for c in cs))
    if cs[0].round:
        label += f" refine {cs[0].round}"
    return f"[{','.join(str(i + 1) for i in indices)}] {label}"


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Any]:
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


def warning(msg: str) -> None:
    print(f"jaxlr.sweep: warning: {msg}", file=sys.stderr)


def warn_gpu_only(cfg: SweepConfig) -> None:
    """Says so when a GPU-only option is set on a backend that ignores it."""
    backend = jax.default_backend()
    if backend == "gpu":
        return
    if cfg.autotune == "on":
        warning(f"--autotune on has no effect on the {backend} (XLA autotunes GPU kernels only)")
    if not cfg.deterministic:
        warning(f"--no-deterministic has no effect on the {backend} (it is reproducible)")


def train_concurrently(
    sweep: Any,
    chunks: list[Chunk],
    programs: list[tuple[int, ...]],
    train: Callable[[tuple[int, ...]], R],
    record: Callable[[tuple[int, ...], R], None],
) -> None:
    """``record(program, train(program))`` for every program, ``sweep.parallel`` at a time
    within ``sweep.memory`` (:func:`run_concurrently`), the progress bar naming the running
    ones."""
    nbytes = planning.chunk_bytes_of(sweep.cfg, sweep.dataset)
    running: dict[tuple[int, ...], str] = {}

    def started(indices: tuple[int, ...]) -> None:
        running[indices] = describe_program(sweep, indices, chunks)
        sweep.bar.set_description(" | ".join(running.values()))

    def finished(indices: tuple[int, ...], done: R) -> None:
        del running[indices]
        sweep.bar.set_description(" | ".join(running.values()))
        record(indices, done)

    run_concurrently(
        programs,
        train,
        slots=sweep.parallel,
        cost=program_cost(sweep, chunks),
        nbytes=lambda m: sum(nbytes(chunks[i]) for i in m),
        memory=sweep.memory,
        on_start=started,
        on_done=finished,
        stop=sweep.stop,
    )
