"""Shared helpers for the experiment scripts: run a sweep, aggregate it per lr, find lr*, plot.

Every experiment reduces its runs the same way:

- ``final_rows``: the last epoch of every run (one row per width x lr x seed x ...);
- ``per_lr``: mean and std over seeds of the final losses at each lr, with the number of seeds
  that diverged (the mean is NaN at an lr where any seed diverged);
- ``optimal_lr``: per seed, log2 lr* of that seed's final-loss curve by the library's estimator
  (:func:`jaxlr.stats.optimum_table`, ``local-quadratic``: a quadratic in log loss over >= 5
  grid points around the minimum, diverged and chance-level runs censored); then mean, std, min
  and max over seeds, and the seed-mean curve's best tested lr;
- ``lr_shift``: per seed, :math:`\\log_2 \\mathrm{lr}^*(w_{\\max})
  - \\log_2 \\mathrm{lr}^*(w_{\\min})` (seeds are paired: seed s fixes both widths' init and
  batch order), then mean and std.
"""

from __future__ import annotations

import argparse
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

from jaxlr import plots, stats
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
    p.add_argument(
        "--analyze",
        action="store_true",
        help="no training: recompute the tables and figures from the committed final.csv",
    )
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


def final_table(
    out: Path, cfgs: Sequence[SweepConfig], data: Any, analyze: bool = False
) -> pd.DataFrame:
    """The last epoch of every run of the sweeps ``cfgs`` (on ``data``): trained and written to
    ``out/final.csv`` (the ``results.csv`` columns, float32 exactly), or with ``analyze`` read
    back from it, so that every table and figure can be regenerated from committed files."""
    path = out / "final.csv"
    if analyze:
        return res.read_results(path)
    df = pd.concat([run(c, data) for c in cfgs], ignore_index=True)
    final = res.sort_results(final_rows(df))
    res.write_csv(path, final)
    print(f"wrote {path}", file=sys.stderr)
    return final


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


ESTIMATOR = stats.DEFAULT_ESTIMATOR
"""The lr* estimator of every experiment (the library's default)."""
CHANCE = stats.chance_level(10)
"""Runs at or above this final loss (ln 10: the 10-class tasks) are censored."""


def per_seed_optimum(final: pd.DataFrame, keys: Sequence[str], loss: str) -> pd.DataFrame:
    """log2 lr* of every seed, per ``keys`` (:func:`jaxlr.stats.seed_lr_stars`)."""
    return stats.seed_lr_stars(final, keys, loss, ESTIMATOR, CHANCE)


def optimal_lr(final: pd.DataFrame, keys: Sequence[str], loss: str) -> pd.DataFrame:
    """Per ``keys``: log2 lr* over seeds (mean, std, min, max), lr* of the seed-mean curve, the
    best mean loss, and the lowest lr at which any seed diverged
    (:func:`jaxlr.stats.optimum_table`)."""
    return stats.optimum_table(final, keys, loss, ESTIMATOR, CHANCE)


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


def lr_panel(ax: plt.Axes, final: pd.DataFrame, loss: str, *, title: str = "", **kw: Any) -> None:
    """One group's final ``loss`` against log2 lr (:func:`jaxlr.plots.lr_curve_panel`: every
    seed thin, mean ± std bold, ``*`` best, ``|`` each seed's lr*, ``x`` diverged), titled."""
    plots.lr_curve_panel(ax, final, loss, estimator=ESTIMATOR, chance_loss=CHANCE, **kw)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel(f"final {loss.replace('_', ' ')}")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def width_colors(widths: Sequence[int]) -> dict[int, Any]:
    """One viridis color per width, narrow = dark."""
    ws = sorted(set(widths))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(len(ws) - 1, 1) * 0.9) for i, w in enumerate(ws)}


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


def one_row(table: pd.DataFrame, key: dict[str, Any], name: str) -> pd.Series:
    """The one row of ``table`` matching ``key`` (experiment ``name`` stops if there is not
    exactly one)."""
    m = np.ones(len(table), bool)
    for k, val in key.items():
        m &= (table[k] == val).to_numpy()
    rows = table[m]
    if len(rows) != 1:
        raise SystemExit(f"{name}: expected one row for {dict(key)}, found {len(rows)}")
    return rows.iloc[0]


README = Path(__file__).resolve().parent / "README.md"


def write_readme_block(block: str, text: str) -> None:
    """Replaces the generated block ``block`` of ``experiments/README.md`` with ``text``."""
    import headline

    old = README.read_text()
    new = headline.replace_block(old, block, text)
    if new != old:
        README.write_text(new)
        print(f"rewrote the {block} block of {README}", file=sys.stderr)
