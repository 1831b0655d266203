"""Plots of a sweep's results table (matplotlib, Agg backend; no JAX).

* :func:`plot_loss_curves`: train (solid) and test (dashed) loss against epoch, one panel per
  lr, one colour per width, seed mean with a band (min..max over seeds) — the layout of seed
  001's figures. Panels wrap into a grid; past ``max_panels`` lrs a heatmap of the final loss
  over width x lr takes their place.
* :func:`plot_lr_sensitivity`: final loss against log2 lr, one curve per width, mean ± std over
  seeds with every seed's curve and lr* (the per-seed spread), best lr starred (muP paper,
  Figure 1); drawn by :func:`lr_curve_panel`, the one lr-curve plotter (the experiments use it
  too). Divergence is marked per width in a strip under the axis; points above the axis are
  drawn on its edge as ``^``.

Every figure is sized so that the PNG stays within :data:`MAX_PIXELS` on its longest side,
whatever the grid.
"""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import ticker

from jaxlr.results import RATE_STATS, atomic_write

MAX_PIXELS = 4000
"""Longest side of any PNG, in pixels."""
MAX_PANELS = 16
"""Above this many lr panels per group, :func:`plot_loss_curves` draws a heatmap instead."""
_DPI = 110
_MAX_INCHES = 0.92 * MAX_PIXELS / _DPI  # a margin below MAX_PIXELS
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def lr_label(lr: float) -> str:
    """``2⁻⁷`` for a power of two, else three significant digits (``7.8e-03`` style below 0.01)."""
    k = math.log2(lr) if lr > 0 else math.nan
    if math.isfinite(k) and abs(k - round(k)) < 1e-9:
        return "2" + str(round(k)).translate(_SUPERSCRIPT)
    return f"{lr:.2e}" if lr < 1e-2 else f"{lr:.3g}"


def _hidden_key(h: str) -> list[int]:
    return [int(x) for x in str(h).split("-")]


def _colors(hiddens: list[str]) -> dict[str, tuple]:
    return {h: plt.cm.viridis(i / max(1, len(hiddens) - 1)) for i, h in enumerate(hiddens)}


def _figure(
    n_rows: int, n_cols: int, panel_w: float, panel_h: float, **kwargs
) -> tuple[plt.Figure, np.ndarray]:
    """A grid of panels, shrunk as a whole if it would exceed :data:`MAX_PIXELS`."""
    w, h = panel_w * n_cols, panel_h * n_rows
    shrink = min(1.0, _MAX_INCHES / max(w, h))
    return plt.subplots(
        n_rows,
        n_cols,
        figsize=(w * shrink, h * shrink),
        squeeze=False,
        layout="constrained",
        **kwargs,
    )


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    # the constrained layout already fits every artist in the figure; bbox_inches="tight" would
    # lay it out and draw it once more (a third of the time of a 12-panel figure)
    atomic_write(path, lambda p: fig.savefig(p, dpi=_DPI, format="png"))
    plt.close(fig)


def _panel_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    keys = [
        k
        for k in ("optimizer", "lr_rule", "parametrization", "weight_decay")
        if k in df and df[k].nunique() > 1
    ]
    if not keys:
        return [("", df)]
    return [
        (" ".join(map(str, k if isinstance(k, tuple) else (k,))), g)
        for k, g in df.groupby(keys, sort=False)
    ]


