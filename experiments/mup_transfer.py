"""mup_transfer: does the optimal learning rate move with width under SP, and stay under muP?

64-w-w-10 MLPs on digits, widths 64 ... 1024, trained with Adam and with SGD, on a log2 lr grid
with several seeds, once in the standard parametrization (SP: torch init, one global lr) and once
in muP (``parametrizations=("mup",), base_width=64``: zero readout init, output multiplier 64/w,
per-parameter lr scales of ``mup.MuAdam`` / ``mup.MuSGD``; see :mod:`jaxlr.mup`). At width 64
both are the same model except muP's zero readout init.

Writes into ``experiments/results/mup_transfer/``: ``final.csv`` (final epoch of every run),
``per_lr.csv``, ``optimum.csv`` (per width: log2 lr* over seeds), ``shift.csv`` (log2 lr* at the
widest minus at the narrowest width, per seed, mean/std), ``width_exponent.csv``,
``transfer.csv`` (the regret of transferring the narrowest width's lr*), ``headline.png``
(final train loss against log2 lr, one curve per width; SP beside muP, Adam above SGD) and
``lr_star.png``. lr* is the library's ``local-quadratic`` estimate of each seed's curve.

    python experiments/mup_transfer.py [--analyze] [--quick]
"""

from __future__ import annotations

import common
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr import exponent, stats
from jaxlr.data import load_dataset
from jaxlr.sweep import SweepConfig

WIDTHS = (64, 128, 256)
SEEDS = tuple(range(8))
EPOCHS = 8
BASE_WIDTH = 64
LRS = {"adam": common.log2_grid(-13, -3), "sgd": common.log2_grid(-7, 3)}
KEYS = ["parametrization", "optimizer", "width"]
LOSS = "train_loss"


def configs(quick: bool) -> list[SweepConfig]:
    """One sweep per (parametrization, optimizer)."""
    cfgs = []
    for par in ("sp", "mup"):
        for opt, lrs in LRS.items():
            cfg = SweepConfig(
                dataset="digits", widths=WIDTHS, depth=2, lrs=lrs, seeds=SEEDS,
                optimizers=(opt,), epochs=EPOCHS, batch_size=64, parametrizations=(par,),
                base_width=BASE_WIDTH if par == "mup" else None,
            )  # fmt: skip
            if quick:
                cfg = cfg.replace(widths=(64, 256), seeds=(0, 1), lrs=lrs[::3], epochs=2)
            cfgs.append(cfg)
    return cfgs


def main() -> None:
    args = common.parser(__doc__).parse_args()
    out = common.out_dir("mup_transfer", args)
    data = load_dataset("digits")
    final = common.final_table(out, configs(args.quick), data, args.analyze)
    agg = common.per_lr(final, KEYS)
    common.write_csv(agg, out / "per_lr.csv")
    opt = common.optimal_lr(final, KEYS, LOSS)
    opt_test = common.optimal_lr(final, KEYS, "test_loss")
    opt = opt.merge(
        opt_test[[*KEYS, "log2_lr_star_mean", "log2_lr_star_std"]].rename(
            columns=lambda c: c.replace("log2_lr_star", "test_log2_lr_star")
        ),
        on=KEYS,
    )
    common.write_csv(opt, out / "optimum.csv")
    shift = common.lr_shift(final, ["parametrization", "optimizer"], LOSS).assign(loss=LOSS)
    shift_test = common.lr_shift(final, ["parametrization", "optimizer"], "test_loss")
    shift = pd.concat([shift, shift_test.assign(loss="test_loss")], ignore_index=True)
    common.write_csv(shift, out / "shift.csv")
    kw = dict(chance_loss=common.CHANCE, estimator=common.ESTIMATOR)
    table = exponent.width_exponent(final, LOSS, **kw)
    common.write_csv(table, out / "width_exponent.csv")
    transfer = exponent.transfer_table(final, LOSS, **kw)
    common.write_csv(transfer, out / "transfer.csv")

    names = {"sp": "SP", "mup": f"muP (base width {BASE_WIDTH})"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for i, o in enumerate(("adam", "sgd")):
        sub = agg[agg["optimizer"] == o]
        top = float(np.nanmax(sub[LOSS])) if np.isfinite(sub[LOSS]).any() else 2.5
        for j, par in enumerate(("sp", "mup")):
            runs = final[(final["optimizer"] == o) & (final["parametrization"] == par)]
            s = shift[(shift["parametrization"] == par) & (shift["optimizer"] == o)]
            s = s[s["loss"] == LOSS].iloc[0]
            title = (
                f"{names[par]}, {o.upper()}\nlog2 lr* shift {s['shift_log2_lr_star']:+.2f}"
                f" ± {s['shift_std']:.2f} (w {s['width_min']}→{s['width_max']})"
            )
            common.lr_panel(axes[i, j], runs, LOSS, title=title, log_y=True, ylim=(1e-4, top * 1.5))
    fig.suptitle(
        f"digits, 64-w-w-10, {final['epoch'].max()} epochs, {final['seed'].nunique()} seeds: "
        "final train loss\n(mean ± std over seeds, thin: each seed; * best lr, | each seed's lr*, "
        "x some seed diverged)",
        fontsize=11,
    )
    common.save(fig, out / "headline.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, o in zip(axes, ("adam", "sgd"), strict=True):
        for par in ("sp", "mup"):
            q = opt[(opt["optimizer"] == o) & (opt["parametrization"] == par)]
            ax.errorbar(
                np.log2(q["width"]), q["log2_lr_star_mean"], yerr=q["log2_lr_star_std"],
                marker="o", capsize=3, label=names[par],
            )  # fmt: skip
        ax.set_title(f"{o.upper()}: optimal lr (train loss) against width", fontsize=10)
        ax.set_xlabel("log2 width")
        ax.set_ylabel("log2 lr* (mean ± std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    common.save(fig, out / "lr_star.png")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(opt.to_string(index=False))
        print(shift.to_string(index=False))
    print(exponent.format_exponent(table))
    print(stats.format_transfer(transfer))


if __name__ == "__main__":
    main()
