"""``run_sweep(config) -> DataFrame``: data -> plan -> one program per bucket -> results.

The host loop runs every chunk of the plan for ``config.epochs`` epochs (one jitted call per
epoch), collects the per-epoch metrics, and, when ``config.out`` is set, writes after every
chunk an up-to-date ``results.csv`` (atomically), so that finished work is never lost, and at
the end ``summary.csv``, ``config.json`` and the plots.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlr import checkpoint as ckpt
from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.engine import RunSpec, cached_trainer, device_data, train_lanes
from jaxlr.plan import Chunk, make_plan

MEMORY_FRACTION = 0.5  # share of device memory the lanes of one chunk may use


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


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Usable memory of ``device``: its allocator limit, or half the host RAM on CPU."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # backends without memory stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def run_spec(cfg: SweepConfig, chunk: Chunk, dataset: Any) -> RunSpec:
    """The static program description of ``chunk``."""
    b = chunk.bucket
    steps = dataset.n_train // cfg.batch_size
    return RunSpec(
        in_features=dataset.in_features,
        hidden=b.hidden,
        num_classes=dataset.num_classes,
        optimizer=b.optimizer,
        batch_size=cfg.batch_size,
        steps_per_epoch=steps,
        n_train=dataset.n_train,
        n_test=dataset.n_test,
        init=cfg.init,
        lr_rule=cfg.lr_rule,
        layer_lr_mults=cfg.layer_lr_mults,
        weight_norm_factor=cfg.weight_norm_factor,
        adagrad_eps=cfg.adagrad_eps,
        parametrization=cfg.parametrization,
        base_width=cfg.base_width,
        divergence_loss=cfg.divergence_loss,
        data_mean=float(dataset.mean),
        data_std=float(dataset.std),
    )


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


def _mesh(cfg: SweepConfig) -> tuple[Any, int]:
    """A 1-D ``lanes`` mesh over the requested local devices (``None`` for one device)."""
    local = jax.local_devices()
    n = cfg.devices or len(local)
    if n > len(local):
        raise ConfigError(
            f"--devices {n} asks for more devices than this process has ({len(local)}: "
            f"{local[0].platform}); use --devices {len(local)} or fewer"
        )
    if n == 1:
        return None, 1
    return Mesh(np.array(local[:n]), ("lanes",)), n


def _place(tree: Any, mesh: Any) -> Any:
    """Puts a lane tree on ``mesh``: arrays with a (S, L, ...) layout split along L."""
    lanes = NamedSharding(mesh, P(None, "lanes"))
    repl = NamedSharding(mesh, P())
    return jax.tree.map(lambda a: jax.device_put(a, lanes if np.ndim(a) >= 2 else repl), tree)


def _chunk_key(chunk: Chunk) -> str:
    return f"{chunk.bucket.hidden}|{chunk.bucket.optimizer}|{chunk.seeds}|{chunk.lrs}"


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
    cfg = config
    out = Path(cfg.out) if cfg.out else None
    if resume:
        check_resumable(cfg)
    elif out is not None:
        check_writable(out, cfg)
    if dataset is None:
        dataset = load_config_dataset(cfg)
    if cfg.batch_size > dataset.n_train:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({dataset.n_train} examples); use a smaller batch"
        )
    mesh, n_dev = _mesh(cfg)
    t0 = time.perf_counter()
    with jax.default_matmul_precision(cfg.precision):
        data_sharding = NamedSharding(mesh, P()) if mesh is not None else None
        data = device_data(dataset, sharding=data_sharding)
        chunks = make_plan(
            cfg,
            dataset.in_features,
            dataset.num_classes,
            memory_bytes=int(device_memory_bytes() * MEMORY_FRACTION) * n_dev,
            multiple=n_dev,
        )
        steps = dataset.n_train // cfg.batch_size
        total = sum(c.n_lanes for c in chunks) * steps * cfg.epochs
        frames: list[pd.DataFrame] = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            res.write_json(out / "config.json", _config_record(cfg, dataset, chunks))
        with _progress(total, progress) as bar:
            for i, chunk in enumerate(chunks):
                spec = run_spec(cfg, chunk, dataset)
                bar.set_description(
                    f"[{i + 1}/{len(chunks)}] {'-'.join(map(str, spec.hidden))} {spec.optimizer}"
                )
                metrics, div = _run_chunk(
                    i, chunk, spec, data, cfg, out, resume, bar, steps, mesh, n_dev
                )
                frames.append(
                    res.chunk_frame(
                        spec.hidden,
                        spec.optimizer,
                        cfg.lr_rule,
                        cfg.parametrization,
                        chunk.seeds,
                        chunk.lrs,
                        metrics,
                        div,
                    )
                )
                if out is not None:  # finished chunks are on disk as soon as they finish
                    res.write_csv(out / "results.csv", res.sort_results(pd.concat(frames)))
    df = res.sort_results(pd.concat(frames)) if frames else pd.DataFrame(columns=res.COLUMNS)
    elapsed = time.perf_counter() - t0
    if out is not None:
        write_outputs(out, df, cfg, dataset, chunks, elapsed)
    return df


def _run_chunk(
    index: int,
    chunk: Chunk,
    spec: RunSpec,
    data: Any,
    cfg: SweepConfig,
    out: Path | None,
    resume: bool,
    bar: Any,
    steps: int,
    mesh: Any,
    n_dev: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Trains one chunk (or restores it); returns its metrics ``(E, S, L)`` and divergence."""
    grid_hash = cfg.grid_hash()
    meta = {"grid_hash": grid_hash, "chunk_key": _chunk_key(chunk)}
    n_l = len(chunk.lrs)
    if out is not None and resume:
        done = _load_finished(out, index, grid_hash, meta["chunk_key"])
        if done is not None:
            bar.update(chunk.n_lanes * steps * cfg.epochs)
            return done
    # pad the lr axis to a multiple of the device count (padding lanes are dropped at the end)
    lrs = chunk.lrs + (chunk.lrs[-1],) * (-n_l % n_dev)
    seeds_a = jnp.asarray(chunk.seeds, jnp.int32)
    lrs_a = jnp.asarray(lrs, jnp.float32)
    if mesh is not None:
        lrs_a = jax.device_put(lrs_a, NamedSharding(mesh, P("lanes")))
    trainer = cached_trainer(spec)
    state = trainer.init(seeds_a, lrs_a)
    start, history = 0, None
    if out is not None and resume:
        found = ckpt.latest_checkpoint(out, index, grid_hash, warn=_warn)
        if found is not None:
            start, leaves, history = found
            treedef = jax.tree.structure(state)
            if len(leaves) != treedef.num_leaves:
                _warn(f"checkpoint of chunk {index} does not fit its program; starting over")
                start, history = 0, None
            else:
                state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
                bar.update(chunk.n_lanes * steps * start)
    if mesh is not None:
        state = _place(state, mesh)
    every = cfg.checkpoint_every
    last_save = [time.monotonic()]
    so_far: list[Any] = []

    def on_epoch(e: int, st: Any, m: Any) -> None:
        bar.update(chunk.n_lanes * steps)
        so_far.append(m)
        if out is None or every == 0 or e + 1 == cfg.epochs:
            return
        due = (e + 1) % every == 0 if every else time.monotonic() - last_save[0] > AUTO_CKPT_S
        if due:
            metrics = _stack(history, so_far)
            leaves = [np.asarray(x) for x in jax.tree.leaves(st)]
            ckpt.save_checkpoint(out, index, e + 1, leaves, metrics, meta)
            last_save[0] = time.monotonic()

    state, metrics = train_lanes(
        spec,
        data,
        seeds_a,
        lrs_a,
        cfg.epochs,
        on_epoch=on_epoch,
        state=state,
        start_epoch=start,
    )
    metrics = _stack(history, [metrics]) if history else metrics
    metrics = {k: v[:, :, :n_l] for k, v in metrics.items()}
    div = np.asarray(state.diverged_epoch)[:, :n_l]
    if out is not None:
        ckpt.save_npz(
            ckpt.chunk_path(out, index),
            {**metrics, "diverged_epoch": div},
            {**meta, "chunk": index},
        )
        ckpt.clear_checkpoints(out, index)
    return metrics, div