def _log_ticks(axis: matplotlib.axis.Axis, lo: float, hi: float) -> None:
    """Plain-number labels on a log axis, denser when it spans less than a decade or two."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0, 2.0, 5.0) if decades > 1.5 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
    if decades > 4:
        subs = (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    # no minor ticks: the major ones are already at 1-2-5 (or denser) per decade, and a log
    # axis's minor ticks were a third of a 12-panel figure's drawing time
    axis.set_minor_locator(ticker.NullLocator())


def _curves_panel(
    ax: plt.Axes, g: pd.DataFrame, stats: pd.DataFrame, lr: float, colors: dict[str, tuple]
) -> None:
    """One lr's panel: per width the seed-mean train/test curves with their min..max bands."""
    plotted, all_div = False, True
    for h, color in colors.items():
        runs = g[(g["hidden"] == h) & (g["lr"] == lr)]
        if runs.empty:
            continue
        m = stats.loc[(h, lr)]
        x = m.index.to_numpy()
        for col, ls in (("train_loss", "-"), ("test_loss", "--")):
            y = m[(col, "mean")].to_numpy(float)
            lo, hi = m[(col, "min")].to_numpy(float), m[(col, "max")].to_numpy(float)
            ok = np.isfinite(y) & (y > 0)
            plotted |= bool(ok.any())
            ax.plot(x[ok], y[ok], color=color, ls=ls, lw=1.2)
            band = ok & np.isfinite(lo) & np.isfinite(hi) & (lo > 0)
            ax.fill_between(x[band], lo[band], hi[band], color=color, alpha=0.15)
        all_div &= bool(runs["diverged"].all())
        if runs["diverged"].any():
            ax.axvline(runs["diverged_epoch"].min(), color=color, ls=":", lw=1)
    if plotted:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, *ax.get_ylim())
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if all_div:
        said = "every run diverged" + ("\n(curves until then)" if plotted else "")
        ax.text(0.5, 0.5, said, ha="center", va="center", transform=ax.transAxes, color="0.3")


def plot_loss_curves(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str = "",
    select: str = "test_loss",
    max_panels: int = MAX_PANELS,
) -> None:
    """Loss against epoch, one panel per lr, one line per width (seed mean, min..max band).

    Panels wrap into rows of at most four; each optimizer/rule/parametrization group starts a
    new row. With more than ``max_panels`` lrs in a group, or more than ``3 * max_panels``
    panels in all, draws :func:`plot_final_heatmap` (of the final ``select`` loss) instead.
    """
    groups = _panel_groups(df)
    per_group = [g["lr"].nunique() for _, g in groups]
    if max(per_group) > max_panels or sum(per_group) > 3 * max_panels:
        plot_final_heatmap(df, path, title=title, select=select)
        return
    n_col = min(4, max(per_group))
    rows_of = [math.ceil(n / n_col) for n in per_group]
    fig, axes = _figure(sum(rows_of), n_col, 3.3, 2.7, sharex=True)
    colors = _colors(sorted(df["hidden"].unique(), key=_hidden_key))
    row0 = 0
    for (gname, g), n_rows in zip(groups, rows_of, strict=True):
        stats = g.groupby(["hidden", "lr", "epoch"])[["train_loss", "test_loss"]].agg(
            ["mean", "min", "max"]
        )
        lrs = sorted(g["lr"].unique(), reverse=True)
        for i, ax in enumerate(axes[row0 : row0 + n_rows].ravel()):
            if i >= len(lrs):
                ax.axis("off")
                continue
            _curves_panel(ax, g, stats, lrs[i], colors)
            ax.set_title(f"{gname}  lr = {lr_label(lrs[i])}".strip(), fontsize=9)
            if i % n_col == 0:
                ax.set_ylabel("loss", fontsize=8)
            if i + n_col >= len(lrs):  # the lowest panel of its column
                ax.set_xlabel("epoch", fontsize=8)
                ax.xaxis.set_tick_params(labelbottom=True)  # sharex hides them above a row's end
        row0 += n_rows
    handles = [plt.Line2D([], [], color=c, label=f"hidden {h}") for h, c in colors.items()]
    handles += [
        plt.Line2D([], [], color="k", ls=ls, label=name)
        for ls, name in (("-", "train"), ("--", "test"), (":", "first divergence"))
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(8, len(handles)), fontsize=8)
    n_seeds = df["seed"].nunique()
    band = f"mean of {n_seeds} seeds, band min..max" if n_seeds > 1 else "1 seed"
    fig.suptitle(f"{title}  ({band})" if title else band, fontsize=10)
    _save(fig, path)


