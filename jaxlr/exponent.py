"""The width exponent: how the best learning rate, and the divergence threshold, scale with width.

``width_exponent.csv`` (:func:`width_exponent`) has one row per (optimizer, lr_rule,
parametrization, depth) group that swept at least :data:`MIN_WIDTHS` widths:

================  =========================================================================
column            meaning
================  =========================================================================
optimizer         ``sgd`` or ``adam``
lr_rule           as in ``results.csv``
parametrization   ``sp``, ``mup`` or ``lr-exp``
depth             number of hidden layers (one row per depth when a sweep mixes depths)
estimator         how each seed's lr* is read off its curve (``--lr-star``, :mod:`jaxlr.stats`)
ci_method         ``paired-bootstrap-t`` (:func:`jaxlr.stats.t_interval`)
n_seeds           seeds with an lr* (the interval's ``n``)
alpha             least-squares slope of log2 lr* on log2 width (lr* ∝ width^alpha)
alpha_lo          lower end of its 95% interval (NaN with fewer than 2 seeds)
alpha_hi          upper end
reliable          at least :data:`jaxlr.stats.RELIABLE_SEEDS` seeds (else the interval is
                  printed with a warning)
n_widths          widths with an lr* (alpha is NaN below 3)
alpha_div         the same slope for the divergence threshold
alpha_div_lo      its interval, by the same method
alpha_div_hi
n_widths_div      widths with a divergence threshold (alpha_div is NaN below 3)
n_widths_edge     widths where most seeds' best lr is the lowest or highest tested: a bound
================  =========================================================================

``transfer.csv`` (:func:`transfer_table`) says what transferring the narrowest width's lr* to
every other width costs (:func:`jaxlr.stats.transfer_rows`). Only architectures whose hidden
layers all have one width take part (``--hidden 64-16`` has no single width);
:func:`plot_width_exponent` draws the fits (``width_exponent.png``) and :func:`format_exponent`
the terminal lines.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from jaxlr import results as res
from jaxlr import stats
from jaxlr.stats import MIN_WIDTHS, fit_line

KEYS = ["optimizer", "lr_rule", "parametrization", "weight_decay", "depth"]
COLUMNS = [
    *KEYS,
    "estimator",
    "ci_method",
    "n_seeds",
    "alpha",
    "alpha_lo",
    "alpha_hi",
    "reliable",
    "n_widths",
    "alpha_div",
    "alpha_div_lo",
    "alpha_div_hi",
    "n_widths_div",
    "n_widths_edge",
]
__all__ = [
    "COLUMNS",
    "DEPTH_COLUMNS",
    "KEYS",
    "MIN_WIDTHS",
    "GroupFit",
    "depth_exponent",
    "fit_line",
    "format_depth_exponent",
    "format_exponent",
    "group_fits",
    "log2_threshold",
    "plot_width_exponent",
    "transfer_table",
    "width_exponent",
]

_DEPTH_NAMES = {
    "depth": "width",
    "alpha": "beta",
    "alpha_lo": "beta_lo",
    "alpha_hi": "beta_hi",
    "n_widths": "n_depths",
    "alpha_div": "beta_div",
    "alpha_div_lo": "beta_div_lo",
    "alpha_div_hi": "beta_div_hi",
    "n_widths_div": "n_depths_div",
    "n_widths_edge": "n_depths_edge",
}
DEPTH_COLUMNS = [_DEPTH_NAMES.get(c, c) for c in COLUMNS]
"""``depth_exponent.csv``'s columns: :data:`COLUMNS` with depth and width exchanged (``beta`` for
``alpha``, ``n_depths`` for ``n_widths``, a ``width`` key for the ``depth`` key)."""


@dataclasses.dataclass(frozen=True)
class GroupFit:
    """One group's per-seed and per-width estimates and their paired resamples (log2 units)."""

    key: tuple  # values of KEYS
    estimator: str
    log2_widths: np.ndarray  # (W,)
    seed_lr_star: np.ndarray  # (S, W) each seed's log2 lr*, NaN where it has none
    lr_star: np.ndarray  # (W,) the seed mean of seed_lr_star
    boot_lr_star: np.ndarray  # (B, W) the same over paired seed resamples
    alpha: stats.Interval
    threshold: np.ndarray  # (W,) log2 divergence threshold, NaN where there is none
    boot_threshold: np.ndarray  # (B, W)
    alpha_div: stats.Interval
    at_edge: np.ndarray  # (W,) bool
    n_seeds: int


