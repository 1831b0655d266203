"""A simulator of sweeps with a known width exponent, to calibrate :mod:`jaxlr.stats`.

:func:`simulate_sweep` draws per-width, per-seed final-loss curves from a :class:`CurveFamily`
(valley shape, jaggedness, per-seed shifts correlated across widths, a stability cliff that
moves with width) whose lr* moves as ``width^alpha``; :func:`fit_family` fits a family to a
real jaxlr sweep's ``final.csv``; :data:`FAMILIES` are the families fitted to committed sweeps
(``experiments/fit_simulator.py``), and :func:`calibration_sweeps` the sweeps
``tests/test_calibration.py`` checks the interval's coverage and the estimator's bias on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxlr.stats import (
    DEFAULT_ESTIMATOR,
    MIN_WIDTHS,
    Interval,
    censored,
    exponent_interval,
    fit_line,
    lr_star,
)


@dataclasses.dataclass(frozen=True)
class CurveFamily:
    """Final-loss curves against ``x = log2 lr`` at widths ``w = base · 2^u``, seeds ``s``::

        x*_{s,w} = x0 + alpha u + seed_shift (√ρ g_s + √(1-ρ) e_{s,w}),  ρ = seed_corr
        log10 L  = floor + floor_slope u + slope_left h(x*-x) [x < x*]
                   + slope_right h(x-x*) [x > x*] + ε,   h(d) = √(d² + bend²) - bend
        ε ~ N(0, jitter_left²) below x*, N(0, jitter_right²) above (the jagged side)

    capped below the chance level (the far-left plateau of lrs too small to train); a run
    diverges (NaN) from ``x*_{s,w} + cliff_gap + cliff_slope u + cliff_jitter n_{s,w}`` on (the
    stability cliff); ``g, e, n`` are standard normal. The fields are fitted to a real sweep by
    :func:`fit_family`.
    """

    name: str
    floor: float  # log10 of the best loss at the base width
    floor_slope: float  # its change per width doubling
    slope_left: float  # log10 loss per octave below lr* (far from it)
    slope_right: float  # log10 loss per octave above lr*
    bend: float  # octaves over which the valley turns (h's curvature scale)
    jitter_left: float  # SD of a run's log10 loss below lr*
    jitter_right: float  # SD above lr*
    seed_shift: float  # SD (octaves) of a seed's lr* about the width's
    seed_corr: float  # correlation of a seed's shift between widths
    cliff_gap: float  # octaves from lr* up to the divergence threshold at the base width
    cliff_slope: float  # the gap's change per width doubling
    cliff_jitter: float  # SD (octaves) of a seed's threshold

    def mean_log10(self, x: np.ndarray, x_star: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The noise-free ``log10 L`` (broadcasting ``x``, ``x*`` and ``u``)."""
        d = np.asarray(x, np.float64) - x_star
        h = np.sqrt(d * d + self.bend**2) - self.bend
        side = np.where(d < 0, self.slope_left, self.slope_right)
        return self.floor + self.floor_slope * u + side * h


@dataclasses.dataclass(frozen=True)
class SimulatedSweep:
    """A simulated sweep's final losses, as :func:`simulate_sweep` draws them."""

    alpha: float  # the true exponent
    log2_widths: np.ndarray  # (W,)
    x: np.ndarray  # (L,) log2 lrs, shared by every width
    loss: np.ndarray  # (W, S, L), NaN where diverged
    diverged: np.ndarray  # (W, S, L) bool
    log2_lr_star: np.ndarray  # (W,) the true lr*: E_s min(x*_{s,w}, cliff_{s,w}) (see below)

    @property
    def true_alpha(self) -> float:
        """The slope of the true ``log2_lr_star`` on ``log2 w``: ``alpha`` where the cliff
        never cuts the valley, less where it comes down onto it at the wide widths."""
        return float(fit_line(self.log2_widths, self.log2_lr_star[None, :])[0][0])