def plot_final_heatmap(
    df: pd.DataFrame, path: str | os.PathLike, *, title: str = "", select: str = "test_loss"
) -> None:
    """Final ``select`` loss (seed mean) over width x lr, one heatmap per group.

    A cell where every seed diverged is marked ``x``, one where some did ``+``; lrs that a width
    did not run are blank.
    """
    last = df[df["epoch"] == df["epoch"].max()]
    groups = _panel_groups(last)
    hiddens = sorted(last["hidden"].unique(), key=_hidden_key)
    n_col = min(2, len(groups))
    n_row = math.ceil(len(groups) / n_col)
    fig, axes = _figure(n_row, n_col, 7.0, 0.5 * len(hiddens) + 2.0)
    for i in range(n_row * n_col):
        ax = axes[i // n_col, i % n_col]
        if i >= len(groups):
            ax.axis("off")
            continue
        gname, g = groups[i]
        lrs = np.sort(g["lr"].unique())
        agg = g.groupby(["hidden", "lr"]).agg(loss=(select, "mean"), div=("diverged", "mean"))
        loss = np.full((len(hiddens), len(lrs)), np.nan)
        frac = np.full_like(loss, np.nan)
        for (h, lr), r in agg.iterrows():
            j, k = hiddens.index(h), int(np.searchsorted(lrs, lr))
            loss[j, k], frac[j, k] = r["loss"], r["div"]
        shown = np.where(frac < 1, loss, np.nan)
        finite = shown[np.isfinite(shown) & (shown > 0)]
        if finite.size:
            lo, hi = float(finite.min()), float(np.quantile(finite, 0.98))
            norm = matplotlib.colors.LogNorm(vmin=lo, vmax=max(hi, lo * 1.001))
        else:
            norm = None
        edges = np.log2(lrs)
        step = np.diff(edges).min() if len(lrs) > 1 else 1.0
        x_edges = np.concatenate([edges - step / 2, [edges[-1] + step / 2]])
        if len(lrs) > 1:  # cell borders halfway between lrs (uneven after --refine)
            mid = (edges[1:] + edges[:-1]) / 2
            x_edges = np.concatenate([[edges[0] - step / 2], mid, [edges[-1] + step / 2]])
        mesh = ax.pcolormesh(
            x_edges,
            np.arange(len(hiddens) + 1),
            np.ma.masked_invalid(shown),
            norm=norm,
            cmap="viridis_r",
        )
        for mark, sel in (("x", frac >= 1), ("+", (frac > 0) & (frac < 1))):
            jj, kk = np.nonzero(sel)
            if len(jj):
                ax.scatter(edges[kk], jj + 0.5, marker=mark, color="crimson", s=14, lw=0.8)
        ax.set_yticks(np.arange(len(hiddens)) + 0.5, [str(h) for h in hiddens], fontsize=8)
        ax.set_ylabel("hidden")
        ax.set_xlabel("log2 learning rate")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, nbins=12))
        ax.set_title(
            f"{gname}  final {select.replace('_', ' ')}, x: all seeds diverged, + some".strip(),
            fontsize=9,
        )
        if norm is not None:
            bar = fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.02)
            _log_ticks(bar.ax.yaxis, norm.vmin, norm.vmax)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def lr_curve_panel(
    ax: plt.Axes,
    final: pd.DataFrame,
    loss: str,
    colors: dict[str, tuple] | None = None,
    *,
    strip: plt.Axes | None = None,
    estimator: str = "local-quadratic",
    chance_loss: float | None = None,
    log_y: bool = False,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Final ``loss`` against log2 lr for one group, one colour per width (``hidden``): every
    seed's curve (thin), the seed mean ± std (bold, ``o``; ``*`` at its best tested lr) and,
    along the bottom edge, each seed's lr* by ``estimator`` (``|``): the per-seed spread that
    the width exponent's interval is made of (:mod:`jaxlr.stats`).

    An lr where any seed of a width diverged has no mean point; it is marked in ``strip`` (one
    row per width: ``x`` every seed, ``+`` some) or, without a strip, as ``x`` along the top
    edge. On a linear axis (``log_y`` False, no ``ylim``) the y range covers the stable means up
    to their 98th percentile and a point above it is drawn on the top edge as ``^``.

    ``final`` holds one group's last-epoch rows (``hidden``, ``lr``, ``seed``, ``loss``,
    ``diverged``); the one lr-curve plotter of the library and of ``experiments/``."""
    from jaxlr import stats

    if colors is None:
        colors = hidden_colors(final["hidden"].unique())
    agg = final.groupby(["hidden", "lr"]).agg(
        m=(loss, "mean"), s=(loss, "std"), div=("diverged", "mean")
    )
    stable = agg[(agg["div"] == 0) & np.isfinite(agg["m"])]
    clip = not log_y and ylim is None
    top = float(stable["m"].quantile(0.98)) if len(stable) else 1.0
    lo = float(stable["m"].min()) if len(stable) else 0.0
    if not top > lo:
        top = lo + max(abs(lo), 1.0) * 0.1
    pad = 0.06 * (top - lo)
    ceiling = top + pad if clip else np.inf
    stars = stats.seed_lr_stars(final, ["hidden"], loss, estimator, chance_loss)
    for j, (h, color) in enumerate(colors.items()):
        if h not in agg.index.get_level_values("hidden"):
            continue
        runs = final[final["hidden"] == h]
        for _, r in runs.groupby("seed"):  # each seed's own curve
            r = r.sort_values("lr")
            y = r[loss].to_numpy(float)
            keep = ~r["diverged"].to_numpy(bool) & np.isfinite(y) & (y <= ceiling)
            ax.plot(np.log2(r["lr"].to_numpy(float))[keep], y[keep], color=color, lw=0.6,
                    alpha=0.35)  # fmt: skip
        a = agg.loc[h]
        x = np.log2(a.index.to_numpy(float))
        m, sd, div = a["m"].to_numpy(), np.nan_to_num(a["s"].to_numpy()), a["div"].to_numpy()
        ok = (div == 0) & np.isfinite(m)
        inside = ok & (m <= ceiling)
        ax.errorbar(x[inside], m[inside], yerr=sd[inside], color=color, marker="o", ms=3,
                    capsize=2, lw=1.3, label=f"hidden {h}")  # fmt: skip
        above = ok & ~inside
        if above.any():
            ax.scatter(x[above], np.full(above.sum(), ceiling), marker="^", color=color, s=30,
                       clip_on=False)  # fmt: skip
        if inside.any():
            b = int(np.argmin(np.where(inside, m, np.inf)))
            ax.scatter([x[b]], [m[b]], marker="*", s=120, color=color, edgecolor="k", zorder=5)
        ls = stars.loc[stars["hidden"] == h, "log2_lr_star"].dropna().to_numpy()
        ax.scatter(ls, np.full(len(ls), 0.015 + 0.02 * j), marker="|", s=60, color=color,
                   transform=ax.get_xaxis_transform(), clip_on=False)  # fmt: skip
        marks = (("x", div >= 1), ("+", (div > 0) & (div < 1)))
        for mark, sel in marks:
            if strip is not None:
                strip.scatter(x[sel], np.full(sel.sum(), j), marker=mark, color=color, s=30)
            elif sel.any():
                ax.scatter(x[sel], np.full(sel.sum(), 0.97 - 0.04 * j), marker=mark,
                           color=color, s=30, transform=ax.get_xaxis_transform())  # fmt: skip
    span = np.log2(final["lr"].to_numpy(float))
    for a_ in (ax, strip) if strip is not None else (ax,):
        a_.set_xlim(span.min() - 0.5, span.max() + 0.5)
        a_.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, nbins=12))
    if log_y:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif clip:
        ax.set_ylim(lo - pad, top + pad)
    ax.grid(alpha=0.3)
    if strip is not None:
        ax.tick_params(labelbottom=False)
        strip.set_ylim(-0.6, len(colors) - 0.4)
        strip.set_yticks(range(len(colors)), list(colors), fontsize=6)
        strip.grid(axis="x", alpha=0.3)


def hidden_colors(hiddens: object) -> dict[str, tuple]:
    """One viridis colour per architecture (``hidden`` strings), narrow = dark."""
    return _colors(sorted({str(h) for h in hiddens}, key=_hidden_key))


def plot_lr_sensitivity(
    df: pd.DataFrame, path: str | os.PathLike, *, title: str = "", select: str = "test_loss"
) -> None:
    """Final ``select`` loss against log2(lr), one curve per width, mean ± std over seeds.

    Under each panel a strip with one row per width marks the lrs where that width diverged
    (``x``: every seed, ``+``: some seeds); the curve stops there. The y axis covers the stable
    points up to their 98th percentile; a point above it is drawn on the top edge as ``^``.
    """
    last = df[df["epoch"] == df["epoch"].max()]
    groups = _panel_groups(last)
    colors = _colors(sorted(last["hidden"].unique(), key=_hidden_key))
    n_col = min(3, len(groups))
    n_row = math.ceil(len(groups) / n_col)
    strip = 0.18 * len(colors) + 0.3
    fig, axes = _figure(
        2 * n_row, n_col, 5.2, (4.0 + strip) / 2,
        gridspec_kw={"height_ratios": [4.0, strip] * n_row},
    )  # fmt: skip
    for i in range(n_row * n_col):
        ax, sx = axes[2 * (i // n_col), i % n_col], axes[2 * (i // n_col) + 1, i % n_col]
        if i >= len(groups):
            ax.axis("off")
            sx.axis("off")
            continue
        gname, g = groups[i]
        lr_curve_panel(ax, g, select, colors, strip=sx)
        ax.set_ylabel(f"final {select.replace('_', ' ')}\n(mean ± std; thin: seeds)", fontsize=8)
        ax.set_title(f"{gname}  * best, | each seed's lr*, ^ above the axis".strip(), fontsize=9)
        ax.legend(fontsize=7)
        sx.set_xlabel("log2 learning rate  (strip: diverged, x all seeds, + some)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


_RUN_GROUP = ["hidden", "optimizer", "lr_rule", "parametrization"]


def _group_key(sub: pd.DataFrame) -> tuple[str, ...]:
    """The :func:`_best_lrs` key of the rows ``sub`` (one run group)."""
    keys = [*_RUN_GROUP, "weight_decay"] if "weight_decay" in sub else _RUN_GROUP
    return tuple(str(v) for v in sub[keys].iloc[0])


def _best_lrs(summary: pd.DataFrame) -> dict[tuple, float]:
    """Each (hidden, optimizer, lr_rule, parametrization, weight_decay)'s best lr from
    ``summary.csv`` (at its longest horizon)."""
    if "horizon" in summary:
        summary = summary[summary["horizon"] == summary["horizon"].max()]
    keys = [*_RUN_GROUP, "weight_decay"] if "weight_decay" in summary else _RUN_GROUP
    return {
        tuple(str(v) for v in r[keys]): float(r["best_lr"])
        for _, r in summary.iterrows()
        if np.isfinite(r["best_lr"])
    }


def _rates_panel(
    ax: plt.Axes, g: pd.DataFrame, layer: str, colors: dict[str, tuple], best: dict[tuple, float]
) -> None:
    """One layer's rates over training: per width, at its best lr, median with bands."""
    for h, color in colors.items():
        sub = g[(g["hidden"] == h) & (g["layer"] == layer)]
        if sub.empty:
            continue
        key = _group_key(sub)
        if key not in best:
            continue
        m = sub[sub["lr"] == best[key]].groupby("epoch")[list(RATE_STATS)].mean()
        m = m[np.isfinite(m["median"]) & (m["min"] > 0)]
        if m.empty:
            continue
        x = m.index.to_numpy()
        ax.plot(x, m["median"], color=color, label=f"hidden {h}, lr {lr_label(best[key])}")
        ax.fill_between(x, m["p05"], m["p95"], color=color, alpha=0.2)
        ax.plot(x, m["min"], color=color, ls=":", lw=0.8)
        ax.plot(x, m["max"], color=color, ls=":", lw=0.8)
    if ax.lines:
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no stable lr", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])


