"""``run_sweep(config) -> DataFrame``: data -> plan -> one program per bucket -> results.

The host loop runs every chunk of the plan for ``config.epochs`` epochs (one jitted call per
epoch), collects the per-epoch metrics, and, when ``config.out`` is set, writes after every
chunk an up-to-date ``results.csv`` (atomically), so that finished work is never lost, and at
the end ``summary.csv``, ``config.json`` and the plots.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlr import results as res
from jaxlr.config import SweepConfig
from jaxlr.engine import RunSpec, device_data, train_lanes
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


def run_sweep(
    config: SweepConfig,
    *,
    dataset: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Runs the sweep described by ``config`` and returns the long-format results table.

    Args:
      config: the sweep.
      dataset: a :class:`jaxlr.data.Dataset` to use instead of loading ``config.dataset``.
      progress: show a progress bar (runs·steps/s) on stderr.

    Returns:
      One row per run x epoch (columns in :mod:`jaxlr.results`). When ``config.out`` is set the
      table, the summary, the config and the plots are also written there.
    """
    cfg = config
    if dataset is None:
        dataset = load_config_dataset(cfg)
    if cfg.batch_size > dataset.n_train:
        from jaxlr.config import ConfigError

        raise ConfigError(
            f"--batch-size {cfg.batch_size} is larger than the training set "
            f"({dataset.n_train} examples); use a smaller batch"
        )
    out = Path(cfg.out) if cfg.out else None
    t0 = time.perf_counter()
    with jax.default_matmul_precision(cfg.precision):
        data = device_data(dataset)
        chunks = make_plan(
            cfg,
            dataset.in_features,
            dataset.num_classes,
            memory_bytes=int(device_memory_bytes() * MEMORY_FRACTION),
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

                def on_epoch(e: int, state: Any, metrics: Any, n=chunk.n_lanes) -> None:
                    bar.update(n * steps)

                state, metrics = train_lanes(
                    spec, data, chunk.seeds, chunk.lrs, cfg.epochs, on_epoch=on_epoch
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
                        np.asarray(state.diverged_epoch),
                    )
                )
                if out is not None:  # finished chunks are on disk as soon as they finish
                    res.write_csv(out / "results.csv", res.sort_results(pd.concat(frames)))
    df = res.sort_results(pd.concat(frames)) if frames else pd.DataFrame(columns=res.COLUMNS)
    elapsed = time.perf_counter() - t0
    if out is not None:
        write_outputs(out, df, cfg, dataset, chunks, elapsed)
    return df


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
    summary = res.summarize(df)
    res.write_csv(out / "results.csv", df)
    res.write_csv(out / "summary.csv", summary)
    record = _config_record(cfg, dataset, chunks)
    record["elapsed_s"] = round(elapsed, 3)
    res.write_json(out / "config.json", record)
    from jaxlr import plots

    title = f"{dataset.name}: {', '.join(cfg.optimizers)}, batch {cfg.batch_size}"
    for name, plot in (
        ("loss_curves", plots.plot_loss_curves),
        ("lr_sensitivity", plots.plot_lr_sensitivity),
    ):
        try:
            plot(df, out / f"{name}.png", title=title)
        except Exception as e:  # a plot must never cost the results, which are on disk
            warnings.warn(f"could not draw {name}.png: {e}", stacklevel=2)
    return summary


def replace_out(cfg: SweepConfig, out: str | os.PathLike) -> SweepConfig:
    """``cfg`` writing into ``out``."""
    return dataclasses.replace(cfg, out=str(out))