def simulate_sweep(
    family: CurveFamily,
    alpha: float,
    rng: np.random.Generator,
    *,
    widths: Sequence[int] = (32, 64, 128, 256, 512),
    n_seeds: int = 3,
    spacing: float = 0.5,
    span: float = 5.0,
    x0: float | None = None,
    chance_loss: float = math.log(10),
) -> SimulatedSweep:
    """One sweep of ``family`` with lr* ∝ width^alpha: a log2 grid of the given ``spacing``,
    shared by every width, covering every width's lr* ± ``span`` octaves, at a random offset
    (the optimum falls anywhere between grid points); ``x0`` (the base width's log2 lr*) is
    random in [-8, -4] unless given."""
    u = np.log2(np.asarray(widths, np.float64) / widths[0])
    x0 = float(rng.uniform(-8.0, -4.0)) if x0 is None else x0
    centres = x0 + alpha * u
    start = math.floor((centres.min() - span) / spacing) * spacing + rng.uniform(0, spacing)
    x = np.arange(start, centres.max() + span + spacing, spacing)
    n_w = len(widths)
    rho = family.seed_corr
    shift = family.seed_shift * (
        math.sqrt(rho) * rng.standard_normal((1, n_seeds))
        + math.sqrt(1.0 - rho) * rng.standard_normal((n_w, n_seeds))
    )
    x_star = centres[:, None] + shift  # (W, S)
    mean = family.mean_log10(x[None, None, :], x_star[..., None], u[:, None, None])
    below = x[None, None, :] < x_star[..., None]
    noise = rng.standard_normal(mean.shape) * np.where(
        below, family.jitter_left, family.jitter_right
    )
    log10 = np.minimum(mean + noise, math.log10(chance_loss) - 0.01)
    cliff = (
        x_star
        + family.cliff_gap
        + family.cliff_slope * u[:, None]
        + family.cliff_jitter * rng.standard_normal((n_w, n_seeds))
    )
    diverged = x[None, None, :] >= cliff[..., None]
    loss = np.where(diverged, np.nan, 10.0**log10)
    log2_w = np.log2(np.asarray(widths, np.float64))
    return SimulatedSweep(float(alpha), log2_w, x, loss, diverged, centres + _cliff_cut(family, u))


def _cliff_cut(family: CurveFamily, u: np.ndarray) -> np.ndarray:
    """``E min(0, g + σ n)``, ``g = cliff_gap + cliff_slope u``, ``σ = cliff_jitter``: how far
    below the valley's bottom the best *stable* lr lies on average (a seed's cliff moves with
    its valley, so the seed shift cancels)::

        E min(0, g + σ n) = g Φ(-g/σ) - σ φ(g/σ)"""
    g = family.cliff_gap + family.cliff_slope * u
    sig = family.cliff_jitter
    if not np.isfinite(family.cliff_gap):
        return np.zeros_like(u)
    if sig == 0:
        return np.minimum(g, 0.0)
    r = g / sig
    phi = np.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(-r / math.sqrt(2.0)))
    return g * cdf - sig * phi


def sweep_alpha(
    sweep: SimulatedSweep,
    estimator: str = DEFAULT_ESTIMATOR,
    n_boot: int = 1000,
    rng: np.random.Generator | int = 0,
    chance_loss: float = math.log(10),
) -> Interval:
    """The width exponent of a simulated sweep, as :mod:`jaxlr.exponent` computes it for a
    real one (per-seed lr* by ``estimator``, then :func:`exponent_interval`)."""
    n_w, n_s, _ = sweep.loss.shape
    ok = ~censored(sweep.loss, sweep.diverged, chance_loss)
    stars = np.array(
        [[lr_star(sweep.x, sweep.loss[w, s], ok[w, s], estimator) for w in range(n_w)]
         for s in range(n_s)]
    )  # fmt: skip
    return exponent_interval(sweep.log2_widths, stars, n_boot=n_boot, rng=rng)


def _family_points(final: pd.DataFrame, loss: str, chance_loss: float) -> tuple:
    """:func:`fit_family`'s points: per width ``(x, y (S, L) log10 loss or NaN, censored, best
    tested x)``, and the widths, the seeds and ``u = log2(w / w_0)``."""
    final = final.sort_values(["width", "seed", "lr"])
    widths = np.sort(final["width"].unique())
    seeds = np.sort(final["seed"].unique())
    u = np.log2(widths / widths[0])
    top = math.log10(chance_loss) - 0.1
    data = []  # per width: x (L,), y (S, L) with NaN where not a point, censored (S, L)
    for w in widths:
        g = final[final["width"] == w]
        xs = np.log2(np.sort(g["lr"].unique()))
        y = np.full((len(seeds), len(xs)), np.nan)
        cen = np.zeros((len(seeds), len(xs)), bool)
        si = np.searchsorted(seeds, g["seed"].to_numpy())
        li = np.searchsorted(xs, np.log2(g["lr"].to_numpy()))
        v = g[loss].to_numpy(np.float64)
        c = censored(v, g["diverged"].to_numpy(bool), chance_loss)
        cen[si, li] = c
        with np.errstate(divide="ignore", invalid="ignore"):
            y[si, li] = np.where(c, np.nan, np.log10(v))
        fin = np.isfinite(y)
        mean = np.where(fin, y, 0.0).sum(axis=0) / np.maximum(fin.sum(axis=0), 1)
        mean = np.where(fin.any(axis=0), mean, np.nan)
        best = xs[int(np.nanargmin(np.where(np.isfinite(mean), mean, np.inf)))]
        pts = np.isfinite(y) & (y < top) & (np.abs(xs - best) <= 6.0)
        data.append((xs, np.where(pts, y, np.nan), cen, best))
    return data, widths, seeds, u


