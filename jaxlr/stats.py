"""The answer's statistics: the lr* estimators, the width exponent's interval, transfer regret,
and a simulator of sweeps with a known exponent that calibrates them.

**lr\\* estimators** (:data:`ESTIMATORS`, chosen with ``--lr-star``) read one curve, a seed's
final loss ``y`` against ``x = log2 lr`` at one width. A run is *censored* when it diverged, its
loss is not finite, or its loss is at or above the chance level ``ln(classes)`` (a run that
learned nothing): censored runs are never points of a fit, they only bound it.

* ``argmin``: the tested lr with the lowest loss among the uncensored ones (the reference).
* ``parabola``: the vertex of the parabola through the argmin and its two neighbours (in
  loss), clipped to them; the argmin at the grid's edge or beside a censored run.
* ``local-quadratic`` (the default): a least-squares quadratic in ``log y`` over a window of
  at least :data:`MIN_POINTS` uncensored grid points around the minimum (see
  :func:`local_quadratic`).

**The width exponent** ``alpha`` is the least-squares slope of ``log2 lr*(w)`` on ``log2 w``,
``lr*(w)`` being the mean over seeds of the seeds' estimates (:func:`exponent_interval`).
Its interval, ``ci_method = "paired-bootstrap-t"``, resamples whole seeds (the same seed at
every width, since a seed fixes the init stream and the batch order at every width), reruns the
estimate on every resample and widens the bootstrap's standard error by Student's t:
``alpha ± t_{n-1, 0.975} sqrt(n / (n-1)) SE*``. Below :data:`RELIABLE_SEEDS` seeds the interval
is printed with a warning: it rests on a standard deviation from 2 to 4 numbers.

**Calibration.** :func:`jaxlr.simulate.simulate_sweep` draws sweeps with a known ``alpha`` from
:class:`~jaxlr.simulate.CurveFamily` s fitted to real jaxlr sweeps (:mod:`jaxlr.simulate`);
``tests/test_calibration.py`` checks that the 95% interval covers the true ``alpha`` in 90-98%
of 200 sweeps at 3, 5 and 8 seeds and that the estimator's bias is below 0.05.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd

Estimator = Literal["argmin", "parabola", "local-quadratic"]
DEFAULT_ESTIMATOR: Estimator = "local-quadratic"
CI_METHOD = "paired-bootstrap-t"
MIN_POINTS = 5
"""Fewest uncensored grid points in the local-quadratic window (fewer if the curve has fewer)."""
HALF_WIDTH = 1.0
"""The local-quadratic window: every uncensored point within this many octaves of the centre."""
SCALE = 1.0
"""Octaves: the local-quadratic fit weights a point at distance d by exp(-(d / SCALE)² / 2)."""
RELIABLE_SEEDS = 5
"""Below this many seeds the interval is flagged as unreliable."""
MIN_WIDTHS = 3
"""Fewest widths for a slope."""


# ----------------------------------------------------------------------------- censoring
def censored(
    loss: np.ndarray, diverged: np.ndarray | None = None, chance_loss: float | None = None
) -> np.ndarray:
    """True where a run is no point of a fit: not finite, diverged, or ``loss >= chance_loss``
    (no better than predicting uniformly over the classes, ``ln(classes)``)."""
    loss = np.asarray(loss, np.float64)
    out = ~np.isfinite(loss)
    if diverged is not None:
        out |= np.asarray(diverged, bool)
    if chance_loss is not None:
        with np.errstate(invalid="ignore"):
            out |= loss >= chance_loss
    return out


def chance_level(num_classes: int | None) -> float:
    """The cross-entropy of a uniform prediction over ``num_classes`` (10 when unknown)."""
    return math.log(num_classes or 10)


# ----------------------------------------------------------------------------- estimators
def argmin(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> float:
    """``x`` of the lowest ``y`` among the ``ok`` points (the first of ties); NaN if none.

    The one definition of "the best tested lr": the ``argmin`` estimator, the seed-mean
    curve's best lr in :func:`optimum_table`, and ``summary.csv``'s ``best_lr``
    (:func:`jaxlr.results.summarize`, a tested lr so that plots can pick its runs)."""
    x, y, ok = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(ok, bool)
    ok = ok & ~np.isnan(y)
    if not ok.any():
        return math.nan
    return float(x[int(np.argmin(np.where(ok, y, np.inf)))])


def parabola(x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> float:
    """The vertex of the parabola through the argmin ``x0`` and its neighbours ``xa < x0 < xc``::

        x* = x0 - ½ [(x0-xa)² (y0-yc) - (x0-xc)² (y0-ya)] / [(x0-xa)(y0-yc) - (x0-xc)(y0-ya)]

    clipped to ``[xa, xc]``; ``x0`` at the grid's edge, beside a censored point or for three
    collinear points."""
    x, y, ok = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(ok, bool)
    if not ok.any():
        return math.nan
    k = int(np.argmin(np.where(ok, y, np.inf)))
    if k == 0 or k == len(x) - 1 or not (ok[k - 1] and ok[k + 1]):
        return float(x[k])
    xa, x0, xc = x[k - 1 : k + 2]
    ya, y0, yc = y[k - 1 : k + 2]
    num = (x0 - xa) ** 2 * (y0 - yc) - (x0 - xc) ** 2 * (y0 - ya)
    den = (x0 - xa) * (y0 - yc) - (x0 - xc) * (y0 - ya)
    if den == 0:
        return float(x0)
    return float(np.clip(x0 - 0.5 * num / den, xa, xc))


def _segment(ok: np.ndarray, k: int) -> tuple[int, int]:
    """The run of consecutive ``ok`` indices ``[lo, hi]`` that contains ``k``."""
    lo, hi = k, k
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(ok) - 1 and ok[hi + 1]:
        hi += 1
    return lo, hi


def local_quadratic(
    x: np.ndarray,
    y: np.ndarray,
    ok: np.ndarray,
    *,
    half_width: float = HALF_WIDTH,
    min_points: int = MIN_POINTS,
    scale: float | None = SCALE,
) -> float:
    """lr* of one curve from a quadratic in log loss fitted around its minimum.

    With ``z = log y`` on the uncensored points (``ok``) of ascending ``x = log2 lr``:

    1. *Centre*: ``k = argmin z̄``, ``z̄`` the mean of ``z`` over each point and its uncensored
       grid neighbours (a jagged single point does not pull the window away).
    2. *Window*: the uncensored points of the run of consecutive uncensored points around ``k``
       (a censored run is never crossed) within ``half_width`` octaves of ``x_k``, widened to
       the ``min_points`` nearest when fewer.
    3. *Fit*: ``z ≈ a + b d + c d²``, ``d = x - x_k``, by least squares; ``x* = x_k - b / 2c``
       if ``c > 0``, else ``x_k``.
    4. *Bounds*: ``x*`` is clipped to the window; where the window ends next to a censored
       run (e.g. the lowest diverging lr), up to half-way to it, since the optimum may lie in
       the untested gap below a stability cliff; never past the tested lrs.

    With fewer than 3 points in the window: ``x_k``. NaN if no point is uncensored.
    """
    x, y, ok = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(ok, bool)
    ok = ok & np.isfinite(y) & (y > 0)
    if not ok.any():
        return math.nan
    z = np.log(np.where(ok, y, 1.0))
    zo = np.where(ok, z, 0.0)
    n = ok.astype(np.float64)
    s = zo.copy()
    c = n.copy()
    s[1:] += zo[:-1] * ok[1:]
    c[1:] += n[:-1] * ok[1:]
    s[:-1] += zo[1:] * ok[:-1]
    c[:-1] += n[1:] * ok[:-1]
    zbar = np.where(ok, s / np.maximum(c, 1.0), np.inf)
    k = int(np.argmin(zbar))
    lo, hi = _segment(ok, k)
    idx = np.arange(lo, hi + 1)
    dist = np.abs(x[idx] - x[k])
    window = idx[dist <= half_width + 1e-9]
    if len(window) < min_points:
        window = np.sort(idx[np.argsort(dist, kind="stable")[:min_points]])
    if len(window) < 3:
        return float(x[k])
    d = x[window] - x[k]
    wt = np.ones_like(d) if scale is None else np.exp(-0.5 * (d / scale) ** 2)
    a = np.stack([np.ones_like(d), d, d * d], axis=1) * wt[:, None]
    coef = np.linalg.lstsq(a, z[window] * wt, rcond=None)[0]
    if not coef[2] > 0:
        return float(x[k])
    vertex = x[k] - coef[1] / (2 * coef[2])
    left, right = x[window[0]], x[window[-1]]
    if window[0] == lo and lo > 0:  # a censored run below: the optimum may be in the gap
        left = 0.5 * (x[lo] + x[lo - 1])
    if window[-1] == hi and hi < len(x) - 1:
        right = 0.5 * (x[hi] + x[hi + 1])
    return float(np.clip(vertex, left, right))


ESTIMATORS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "argmin": argmin,
    "parabola": parabola,
    "local-quadratic": local_quadratic,
}
"""The lr* estimators by name: ``f(log2_lrs, losses, ok) -> log2 lr*`` of one curve."""


def lr_star(
    x: np.ndarray, y: np.ndarray, ok: np.ndarray, estimator: str = DEFAULT_ESTIMATOR
) -> float:
    """log2 lr* of one curve by the named estimator (:data:`ESTIMATORS`)."""
    try:
        f = ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown lr* estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}"
        ) from None
    return f(x, y, ok)


def seed_lr_stars(
    final: pd.DataFrame,
    keys: Sequence[str],
    loss: str,
    estimator: str = DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> pd.DataFrame:
    """Per ``keys`` and seed: ``log2_lr_star`` of that seed's curve of final ``loss``, and
    ``at_edge`` (the curve's uncensored minimum is the lowest or highest lr tested).

    ``final`` has one row per run (the last epoch), with ``lr``, ``seed``, ``loss`` and
    ``diverged`` columns."""
    rows = []
    for key, g in final.groupby([*keys, "seed"], sort=True):
        g = g.sort_values("lr")
        x = np.log2(g["lr"].to_numpy(np.float64))
        y = g[loss].to_numpy(np.float64)
        div = g["diverged"].to_numpy(bool) if "diverged" in g else None
        ok = ~censored(y, div, chance_loss)
        best = argmin(x, y, ok)
        edge = bool(np.isfinite(best) and best in (x[0], x[-1]))
        rows.append((*key, lr_star(x, y, ok, estimator), edge))
    return pd.DataFrame(rows, columns=[*keys, "seed", "log2_lr_star", "at_edge"])


def optimum_table(
    final: pd.DataFrame,
    keys: Sequence[str],
    loss: str,
    estimator: str = DEFAULT_ESTIMATOR,
    chance_loss: float | None = None,
) -> pd.DataFrame:
    """Per ``keys``: log2 lr* over seeds (``log2_lr_star_mean``, ``_std``, ``_min``, ``_max``,
    each seed's lr* by ``estimator``), the seed-mean curve's best tested lr
    (``log2_lr_star_of_mean``: lowest mean ``loss`` among lrs where no seed is censored), that
    mean loss and its std over seeds, and the lowest lr at which any seed diverged."""
    seeds = seed_lr_stars(final, keys, loss, estimator, chance_loss)
    g = seeds.groupby(list(keys), sort=True)["log2_lr_star"]
    stats = g.agg(
        log2_lr_star_mean="mean",
        log2_lr_star_std="std",
        log2_lr_star_min="min",
        log2_lr_star_max="max",
        n_seeds="count",
    ).reset_index()
    extra = []
    for key, gg in final.groupby(list(keys), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        cens = censored(gg[loss], gg["diverged"], chance_loss)
        per = (
            gg.assign(_c=cens)
            .groupby("lr")
            .agg(m=(loss, "mean"), s=(loss, "std"), c=("_c", "any"), d=("diverged", "any"))
        )
        okp = per[~per["c"]]
        best = argmin(per.index.to_numpy(), per["m"].to_numpy(), ~per["c"].to_numpy())
        best = None if math.isnan(best) else best
        div = per.index[per["d"]]
        extra.append(
            (
                *key,
                float(np.log2(best)) if best is not None else math.nan,
                float(okp.loc[best, "m"]) if best is not None else math.nan,
                float(okp.loc[best, "s"]) if best is not None else math.nan,
                float(np.log2(div.min())) if len(div) else math.nan,
            )
        )
    cols = ["log2_lr_star_of_mean", f"best_{loss}", f"best_{loss}_std", "log2_min_diverged_lr"]
    out = stats.merge(pd.DataFrame(extra, columns=[*keys, *cols]), on=list(keys))
    out.insert(len(keys), "estimator", estimator)
    return out


# ----------------------------------------------------------------------------- intervals
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile ``P(T <= t) = p`` for integer ``df >= 1`` (bisection on the closed
    form of the t distribution for integer degrees of freedom, Abramowitz & Stegun 26.7.3-4)."""
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * p - 1.0  # P(|T| <= t)
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_central(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _t_central(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df``."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return (2.0 / math.pi) * (theta + s * total) if df > 1 else 2.0 * theta / math.pi
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def fit_line(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of each row of ``y`` ``(B, W)`` on ``u`` ``(W,)``,
    over its finite entries; NaN for rows with fewer than :data:`MIN_WIDTHS`::

        slope = Σ (u - ū)(y - ȳ) / Σ (u - ū)²"""
    u = np.asarray(u, np.float64)
    y = np.atleast_2d(np.asarray(y, np.float64))
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


def seed_counts(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, n_seeds)`` multiplicities of seeds drawn with replacement: one draw of seeds
    per resample, shared by every width (the paired resample)."""
    idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    counts = np.zeros((n_boot, n_seeds))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts


def seed_mean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per resample (row of ``counts``) the weighted mean over seeds of ``values`` ``(S, W)``
    (NaN entries skipped): ``(B, W)``."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(finite, values, 0.0)) / (counts @ finite)


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval and its paired-bootstrap resamples."""

    estimate: float
    lo: float
    hi: float
    n_seeds: int
    boot: np.ndarray  # (B,) the resampled estimates (NaN where a resample has none)

    @property
    def reliable(self) -> bool:
        """At least :data:`RELIABLE_SEEDS` seeds."""
        return self.n_seeds >= RELIABLE_SEEDS


def t_interval(estimate: float, boot: np.ndarray, n_seeds: int, level: float = 0.95) -> Interval:
    """``estimate ± t_{n-1, (1+level)/2} sqrt(n / (n-1)) SD(boot)``: the bootstrap standard
    error, corrected for the plug-in variance's ``(n-1)/n`` shrinkage, widened by Student's t
    (a percentile interval of 3 seeds has 10 atoms and covers far less than 95%)."""
    boot = np.asarray(boot, np.float64)
    finite = boot[np.isfinite(boot)]
    lo = hi = math.nan
    if n_seeds >= 2 and math.isfinite(estimate) and len(finite) >= 2:
        se = float(np.std(finite, ddof=1)) * math.sqrt(n_seeds / (n_seeds - 1))
        half = t_quantile(0.5 + level / 2, n_seeds - 1) * se
        lo, hi = estimate - half, estimate + half
    return Interval(float(estimate), lo, hi, int(n_seeds), boot)


def exponent_interval(
    log2_widths: np.ndarray,
    log2_lr_stars: np.ndarray,
    n_boot: int = 1000,
    rng: np.random.Generator | int = 0,
) -> Interval:
    """The width exponent of per-seed lr* estimates ``(S, W)`` (NaN where a seed has none) and
    its paired-bootstrap-t interval.

    ``alpha`` = slope of ``ȳ(w) = mean_s log2 lr*_s(w)`` on ``log2 w`` (:func:`fit_line`). Each
    of ``n_boot`` resamples draws ``S`` seeds with replacement, the same draw at every width,
    and recomputes ``ȳ`` and the slope; the interval is :func:`t_interval` of those slopes.
    ``S`` counts the seeds with at least one estimate."""
    y = np.asarray(log2_lr_stars, np.float64)
    y = y[np.isfinite(y).any(axis=1)]
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    n = y.shape[0]
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, np.full(n_boot, np.nan))
    (alpha,), _ = fit_line(log2_widths, seed_mean(y, np.ones((1, n))))
    boot = fit_line(log2_widths, seed_mean(y, seed_counts(n, n_boot, rng)))[0]
    return t_interval(alpha, boot, n)


# ----------------------------------------------------------------------------- transfer
TRANSFER_COLUMNS = [
    "optimizer",
    "lr_rule",
    "parametrization",
    "weight_decay",
    "depth",
    "base_width",
    "width",
    "estimator",
    "n_seeds",
    "log2_lr_star_base",
    "log2_lr_star",
    "loss_at_best_lr",
    "loss_at_base_lr_star",
    "regret_pct",
    "regret_lo",
    "regret_hi",
    "basin_1pct_octaves",
    "basin_5pct_octaves",
]


def curve_at(
    x: np.ndarray, mean_log: np.ndarray, ok: np.ndarray, at: np.ndarray, clip: bool = False
) -> np.ndarray:
    """The seed-mean log loss read off at ``at`` (log2 lrs) by linear interpolation between
    the tested lrs of the uncensored run of points around the best; outside it ``inf`` (the lr
    was censored there, or lies beyond the tested lrs), or with ``clip`` the nearest end's
    value (an lr* that an estimator put half-way into the gap below a cliff)."""
    at = np.atleast_1d(np.asarray(at, np.float64))
    if not ok.any():
        return np.full(at.shape, np.nan)
    k = int(np.argmin(np.where(ok, mean_log, np.inf)))
    lo, hi = _segment(ok, k)
    xs, zs = x[lo : hi + 1], mean_log[lo : hi + 1]
    inside = (at >= xs[0] - 1e-9) & (at <= xs[-1] + 1e-9)
    return np.where(inside | clip, np.interp(at, xs, zs), np.inf)


def basin_octaves(x: np.ndarray, mean_log: np.ndarray, ok: np.ndarray, tol: float) -> float:
    """Octaves of lr around the best tested lr over which the seed-mean loss (interpolated as
    in :func:`curve_at`) stays within ``(1 + tol)`` of the best: the length of the interval
    ``{x: L(x) <= (1 + tol) L_min}`` that contains the best, on a 0.01-octave grid."""
    if not ok.any():
        return math.nan
    k = int(np.argmin(np.where(ok, mean_log, np.inf)))
    lo, hi = _segment(ok, k)
    fine = np.arange(x[lo], x[hi] + 1e-9, 0.01)
    z = np.interp(fine, x[lo : hi + 1], mean_log[lo : hi + 1])
    inside = z <= mean_log[k] + math.log1p(tol)
    j = int(np.argmin(np.abs(fine - x[k])))
    a, b = j, j
    while a > 0 and inside[a - 1]:
        a -= 1
    while b < len(fine) - 1 and inside[b + 1]:
        b += 1
    return float(fine[b] - fine[a])


def transfer_rows(
    log2_widths: np.ndarray,
    x: np.ndarray,
    loss: np.ndarray,
    ok: np.ndarray,
    present: np.ndarray,
    lr_stars: np.ndarray,
    n_boot: int = 1000,
    rng: np.random.Generator | int = 0,
) -> list[dict]:
    """The transfer regret at each width of one group, from the narrowest (the base) width.

    Inputs on a shared lr axis ``x`` ``(L,)``, per width and seed: final losses ``loss``
    ``(W, S, L)``, ``ok`` (uncensored), ``present`` (tested; refinement adds lrs per width),
    and the seeds' ``lr_stars`` ``(S, W)``. With ``m_w(x)`` the seed mean of ``log loss`` over
    the lrs tested at width ``w`` (an lr where any seed is censored is no point of it) and
    ``x*_w`` the seeds' mean lr*::

        regret(w) = exp(m_w(x*_base) - min_x m_w(x)) - 1     (in %)

    i.e. the loss at the base width's lr* against the loss at the best lr tested at width
    ``w``; at the base width itself it is what the estimate gives away to the best tested lr (a
    jagged curve's best point is partly luck). ``m_w`` is read off by :func:`curve_at`;
    ``inf`` where the base's lr* is censored at width ``w`` (it diverges, or is no better than
    chance, for some seed) or beyond the lrs tested. The interval is the 2.5th and 97.5th
    percentile of the regret over paired seed resamples (:func:`seed_counts`), each
    recomputing ``x*`` and ``m``; the basins are :func:`basin_octaves` at 1% and 5% of ``m``.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    n_w, n_s, _ = loss.shape
    counts = np.vstack([np.ones((1, n_s)), seed_counts(n_s, n_boot, rng)])
    stars = seed_mean(lr_stars, counts)  # (B+1, W)
    good = ok & present & np.isfinite(loss) & (loss > 0)
    logl = np.log(np.where(good, loss, 1.0))
    regrets = np.full((counts.shape[0], n_w), np.nan)
    curves = []
    for w in range(n_w):
        cols = present[w].all(axis=0)
        xw, lw, gw = x[cols], logl[w][:, cols], good[w][:, cols]
        for b in range(counts.shape[0]):
            used = counts[b] > 0
            point_ok = gw[used].all(axis=0)
            mean_log = counts[b, used] @ lw[used] / counts[b, used].sum()
            if b == 0:
                curves.append((xw, mean_log, point_ok))
            if np.isfinite(stars[b, 0]):
                at = _at_stars(xw, mean_log, point_ok, stars[b, 0])
                regrets[b, w] = 100.0 * np.expm1(at[0] - at[1])
    rows = []
    for w in range(n_w):
        xw, mean_log, point_ok = curves[w]
        at = np.array([np.nan, np.nan])
        if np.isfinite(stars[0, 0]):
            at = _at_stars(xw, mean_log, point_ok, stars[0, 0])
        lo = hi = math.nan
        boot = regrets[1:, w]
        boot = boot[~np.isnan(boot)]
        if n_s >= 2 and len(boot):  # no interpolation between draws: inf (diverges) stays inf
            lo = float(np.quantile(boot, 0.025, method="lower"))
            hi = float(np.quantile(boot, 0.975, method="higher"))
        rows.append(
            dict(
                width=round(2.0 ** float(log2_widths[w])),
                n_seeds=n_s,
                log2_lr_star_base=float(stars[0, 0]),
                log2_lr_star=float(stars[0, w]),
                loss_at_best_lr=float(np.exp(at[1])),
                loss_at_base_lr_star=float(np.exp(at[0])),
                regret_pct=float(regrets[0, w]),
                regret_lo=lo,
                regret_hi=hi,
                basin_1pct_octaves=basin_octaves(xw, mean_log, point_ok, 0.01),
                basin_5pct_octaves=basin_octaves(xw, mean_log, point_ok, 0.05),
            )
        )
    return rows


def _at_stars(x: np.ndarray, mean_log: np.ndarray, ok: np.ndarray, base: float) -> np.ndarray:
    """The curve at the base width's lr* (``inf`` where censored) and its best point."""
    best = float(np.min(np.where(ok, mean_log, np.inf))) if ok.any() else math.nan
    return np.array([curve_at(x, mean_log, ok, base)[0], best])


def _pct(v: float) -> str:
    if not np.isfinite(v):
        return "∞" if v > 0 else "n/a"
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


def format_transfer(table: pd.DataFrame) -> str:
    """One line per (optimizer, rule, depth): each parametrization's transfer regret from the
    base width to the widest, with its interval (empty without a table)."""
    if table is None or table.empty:
        return ""
    lines = []
    many_depths = table["depth"].nunique() > 1
    if "weight_decay" not in table:
        table = table.assign(weight_decay=0.0)
    groups = table.groupby(["optimizer", "lr_rule", "weight_decay", "depth"], sort=True)
    for (opt, rule, wd, depth), g in groups:
        parts = []
        for par, gp in g.groupby("parametrization", sort=True):
            r = gp.sort_values("width").iloc[-1]
            name = {"sp": "SP", "mup": "muP"}.get(par, par)
            value = _pct(r["regret_pct"]) + ("%" if np.isfinite(r["regret_pct"]) else "")
            if np.isnan(r["regret_pct"]):
                value += " (no lr* or no run better than chance)"
            elif not np.isnan(r["regret_lo"]):
                value += f" [{_pct(r['regret_lo'])}, {_pct(r['regret_hi'])}]"
            if np.isinf(r["regret_pct"]):
                value += " (the base lr* diverges or is no better than chance there)"
            parts.append(
                f"{name}: from width {int(r['base_width'])} to {int(r['width'])} costs {value}"
            )
        head = (
            opt
            + (f", {rule}" if rule != "none" else "")
            + (f", wd {wd:g}" if wd else "")
            + (f", depth {depth}" if many_depths else "")
        )
        lines.append(f"Transfer regret of lr* ({head}; % of final loss): " + "; ".join(parts))
    return "\n".join(lines)
