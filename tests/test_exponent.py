"""jaxlr.exponent: lr* ∝ width^α and the divergence threshold's exponent, against closed forms."""

from __future__ import annotations

import math
import re
import typing

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from jaxlr import exponent as ex
from jaxlr import results as res
from jaxlr import stats as st
from jaxlr.config import LrStar, SweepConfig
from jaxlr.outputs import write_outputs

COLUMNS = [
    "optimizer",
    "lr_rule",
    "parametrization",
    "weight_decay",
    "depth",
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
HALF_OCTAVES = tuple(np.arange(-14.0, 1.0, 0.5))  # log2 lr, 2^-14 .. 2^0.5
CURVATURE = 0.05  # log loss per octave², small enough that the grid's ends stay below chance


def table(
    widths=(32, 64, 128, 256, 512),
    alpha=-0.5,
    c=0.3,
    log2_lrs=HALF_OCTAVES,
    seeds=4,
    noise=0.0,
    diverge=None,
    optimizer="adam",
    parametrization="sp",
    epochs=1,
    rng_seed=0,
    seed_shift=None,
):
    """A results table with final loss ``0.05 exp(0.05 (log2 lr - log2 lr*(w))² + noise)``,
    ``lr*(w) = c w^α`` exactly (plus ``seed_shift(s)`` octaves for seed ``s`` at every width);
    ``diverge(w, log2_lr, seed)`` says which runs diverged (their losses are NaN)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for w in widths:
        for k in log2_lrs:
            for s in range(seeds):
                target = math.log2(c) + alpha * math.log2(w) + (seed_shift(s) if seed_shift else 0)
                div = bool(diverge(w, k, s)) if diverge else False
                loss = 0.05 * math.exp(CURVATURE * (k - target) ** 2 + noise * rng.normal())
                for e in range(1, epochs + 1):
                    rows.append(
                        dict(
                            width=w, depth=2, hidden=f"{w}-{w}", optimizer=optimizer,
                            lr_rule="none", parametrization=parametrization, weight_decay=0.0,
                            lr=2.0**k, seed=s,
                            round=0, epoch=e, train_loss=np.nan if div else loss + (epochs - e),
                            test_loss=np.nan if div else 2 * loss, test_accuracy=0.5,
                            diverged=div, diverged_epoch=1 if div else None,
                        )
                    )  # fmt: skip
    df = pd.DataFrame(rows)
    df["diverged_epoch"] = df["diverged_epoch"].astype("Int64")
    return df[res.COLUMNS]


def test_exact_power_law_is_recovered_off_grid():
    # lr*(w) = 0.3 w^-0.5 lies between the half-octave grid points; on an exact parabola in
    # log loss the local quadratic is exact, for every seed
    df = table()
    (fit,) = ex.group_fits(df, select="train_loss", n_boot=10)
    truth = math.log2(0.3) - 0.5 * np.log2([32, 64, 128, 256, 512])
    np.testing.assert_allclose(fit.lr_star, truth, atol=1e-9)
    np.testing.assert_allclose(fit.seed_lr_star, np.tile(truth, (4, 1)), atol=1e-9)
    t = ex.width_exponent(df, select="train_loss")
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t["n_widths"].item() == 5 and t["n_seeds"].item() == 4
    assert t["n_widths_edge"].item() == 0
    assert t["estimator"].item() == "local-quadratic"
    assert t["ci_method"].item() == "paired-bootstrap-t"
    # no noise: every resample gives the same slope
    assert t["alpha_lo"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t["alpha_hi"].item() == pytest.approx(-0.5, abs=1e-9)
    for a in (-1.0, 0.0, 0.25):
        t = ex.width_exponent(table(alpha=a, c=2**-3.3), select="train_loss", n_boot=10)
        assert t["alpha"].item() == pytest.approx(a, abs=1e-9)
    # the grid argmin, the reference, is off by the grid's rounding
    t = ex.width_exponent(df, select="train_loss", estimator="argmin", n_boot=10)
    rounded = np.round(truth * 2) / 2
    slope = np.polyfit(np.log2([32, 64, 128, 256, 512]), rounded, 1)[0]
    assert t["alpha"].item() == pytest.approx(slope, abs=1e-9)
    with pytest.raises(ValueError, match="local-quadratic"):
        ex.width_exponent(df, estimator="spline")


def test_estimators_on_single_curves():
    x = np.array([-8.0, -6.0, -5.0, -4.0, -3.0, -2.0, 0.0])  # uneven, as after refinement
    ok = np.ones(7, bool)
    curve = 0.1 * np.exp(0.3 * (x + 4.3) ** 2)
    assert st.local_quadratic(x, curve, ok) == pytest.approx(-4.3, abs=1e-9)
    assert st.parabola(x, 3 * (x + 4.3) ** 2 + 1, ok) == pytest.approx(-4.3)
    assert st.argmin(x, curve, ok) == -4.0
    # jagged curves (each run's loss off by a factor e^(0.3 n)): the local quadratic's error is
    # below the 3-point parabola's and the argmin's (0.48 against 0.61 and 0.65 octaves)
    rng = np.random.default_rng(0)
    xs = np.arange(-10.0, 0.01, 0.5)
    errors = {name: [] for name in st.ESTIMATORS}
    for _ in range(300):
        top = rng.uniform(-6.0, -4.0)
        y = 0.1 * np.exp(0.2 * (xs - top) ** 2 + 0.3 * rng.standard_normal(len(xs)))
        for name in st.ESTIMATORS:
            errors[name].append(st.lr_star(xs, y, np.ones(len(xs), bool), name) - top)
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
    assert rms["local-quadratic"] < 0.85 * min(rms["parabola"], rms["argmin"]), rms
    # a stability cliff just above the optimum: the estimate may go half-way into the gap
    # up to the lowest censored lr, never beyond
    cliff = x < -3.5  # -3 and above diverged
    got = st.local_quadratic(x, 0.1 * np.exp(0.3 * (x + 3.0) ** 2), cliff)
    assert got == pytest.approx(-3.5)
    # at the grid's top end: never past the tested lrs
    assert st.local_quadratic(x, 0.1 * np.exp(0.3 * (x - 2.0) ** 2), ok) == 0.0
    # nothing uncensored: NaN; a concave window: its centre
    assert math.isnan(st.local_quadratic(x, curve, np.zeros(7, bool)))
    assert st.local_quadratic(x, 1.0 - 0.01 * (x + 4) ** 2, ok) in (-8.0, 0.0)
    with pytest.raises(ValueError, match="argmin"):
        st.lr_star(x, curve, ok, "cubic")


def test_censored_runs_are_never_points():
    # runs at or above the chance level (ln 10) from an octave above lr* on, inside the fit's
    # window: censored, they give the same lr* as without them
    df = table(c=2.0**-1)
    high = np.log2(df["lr"]) >= -1.0 - 0.5 * np.log2(df["width"]) + 1.0
    stuck = df.copy()
    stuck.loc[high, ["train_loss", "test_loss"]] = [2.31, 2.4]
    kw = dict(select="train_loss", n_boot=10)
    (a,) = ex.group_fits(df[~high], **kw)
    (b,) = ex.group_fits(stuck, chance_loss=math.log(10), **kw)
    np.testing.assert_allclose(b.lr_star, a.lr_star, atol=1e-12)
    np.testing.assert_allclose(a.lr_star, -1.0 - 0.5 * a.log2_widths, atol=1e-9)
    (c,) = ex.group_fits(stuck, chance_loss=None, **kw)  # as points, they pull lr* down
    assert np.all(c.lr_star < a.lr_star - 0.05)


def test_t_quantile_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 7, 10, 30):
        for p in (0.5, 0.8, 0.975, 0.995, 0.025):
            assert st.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)


def test_the_interval_is_paired_over_seeds():
    # a seed moves lr* by the same amount at every width (its init and batch order): every
    # paired resample has the same slope, so the interval is a point; resampling each width
    # on its own would not be
    shifts = {0: -0.6, 1: 0.0, 2: 0.4, 3: 0.9, 4: -0.2}
    df = table(seeds=5, seed_shift=shifts.get)
    t = ex.width_exponent(df, select="train_loss", n_boot=500)
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t["alpha_hi"].item() - t["alpha_lo"].item() < 1e-9
    (fit,) = ex.group_fits(df, select="train_loss", n_boot=10)
    np.testing.assert_allclose(fit.seed_lr_star[:, 0] - fit.seed_lr_star[:, -1], 2.0, atol=1e-9)


def test_the_interval_is_the_t_interval_of_per_seed_slopes():
    # noisy curves, no missing runs: the paired-bootstrap-t interval approaches the textbook
    # t-interval over the seeds' own slopes (numpy.polyfit on each seed's lr*)
    df = table(seeds=6, noise=0.3, rng_seed=3)
    (fit,) = ex.group_fits(df, select="train_loss", n_boot=20000)
    u = np.log2([32, 64, 128, 256, 512])
    slopes = np.array([np.polyfit(u, y, 1)[0] for y in fit.seed_lr_star])
    half = 2.5705818366147395 * slopes.std(ddof=1) / math.sqrt(6)  # t_{5, 0.975}
    assert fit.alpha.estimate == pytest.approx(slopes.mean(), abs=1e-12)
    assert fit.alpha.hi - fit.alpha.estimate == pytest.approx(half, rel=0.03)
    assert fit.alpha.estimate - fit.alpha.lo == pytest.approx(half, rel=0.03)


def test_fewer_than_five_seeds_warn():
    t = ex.width_exponent(table(seeds=3, noise=0.2), select="train_loss", n_boot=200)
    assert not t["reliable"].item()
    text = ex.format_exponent(t)
    assert "n_seeds 3" in text and "with 3 seeds this interval is unreliable" in text
    t = ex.width_exponent(table(seeds=5, noise=0.2), select="train_loss", n_boot=200)
    assert t["reliable"].item() and "unreliable" not in ex.format_exponent(t)


def test_an_optimum_beyond_the_grid_is_flagged():
    # lr*(w) = 2^3.6 w^-0.5 is above the grid (to 2^0.5) at widths 32, 64: the top lr is a bound
    t = ex.width_exponent(table(c=2.0**3.6), select="train_loss", n_boot=10)
    assert t["n_widths_edge"].item() == 2
    assert "5 widths, n_seeds 4; lr* at the edge of the lrs at 2: widen the grid)" in (
        ex.format_exponent(t)
    )


def test_one_seed_has_no_interval():
    t = ex.width_exponent(table(seeds=1, diverge=lambda w, k, s: k >= 4 - math.log2(w)))
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t[["alpha_lo", "alpha_hi", "alpha_div_lo", "alpha_div_hi"]].isna().all(axis=None)
    assert t["alpha_div"].item() == pytest.approx(-1.0)
    assert "α = −0.50 (no interval: 1 seed)" in ex.format_exponent(t)


def test_divergence_exponent_from_a_synthetic_threshold():
    # runs diverge from lr = 16 / w (exponent -1), seed 0 half an octave earlier: at least half
    # of the seeds diverge from 16 / w on, so the threshold is 16 / w / 2^0.25 at every width
    def diverge(w, k, s):
        return k >= 4 - math.log2(w) - 0.5 * (s == 0)

    df = table(widths=(16, 64, 256, 1024), c=2**-6.3, seeds=3, diverge=diverge)
    (fit,) = ex.group_fits(df, select="train_loss", n_boot=200)
    np.testing.assert_allclose(fit.threshold, 4 - np.log2([16, 64, 256, 1024]) - 0.25)
    t = ex.width_exponent(df, select="train_loss")
    assert t["alpha_div"].item() == pytest.approx(-1.0, abs=1e-12)
    assert t["n_widths_div"].item() == 4
    # resamples with seed 0 twice move the threshold down by half a step at every width at once
    # (the resamples are paired across widths): the slope, and so the interval, stay at -1
    assert t["alpha_div_lo"].item() == pytest.approx(-1.0, abs=1e-12)
    assert t["alpha_div_hi"].item() == pytest.approx(-1.0, abs=1e-12)
    assert (fit.boot_threshold[:, 0] < fit.threshold[0]).any()
    # lr* (2^-6.3 w^-0.5) lies below every threshold: unaffected
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)


def test_divergence_needs_a_stable_lr_below_and_three_widths():
    # width 16 never diverges, width 64 diverges at every lr: two widths have a threshold
    def diverge(w, k, s):
        return w == 64 or (w > 64 and k >= 4 - math.log2(w))

    df = table(widths=(16, 64, 256, 1024), c=2**-6.3, diverge=diverge)
    t = ex.width_exponent(df, n_boot=10)
    assert t["n_widths_div"].item() == 2
    assert t[["alpha_div", "alpha_div_lo", "alpha_div_hi"]].isna().all(axis=None)
    # width 64 has no eligible lr: alpha from the other three
    assert t["n_widths"].item() == 3
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)
    assert "divergence threshold: α = n/a (found at 2 widths, needs 3)" in ex.format_exponent(t)


def test_groups_with_fewer_than_three_widths_are_absent():
    df = pd.concat(
        [
            table(widths=(16, 64, 256), optimizer="adam"),
            table(widths=(16, 64), optimizer="sgd"),
            table(widths=(16, 64, 256), parametrization="mup", alpha=0.0),
        ]
    )
    mixed = table(widths=(16, 64, 256), optimizer="sgd", parametrization="mup")
    mixed.loc[mixed["width"] == 256, "hidden"] = "256-64"  # no single width
    t = ex.width_exponent(pd.concat([df, mixed]), n_boot=10)
    assert list(t.columns) == COLUMNS == ex.COLUMNS
    assert t[["optimizer", "parametrization"]].values.tolist() == [["adam", "mup"], ["adam", "sp"]]
    assert t["alpha"].to_numpy() == pytest.approx([0.0, -0.5], abs=1e-9)
    assert ex.width_exponent(table(widths=(16, 64))).empty
    assert list(ex.width_exponent(table(widths=(16, 64))).columns) == COLUMNS


def test_final_epoch_and_select_decide_the_curve():
    # epochs before the last are shifted by a constant: same lr*; test_loss = 2 train: same
    df = table(epochs=3, noise=0.2)
    a = ex.width_exponent(df, select="train_loss", n_boot=50)
    b = ex.width_exponent(res.final_epoch(df), select="test_loss", n_boot=50)
    pd.testing.assert_frame_equal(a, b)
    df2 = df.copy()
    df2["test_loss"] = 0.1 * np.exp((np.log2(df2["lr"]) + 3) ** 2 / 8)  # lr* = 2^-3 everywhere
    assert ex.width_exponent(df2, select="test_loss")["alpha"].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="select"):
        ex.width_exponent(df, select="accuracy")


def test_write_outputs_writes_the_table_the_plot_and_the_line(tmp_path):
    df = pd.concat(
        [table(noise=0.1, seeds=5), table(noise=0.1, seeds=5, parametrization="mup", alpha=0.0)]
    )
    df = res.sort_results(df)
    cfg = SweepConfig(widths=(32, 64, 128, 256, 512), optimizers=("adam",), select="train_loss")
    outcome = write_outputs(tmp_path, df, cfg, {"dataset": {"name": "synthetic"}})
    assert {"width_exponent.csv", "width_exponent.png", "transfer.csv"} <= set(outcome.files)
    csv = pd.read_csv(tmp_path / "width_exponent.csv", dtype={"weight_decay": float})
    assert list(csv.columns) == COLUMNS
    chance = math.log(10)
    want = ex.width_exponent(df, select="train_loss", chance_loss=chance)
    pd.testing.assert_frame_equal(csv, want, atol=1e-8)
    transfer = pd.read_csv(tmp_path / "transfer.csv")
    assert len(transfer) == 10 and set(transfer["width"]) == {32, 64, 128, 256, 512}
    lines = outcome.exponent_text.splitlines()
    assert len(lines) == 4, lines  # header, two groups, the transfer line
    assert lines[-1].startswith("Transfer regret of lr* (adam; % of final loss): muP: from width")
    pattern = (
        r"lr\* ∝ width\^α, α = (−?\d\.\d\d) \[(−?\d\.\d\d), (−?\d\.\d\d)\]  "
        r"\(adam, sp, 5 widths, n_seeds 5\); divergence threshold: α = n/a"
    )
    m = re.search(pattern, outcome.exponent_text)
    assert m, outcome.exponent_text
    lo, hi = (float(v.replace("−", "-")) for v in m.groups()[1:])
    assert lo <= -0.5 <= hi
    image = matplotlib.image.imread(tmp_path / "width_exponent.png")
    assert max(image.shape[:2]) <= 4000
    # fewer than 3 widths: no table, no plot, no line
    out2 = tmp_path / "two"
    few = write_outputs(out2, table(widths=(32, 64)), cfg, {"dataset": {"name": "synthetic"}})
    assert few.exponent_text == ""
    assert not (out2 / "width_exponent.csv").exists()
    assert not (out2 / "transfer.csv").exists()
    assert not (out2 / "width_exponent.png").exists()


@pytest.mark.slow  # a plot of many groups
def test_plot_stays_within_4000_pixels_with_many_groups(tmp_path):
    parts = [
        table(widths=(16, 64, 256), optimizer=f"opt{i}", parametrization=p, noise=0.1)
        for i in range(12)
        for p in ("sp", "mup")
    ]
    ex.plot_width_exponent(pd.concat(parts), tmp_path / "w.png", n_boot=50, title="many")
    image = matplotlib.image.imread(tmp_path / "w.png")
    assert max(image.shape[:2]) <= 4000
    with pytest.raises(ValueError, match="3 widths"):
        ex.plot_width_exponent(table(widths=(16, 64)), tmp_path / "none.png")


def test_docstring_example():
    import doctest

    assert doctest.testmod(ex).failed == 0


def test_lr_star_is_refused_where_no_exponent_is_fitted(capsys):
    from jaxlr import cli
    from jaxlr.config import ConfigError

    assert set(typing.get_args(LrStar)) == set(st.ESTIMATORS)  # one list of names
    with pytest.raises(ConfigError, match="3 widths"):
        SweepConfig(widths=(16, 64), lr_star="argmin")
    assert SweepConfig(widths=(16, 64, 256), lr_star="argmin").lr_star == "argmin"
    assert cli.main(["--widths", "16,64", "--lr-star", "argmin", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr-star only applies to sweeps of 3 widths or more" in err[0]