def _shape_family(s_l, s_r, bend, floor, floor_slope, res_l, res_r) -> CurveFamily:
    """A family of the fitted shape and jitter, without seed shifts or a cliff."""
    rms = lambda parts: float(np.sqrt(np.mean(np.concatenate(parts) ** 2))) if parts else 0.0
    return CurveFamily("", floor, floor_slope, s_l, s_r, bend, rms(res_l), rms(res_r), 0.0, 0.0,
                       math.inf, 0.0, 0.0)  # fmt: skip


def fit_family(
    final: pd.DataFrame,
    loss: str = "train_loss",
    *,
    name: str = "",
    chance_loss: float = math.log(10),
    bends: Sequence[float] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0),
) -> CurveFamily:
    """The :class:`CurveFamily` of one group's final-epoch runs (one optimizer and
    parametrization, several widths and seeds; ``lr``, ``seed``, ``width``, ``diverged``).

    How: the points are ``y = log10 loss`` of the uncensored runs within 6 octaves of each
    width's best tested lr and at least 0.1 (in log10) below the chance level (the left
    plateau is not the valley). For each ``bend`` in ``bends``, alternate five times between
    (a) linear least squares for ``floor_w`` (one per width), ``slope_left`` and ``slope_right``
    given every width's ``x*_w``, and (b) a 0.05-octave scan of each ``x*_w`` (within ±2 octaves
    of its best tested lr) given the shape; keep the bend with the least squared error. Then

    * ``floor``, ``floor_slope``: the least-squares line of ``floor_w`` on ``log2 w`` (base: the
      narrowest width);
    * ``seed_shift``, ``seed_corr``: each seed's ``x*_{s,w}`` by the same scan with the shape
      fixed; ``δ = x*_{s,w} - mean_s x*_{s,w}``, pooled variance ``v`` with ``S - 1`` degrees
      of freedom per width. Part of ``v`` is the scan's own noise ``v_0`` (the jitter moves a
      fitted ``x*``), measured by the same scan on 4 sweeps simulated from the fitted shape,
      jitter and cliff without seed shifts: ``seed_shift² = max(v - v_0, 0)``. The part shared
      across widths, ``σ_b² = (Var(δ̄_s) - v / W) / (1 - 1/W)`` (``δ̄_s`` a seed's mean over widths),
      gives ``ρ = σ_b² / seed_shift²``, clipped to [0, 1]. Where the cliff comes down onto
      the valley (SGD) the seed shift comes out too large (by about 0.3 octaves on a simulated
      sweep): the calibration's sweeps are then noisier than the real ones;
    * ``jitter_left``, ``jitter_right``: the RMS residual of the per-seed fits below and above
      ``x*_{s,w}``;
    * ``cliff_*``: per seed and width, the midpoint between the lowest censored lr above
      ``x*_{s,w}`` and the tested lr below it, minus ``x*_{s,w}``; a least-squares line on
      ``log2 w`` and the SD of its residuals (no cliff in the grid: ``cliff_gap = inf``).
    """
    data, widths, seeds, u = _family_points(final, loss, chance_loss)

    def shape(d: np.ndarray, bend: float) -> tuple[np.ndarray, np.ndarray]:
        h = np.sqrt(d * d + bend**2) - bend
        return np.where(d < 0, h, 0.0), np.where(d > 0, h, 0.0)

    def scan(xs, y, centre, s_l, s_r, bend):  # best x* and SSE for points y (..., L)
        cands = np.arange(centre - 2.0, centre + 2.0 + 1e-9, 0.05)
        m = np.isfinite(y)
        best = (math.inf, centre)
        for c in cands:
            hl, hr = shape(xs - c, bend)
            r = np.where(m, y - s_l * hl - s_r * hr, 0.0)
            n = m.sum()
            f = r.sum() / max(n, 1)
            sse = float((np.where(m, r - f, 0.0) ** 2).sum())
            if sse < best[0]:
                best = (sse, c)
        return best[1], best[0]

    fit = None
    for bend in bends:
        centres = np.array([d[3] for d in data], np.float64)
        for _ in range(5):
            rows, rhs = [], []
            for i, (xs, y, _, _) in enumerate(data):
                hl, hr = shape(xs - centres[i], bend)
                for s in range(y.shape[0]):
                    m = np.isfinite(y[s])
                    one = np.zeros((m.sum(), len(widths)))
                    one[:, i] = 1.0
                    rows.append(np.column_stack([one, hl[m], hr[m]]))
                    rhs.append(y[s, m])
            coef = np.linalg.lstsq(np.vstack(rows), np.concatenate(rhs), rcond=None)[0]
            s_l, s_r = coef[-2], coef[-1]
            scanned = [scan(xs, y, d3, s_l, s_r, bend) for (xs, y, _, d3) in data]
            centres = np.array([c for c, _ in scanned])
            sse = sum(e for _, e in scanned)
        if fit is None or sse < fit[0]:
            fit = (sse, bend, s_l, s_r, centres, coef[: len(widths)])
    _, bend, s_l, s_r, centres, floors = fit
    (f_slope,), (f_icpt,) = fit_line(u, floors[None, :])

    def per_seed(data: list, centres: np.ndarray) -> tuple:
        shifts = np.full((len(widths), len(seeds)), np.nan)
        res_l, res_r, gaps = [], [], []
        for i, (xs, y, cen, _) in enumerate(data):
            for s in range(len(seeds)):
                if np.isfinite(y[s]).sum() < 4:
                    continue
                c, _ = scan(xs, y[s], centres[i], s_l, s_r, bend)
                shifts[i, s] = c
                hl, hr = shape(xs - c, bend)
                m = np.isfinite(y[s])
                r = y[s] - s_l * hl - s_r * hr
                r = r - r[m].mean()
                res_l.append(r[m & (xs < c)])
                res_r.append(r[m & (xs > c)])
                above = np.nonzero(cen[s] & (xs > c))[0]
                if len(above) and above[0] > 0:
                    gaps.append((u[i], 0.5 * (xs[above[0]] + xs[above[0] - 1]) - c))
        dev = shifts - np.nanmean(shifts, axis=1, keepdims=True)
        n_per = np.isfinite(shifts).sum(axis=1)
        var = float(np.nansum(dev**2) / max(float((n_per - 1).clip(0).sum()), 1.0))
        seed_means = np.nanmean(dev, axis=0)
        v_bar = float(np.var(seed_means, ddof=1)) if len(seeds) > 1 else 0.0
        return var, v_bar, res_l, res_r, gaps

    var, v_bar, res_l, res_r, gaps = per_seed(data, centres)
    cliff = (math.inf, 0.0, 0.0)
    if len(gaps) >= 2:
        gu, gg = np.array(gaps).T
        if np.ptp(gu) > 0 and len(np.unique(gu)) >= MIN_WIDTHS:
            (c_slope,), (c_icpt,) = fit_line(gu, gg[None, :])
        else:
            c_slope, c_icpt = 0.0, float(gg.mean())
        resid = gg - (c_icpt + c_slope * gu)
        cliff = (float(c_icpt), float(c_slope), float(np.sqrt(np.mean(resid**2))))

    # the scan's own noise (jitter and the cliff move a seed's fitted x* even without a seed
    # shift): the same fit on sweeps simulated from this family without seed shifts, subtracted
    spacing = float(np.median(np.concatenate([np.diff(d[0]) for d in data])))
    (c_slope0,), _ = fit_line(u, centres[None, :])
    noise_var = []
    for r in range(4):
        sim = simulate_sweep(
            dataclasses.replace(
                _shape_family(s_l, s_r, bend, f_icpt, f_slope, res_l, res_r),
                cliff_gap=cliff[0], cliff_slope=cliff[1], cliff_jitter=cliff[2],
            ),
            float(c_slope0), np.random.default_rng(r), widths=tuple(int(w) for w in widths),
            n_seeds=len(seeds), spacing=spacing, x0=float(centres[0]), chance_loss=chance_loss,
        )  # fmt: skip
        sim_data = _family_points(sweep_frame(sim), "train_loss", chance_loss)[0]
        noise_var.append(per_seed(sim_data, sim.log2_lr_star)[0])
    n_w = len(widths)
    shift_var = max(var - float(np.mean(noise_var)), 0.0)
    between = max((v_bar - var / n_w) / (1.0 - 1.0 / n_w), 0.0)
    rho = float(np.clip(between / shift_var, 0.0, 1.0)) if shift_var > 0 else 0.0

    def rms(parts: list[np.ndarray]) -> float:
        v = np.concatenate(parts) if parts else np.zeros(1)
        return float(np.sqrt(np.mean(v**2))) if len(v) else 0.0

    return CurveFamily(
        name=name,
        floor=float(f_icpt),
        floor_slope=float(f_slope),
        slope_left=float(s_l),
        slope_right=float(s_r),
        bend=float(bend),
        jitter_left=rms(res_l),
        jitter_right=rms(res_r),
        seed_shift=math.sqrt(shift_var),
        seed_corr=rho,
        cliff_gap=cliff[0],
        cliff_slope=cliff[1],
        cliff_jitter=cliff[2],
    )


