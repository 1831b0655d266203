"""Checkpoints of a running sweep, written atomically and verified on load.

Layout inside a sweep's output directory::

    chunks/chunk-003.npz                     a finished chunk: its metrics, exactly (float32)
    checkpoints/chunk-004-e0012.npz          a running chunk after 12 epochs: state + metrics
    checkpoints/chunk-004-e0012-s000400.npz  ... and 400 steps of the 13th (a long epoch runs
                                             in step blocks; its state is the epoch's progress)

Every file holds a ``meta`` JSON record (grid hash, chunk index, epoch, seeds, lrs) and a
SHA-256 digest of all its arrays. A file whose digest, zip structure or config hash does not
match is never used: :func:`latest_checkpoint` falls back to the previous good checkpoint of the
chunk (the last two are kept), or reports that the chunk starts over.

The RNG state of a lane is a function of ``(seed, epoch)`` only (see :mod:`jaxlr.engine`), so
the saved epoch counter is the whole RNG state: a resumed sweep reproduces an uninterrupted one
bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr import devices as dev
from jaxlr.blocks import step_blocks
from jaxlr.config import SweepConfig
from jaxlr.engine import (
    EpochMetrics,
    RunSpec,
    cached_trainer,
    lane_hypers,
    to_host,
)
from jaxlr.plan import Chunk
from jaxlr.results import atomic_write

AUTO_CKPT_S = 120.0  # with --checkpoint-every unset: checkpoint after 2 minutes of training

KEEP = 2  # checkpoints kept per chunk


class CheckpointError(ValueError):
    """A checkpoint or finished-chunk file that cannot be used."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Atomically writes ``arrays`` and ``meta`` (with the arrays' digest) to ``path``."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    meta = {**meta, "digest": _digest(arrays)}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def load_npz(path: Path, grid_hash: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Reads and verifies a file written by :func:`save_npz`; raises :class:`CheckpointError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (KeyError, ValueError):
        raise CheckpointError(f"{path} has no valid metadata") from None
    if meta.get("grid_hash") != grid_hash:
        raise CheckpointError(
            f"{path} belongs to a different sweep config (hash {meta.get('grid_hash')}, "
            f"this config {grid_hash})"
        )
    if _digest(arrays) != meta.get("digest"):
        raise CheckpointError(f"{path} is corrupted (content digest mismatch)")
    return arrays, meta


def chunk_path(out: Path, index: int) -> Path:
    return out / "chunks" / f"chunk-{index:03d}.npz"


def checkpoint_path(out: Path, index: int, epoch: int, step: int = 0) -> Path:
    mid = f"-s{step:06d}" if step else ""
    return out / "checkpoints" / f"chunk-{index:03d}-e{epoch:04d}{mid}.npz"


def save_checkpoint(
    out: Path,
    index: int,
    epochs_done: int,
    state_leaves: list[np.ndarray],
    metrics: dict[str, np.ndarray],
    meta: dict[str, Any],
    steps_done: int = 0,
) -> Path:
    """Saves a running chunk after ``epochs_done`` epochs and ``steps_done`` steps of the next;
    keeps the newest :data:`KEEP`."""
    arrays = {f"state_{i:04d}": leaf for i, leaf in enumerate(state_leaves)}
    arrays.update({f"metric_{k}": v for k, v in metrics.items()})
    path = checkpoint_path(out, index, epochs_done, steps_done)
    meta = {**meta, "chunk": index, "epochs_done": epochs_done, "steps_done": steps_done}
    save_npz(path, arrays, meta)
    for old, _ in _checkpoints(out, index)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def _checkpoints(out: Path, index: int) -> list[tuple[Path, tuple[int, int]]]:
    """The checkpoint files of chunk ``index``, oldest first, with their (epoch, step)."""
    pattern = re.compile(rf"chunk-{index:03d}-e(\d+)(?:-s(\d+))?\.npz$")
    found = [
        (p, (int(m.group(1)), int(m.group(2) or 0)))
        for p in (out / "checkpoints").glob(f"chunk-{index:03d}-e*.npz")
        if (m := pattern.search(p.name))
    ]
    return sorted(found, key=lambda f: f[1])


def latest_checkpoint(
    out: Path, index: int, grid_hash: str, warn: Any = print
) -> tuple[int, int, list[np.ndarray], dict[str, np.ndarray]] | None:
    """The newest valid checkpoint of chunk ``index``:
    ``(epochs_done, steps_done, leaves, metrics)``.

    Invalid files are reported through ``warn`` and skipped; ``None`` if none is usable.
    """
    found = _checkpoints(out, index)
    for p, (epochs_done, steps_done) in reversed(found):
        try:
            arrays, _ = load_npz(p, grid_hash)
        except CheckpointError as e:
            warn(f"ignoring checkpoint: {e}")
            continue
        leaves = [arrays[k] for k in sorted(arrays) if k.startswith("state_")]
        metrics = {k[len("metric_") :]: v for k, v in arrays.items() if k.startswith("metric_")}
        return epochs_done, steps_done, leaves, metrics
    if found:
        warn(f"no usable checkpoint for chunk {index}; it starts over from epoch 0")
    return None


def clear_checkpoints(out: Path, index: int) -> None:
    """Removes the checkpoints of a finished chunk."""
    for p in (out / "checkpoints").glob(f"chunk-{index:03d}-e*.npz"):
        p.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class ChunkStore:
    """The files of one chunk of a sweep in ``out``: its finished metrics and its checkpoints.

    ``key`` names what the chunk trains (architecture, optimizer, seeds, lrs); a finished file
    whose key differs (the plan changed) is recomputed rather than used.
    """

    out: Path
    index: int
    grid_hash: str
    key: str
    warn: Callable[[str], None] = print

    @property
    def meta(self) -> dict[str, Any]:
        return {"grid_hash": self.grid_hash, "chunk_key": self.key}

    def finished(self) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """The saved ``(metrics, diverged_epoch)`` of a finished chunk, or ``None``."""
        path = chunk_path(self.out, self.index)
        if not path.exists():
            return None
        try:
            arrays, meta = load_npz(path, self.grid_hash)
        except CheckpointError as e:
            self.warn(f"recomputing chunk {self.index}: {e}")
            return None
        if meta.get("chunk_key") != self.key:
            self.warn(f"recomputing chunk {self.index}: the plan changed since it was saved")
            return None
        div = arrays.pop("diverged_epoch")
        return arrays, div

    def latest(self) -> tuple[int, int, list[np.ndarray], dict[str, np.ndarray]] | None:
        """The newest usable checkpoint (:func:`latest_checkpoint`), or ``None``."""
        return latest_checkpoint(self.out, self.index, self.grid_hash, warn=self.warn)

    def save(
        self,
        epochs_done: int,
        leaves: list[np.ndarray],
        metrics: dict[str, Any],
        steps_done: int = 0,
    ) -> None:
        """Checkpoints the running chunk after ``epochs_done`` epochs (and ``steps_done``
        steps of the next)."""
        save_checkpoint(self.out, self.index, epochs_done, leaves, metrics, self.meta, steps_done)

    def finish(self, metrics: dict[str, np.ndarray], diverged_epoch: np.ndarray) -> None:
        """Stores the finished chunk exactly and drops its checkpoints."""
        arrays = {**metrics, "diverged_epoch": diverged_epoch}
        save_npz(chunk_path(self.out, self.index), arrays, {**self.meta, "chunk": self.index})
        clear_checkpoints(self.out, self.index)


def chunk_key(chunk: Chunk) -> str:
    b = chunk.bucket
    decay = f"|wd={b.weight_decay!r}" if b.weight_decay else ""
    return f"{b.hidden}|{b.optimizer}|{b.parametrization}{decay}|{chunk.seeds}|{chunk.lrs}"


@dataclasses.dataclass
class Job:
    """One chunk being trained: its program, lanes, starting state and checkpoint store."""

    index: int
    chunk: Chunk
    spec: RunSpec
    seeds: jax.Array
    lrs: Any  # padded to the compiled lr lanes (engine.lane_hypers: with the weight decays)
    state: Any  # None when it resumes mid-epoch (from ``progress``)
    start: int  # first epoch to train (after a restored checkpoint)
    history: dict[str, np.ndarray] | None  # metrics of the restored epochs
    store: ChunkStore | None
    saver: EpochSaver
    start_step: int = 0  # steps of epoch ``start`` already trained (a mid-epoch checkpoint)
    progress: Any = None  # the lanes' EpochProgress there


def prepare_job(sweep: Any, index: int, chunk: Chunk) -> Job | tuple[dict[str, Any], Any]:
    """The job of a chunk, restored from its last checkpoint on ``--resume``; or, when the
    chunk finished in an earlier run, its ``(metrics, diverged_epoch)``."""
    if sweep.stop.is_set():
        raise KeyboardInterrupt  # interrupted before this chunk started
    cfg = sweep.cfg
    lanes = chunk.n_lanes
    store = None
    if sweep.out is not None:
        store = ChunkStore(sweep.out, index, cfg.grid_hash(), chunk_key(chunk), sweep.warn)
    if store is not None and sweep.resume and (done := store.finished()) is not None:
        sweep.bar.update(lanes * sweep.steps * cfg.epochs)
        return done
    spec = sweep.spec(chunk)
    n_pad = sweep.lane_lrs(chunk)
    lrs = chunk.lrs + (chunk.lrs[-1],) * (n_pad - len(chunk.lrs))
    seeds_a = jnp.asarray(chunk.seeds, jnp.int32)
    lrs_a = dev.place_lrs(lane_hypers(spec, lrs, chunk.bucket.weight_decay), sweep.mesh)
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
            sweep.warn(f"checkpoint of chunk {index} does not fit its program; starting over")
        else:
            tree = jax.tree.unflatten(jax.tree.structure(template), map(np.asarray, leaves))
            state, progress = (None, tree) if steps_done else (tree, None)
            start, start_step, history = epochs_done, steps_done, metrics or None
            sweep.bar.update(lanes * (sweep.steps * start + start_step))
            if steps_done:
                sweep.warn(f"chunk {index} resumes in epoch {start + 1} from step {steps_done}")
    saver = EpochSaver(store, cfg, history, sweep.bar, lanes, sweep.steps, sweep.writer)
    saver.counted = start_step
    state = dev.place_state(state, sweep.mesh)
    job = Job(index, chunk, spec, seeds_a, lrs_a, state, start, history, store, saver)
    job.start_step, job.progress = start_step, progress
    return job


def finish_job(sweep: Any, job: Job, state: Any, metrics: dict) -> tuple[dict[str, Any], Any]:
    """A trained chunk's metrics ``(E, S, L)`` and divergence epochs, without padding lanes;
    marks the chunk finished in its checkpoint store."""
    n_l = len(job.chunk.lrs)
    metrics = stack_metrics(job.history, [metrics]) if job.history else metrics
    metrics = {k: v[:, :, :n_l] for k, v in metrics.items()}
    div = to_host(state.diverged_epoch)[:, :n_l]
    if job.store is not None and sweep.writer:
        job.store.finish(metrics, div)
    return metrics, div


class EpochSaver:
    """A chunk's progress bar and checkpoints, after each step block and epoch."""

    def __init__(
        self,
        store: ChunkStore | None,
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

    def block_done(self, steps_done: int) -> None:
        """After ``steps_done`` steps of the current epoch."""
        self.bar.update(self.lanes * (steps_done - self.counted))
        self.counted = steps_done

    def epoch_done(self, epoch: int, state: Any, metrics: Any) -> None:
        """After epoch ``epoch`` (0-based), with its metrics."""
        self.bar.update(self.lanes * (self.steps - self.counted))
        self.counted = 0
        self.so_far.append(metrics)

    def save(self, epochs_done: int, steps_done: int, tree: Any) -> None:
        """Checkpoints ``tree`` (the state, or mid-epoch the epoch's progress) after
        ``epochs_done`` epochs and ``steps_done`` steps of the next."""
        if self.store is None:
            return
        leaves = [to_host(x) for x in jax.tree.leaves(tree)]
        if self.write:
            done = self.so_far or self.history
            metrics = stack_metrics(self.history, self.so_far) if done else {}
            self.store.save(epochs_done, leaves, metrics, steps_done=steps_done)
        self.last_save = time.monotonic()


def stack_metrics(history: dict[str, np.ndarray] | None, parts: list[Any]) -> dict[str, np.ndarray]:
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
