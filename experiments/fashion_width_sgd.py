"""fashion_width_sgd: the Fashion-MNIST width experiment's grid, with seeds and error bars.

Does the divergence threshold, or the optimal rate, of 784-w-w-10 / 64-w-w-10 MLPs trained with
plain SGD (batch 64, torch init) depend on the width w in {64, 256, 1024}?

    python experiments/fashion_width_sgd.py [--scale cpu|gpu] [--quick] [--data-dir DIR]

Runs on ``digits`` always, and on Fashion-MNIST when its IDX files are found (``--data-dir``, or
jaxlr's default places: ``$JAXLR_DATA_DIR``, the cache, ``/usr/share/datasets``). At
``--scale cpu`` Fashion-MNIST is reduced (a subsample and few epochs, see ``FMNIST``); at
``--scale gpu`` it is the source experiment's own run: all 60,000 / 10,000 images, 50 epochs,
5 seeds (``FMNIST_GPU``; into ``fashion_width_sgd_gpu/``). Writes into
``experiments/results/fashion_width_sgd/``:
``final.csv`` (final epoch of every run), ``per_lr.csv``,
``curves.csv`` (per-epoch mean/std over seeds), ``optimum.csv``, ``compare.csv`` (the source
experiment's lrs 1, 0.1, 0.01 side by side with its reported figures), ``lr_sensitivity.png`` and
``curves_<dataset>.png``.
"""

from __future__ import annotations

import sys

import common
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr.data import find_idx_dir, load_dataset
from jaxlr.sweep import SweepConfig

LRS = (1.0, 0.5, 0.1, 0.01, 0.001, 1e-4, 1e-5)
WIDTHS = (64, 256, 1024)
SEEDS = (0, 1, 2)
DIGITS = dict(epochs=50)
FMNIST = dict(n_train=12800, n_test=5000, epochs=8)
FMNIST_GPU = dict(n_train=None, n_test=None, epochs=50)
SEEDS_GPU = (0, 1, 2, 3, 4)
KEYS = ["dataset", "width"]


def grid(dataset: str, quick: bool, **kw: object) -> SweepConfig:
    """The source experiment's grid on ``dataset``; ``--quick`` cuts widths, seeds and epochs."""
    base = dict(
        dataset=dataset, widths=WIDTHS, depth=2, lrs=LRS, seeds=SEEDS, optimizers=("sgd",),
        batch_size=64, init="torch",
    )  # fmt: skip
    cfg = SweepConfig(**{**base, **kw})
    if quick:
        cfg = cfg.replace(widths=(16, 64), seeds=(0, 1), epochs=2)
    return cfg


def curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, width, lr and epoch: train/test loss mean and std over seeds."""
    g = df.groupby(["dataset", "width", "lr", "epoch"], sort=True)
    return g.agg(
        train_loss=("train_loss", "mean"),
        train_loss_std=("train_loss", "std"),
        test_loss=("test_loss", "mean"),
        test_loss_std=("test_loss", "std"),
        n_diverged=("diverged", "sum"),
    ).reset_index()


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """At lrs 1, 0.1, 0.01: the numbers the source experiment reports (final loss, turn-up)."""
    rows = []
    for (ds, w, lr), g in df[df["lr"].isin([1.0, 0.1, 0.01])].groupby(["dataset", "width", "lr"]):
        last = g[g["epoch"] == g["epoch"].max()]
        mean_curve = g.groupby("epoch")["test_loss"].mean()
        finite = mean_curve.dropna()
        rows.append(
            dict(
                dataset=ds,
                width=w,
                lr=lr,
                n_diverged=int(last["diverged"].sum()),
                n_stuck_at_ln10=int((last["train_loss"] > 2.2).sum()),
                final_train_loss=last["train_loss"].mean(),
                final_test_loss=last["test_loss"].mean(),
                final_test_loss_std=last["test_loss"].std(),
                min_test_loss=finite.min() if len(finite) else np.nan,
                epoch_of_min=int(finite.idxmin()) if len(finite) else -1,
                final_test_accuracy=last["test_accuracy"].mean(),
            )
        )
    return pd.DataFrame(rows)


def plot_curves(cur: pd.DataFrame, path: common.Path, title: str) -> None:
    """Train (solid) / test (dashed) loss against epoch, one panel per lr, one color per width."""
    lrs = sorted(cur["lr"].unique(), reverse=True)
    colors = common.width_colors(cur["width"].unique())
    fig, axes = plt.subplots(1, len(lrs), figsize=(3.0 * len(lrs), 3.0), sharey=True)
    for ax, lr in zip(np.atleast_1d(axes), lrs, strict=True):
        for w, g in cur[cur["lr"] == lr].groupby("width"):
            for col, ls in (("train_loss", "-"), ("test_loss", "--")):
                m, s = g[col].to_numpy(), g[f"{col}_std"].fillna(0).to_numpy()
                ax.plot(g["epoch"], m, ls, color=colors[w], label=f"w={w}" if ls == "-" else None)
                ax.fill_between(g["epoch"], m - s, m + s, color=colors[w], alpha=0.2)
        ax.set_title(f"lr {lr:g}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 2.5)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("loss (train solid, test dashed)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    common.save(fig, path)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files")
    args = p.parse_args()
    out = common.out_dir("fashion_width_sgd", args)
    seeds = dict(seeds=SEEDS_GPU) if args.scale == "gpu" else {}
    frames = [common.run(grid("digits", args.quick, **DIGITS, **seeds), dataset="digits")]
    fm_dir = find_idx_dir("fashion_mnist", args.data_dir)
    if fm_dir is None:
        print(f"Fashion-MNIST not found ({args.data_dir or 'default places'}): skipped",
              file=sys.stderr)  # fmt: skip
    else:
        kw = dict(FMNIST_GPU, **seeds) if args.scale == "gpu" else FMNIST
        kw = dict(FMNIST, epochs=1, n_train=640, n_test=640) if args.quick else kw
        ds = load_dataset(
            "fashion_mnist", data_dir=args.data_dir, download=False,
            n_train=kw["n_train"], n_test=kw["n_test"],
        )  # fmt: skip
        cfg = grid("fashion_mnist", args.quick, data_dir=args.data_dir, **kw)
        frames.append(common.run(cfg, ds, dataset="fashion_mnist"))
    df = pd.concat(frames, ignore_index=True)
    final = common.final_rows(df, by="dataset")
    common.write_csv(final, out / "final.csv")
    agg = common.per_lr(final, KEYS)
    common.write_csv(agg, out / "per_lr.csv")
    cur = curves(df)
    common.write_csv(cur, out / "curves.csv")
    opt = common.optimal_lr(final, KEYS, "test_loss")
    common.write_csv(opt, out / "optimum.csv")
    cmp = compare(df)
    common.write_csv(cmp, out / "compare.csv")
    names = list(agg["dataset"].unique())
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        runs = final[final["dataset"] == name]
        n_seeds = runs["seed"].nunique()
        common.lr_panel(ax, runs, "test_loss", title=f"{name}: SGD, {n_seeds} seeds", ylim=(0, 2.5))
    common.save(fig, out / "lr_sensitivity.png")
    for name in names:
        plot_curves(cur[cur["dataset"] == name], out / f"curves_{name}.png", f"{name}, SGD")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(opt.to_string(index=False))
        print(cmp.to_string(index=False))


if __name__ == "__main__":
    main()