def width_exponent(
    results: pd.DataFrame,
    select: str = "test_loss",
    n_boot: int = 1000,
    seed: int = 0,
    estimator: str = stats.DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> pd.DataFrame:
    r"""The exponents of the best lr and of the divergence threshold in width, per group.

    Per width ``w`` and seed ``s``, from the final epoch's ``select`` loss (``test_loss`` or
    ``train_loss``):

    * **lr\***: ``y_s(w)``, the seed's log2 lr* by ``estimator`` (:data:`jaxlr.stats.ESTIMATORS`;
      runs that diverged, are not finite or have a loss ``>= chance_loss`` are censored).
      ``log2 lr*(w) = mean_s y_s(w)``.
    * **divergence threshold**: an lr *diverges* when at least half of the seeds diverged there.
      With ``d`` the lowest such lr and ``s`` the highest tested lr below it, the threshold is
      ``sqrt(s d)``; without both there is none.

    Then ``alpha`` is the least-squares slope of ``log2 lr*(w)`` on ``log2 w``::

        alpha = Σ (u - ū)(y - ȳ) / Σ (u - ū)²,   u = log2 w,  y = log2 lr*(w)

    over the widths that have an lr* (NaN below :data:`MIN_WIDTHS`), and ``alpha_div`` likewise
    for the threshold. The intervals (``paired-bootstrap-t``): each of ``n_boot`` resamples draws
    the seeds with replacement *once for all widths* (a seed fixes the init stream and batch
    order at every width), recomputes every width's lr* (threshold) and the slope; the interval
    is ``alpha ± t_{n-1,0.975} sqrt(n/(n-1)) SD*`` (:func:`jaxlr.stats.t_interval`), calibrated
    on simulated sweeps (``tests/test_calibration.py``). NaN with fewer than 2 seeds; below
    :data:`jaxlr.stats.RELIABLE_SEEDS` seeds ``reliable`` is False. The draws come from
    ``numpy.random.default_rng(seed)``, so the table is deterministic.

    Args:
      results: a ``results.csv`` table (:mod:`jaxlr.results`), refinement rounds included.
      select: the loss that defines lr*, ``test_loss`` or ``train_loss``.
      n_boot: bootstrap resamples.
      seed: seed of the resampling.
      estimator: the lr* estimator's name.
      chance_loss: a loss at or above this is censored (``ln(classes)``); None: no such censoring.

    Returns:
      One row per group with at least :data:`MIN_WIDTHS` widths, columns :data:`COLUMNS`.

    Example:
      >>> import numpy as np, pandas as pd
      >>> rows = [dict(width=w, depth=1, hidden=str(w), optimizer="adam", lr_rule="none",
      ...              parametrization="sp", lr=2.0**k, seed=s, epoch=1, diverged=False,
      ...              train_loss=0.1 * np.exp((k + np.log2(w) / 2) ** 2 / 8))
      ...         for w in (16, 64, 256) for k in range(-8, 1) for s in (0, 1)]
      >>> t = width_exponent(pd.DataFrame(rows), select="train_loss")
      >>> round(float(t["alpha"].iloc[0]), 6), int(t["n_widths"].iloc[0])
      (-0.5, 3)
    """
    fits = group_fits(results, select, n_boot, seed, estimator, chance_loss)
    return _table(fits)


def _table(fits: list[GroupFit]) -> pd.DataFrame:
    """:func:`width_exponent`'s table from the groups' fits."""
    rows = []
    for f in fits:
        rows.append(
            {
                **dict(zip(KEYS, f.key, strict=True)),
                "estimator": f.estimator,
                "ci_method": stats.CI_METHOD,
                "n_seeds": f.alpha.n_seeds,
                "alpha": f.alpha.estimate,
                "alpha_lo": f.alpha.lo,
                "alpha_hi": f.alpha.hi,
                "reliable": f.alpha.reliable,
                "n_widths": int(np.isfinite(f.lr_star).sum()),
                "alpha_div": f.alpha_div.estimate,
                "alpha_div_lo": f.alpha_div.lo,
                "alpha_div_hi": f.alpha_div.hi,
                "n_widths_div": int(np.isfinite(f.threshold).sum()),
                "n_widths_edge": int(f.at_edge.sum()),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def _check(select: str, estimator: str) -> None:
    if select not in ("test_loss", "train_loss"):
        raise ValueError(f"select must be test_loss or train_loss, got {select!r}")
    if estimator not in stats.ESTIMATORS:
        raise ValueError(
            f"unknown lr* estimator {estimator!r}; choose one of {', '.join(stats.ESTIMATORS)}"
        )


def _uniform_final(results: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's rows of the architectures whose hidden layers share one width."""
    last = res.final_epoch(results)
    if "weight_decay" not in last:  # a table from before weight decay was an axis
        last = last.assign(weight_decay=0.0)
    return last[last["hidden"].map(lambda h: len(set(str(h).split("-"))) == 1)]


def group_fits(
    results: pd.DataFrame,
    select: str = "test_loss",
    n_boot: int = 1000,
    seed: int = 0,
    estimator: str = stats.DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> list[GroupFit]:
    """Per group with at least :data:`MIN_WIDTHS` widths: the seeds' log2 lr* and the log2
    divergence threshold per width, with their paired resamples (see :func:`width_exponent`)."""
    _check(select, estimator)
    if results.empty:
        return []
    last = _uniform_final(results)
    rng = np.random.default_rng(seed)
    fits = []
    for key, g in last.groupby(KEYS, sort=True):
        widths = np.sort(g["width"].unique())
        if len(widths) < MIN_WIDTHS:
            continue
        seeds = np.sort(g["seed"].unique())
        per = stats.seed_lr_stars(g, ["width"], select, estimator, chance_loss)
        y = (
            per.pivot(index="seed", columns="width", values="log2_lr_star")
            .reindex(index=seeds, columns=widths)
            .to_numpy(np.float64)
        )
        edge = per.groupby("width")["at_edge"].mean().reindex(widths).fillna(0.0).to_numpy() > 0.5
        has = np.isfinite(y).any(axis=1)
        n = int(has.sum())
        counts = stats.seed_counts(len(seeds), n_boot, rng)
        u = np.log2(widths.astype(np.float64))
        ones = has[None, :].astype(np.float64)
        point = stats.seed_mean(y, ones)[0]
        boot = stats.seed_mean(y, counts)
        (a,), _ = fit_line(u, point[None, :])
        alpha = stats.t_interval(float(a), fit_line(u, boot)[0], n)
        thr = np.stack([_threshold(g[g["width"] == w], seeds, counts) for w in widths], axis=1)
        thr_point = np.stack(
            [_threshold(g[g["width"] == w], seeds, np.ones((1, len(seeds)))) for w in widths],
            axis=1,
        )[0]
        (a_div,), _ = fit_line(u, thr_point[None, :])
        n_div = int(g["seed"].nunique())
        alpha_div = stats.t_interval(float(a_div), fit_line(u, thr)[0], n_div)
        fits.append(
            GroupFit(
                key=tuple(key),
                estimator=estimator,
                log2_widths=u,
                seed_lr_star=y,
                lr_star=point,
                boot_lr_star=boot,
                alpha=alpha,
                threshold=thr_point,
                boot_threshold=thr,
                alpha_div=alpha_div,
                at_edge=edge,
                n_seeds=n,
            )
        )
    return fits


def _threshold(g: pd.DataFrame, seeds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """log2 divergence threshold of one width's final rows for each row of seed multiplicities
    ``counts`` ``(B, S)``: ``(B,)``."""
    lrs = np.sort(g["lr"].unique())
    s = np.searchsorted(seeds, g["seed"].to_numpy())
    j = np.searchsorted(lrs, g["lr"].to_numpy())
    div = np.zeros((len(seeds), len(lrs)), bool)
    present = np.zeros_like(div)
    div[s, j] = g["diverged"].to_numpy(bool)
    present[s, j] = True
    n = counts @ present
    diverges = (n > 0) & (2 * (counts @ (div & present)) >= n)
    return log2_threshold(np.log2(lrs.astype(np.float64)), diverges)


def log2_threshold(x: np.ndarray, diverges: np.ndarray) -> np.ndarray:
    """Per row of ``diverges`` ``(B, L)`` over ascending ``x``: the midpoint of the lowest
    diverging point and the point below it; NaN without both."""
    x, diverges = np.asarray(x, np.float64), np.atleast_2d(diverges)
    k = np.argmax(diverges, axis=1)
    found = diverges.any(axis=1) & (k > 0)
    return np.where(found, 0.5 * (x[np.maximum(k - 1, 0)] + x[k]), np.nan)


def transfer_table(
    results: pd.DataFrame,
    select: str = "test_loss",
    n_boot: int = 1000,
    seed: int = 0,
    estimator: str = stats.DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> pd.DataFrame:
    """``transfer.csv``: per group with at least :data:`MIN_WIDTHS` widths and per width, the
    transfer regret of the narrowest width's lr* and the basin widths
    (:func:`jaxlr.stats.transfer_rows`; columns :data:`jaxlr.stats.TRANSFER_COLUMNS`)."""
    _check(select, estimator)
    if results.empty:
        return pd.DataFrame(columns=stats.TRANSFER_COLUMNS)
    last = _uniform_final(results)
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in last.groupby(KEYS, sort=True):
        widths = np.sort(g["width"].unique())
        if len(widths) < MIN_WIDTHS:
            continue
        seeds = np.sort(g["seed"].unique())
        lrs = np.sort(g["lr"].unique())
        shape = (len(widths), len(seeds), len(lrs))
        loss = np.full(shape, np.nan)
        present = np.zeros(shape, bool)
        wi = np.searchsorted(widths, g["width"].to_numpy())
        si = np.searchsorted(seeds, g["seed"].to_numpy())
        li = np.searchsorted(lrs, g["lr"].to_numpy())
        v = g[select].to_numpy(np.float64)
        loss[wi, si, li] = v
        present[wi, si, li] = True
        ok = np.zeros(shape, bool)
        ok[wi, si, li] = ~stats.censored(v, g["diverged"].to_numpy(bool), chance_loss)
        per = stats.seed_lr_stars(g, ["width"], select, estimator, chance_loss)
        y = (
            per.pivot(index="seed", columns="width", values="log2_lr_star")
            .reindex(index=seeds, columns=widths)
            .to_numpy(np.float64)
        )
        x = np.log2(lrs.astype(np.float64))
        u = np.log2(widths.astype(np.float64))
        for r in stats.transfer_rows(u, x, loss, ok, present, y, n_boot, rng):
            rows.append(
                {**dict(zip(KEYS, key, strict=True)), "base_width": int(widths[0]),
                 "estimator": estimator, **r}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=stats.TRANSFER_COLUMNS)


def _num(v: float) -> str:
    return f"{v:.2f}".replace("-", "−")


def format_exponent(table: pd.DataFrame) -> str:
    """The terminal lines of :func:`width_exponent`'s table, one per group (empty if none)."""
    if table.empty:
        return ""
    est = ", ".join(dict.fromkeys(table["estimator"]))
    lines = [
        f"Width exponent (each seed's lr* by {est}; least-squares slope of log2 lr* on log2 "
        f"width; 95% {stats.CI_METHOD} interval over seeds):"
    ]
    many_depths = table["depth"].nunique() > 1
    for _, r in table.iterrows():
        name = [r["optimizer"], *([r["lr_rule"]] if r["lr_rule"] != "none" else [])]
        name += [r["parametrization"], *([f"depth {r['depth']}"] if many_depths else [])]
        if r.get("weight_decay", 0.0):
            name.append(f"wd {r['weight_decay']:g}")
        tail = f"{r['n_widths']} widths, n_seeds {r['n_seeds']}"
        if r["n_widths_edge"]:
            tail += f"; lr* at the edge of the lrs at {r['n_widths_edge']}: widen the grid"
        line = (
            f"lr* ∝ width^α, α = {_estimate(r, 'alpha', 'n_widths')}  ({', '.join(name)}, {tail}); "
            f"divergence threshold: α = {_estimate(r, 'alpha_div', 'n_widths_div')}"
        )
        if 2 <= r["n_seeds"] < stats.RELIABLE_SEEDS:
            line += (
                f"\n  warning: with {r['n_seeds']} seeds this interval is unreliable (its spread "
                f"comes from {r['n_seeds']} numbers); use --seeds {2 * stats.RELIABLE_SEEDS - 2} "
                "or more (seeds are lanes of one program)"
            )
        lines.append(line)
    return "\n".join(lines)


def _estimate(r: pd.Series, col: str, n_col: str) -> str:
    if not np.isfinite(r[col]):
        n = int(r[n_col])
        return f"n/a (found at {n} width{'s' * (n != 1)}, needs {MIN_WIDTHS})"
    if not np.isfinite(r[f"{col}_lo"]):
        return f"{_num(r[col])} (no interval: 1 seed)" if r["n_seeds"] < 2 else _num(r[col])
    return f"{_num(r[col])} [{_num(r[f'{col}_lo'])}, {_num(r[f'{col}_hi'])}]"


def _band(fit: GroupFit, boot: np.ndarray, n: int, grid: np.ndarray) -> tuple[np.ndarray, ...]:
    """The fitted line over ``grid`` ± the interval's half-width of the line at each point."""
    s_b, i_b = fit_line(fit.log2_widths, boot)
    keep = np.isfinite(s_b)
    lines = i_b[keep, None] + s_b[keep, None] * grid
    half = (
        stats.t_quantile(0.975, n - 1) * math.sqrt(n / (n - 1)) * lines.std(axis=0, ddof=1)
        if n >= 2 and keep.sum() >= 2
        else np.full(grid.shape, np.nan)
    )
    return half


def plot_width_exponent(
    results: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str = "",
    select: str = "test_loss",
    n_boot: int = 1000,
    seed: int = 0,
    estimator: str = stats.DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> None:
    """log2 lr* (``o``: the seed mean, small dots: each seed's) and the log2 divergence
    threshold (``v``) against log2 width, one panel per optimizer (and rule, depth), one colour
    per parametrization: the fitted lines, and for lr* the 95% band of the line (the
    interval's method applied pointwise to the resampled lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxlr.plots import MAX_PIXELS

    fits = group_fits(results, select, n_boot, seed, estimator, chance_loss)
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
            jitter = np.arange(f.seed_lr_star.shape[0]) / max(f.seed_lr_star.shape[0], 1) - 0.5
            for s_i, ys in enumerate(f.seed_lr_star):  # the per-seed spread
                ax.plot(u + 0.08 * jitter[s_i], ys, ".", color=c, ms=3, alpha=0.5)
            for y, col, n_col_, what, mark, style in (
                (f.lr_star, "alpha", "n_widths", "lr*", "o", "-"),
                (f.threshold, "alpha_div", "n_widths_div", "divergence", "v", ":"),
            ):
                ok = np.isfinite(y)
                if not ok.any():
                    continue  # e.g. no width diverged
                label = f"{f.key[2]} {what}: α = {_estimate(r, col, n_col_)}"
                if col == "alpha" and r["n_widths_edge"]:
                    label += f" ({r['n_widths_edge']} at the grid's edge)"
                ax.plot(u[ok], y[ok], mark, color=c, mfc=c if mark == "o" else "none", label=label)
                slope, icpt = fit_line(u, y)
                if np.isfinite(slope[0]):
                    line = icpt[0] + slope[0] * grid
                    ax.plot(grid, line, style, color=c, lw=1.2)
                    if col == "alpha" and np.isfinite(r["alpha_lo"]):
                        half = _band(f, f.boot_lr_star, f.alpha.n_seeds, grid)
                        ax.fill_between(grid, line - half, line + half, color=c, alpha=0.2, lw=0)
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
        (f"{title}: " if title else "")
        + f"lr* ∝ width^α (dots: each seed's lr* by {estimator}; band: 95% {stats.CI_METHOD})",
        fontsize=10,
    )
    res.atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)


def depth_exponent(
    results: pd.DataFrame,
    select: str = "test_loss",
    *,
    estimator: str = stats.DEFAULT_ESTIMATOR,
    n_boot: int = 1000,
    seed: int = 0,
    chance_loss: float | None = None,
) -> pd.DataFrame:
    r"""How the best lr moves with depth at each width: :math:`\mathrm{lr}^* \propto
    L^{\beta}` with :math:`L` the depth (hidden layers, or transformer blocks), per (optimizer,
    lr_rule, parametrization, weight_decay, width) group that swept at least :data:`MIN_WIDTHS`
    depths (``--depths``).

    The estimate and its interval are :func:`width_exponent`'s with depth in the place of
    width: each seed's lr* per depth, the least-squares slope of :math:`\log_2 \mathrm{lr}^*`
    on :math:`\log_2 L`, the seeds resampled once for all depths. :math:`\beta \approx 0`
    says the lr transfers across depth (what depth-muP's residual scaling
    :math:`L^{-1/2}` aims at). Columns :data:`DEPTH_COLUMNS`; empty with fewer depths.
    """
    swapped = results.rename(columns={"width": "depth", "depth": "width"})
    kw = dict(estimator=estimator, n_boot=n_boot, seed=seed, chance_loss=chance_loss)
    table = width_exponent(swapped, select=select, **kw)
    return table.rename(columns=_DEPTH_NAMES)[DEPTH_COLUMNS]


def format_depth_exponent(table: pd.DataFrame) -> str:
    """The terminal lines of :func:`depth_exponent`'s table, one per group (empty if none)."""
    if table.empty:
        return ""
    lines = ["Depth exponent (each seed's lr*; slope of log2 lr* on log2 depth, at each width):"]
    for _, r in table.iterrows():
        name = [r["optimizer"], *([r["lr_rule"]] if r["lr_rule"] != "none" else [])]
        name += [r["parametrization"], f"width {r['width']}"]
        est = r.rename({v: k for k, v in _DEPTH_NAMES.items()})
        value = _estimate(est, "alpha", "n_widths").replace("width", "depth")
        lines.append(
            f"lr* ∝ depth^β, β = {value}  ({', '.join(name)}, {r['n_depths']} depths, "
            f"n_seeds {r['n_seeds']})"
        )
    return "\n".join(lines)
