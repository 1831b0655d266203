"""The width exponent: how the best learning rate, and the divergence threshold, scale with width.

``width_exponent.csv`` (:func:`width_exponent`) has one row per (optimizer, lr_rule,
parametrization, depth) group that swept at least :data:`MIN_WIDTHS` widths:

================  =========================================================================
column            meaning
================  =========================================================================
optimizer         ``sgd`` or ``adam``
lr_rule           as in ``results.csv``
parametrization   ``sp`` or ``mup``
depth             number of hidden layers (one row per depth when a sweep mixes depths)
alpha             least-squares slope of log2 lr* on log2 width (lr* ∝ width^alpha)
alpha_lo          2.5th percentile of alpha over bootstrap resamples of the seeds
alpha_hi          97.5th percentile (both NaN with fewer than 2 seeds)
n_widths          widths with an lr* (alpha is NaN below 3)
n_seeds           seeds per width (the fewest of any width)
alpha_div         the same slope for the divergence threshold
alpha_div_lo      its 2.5th bootstrap percentile
alpha_div_hi      its 97.5th bootstrap percentile
n_widths_div      widths with a divergence threshold (alpha_div is NaN below 3)
n_widths_edge     widths whose lr* is the lowest or highest lr tested: a bound, not an optimum
================  =========================================================================

Only architectures whose hidden layers all have one width take part (``--hidden 64-16`` has no
single width); :func:`plot_width_exponent` draws the fits (``width_exponent.png``) and
:func:`format_exponent` the terminal lines.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from jaxlr import results as res

MIN_WIDTHS = 3
"""Fewest widths for a fit (a group with fewer swept widths has no row)."""
KEYS = ["optimizer", "lr_rule", "parametrization", "depth"]
COLUMNS = [
    *KEYS,
    "alpha",
    "alpha_lo",
    "alpha_hi",
    "n_widths",
    "n_seeds",
    "alpha_div",
    "alpha_div_lo",
    "alpha_div_hi",
    "n_widths_div",
    "n_widths_edge",
]


@dataclasses.dataclass(frozen=True)
class _Width:
    """One width's final-epoch runs as seeds x lrs arrays."""

    width: int
    log2_lrs: np.ndarray  # (L,) ascending
    loss: np.ndarray  # (S, L) float64 select loss, 0 where missing
    bad: np.ndarray  # (S, L) bool: a non-finite loss
    diverged: np.ndarray  # (S, L) bool
    present: np.ndarray  # (S, L) bool: the run exists


@dataclasses.dataclass(frozen=True)
class GroupFit:
    """One group's per-width estimates and their bootstrap resamples (log2 units)."""

    key: tuple  # values of KEYS
    log2_widths: np.ndarray  # (W,)
    lr_star: np.ndarray  # (W,) log2 lr*, NaN where no lr is eligible
    boot_lr_star: np.ndarray  # (B, W)
    threshold: np.ndarray  # (W,) log2 divergence threshold, NaN where there is none
    boot_threshold: np.ndarray  # (B, W)
    at_edge: np.ndarray  # (W,) bool: lr* is the lowest or highest lr tested at that width
    n_seeds: int


