"""Shared helpers for the experiment scripts: run a sweep, aggregate it per lr, find lr*, plot.

Every experiment reduces its runs the same way:

- ``final_rows``: the last epoch of every run (one row per width x lr x seed x ...);
- ``per_lr``: mean and std over seeds of the final losses at each lr, with the number of seeds
  that diverged (the mean is NaN at an lr where any seed diverged);
- ``optimal_lr``: per seed, :math:`\\log_2 \\mathrm{lr}^* = \\log_2 \\arg\\min_{\\mathrm{lr}}`
  final loss over the lrs where that seed did not diverge; then mean, std, min and max over seeds;
- ``lr_shift``: per seed, :math:`\\log_2 \\mathrm{lr}^*(w_{\\max})
  - \\log_2 \\mathrm{lr}^*(w_{\\min})` (seeds are paired: seed s fixes both widths' init and
  batch order), then mean and std.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr import results as res
from jaxlr.sweep import SweepConfig, run_sweep

RESULTS = Path(__file__).resolve().parent / "results"


def log2_grid(lo: int, hi: int, step: int = 1) -> tuple[float, ...]:
    """Learning rates 2**lo, 2**(lo + step), ..., 2**hi."""
    return tuple(2.0**k for k in range(lo, hi + 1, step))


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every experiment takes (--scale, --quick, --out)."""
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    p.add_argument(
        "--scale",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu: the committed CI-sized runs; gpu: the full-scale answer, for one GPU "
        "(results go to <name>_gpu/)",
    )
    p.add_argument("--quick", action="store_true", help="a tiny grid, to check the script runs")
    p.add_argument("--out", default=None, help="output folder (default experiments/results/NAME)")
    return p


def out_dir(name: str, args: argparse.Namespace) -> Path:
    """The folder an experiment writes into (created)."""
    name += "_gpu" if getattr(args, "scale", "cpu") == "gpu" else ""
    path = Path(args.out) if args.out else RESULTS / name
    if args.quick and not args.out:
        path = Path("/tmp") / f"jaxlr-experiments-quick/{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cfg: SweepConfig, data: Any = None, **tags: Any) -> pd.DataFrame:
    """Runs ``cfg`` (on ``data``, a loaded Dataset, if given; no files written) and returns its
    table with ``tags`` as extra columns."""
    t0 = time.time()
    df = run_sweep(cfg, dataset=data, progress=False)
    n_runs = len(df[["hidden", "optimizer", "parametrization", "lr", "seed"]].drop_duplicates())
    print(
        f"  {n_runs} runs, widths {list(cfg.widths)}, {cfg.optimizers}, "
        f"{','.join(cfg.parametrizations)}, {cfg.lr_rule}, {cfg.epochs} epochs: "
        f"{time.time() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    for k, v in tags.items():
        df[k] = v
    return df


def final_rows(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """The last epoch's row of every run (:func:`jaxlr.results.final_epoch`, applied per value
    of the ``by`` column when given: experiments that join sweeps of different lengths)."""
    if by is None:
        return res.final_epoch(df).reset_index(drop=True)
    parts = [res.final_epoch(g) for _, g in df.groupby(by, sort=False)]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def per_lr(
    final: pd.DataFrame,
    keys: Sequence[str],
    metrics: Sequence[str] = ("train_loss", "test_loss", "test_accuracy"),
) -> pd.DataFrame:
    """Mean/std over seeds of the final ``metrics``, per ``keys`` + lr (NaN where any seed
    diverged), with the number of seeds and of diverged seeds."""
    g = final.groupby([*keys, "lr"], sort=True)
    spec: dict[str, tuple[str, str]] = {}
    for m in metrics:
        spec[m] = (m, "mean")
        spec[f"{m}_std"] = (m, "std")
    agg = g.agg(**spec, n_seeds=("seed", "nunique"), n_diverged=("diverged", "sum")).reset_index()
    agg["n_diverged"] = agg["n_diverged"].astype(int)
    agg.loc[agg["n_diverged"] > 0, list(spec)] = np.nan
    agg.insert(len(keys) + 1, "log2_lr", np.log2(agg["lr"]))
    return agg


def _argmin_lr(g: pd.DataFrame, loss: str) -> float:
    ok = g[~g["diverged"].astype(bool) & np.isfinite(g[loss])]
    return float(np.log2(ok.loc[ok[loss].idxmin(), "lr"])) if len(ok) else math.nan


def per_seed_optimum(final: pd.DataFrame, keys: Sequence[str], loss: str) -> pd.DataFrame:
    """log2 lr* of every seed, per ``keys``: the lr of that seed's lowest final ``loss``."""
    rows = []
    for key, g in final.groupby([*keys, "seed"], sort=True):
        rows.append((*key, _argmin_lr(g, loss)))
    return pd.DataFrame(rows, columns=[*keys, "seed", "log2_lr_star"])


def optimal_lr(final: pd.DataFrame, keys: Sequence[str], loss: str) -> pd.DataFrame:
    """Per ``keys``: log2 lr* over seeds (mean, std, min, max), lr* of the seed-mean curve, the
    best mean loss, and the lowest lr at which any seed diverged."""
    seeds = per_seed_optimum(final, keys, loss)
    stats = (
        seeds.groupby(list(keys), sort=True)["log2_lr_star"]
        .agg(log2_lr_star_mean="mean", log2_lr_star_std="std", log2_lr_star_min="min")
        .reset_index()
    )
    stats["log2_lr_star_max"] = seeds.groupby(list(keys), sort=True)["log2_lr_star"].max().values
    agg = per_lr(final, keys, (loss,))
    extra = []
    for key, g in agg.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[np.isfinite(g[loss])]
        best = ok.loc[ok[loss].idxmin()] if len(ok) else None
        div = g.loc[g["n_diverged"] > 0, "lr"]
        extra.append(
            (
                *key,
                float(np.log2(best["lr"])) if best is not None else math.nan,
                float(best[loss]) if best is not None else math.nan,
                float(best[f"{loss}_std"]) if best is not None else math.nan,
                float(np.log2(div.min())) if len(div) else math.nan,
            )
        )
    cols = ["log2_lr_star_of_mean", f"best_{loss}", f"best_{loss}_std", "log2_min_diverged_lr"]
    return stats.merge(pd.DataFrame(extra, columns=[*keys, *cols]), on=list(keys))


def lr_shift(final: pd.DataFrame, keys: Sequence[str], loss: str) -> pd.DataFrame:
    """Per ``keys`` (without width): per-seed log2 lr*(widest) - log2 lr*(narrowest), mean/std."""
    seeds = per_seed_optimum(final, [*keys, "width"], loss)
    rows = []
    for key, g in seeds.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        lo, hi = g["width"].min(), g["width"].max()
        a = g[g["width"] == lo].set_index("seed")["log2_lr_star"]
        b = g[g["width"] == hi].set_index("seed")["log2_lr_star"]
        d = (b - a).dropna()
        rows.append((*key, lo, hi, float(d.mean()), float(d.std()) if len(d) > 1 else 0.0, len(d)))
    cols = ["width_min", "width_max", "shift_log2_lr_star", "shift_std", "n_seeds"]
    return pd.DataFrame(rows, columns=[*keys, *cols])


def width_colors(widths: Sequence[int]) -> dict[int, Any]:
    """One viridis color per width, narrow = dark."""
    ws = sorted(set(widths))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(len(ws) - 1, 1) * 0.9) for i, w in enumerate(ws)}


