"""adam_dense_check: is the width exponent's interval honest on a real sweep?

SP Adam on digits, 64-w-w-10 nets, widths 32 ... 512, batch 64, 10 epochs, a quarter-octave lr
grid (2^-14 ... 2^-3) and 6 seeds; lr* by the final train loss. Three checks:

1. **Estimator against a dense-grid analysis.** The tool's α (the ``local-quadratic`` estimator
   of :mod:`jaxlr.stats`, per seed, then the least-squares slope) beside an independent analysis
   of the same runs: per width, a smoothing of the seed-mean log loss over the whole dense grid
   (a cubic fitted by least squares to the points within ±1.5 octaves of the seed-mean argmin,
   evaluated on a 0.01-octave grid), whose minimum is lr*(w). They should agree within 0.1.
2. **The interval against the spread over seed subsets.** α of every 3-seed subset of the 6
   seeds (20 subsets): their standard deviation, and how often each subset's own 95% interval
   covers the 6-seed α. The 6-seed interval should be at least as wide as that spread implies,
   i.e. half-width ≥ t₅ · SD₃ · √(3/6) (a 3-seed α's SD scaled to 6 seeds).
3. **Estimators side by side**: ``argmin``, ``parabola`` (3 points) and ``local-quadratic``.

    python experiments/adam_dense_check.py [--analyze] [--quick]

Writes into ``experiments/results/adam_dense_check/``: ``final.csv`` (last epoch of every run),
``check.csv`` (the numbers above), ``subsets.csv`` (α and interval of each 3-seed subset),
``width_exponent.csv`` and ``transfer.csv``.
"""

from __future__ import annotations

import itertools
import math
import sys

import common
import numpy as np
import pandas as pd

from jaxlr import exponent, stats
from jaxlr.data import load_dataset
from jaxlr.sweep import SweepConfig

WIDTHS = (32, 64, 128, 256, 512)
SEEDS = tuple(range(6))
EPOCHS = 10
LRS = tuple(2.0 ** (k / 4) for k in range(-56, -11))  # 2^-14 .. 2^-3, quarter octaves
SELECT = "train_loss"


def config(quick: bool) -> SweepConfig:
    """The one sweep."""
    cfg = SweepConfig(
        dataset="digits", widths=WIDTHS, depth=2, lrs=LRS, seeds=SEEDS, optimizers=("adam",),
        epochs=EPOCHS, batch_size=64, select=SELECT,
    )  # fmt: skip
    if quick:
        cfg = cfg.replace(widths=WIDTHS[:3], seeds=(0, 1, 2), lrs=LRS[::4], epochs=2)
    return cfg


def dense_grid_alpha(final: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """The independent analysis: per width, a least-squares cubic in log2 lr through the
    seed-mean log loss within ±1.5 octaves of its best tested lr (no run censored there),
    minimized on a 0.01-octave grid; alpha is the least-squares slope of those minima."""
    rows = []
    for w, g in final.groupby("width", sort=True):
        per = g.groupby("lr").agg(m=(SELECT, "mean"), d=("diverged", "any"))
        per = per[~per["d"] & np.isfinite(per["m"])]
        x, z = np.log2(per.index.to_numpy()), np.log(per["m"].to_numpy())
        best = x[np.argmin(z)]
        near = np.abs(x - best) <= 1.5
        coef = np.polyfit(x[near] - best, z[near], 3)
        fine = np.arange(-1.5, 1.5001, 0.01)
        rows.append((w, best + fine[np.argmin(np.polyval(coef, fine))], int(near.sum())))
    t = pd.DataFrame(rows, columns=["width", "log2_lr_star", "n_points"])
    return float(np.polyfit(np.log2(t["width"]), t["log2_lr_star"], 1)[0]), t


def alpha_of(final: pd.DataFrame, estimator: str = stats.DEFAULT_ESTIMATOR) -> pd.Series:
    """The tool's width_exponent.csv row for ``final``."""
    t = exponent.width_exponent(
        final, SELECT, estimator=estimator, chance_loss=stats.chance_level(10)
    )
    return t.iloc[0]


def main() -> None:
    args = common.parser(__doc__).parse_args()
    out = common.out_dir("adam_dense_check", args)
    final = common.final_table(out, [config(args.quick)], load_dataset("digits"), args.analyze)
    table = exponent.width_exponent(final, SELECT, chance_loss=stats.chance_level(10))
    common.write_csv(table, out / "width_exponent.csv")
    transfer = exponent.transfer_table(final, SELECT, chance_loss=stats.chance_level(10))
    common.write_csv(transfer, out / "transfer.csv")
    full = table.iloc[0]
    dense, per_width = dense_grid_alpha(final)
    common.write_csv(per_width, out / "dense_grid.csv")
    seeds = sorted(final["seed"].unique())
    subsets = []
    for sub in itertools.combinations(seeds, 3):
        r = alpha_of(final[final["seed"].isin(sub)])
        subsets.append(
            dict(seeds="-".join(map(str, sub)), alpha=r["alpha"], alpha_lo=r["alpha_lo"],
                 alpha_hi=r["alpha_hi"],
                 covers_full=bool(r["alpha_lo"] <= full["alpha"] <= r["alpha_hi"]))
        )  # fmt: skip
    subsets = pd.DataFrame(subsets)
    common.write_csv(subsets, out / "subsets.csv")
    sd3 = float(subsets["alpha"].std(ddof=1))
    n = len(seeds)
    half = (full["alpha_hi"] - full["alpha_lo"]) / 2
    implied = 1.959964 * sd3 * math.sqrt(3 / n)
    rows = [
        dict(check="alpha, local-quadratic (tool)", value=full["alpha"]),
        dict(check="alpha_lo", value=full["alpha_lo"]),
        dict(check="alpha_hi", value=full["alpha_hi"]),
        dict(check="alpha, dense-grid cubic on the seed mean (independent)", value=dense),
        dict(check="|tool - dense|", value=abs(full["alpha"] - dense)),
        dict(check="agree within 0.1", value=float(abs(full["alpha"] - dense) <= 0.1)),
        dict(check="SD of alpha over the 3-seed subsets", value=sd3),
        dict(check=f"half-width implied at {n} seeds: 1.96 SD3 sqrt(3/{n})", value=implied),
        dict(check=f"half-width of the {n}-seed interval", value=half),
        dict(check="interval at least as wide as implied", value=float(half >= implied)),
        dict(check="3-seed intervals covering the full alpha (fraction)",
             value=float(subsets["covers_full"].mean())),
    ]  # fmt: skip
    for step in (1, 2, 4):  # quarter, half and whole octaves: every step-th lr of the grid
        lrs = sorted(final["lr"].unique())[::step]
        sub = final[final["lr"].isin(lrs)]
        for est in stats.ESTIMATORS:
            r = alpha_of(sub, est)
            rows.append(
                dict(check=f"alpha, {est}, grid 1/{4 // step} octave" if step < 4
                     else f"alpha, {est}, grid 1 octave", value=r["alpha"],
                     lo=r["alpha_lo"], hi=r["alpha_hi"])
            )  # fmt: skip
    check = pd.DataFrame(rows)
    common.write_csv(check, out / "check.csv")
    with pd.option_context("display.width", 160, "display.max_colwidth", 70):
        print(check.to_string(index=False), file=sys.stderr)
        print(transfer.to_string(index=False), file=sys.stderr)


if __name__ == "__main__":
    main()