def width_exponent(
    results: pd.DataFrame, select: str = "test_loss", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """The exponents of the best lr and of the divergence threshold in width, per group.

    Per width ``w``, from the final epoch's ``select`` loss (``test_loss`` or ``train_loss``):

    * **lr\\***: the seed-mean loss ``m(lr)`` over the tested lrs; eligible lrs are those where
      no seed diverged and ``m`` is finite (as in :func:`jaxlr.results.summarize`). Around the
      best eligible grid point ``x0 = log2 lr`` with neighbours ``xa < x0 < xc`` (the adjacent
      tested lrs, both eligible), the parabola through ``(x, m)`` at the three points has its
      vertex at::

          x* = x0 - ½ [(x0-xa)² (m0-mc) - (x0-xc)² (m0-ma)] / [(x0-xa)(m0-mc) - (x0-xc)(m0-ma)]

      clipped to ``[xa, xc]``; at the edge of the tested lrs, next to an ineligible lr, or for
      three collinear points, ``x* = x0``. ``log2 lr*(w) = x*``.
    * **divergence threshold**: an lr *diverges* when at least half of the seeds diverged there
      (a median over seeds; summary.csv's ``min_diverged_lr`` takes any seed). With ``d`` the
      lowest such lr and ``s`` the highest tested lr below it, the threshold is ``sqrt(s d)``;
      without both there is none.

    Then ``alpha`` is the least-squares slope of ``log2 lr*(w)`` on ``log2 w``::

        alpha = Σ (u - ū)(y - ȳ) / Σ (u - ū)²,   u = log2 w,  y = log2 lr*(w)

    over the widths that have an lr* (NaN below :data:`MIN_WIDTHS`), and ``alpha_div`` likewise
    for the threshold. The intervals are percentile bootstraps: each of ``n_boot`` resamples
    draws, independently per width, that width's seeds with replacement, recomputes every
    width's lr* (threshold) from the resampled seed mean and refits; ``[lo, hi]`` are the 2.5th
    and 97.5th percentiles of the finite slopes. With fewer than 2 seeds there is nothing to
    resample and the interval is NaN. The draws come from ``numpy.random.default_rng(seed)``,
    so the table is deterministic.

    Args:
      results: a ``results.csv`` table (:mod:`jaxlr.results`), refinement rounds included.
      select: the loss that defines lr*, ``test_loss`` or ``train_loss``.
      n_boot: bootstrap resamples.
      seed: seed of the resampling.

    Returns:
      One row per group with at least :data:`MIN_WIDTHS` widths, columns :data:`COLUMNS`.

    Example:
      >>> import numpy as np, pandas as pd
      >>> rows = [dict(width=w, depth=1, hidden=str(w), optimizer="adam", lr_rule="none",
      ...              parametrization="sp", lr=2.0**k, seed=s, epoch=1, diverged=False,
      ...              train_loss=(k + np.log2(w) / 2) ** 2)
      ...         for w in (16, 64, 256) for k in range(-8, 1) for s in (0, 1)]
      >>> t = width_exponent(pd.DataFrame(rows), select="train_loss")
      >>> float(t["alpha"].iloc[0]), int(t["n_widths"].iloc[0])
      (-0.5, 3)
    """
    return _table(group_fits(results, select=select, n_boot=n_boot, seed=seed))


def _table(fits: list[GroupFit]) -> pd.DataFrame:
    """:func:`width_exponent`'s table from the groups' fits."""
    rows = []
    for f in fits:
        alpha, lo, hi, n = _summary(f.log2_widths, f.lr_star, f.boot_lr_star, f.n_seeds)
        a_div, lo_div, hi_div, n_div = _summary(
            f.log2_widths, f.threshold, f.boot_threshold, f.n_seeds
        )
        rows.append(
            {
                **dict(zip(KEYS, f.key, strict=True)),
                "alpha": alpha,
                "alpha_lo": lo,
                "alpha_hi": hi,
                "n_widths": n,
                "n_seeds": f.n_seeds,
                "alpha_div": a_div,
                "alpha_div_lo": lo_div,
                "alpha_div_hi": hi_div,
                "n_widths_div": n_div,
                "n_widths_edge": int(f.at_edge.sum()),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def group_fits(
    results: pd.DataFrame, select: str = "test_loss", n_boot: int = 1000, seed: int = 0
) -> list[GroupFit]:
    """Per group with at least :data:`MIN_WIDTHS` widths: log2 lr* and the log2 divergence
    threshold per width, and their ``(n_boot, W)`` bootstrap resamples (see
    :func:`width_exponent`)."""
    if select not in ("test_loss", "train_loss"):
        raise ValueError(f"select must be test_loss or train_loss, got {select!r}")
    if results.empty:
        return []
    last = res.final_epoch(results)
    uniform = last["hidden"].map(lambda h: len(set(str(h).split("-"))) == 1)
    last = last[uniform]
    rng = np.random.default_rng(seed)
    fits = []
    for key, g in last.groupby(KEYS, sort=True):
        widths = [_width_arrays(int(w), gw, select) for w, gw in g.groupby("width", sort=True)]
        if len(widths) < MIN_WIDTHS:
            continue
        n_seeds = min(w.present.shape[0] for w in widths)
        point, boot, edge = [], [], []
        for w in widths:
            n_s = w.present.shape[0]
            idx = rng.integers(0, n_s, size=(n_boot, n_s))
            counts = np.zeros((n_boot, n_s))
            np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
            point.append(_estimates(w, np.ones((1, n_s))))
            boot.append(_estimates(w, counts))
            edge.append(point[-1][0][0] in (w.log2_lrs[0], w.log2_lrs[-1]))
        fits.append(
            GroupFit(
                key=tuple(key),
                log2_widths=np.log2([w.width for w in widths]).astype(np.float64),
                lr_star=np.concatenate([p[0] for p in point]),
                boot_lr_star=np.stack([b[0] for b in boot], axis=1),
                threshold=np.concatenate([p[1] for p in point]),
                boot_threshold=np.stack([b[1] for b in boot], axis=1),
                at_edge=np.array(edge),
                n_seeds=n_seeds,
            )
        )
    return fits


def _width_arrays(width: int, g: pd.DataFrame, select: str) -> _Width:
    """The seeds x lrs arrays of one width's final rows."""
    seeds = np.sort(g["seed"].unique())
    lrs = np.sort(g["lr"].unique())
    s = np.searchsorted(seeds, g["seed"].to_numpy())
    j = np.searchsorted(lrs, g["lr"].to_numpy())
    shape = (len(seeds), len(lrs))
    loss, bad = np.zeros(shape), np.zeros(shape, bool)
    div, present = np.zeros(shape, bool), np.zeros(shape, bool)
    v = g[select].to_numpy(np.float64)
    loss[s, j] = np.where(np.isfinite(v), v, 0.0)
    bad[s, j] = ~np.isfinite(v)
    div[s, j] = g["diverged"].to_numpy(bool)
    present[s, j] = True
    return _Width(width, np.log2(lrs.astype(np.float64)), loss, bad, div, present)


def _estimates(w: _Width, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log2 lr* and log2 threshold of one width, for each row of seed multiplicities
    ``counts`` ``(B, S)``; each ``(B,)``."""
    n = counts @ w.present
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (counts @ (w.loss * w.present)) / n
        n_div = counts @ (w.diverged & w.present)
        ok = (n > 0) & (n_div == 0) & (counts @ (w.bad & ~w.diverged) == 0) & np.isfinite(mean)
        diverges = (n > 0) & (2 * n_div >= n)
    return log2_optimum(w.log2_lrs, mean, ok), log2_threshold(w.log2_lrs, diverges)


def log2_optimum(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The parabola-refined argmin of each row of ``y`` ``(B, L)`` over ascending ``x``
    ``(L,)``, among the ``ok`` points; NaN where none is (see :func:`width_exponent`)."""
    x, y, ok = np.asarray(x, np.float64), np.atleast_2d(y), np.atleast_2d(ok)
    n_l = x.shape[0]
    k = np.argmin(np.where(ok, y, np.inf), axis=1)
    rows = np.arange(y.shape[0])
    ka, kc = np.maximum(k - 1, 0), np.minimum(k + 1, n_l - 1)
    inner = (k > 0) & (k < n_l - 1) & ok[rows, ka] & ok[rows, kc]
    xa, x0, xc = x[ka], x[k], x[kc]
    ya, y0, yc = y[rows, ka], y[rows, k], y[rows, kc]
    num = (x0 - xa) ** 2 * (y0 - yc) - (x0 - xc) ** 2 * (y0 - ya)
    den = (x0 - xa) * (y0 - yc) - (x0 - xc) * (y0 - ya)
    with np.errstate(invalid="ignore", divide="ignore"):
        vertex = np.clip(x0 - 0.5 * num / den, xa, xc)
    best = np.where(inner & (den != 0) & np.isfinite(vertex), vertex, x0)
    return np.where(ok.any(axis=1), best, np.nan)


def log2_threshold(x: np.ndarray, diverges: np.ndarray) -> np.ndarray:
    """Per row of ``diverges`` ``(B, L)`` over ascending ``x``: the midpoint of the lowest
    diverging point and the point below it; NaN without both."""
    x, diverges = np.asarray(x, np.float64), np.atleast_2d(diverges)
    k = np.argmax(diverges, axis=1)
    found = diverges.any(axis=1) & (k > 0)
    return np.where(found, 0.5 * (x[np.maximum(k - 1, 0)] + x[k]), np.nan)


def fit_line(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of each row of ``y`` ``(B, W)`` on ``u`` ``(W,)``,
    over its finite entries; NaN for rows with fewer than :data:`MIN_WIDTHS`."""
    y = np.atleast_2d(y)
    m = np.isfinite(y)
    n = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u_bar = (m * u).sum(axis=1) / n
        y_bar = np.where(m, y, 0.0).sum(axis=1) / n
        du = np.where(m, u - u_bar[:, None], 0.0)
        dy = np.where(m, y - y_bar[:, None], 0.0)
        slope = (du * dy).sum(axis=1) / (du * du).sum(axis=1)
    enough = n >= MIN_WIDTHS
    slope = np.where(enough, slope, np.nan)
    return slope, np.where(enough, y_bar - slope * u_bar, np.nan)


def _summary(
    u: np.ndarray, y: np.ndarray, boot: np.ndarray, n_seeds: int
) -> tuple[float, float, float, int]:
    """The slope, its 95% percentile interval and the number of widths fitted."""
    (alpha,), _ = fit_line(u, y)
    slopes = fit_line(u, boot)[0]
    slopes = slopes[np.isfinite(slopes)]
    lo = hi = math.nan
    if n_seeds >= 2 and np.isfinite(alpha) and len(slopes):
        lo, hi = (float(v) for v in np.percentile(slopes, [2.5, 97.5]))
    return float(alpha), lo, hi, int(np.isfinite(y).sum())


def _num(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def format_exponent(table: pd.DataFrame) -> str:
    """The terminal lines of :func:`width_exponent`'s table, one per group (empty if none)."""
    if table.empty:
        return ""
    lines = [
        "Width exponent (least-squares fit of log2 lr on log2 width, 95% bootstrap over seeds):"
    ]
    many_depths = table["depth"].nunique() > 1
    for _, r in table.iterrows():
        name = [r["optimizer"], *([r["lr_rule"]] if r["lr_rule"] != "none" else [])]
        name += [r["parametrization"], *([f"depth {r['depth']}"] if many_depths else [])]
        tail = f"{r['n_widths']} widths, {r['n_seeds']} seed{'s' * (r['n_seeds'] != 1)}"
        if r["n_widths_edge"]:
            tail += f"; lr* at the edge of the lrs at {r['n_widths_edge']}: widen the grid"
        lines.append(
            f"lr* ∝ width^α, α = {_estimate(r, 'alpha', 'n_widths')}  ({', '.join(name)}, {tail}); "
            f"divergence threshold: α = {_estimate(r, 'alpha_div', 'n_widths_div')}"
        )
    return "\n".join(lines)


def _estimate(r: pd.Series, col: str, n_col: str) -> str:
    if not np.isfinite(r[col]):
        n = int(r[n_col])
        return f"n/a (found at {n} width{'s' * (n != 1)}, needs {MIN_WIDTHS})"
    if not np.isfinite(r[f"{col}_lo"]):
        return f"{_num(r[col])} (no interval: 1 seed)" if r["n_seeds"] < 2 else _num(r[col])
    return f"{_num(r[col])} [{_num(r[f'{col}_lo'])}, {_num(r[f'{col}_hi'])}]"


def plot_width_exponent(
    results: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str = "",
    select: str = "test_loss",
    n_boot: int = 1000,
    seed: int = 0,
) -> None:
    """log2 lr* (``o``) and the log2 divergence threshold (``v``) against log2 width, one panel
    per optimizer (and rule, depth), one colour per parametrization: the fitted lines, and for
    lr* the 95% bootstrap band of the line (pointwise percentiles of the resampled fits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxlr.plots import MAX_PIXELS

    fits = group_fits(results, select=select, n_boot=n_boot, seed=seed)
    if not fits:
        raise ValueError(f"no group has {MIN_WIDTHS} widths of one-width architectures")
    table = _table(fits)
    panels: dict[tuple, list[int]] = {}
    for i, f in enumerate(fits):
        panels.setdefault((f.key[0], f.key[1], f.key[3]), []).append(i)
    params = sorted({f.key[2] for f in fits})
    colors = {p: plt.cm.tab10(i) for i, p in enumerate(params)}
    n_col = min(3, len(panels))
    n_row = math.ceil(len(panels) / n_col)
    dpi, w_in, h_in = 110, 5.0 * n_col, 4.0 * n_row
    shrink = min(1.0, 0.92 * MAX_PIXELS / dpi / max(w_in, h_in))
    fig, axes = plt.subplots(
        n_row, n_col, figsize=(w_in * shrink, h_in * shrink), squeeze=False, layout="constrained"
    )
    many_depths = len({k[2] for k in panels}) > 1
    for ax, ((opt, rule, depth), members) in zip(axes.flat, panels.items(), strict=False):
        for i in members:
            f, r = fits[i], table.iloc[i]
            c, u = colors[f.key[2]], f.log2_widths
            grid = np.linspace(u.min(), u.max(), 50)
            for y, boot, col, n_col, what, mark, style in (
                (f.lr_star, f.boot_lr_star, "alpha", "n_widths", "lr*", "o", "-"),
                (
                    f.threshold,
                    f.boot_threshold,
                    "alpha_div",
                    "n_widths_div",
                    "divergence",
                    "v",
                    ":",
                ),
            ):
                ok = np.isfinite(y)
                if not ok.any():
                    continue  # e.g. no width diverged
                label = f"{f.key[2]} {what}: α = {_estimate(r, col, n_col)}"
                if col == "alpha" and r["n_widths_edge"]:
                    label += f" ({r['n_widths_edge']} at the grid's edge)"
                ax.plot(u[ok], y[ok], mark, color=c, mfc=c if mark == "o" else "none", label=label)
                slope, icpt = fit_line(u, y)
                if np.isfinite(slope[0]):
                    ax.plot(grid, icpt[0] + slope[0] * grid, style, color=c, lw=1.2)
                if col == "alpha" and np.isfinite(r["alpha_lo"]):
                    s_b, i_b = fit_line(u, boot)
                    keep = np.isfinite(s_b)
                    lines = i_b[keep, None] + s_b[keep, None] * grid
                    lo, hi = np.percentile(lines, [2.5, 97.5], axis=0)
                    ax.fill_between(grid, lo, hi, color=c, alpha=0.2, lw=0)
        head = (
            opt
            + (f", {rule}" if rule != "none" else "")
            + (f", depth {depth}" if many_depths else "")
        )
        ax.set_title(f"{head}  (lr* by final {select.replace('_', ' ')})", fontsize=9)
        u_all = np.unique(np.concatenate([fits[i].log2_widths for i in members]))
        ax.set_xticks(u_all, [str(round(2**v)) for v in u_all])
        ax.set_xlabel("width (log2 axis)", fontsize=8)
        ax.set_ylabel("log2 learning rate", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        (f"{title}: " if title else "") + "lr* ∝ width^α (band: 95% bootstrap over seeds)",
        fontsize=10,
    )
    res.atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