def sweep_frame(sweep: SimulatedSweep, optimizer: str = "adam") -> pd.DataFrame:
    """A simulated sweep as the final-epoch rows of a ``results.csv`` (``train_loss`` and
    ``test_loss`` both the simulated loss), for :mod:`jaxlr.exponent` and :func:`fit_family`."""
    n_w, n_s, n_l = sweep.loss.shape
    w, s, j = np.meshgrid(np.arange(n_w), np.arange(n_s), np.arange(n_l), indexing="ij")
    widths = np.round(2.0**sweep.log2_widths).astype(np.int64)[w.ravel()]
    loss = sweep.loss.ravel().astype(np.float32)
    div = sweep.diverged.ravel()
    return pd.DataFrame(
        {
            "width": widths,
            "depth": 2,
            "hidden": [f"{v}-{v}" for v in widths],
            "optimizer": optimizer,
            "lr_rule": "none",
            "parametrization": "sp",
            "lr": 2.0 ** sweep.x[j.ravel()],
            "seed": s.ravel(),
            "round": 0,
            "epoch": 1,
            "train_loss": loss,
            "test_loss": loss,
            "test_accuracy": np.float32(0.5),
            "diverged": div,
            "diverged_epoch": pd.array(np.where(div, 1, None), dtype="Int64"),
        }
    )