AUTO_CKPT_S = 120.0  # with --checkpoint-every unset: checkpoint after 2 minutes of training


def _stack(history: dict[str, np.ndarray] | None, parts: list[Any]) -> dict[str, np.ndarray]:
    """Concatenates restored metrics with new ones along the epoch axis."""
    out = {}
    for k in ("train_loss", "test_loss", "test_accuracy"):
        new = [np.asarray(p[k] if isinstance(p, dict) else getattr(p, k)) for p in parts]
        new = [x[None] if x.ndim == 2 else x for x in new]
        old = [history[k]] if history else []
        out[k] = np.concatenate(old + new, axis=0)
    return out


def _load_finished(out: Path, index: int, grid_hash: str, key: str) -> Any:
    path = ckpt.chunk_path(out, index)
    if not path.exists():
        return None
    try:
        arrays, meta = ckpt.load_npz(path, grid_hash)
    except ckpt.CheckpointError as e:
        _warn(f"recomputing chunk {index}: {e}")
        return None
    if meta.get("chunk_key") != key:
        _warn(f"recomputing chunk {index}: the plan changed since it was saved")
        return None
    div = arrays.pop("diverged_epoch")
    return arrays, div


def _warn(msg: str) -> None:
    print(f"jaxlr.sweep: {msg}", file=sys.stderr)