def plot_rates(
    rates: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, *, title: str = ""
) -> None:
    """The spread of the effective learning rates over training (``rates.csv``), at each width's
    best lr: one panel per layer (rows: optimizer/rule/parametrization groups), per width the
    seed mean of the median rate with its 5%..95% band, min and max dotted."""
    groups = _panel_groups(rates)
    layers = sorted(rates["layer"].unique(), key=lambda s: int(s.rsplit("_", 1)[1]))
    colors = _colors(sorted(rates["hidden"].unique(), key=_hidden_key))
    best = _best_lrs(summary)
    fig, axes = _figure(len(groups), len(layers), 3.6, 2.8, sharex=True)
    for r, (gname, g) in enumerate(groups):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            _rates_panel(ax, g, layer, colors, best)
            ax.set_title(f"{gname}  {layer}".strip(), fontsize=9)
            if c == 0:
                ax.set_ylabel("effective lr", fontsize=8)
            if r == len(groups) - 1:
                ax.set_xlabel("epoch", fontsize=8)
    band = "median (seed mean), band 5%..95%, dotted min and max, at each width's best lr"
    fig.suptitle(f"{title}  ({band})" if title else band, fontsize=10)
    _save(fig, path)


def plot_dynamics(
    dynamics: pd.DataFrame, summary: pd.DataFrame, path: str | os.PathLike, *, title: str = ""
) -> None:
    """Update size and output scale during training (``dynamics.csv``), at each width's best
    lr: for each layer (columns), the epoch's ``||dW||_F / ||W||_F`` (top row of each group)
    and the RMS of the layer's output on the probe batch (bottom row) against the epoch; per
    width the median over seeds with the seeds' range shaded. Under muP both stay put across
    widths; where SP's transfer fails, the layer whose curves spread with width is why."""
    groups = _panel_groups(dynamics)
    layers = sorted(dynamics["layer"].unique(), key=lambda s: int(s.rsplit("_", 1)[1]))
    colors = _colors(sorted(dynamics["hidden"].unique(), key=_hidden_key))
    best = _best_lrs(summary)
    quantities = (("update_ratio", "||dW|| / ||W|| per epoch"), ("output_rms", "output RMS"))
    fig, axes = _figure(2 * len(groups), len(layers), 3.4, 2.6, sharex=True)
    for r, (gname, g) in enumerate(groups):
        for q, (quantity, label) in enumerate(quantities):
            row = 2 * r + q
            for c, layer in enumerate(layers):
                ax = axes[row, c]
                _dynamics_panel(
                    ax, g[(g["layer"] == layer) & (g["quantity"] == quantity)], colors, best
                )
                ax.set_title(f"{gname}  {layer}".strip(), fontsize=9)
                if c == 0:
                    ax.set_ylabel(label, fontsize=8)
                if row == 2 * len(groups) - 1:
                    ax.set_xlabel("epoch", fontsize=8)
    note = "median over seeds, band: the seeds' range, at each width's best lr"
    fig.suptitle(f"{title}  ({note})" if title else note, fontsize=10)
    _save(fig, path)


def _dynamics_panel(
    ax: plt.Axes, g: pd.DataFrame, colors: dict[str, tuple], best: dict[tuple, float]
) -> None:
    """One layer's quantity over training: per width, at its best lr, median and range."""
    for h, color in colors.items():
        sub = g[g["hidden"] == h]
        if sub.empty or (key := _group_key(sub)) not in best:
            continue
        per = sub[sub["lr"] == best[key]].groupby("epoch")["value"]
        m = pd.DataFrame({"med": per.median(), "lo": per.min(), "hi": per.max()})
        m = m[np.isfinite(m["med"]) & (m["lo"] > 0)]
        if m.empty:
            continue
        x = m.index.to_numpy()
        ax.plot(x, m["med"], color=color, label=f"hidden {h}, lr {lr_label(best[key])}")
        ax.fill_between(x, m["lo"], m["hi"], color=color, alpha=0.2)
    if ax.lines:
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no stable lr", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
