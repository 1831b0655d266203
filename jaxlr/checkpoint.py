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
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxlr.results import atomic_write

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