def check_writable(out: Path, cfg: SweepConfig) -> None:
    """Refuses an output path that is a file, or a directory holding another sweep's results
    (writing there would replace them)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out")
    record = out / "config.json"
    if not record.exists():
        return
    try:
        old = json.loads(record.read_text()).get("grid_hash")
    except ValueError:
        old = None
    if old != cfg.grid_hash():
        raise ConfigError(
            f"--out {out} already holds the results of a different sweep; choose a new --out, "
            f"or add --resume with that sweep's flags to continue it"
        )


def check_resumable(cfg: SweepConfig) -> None:
    """Refuses to resume into a directory that holds a different sweep (or none)."""
    if cfg.out is None:
        raise ConfigError("--resume needs --out DIR, the directory of the sweep to continue")
    record = Path(cfg.out) / "config.json"
    if not record.exists():
        raise ConfigError(f"--resume: {record} not found; is {cfg.out} a sweep directory?")
    try:
        old = json.loads(record.read_text())["grid_hash"]
    except (ValueError, KeyError):
        raise ConfigError(f"--resume: {record} is not a jaxlr sweep record") from None
    if old != cfg.grid_hash():
        raise ConfigError(
            f"--resume: {cfg.out} holds a sweep with a different config (hash {old}, these "
            f"flags give {cfg.grid_hash()}); rerun with the same flags or a new --out"
        )


def _config_record(cfg: SweepConfig, dataset: Any, chunks: list[Chunk]) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "grid_hash": cfg.grid_hash(),
        "dataset": {
            "name": dataset.name,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "in_features": dataset.in_features,
            "num_classes": dataset.num_classes,
            "normalization": {"mean": float(dataset.mean), "std": float(dataset.std)},
            "steps_per_epoch": dataset.n_train // cfg.batch_size,
            "dropped_per_epoch": dataset.n_train % cfg.batch_size,
        },
        "plan": [
            {
                "hidden": list(c.bucket.hidden),
                "optimizer": c.bucket.optimizer,
                "seeds": list(c.seeds),
                "lrs": list(c.lrs),
            }
            for c in chunks
        ],
        "versions": res.library_versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def write_outputs(
    out: Path,
    df: pd.DataFrame,
    cfg: SweepConfig,
    dataset: Any,
    chunks: list[Chunk],
    elapsed: float,
) -> pd.DataFrame:
    """Writes results.csv, summary.csv, config.json and the plots into ``out``."""
    record = _config_record(cfg, dataset, chunks)
    record["elapsed_s"] = round(elapsed, 3)
    return _write_all(
        out, df, record, f"{dataset.name}: {', '.join(cfg.optimizers)}, batch {cfg.batch_size}"
    )


def _write_all(out: Path, df: pd.DataFrame, record: dict[str, Any], title: str) -> pd.DataFrame:
    """The tables, the config record and the plots of a finished sweep; returns the summary."""
    summary = res.summarize(df)
    res.write_csv(out / "results.csv", df)
    res.write_csv(out / "summary.csv", summary)
    res.write_json(out / "config.json", record)
    from jaxlr import plots

    for name, plot in (
        ("loss_curves", plots.plot_loss_curves),
        ("lr_sensitivity", plots.plot_lr_sensitivity),
    ):
        try:
            plot(df, out / f"{name}.png", title=title)
        except Exception as e:  # a plot must never cost the results, which are on disk
            warnings.warn(f"could not draw {name}.png: {e}", stacklevel=2)
    return summary


def merge_runs(dirs: list[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Merges the output directories of grid shards (``--shard i/n``) into ``out``.

    Refuses directories from different configs (other than ``--shard``/``--out``), two copies of
    one shard, and overlapping runs; warns when shards are missing.
    """
    if not dirs:
        raise ConfigError("merge needs at least one sweep directory")
    records, frames = [], []
    for d in map(Path, dirs):
        try:
            records.append(json.loads((d / "config.json").read_text()))
            frames.append(res.read_results(d / "results.csv"))
        except FileNotFoundError as e:
            raise ConfigError(
                f"merge: {d} is not a finished sweep ({e.filename} missing)"
            ) from None
    hashes = {r["grid_hash"] for r in records}
    if len(hashes) > 1:
        by = ", ".join(f"{d}: {r['grid_hash']}" for d, r in zip(dirs, records, strict=True))
        raise ConfigError(
            f"merge: refusing to merge sweeps of different configs ({by}); only --shard may differ"
        )
    shards = [tuple(r["config"]["shard"]) for r in records]
    if len(set(shards)) != len(shards):
        raise ConfigError(f"merge: the same shard appears twice among {list(map(str, dirs))}")
    n = shards[0][1]
    missing = sorted(set(range(n)) - {i for i, _ in shards})
    if missing:
        _warn(f"merge: shards {missing} of {n} are missing; the merged table is partial")
    df = res.sort_results(pd.concat(frames))
    if df.duplicated([*res.RUN_KEYS, "epoch"]).any():
        raise ConfigError("merge: the directories hold overlapping runs")
    cfg = SweepConfig(**{**_config_fields(records[0]["config"]), "shard": (0, 1), "out": str(out)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = records[0]["dataset"]
    record = {
        "config": cfg.to_dict(),
        "grid_hash": cfg.grid_hash(),
        "dataset": ds,
        "merged_from": [str(d) for d in dirs],
        "versions": res.library_versions(),
    }
    title = f"{ds['name']}: {', '.join(cfg.optimizers)}, batch {cfg.batch_size}"
    _write_all(out, df, record, title)
    return df


def _config_fields(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict from JSON back to :class:`SweepConfig` field types (tuples)."""
    out = dict(d)
    for k in ("widths", "lrs", "seeds", "optimizers", "layer_lr_mults", "shard"):
        if out.get(k) is not None:
            out[k] = tuple(out[k])
    if out.get("hidden") is not None:
        out["hidden"] = tuple(tuple(h) for h in out["hidden"])
    return out


def load_config(out: str | os.PathLike) -> SweepConfig:
    """The config recorded in a sweep directory's ``config.json``."""
    record = Path(out) / "config.json"
    try:
        return SweepConfig(**_config_fields(json.loads(record.read_text())["config"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the sweep config {record}: {e}") from None