# generated by experiments/fit_simulator.py
FAMILIES: dict[str, CurveFamily] = {
    "adam-sp": CurveFamily(
        name="adam-sp",
        floor=-1.7105,
        floor_slope=-0.1511,
        slope_left=0.338,
        slope_right=0.4807,
        bend=0.25,
        jitter_left=0.1079,
        jitter_right=0.2989,
        seed_shift=0.0566,
        seed_corr=0.174,
        cliff_gap=4.5458,
        cliff_slope=0.0,
        cliff_jitter=0.1808,
    ),
    "sgd-sp": CurveFamily(
        name="sgd-sp",
        floor=-1.3084,
        floor_slope=-0.2369,
        slope_left=0.3436,
        slope_right=1.0125,
        bend=0.25,
        jitter_left=0.0771,
        jitter_right=0.1261,
        seed_shift=0.0,
        seed_corr=0.0,
        cliff_gap=1.824,
        cliff_slope=-0.5594,
        cliff_jitter=0.593,
    ),
}
"""The families the calibration test draws from: :func:`fit_family` of the committed sweeps
in ``experiments/fit_simulator.py`` (``experiments/results/simulator/families.csv``), rounded."""


CALIBRATION = [
    (family, spacing, extra)
    for family in ("adam-sp", "sgd-sp")
    for spacing in (0.5, 1.0)
    for extra in (0.0, 0.5)
]
"""The calibration's conditions, taken in turn: family, grid spacing (octaves), and an extra
seed shift (octaves SD, half of it shared by a seed's widths) beyond the fitted one."""


def calibration_family(name: str, extra_shift: float = 0.0) -> CurveFamily:
    """:data:`FAMILIES` ``[name]`` with ``extra_shift`` added (in quadrature) to its seed shift
    and a seed correlation of 0.5 (seeds that move lr* more than the fits found)."""
    fam = FAMILIES[name]
    if not extra_shift:
        return fam
    shift = math.hypot(fam.seed_shift, extra_shift)
    return dataclasses.replace(fam, seed_shift=shift, seed_corr=0.5)


def calibration_sweeps(
    n_seeds: int, n_sweeps: int = 200, rng_seed: int = 0, n_boot: int = 400
) -> list[tuple[SimulatedSweep, Interval]]:
    """``n_sweeps`` simulated sweeps at ``n_seeds`` seeds (the :data:`CALIBRATION` conditions in
    turn, the true exponent uniform in [-1, 0.5]), each with its exponent's interval."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for i in range(n_sweeps):
        name, spacing, extra = CALIBRATION[i % len(CALIBRATION)]
        alpha = rng.uniform(-1.0, 0.5)
        fam = calibration_family(name, extra)
        sweep = simulate_sweep(fam, alpha, rng, n_seeds=n_seeds, spacing=spacing)
        out.append((sweep, sweep_alpha(sweep, n_boot=n_boot, rng=rng)))
    return out
