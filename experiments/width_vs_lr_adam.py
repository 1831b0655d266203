"""width_vs_lr_adam: do wider layers tolerate (and prefer) larger learning rates under Adam?

The width examples train a narrow 10-32-2 net at lr 1e-3 and a wide 10-256-2 net at lr 1e-2
with Adam and claim that wider layers tolerate larger rates. This script measures the optimal
Adam lr of one-hidden-layer MLPs of widths 16 ... 1024 on a log2 lr grid, with several seeds:

- ``synthetic``: the width examples' task, 100 x 10 Gaussian inputs with 2 uniformly random classes,
  full batch. The labels are random, so the only thing to learn is memorization: the reported
  loss is the *train* loss, after 10 steps (the width examples' horizon) and after 100 steps;
- ``digits``: 64-w-10 on scikit-learn's digits, batch 64, test loss after 15 epochs.

    python experiments/width_vs_lr_adam.py [--quick]

Writes into ``experiments/results/width_vs_lr_adam/``: ``final.csv`` (final rows of every run at
each horizon), ``per_lr.csv``, ``optimum.csv`` (per width: log2 lr* mean/std/min/max over seeds),
``shift.csv`` and ``width_vs_lr_adam.png``.
"""

from __future__ import annotations

import common
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr.sweep import SweepConfig

WIDTHS = (16, 32, 64, 128, 256, 512, 1024)
SEEDS = (0, 1, 2, 3, 4)
SYNTH_STEPS = (10, 100)
DIGITS_EPOCHS = 15
KEYS = ["task", "width"]


def configs(quick: bool) -> dict[str, SweepConfig]:
    """The two tasks' sweeps (one hidden layer, Adam)."""
    base = dict(depth=1, widths=WIDTHS, seeds=SEEDS, optimizers=("adam",), init="torch")
    synth = SweepConfig(
        dataset="synthetic", n_train=100, n_test=100, features=10, num_classes=2, data_seed=0,
        batch_size=100, lrs=common.log2_grid(-14, 0), epochs=max(SYNTH_STEPS), **base,
    )  # fmt: skip
    digits = SweepConfig(
        dataset="digits", batch_size=64, lrs=common.log2_grid(-14, -1), epochs=DIGITS_EPOCHS,
        **base,
    )  # fmt: skip
    if quick:
        q = dict(widths=(16, 256), seeds=(0, 1), lrs=common.log2_grid(-10, 0, 2))
        synth, digits = synth.replace(**q, epochs=10), digits.replace(**q, epochs=2)
    return {"synthetic": synth, "digits": digits}


def main() -> None:
    args = common.parser(__doc__).parse_args()
    out = common.out_dir("width_vs_lr_adam", args)
    cfgs = configs(args.quick)
    synth = common.run(cfgs["synthetic"])
    digits = common.run(cfgs["digits"])
    finals = []
    for steps in sorted({min(s, synth["epoch"].max()) for s in SYNTH_STEPS}):
        f = synth[synth["epoch"] == steps].copy()
        f["task"] = f"synthetic, {steps} steps (train loss)"
        f["loss"] = f["train_loss"]
        finals.append(f)
    f = common.final_rows(digits)
    f["task"] = f"digits, {f['epoch'].max()} epochs (test loss)"
    f["loss"] = f["test_loss"]
    finals.append(f)
    final = pd.concat(finals, ignore_index=True)
    common.write_csv(final, out / "final.csv")
    agg = common.per_lr(final, KEYS, ("loss", "train_loss", "test_loss", "test_accuracy"))
    common.write_csv(agg, out / "per_lr.csv")
    opt = common.optimal_lr(final, KEYS, "loss")
    common.write_csv(opt, out / "optimum.csv")
    shift = common.lr_shift(final, ["task"], "loss")
    common.write_csv(shift, out / "shift.csv")

    tasks = list(agg["task"].unique())
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.0 * len(tasks), 7.5), squeeze=False)
    for j, task in enumerate(tasks):
        common.lr_panel(axes[0, j], final[final["task"] == task], "loss", title=task, log_y=True)
        o = opt[opt["task"] == task]
        ax = axes[1, j]
        ax.errorbar(
            np.log2(o["width"]), o["log2_lr_star_mean"], yerr=o["log2_lr_star_std"],
            marker="o", capsize=3, label="per-seed lr*: mean ± std",
        )  # fmt: skip
        ax.fill_between(
            np.log2(o["width"]), o["log2_lr_star_min"], o["log2_lr_star_max"], alpha=0.2,
            label="per-seed min..max",
        )  # fmt: skip
        ax.set_xlabel("log2 width")
        ax.set_ylabel("log2 optimal lr")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Adam, one hidden layer: optimal lr against width", fontsize=11)
    common.save(fig, out / "width_vs_lr_adam.png")
    with pd.option_context("display.width", 180, "display.max_columns", 20):
        print(opt.to_string(index=False))
        print(shift.to_string(index=False))


if __name__ == "__main__":
    main()
