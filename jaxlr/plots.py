"""Plots of a sweep's results table (matplotlib, Agg backend; no JAX).

* :func:`plot_loss_curves`: train (solid) and test (dashed) loss against epoch, one panel per
  lr, one colour per width, mean over seeds — the layout of seed 001's figures.
* :func:`plot_lr_sensitivity`: final test loss against log2 lr, one curve per width, mean ± std
  over seeds, diverged lrs marked with ``x`` at the top of the panel (muP paper, Figure 1).
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr.results import atomic_write


def _label(hidden: str) -> str:
    return f"hidden {hidden}"


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)


def _panel_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    keys = [k for k in ("optimizer", "lr_rule", "parametrization") if df[k].nunique() > 1]
    if not keys:
        return [("", df)]
    return [
        (" ".join(map(str, k if isinstance(k, tuple) else (k,))), g)
        for k, g in df.groupby(keys, sort=False)
    ]


def plot_loss_curves(df: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> None:
    """Loss against epoch, one panel per lr (rows: optimizer/rule groups), one line per width."""
    groups = _panel_groups(df)
    lrs = sorted(df["lr"].unique(), reverse=True)
    n_col = len(lrs)
    fig, axes = plt.subplots(
        len(groups), n_col, figsize=(3.2 * n_col, 2.8 * len(groups)), squeeze=False, sharex=True
    )
    hiddens = sorted(df["hidden"].unique(), key=lambda h: [int(x) for x in str(h).split("-")])
    colors = {h: plt.cm.viridis(i / max(1, len(hiddens) - 1)) for i, h in enumerate(hiddens)}
    for r, (gname, g) in enumerate(groups):
        mean = g.groupby(["hidden", "lr", "epoch"])[["train_loss", "test_loss"]].mean()
        for c, lr in enumerate(lrs):
            ax = axes[r, c]
            plotted = False
            for h in hiddens:
                try:
                    m = mean.loc[(h, lr)]
                except KeyError:
                    continue
                ax.plot(m.index, m["train_loss"], color=colors[h], label=_label(h))
                ax.plot(m.index, m["test_loss"], color=colors[h], ls="--")
                vals = m[["train_loss", "test_loss"]].to_numpy()
                plotted |= bool((np.isfinite(vals) & (vals > 0)).any())
                div = g[(g["hidden"] == h) & (g["lr"] == lr) & g["diverged"]]
                if len(div):
                    e0 = div["diverged_epoch"].min()
                    ax.axvline(e0, color=colors[h], ls=":", lw=1)
            ax.set_title(f"{gname} lr={lr:g}".strip(), fontsize=9)
            if plotted:
                ax.set_yscale("log")
            else:
                ax.text(0.5, 0.5, "all runs diverged", ha="center", transform=ax.transAxes)
            if r == len(groups) - 1:
                ax.set_xlabel("epoch")
            if c == 0:
                ax.set_ylabel("loss (solid train, dashed test)", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_lr_sensitivity(df: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> None:
    """Final test loss against log2(lr), one curve per width; diverged lrs marked ``x``."""
    last = df[df["epoch"] == df["epoch"].max()]
    groups = _panel_groups(last)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    hiddens = sorted(last["hidden"].unique(), key=lambda h: [int(x) for x in str(h).split("-")])
    colors = {h: plt.cm.viridis(i / max(1, len(hiddens) - 1)) for i, h in enumerate(hiddens)}
    for ax, (gname, g) in zip(axes[0], groups, strict=True):
        finite = g["test_loss"][np.isfinite(g["test_loss"])]
        top = float(finite.quantile(0.98)) if len(finite) else 1.0
        for h in hiddens:
            gh = g[g["hidden"] == h]
            if gh.empty:
                continue
            agg = gh.groupby("lr").agg(
                m=("test_loss", "mean"), s=("test_loss", "std"), div=("diverged", "any")
            )
            x = np.log2(agg.index.to_numpy(float))
            ok = ~agg["div"].to_numpy()
            ax.errorbar(
                x[ok],
                agg["m"].to_numpy()[ok],
                yerr=np.nan_to_num(agg["s"].to_numpy()[ok]),
                color=colors[h],
                marker="o",
                ms=3,
                capsize=2,
                label=_label(h),
            )
            if (~ok).any():
                ax.scatter(x[~ok], np.full((~ok).sum(), top), marker="x", color=colors[h], s=40)
            if ok.any():
                best = int(np.nanargmin(np.where(ok, agg["m"].to_numpy(), np.inf)))
                ax.scatter(
                    [x[best]],
                    [agg["m"].to_numpy()[best]],
                    marker="*",
                    s=120,
                    color=colors[h],
                    edgecolor="k",
                    zorder=5,
                )
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("final test loss (mean ± std over seeds)")
        lo = float(finite.min()) if len(finite) else 0.0
        if math.isfinite(top) and math.isfinite(lo) and top > lo:
            ax.set_ylim(lo - 0.05 * (top - lo), top + 0.08 * (top - lo))
        ax.set_title(
            (gname + ("  " if gname else "") + "x = diverged, * = best").strip(), fontsize=9
        )
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