def plot_lr_curves(
    ax: plt.Axes, agg: pd.DataFrame, loss: str, *, title: str = "", ylim: Any = None
) -> None:
    """Final ``loss`` (mean +- std over seeds) against log2 lr, one curve per width.

    Diverged lrs (any seed) are marked ``x`` near the top; each curve's best lr is marked ``*``.
    """
    colors = width_colors(agg["width"].unique())
    for i, (w, g) in enumerate(agg.groupby("width", sort=True)):
        g = g.sort_values("lr")
        c = colors[w]
        ax.errorbar(
            g["log2_lr"], g[loss], yerr=g[f"{loss}_std"], color=c, marker="o", ms=3,
            capsize=2, lw=1.3, label=f"w={w}",
        )  # fmt: skip
        div = g[g["n_diverged"] > 0]
        y = [0.97 - 0.04 * i] * len(div)  # axes fraction: a row of x per width, at the top
        ax.plot(div["log2_lr"], y, "x", color=c, ms=6, transform=ax.get_xaxis_transform())
        ok = g[np.isfinite(g[loss])]
        if len(ok):
            b = ok.loc[ok[loss].idxmin()]
            ax.plot([b["log2_lr"]], [b[loss]], "*", color=c, ms=13, mec="k", mew=0.6, zorder=5)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel(f"final {loss.replace('_', ' ')}")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def save(fig: plt.Figure, path: Path) -> None:
    """Saves and closes ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Writes ``df`` atomically (:func:`jaxlr.results.atomic_write`) with 6 significant digits:
    small, diff-friendly CSVs of aggregates (the sweeps' own tables keep float32 exactly)."""
    res.atomic_write(path, lambda p: df.to_csv(p, index=False, float_format="%.6g"))
    print(f"wrote {path}", file=sys.stderr)
