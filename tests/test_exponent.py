"""jaxlr.exponent: lr* ∝ width^α and the divergence threshold's exponent, against closed forms."""

from __future__ import annotations

import math
import re

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from jaxlr import exponent as ex
from jaxlr import results as res
from jaxlr.config import SweepConfig
from jaxlr.outputs import write_outputs

COLUMNS = [
    "optimizer",
    "lr_rule",
    "parametrization",
    "depth",
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
HALF_OCTAVES = tuple(np.arange(-14.0, 1.0, 0.5))  # log2 lr, 2^-14 .. 2^0.5


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
):
    """A results table with final loss ``(log2 lr - log2 lr*(w))² + noise``, ``lr*(w) = c w^α``
    exactly; ``diverge(w, log2_lr, seed)`` says which runs diverged (their losses are NaN)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for w in widths:
        target = math.log2(c) + alpha * math.log2(w)
        for k in log2_lrs:
            for s in range(seeds):
                div = bool(diverge(w, k, s)) if diverge else False
                loss = (k - target) ** 2 + noise * rng.normal()
                for e in range(1, epochs + 1):
                    rows.append(
                        dict(
                            width=w, depth=2, hidden=f"{w}-{w}", optimizer=optimizer,
                            lr_rule="none", parametrization=parametrization, lr=2.0**k, seed=s,
                            round=0, epoch=e, train_loss=np.nan if div else loss + (epochs - e),
                            test_loss=np.nan if div else 2 * loss + 1, test_accuracy=0.5,
                            diverged=div, diverged_epoch=1 if div else None,
                        )
                    )  # fmt: skip
    df = pd.DataFrame(rows)
    df["diverged_epoch"] = df["diverged_epoch"].astype("Int64")
    return df[res.COLUMNS]


def test_exact_power_law_is_recovered_off_grid():
    # lr*(w) = 0.3 w^-0.5 lies between the half-octave grid points; on an exact parabola in
    # log2 lr the refinement is exact
    df = table()
    (fit,) = ex.group_fits(df, select="train_loss", n_boot=10)
    truth = math.log2(0.3) - 0.5 * np.log2([32, 64, 128, 256, 512])
    np.testing.assert_allclose(fit.lr_star, truth, atol=1e-9)
    t = ex.width_exponent(df, select="train_loss")
    assert t["alpha"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t["n_widths"].item() == 5 and t["n_seeds"].item() == 4
    assert t["n_widths_edge"].item() == 0
    # no noise: every resample gives the same slope
    assert t["alpha_lo"].item() == pytest.approx(-0.5, abs=1e-9)
    assert t["alpha_hi"].item() == pytest.approx(-0.5, abs=1e-9)
    for a in (-1.0, 0.0, 0.25):
        t = ex.width_exponent(table(alpha=a, c=2**-3.3), select="train_loss", n_boot=10)
        assert t["alpha"].item() == pytest.approx(a, abs=1e-9)


def test_parabola_refinement():
    x = np.array([-8.0, -6.0, -4.0, -2.0, 0.0])  # a 2-octave grid
    ok = np.ones((1, 5), bool)
    # an off-grid optimum of a parabola is found exactly, however unequal the spacing
    assert ex.log2_optimum(x, (x - -4.7) ** 2, ok).item() == pytest.approx(-4.7)
    xr = np.array([-8.0, -6.0, -5.0, -4.0, -3.0, -2.0, 0.0])  # after one refinement round
    assert ex.log2_optimum(xr, 3 * (xr + 4.3) ** 2 + 1, np.ones((1, 7), bool)).item() == (
        pytest.approx(-4.3)
    )
    # a non-parabolic curve: the vertex stays between the midpoints to the neighbours
    y = np.abs(x - -4.9) ** 0.5
    got = ex.log2_optimum(x, y, ok).item()
    assert -5.0 <= got <= -4.0 and got != -4.0
    # at an edge of the grid, or beside an ineligible lr: the grid point
    assert ex.log2_optimum(x, (x - -9.0) ** 2, ok).item() == -8.0
    assert ex.log2_optimum(x, (x - 1.0) ** 2, ok).item() == 0.0
    no_right = np.array([[True, True, True, False, False]])
    assert ex.log2_optimum(x, (x - -4.7) ** 2, no_right).item() == -4.0
    # nothing eligible: NaN; a flat curve: the first (lowest) grid point, as summarize picks
    assert np.isnan(ex.log2_optimum(x, x**2, np.zeros((1, 5), bool)).item())
    assert ex.log2_optimum(x, np.zeros(5), ok).item() == -8.0
    # rows are independent (the bootstrap's resamples)
    both = ex.log2_optimum(x, np.stack([(x + 4.7) ** 2, (x + 2.5) ** 2]), np.ones((2, 5), bool))
    np.testing.assert_allclose(both, [-4.7, -2.5])


def test_an_optimum_beyond_the_grid_is_flagged():
    # lr*(w) = 2^3.6 w^-0.5 is above the grid (to 2^0.5) at widths 32, 64: the top lr is a bound
    t = ex.width_exponent(table(c=2.0**3.6), select="train_loss", n_boot=10)
    assert t["n_widths_edge"].item() == 2
    assert "5 widths, 4 seeds; lr* at the edge of the lrs at 2: widen the grid)" in (
        ex.format_exponent(t)
    )


def test_refined_optimum_is_within_half_a_step_of_summarize():
    df = table(noise=0.3, seeds=3)
    (fit,) = ex.group_fits(df, select="test_loss", n_boot=1)
    best = res.summarize(df, select="test_loss").sort_values("width")["best_lr"]
    assert np.all(np.abs(fit.lr_star - np.log2(best.to_numpy())) <= 0.25 + 1e-12)


def test_bootstrap_contains_the_truth_and_shrinks_with_less_noise():
    widths = []
    for noise in (0.5, 0.05):
        t = ex.width_exponent(table(noise=noise, seeds=6), select="train_loss", n_boot=1000)
        lo, hi = t["alpha_lo"].item(), t["alpha_hi"].item()
        assert lo <= -0.5 <= hi, (noise, lo, hi)
        assert lo <= t["alpha"].item() <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.3 * widths[0], widths
    # deterministic: the same seed gives the same table; another seed the same alpha
    df = table(noise=0.5, seeds=6)
    a = ex.width_exponent(df, select="train_loss", seed=3)
    pd.testing.assert_frame_equal(a, ex.width_exponent(df, select="train_loss", seed=3))
    b = ex.width_exponent(df, select="train_loss", seed=4)
    assert a["alpha"].item() == b["alpha"].item() and a["alpha_lo"].item() != b["alpha_lo"].item()


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
    # resamples with seed 0 twice move a width's threshold down by half a step
    assert t["alpha_div_lo"].item() < -1.0 < t["alpha_div_hi"].item()
    assert t["alpha_div_hi"].item() - t["alpha_div_lo"].item() < 0.5
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
    # epochs before the last are shifted by a constant: same lr*; test_loss = 2 train + 1: same
    df = table(epochs=3, noise=0.2)
    a = ex.width_exponent(df, select="train_loss", n_boot=50)
    b = ex.width_exponent(res.final_epoch(df), select="test_loss", n_boot=50)
    pd.testing.assert_frame_equal(a, b)
    df2 = df.copy()
    df2["test_loss"] = (np.log2(df2["lr"]) + 3) ** 2  # lr* = 2^-3 at every width
    assert ex.width_exponent(df2, select="test_loss")["alpha"].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="select"):
        ex.width_exponent(df, select="accuracy")


def test_write_outputs_writes_the_table_the_plot_and_the_line(tmp_path):
    df = pd.concat([table(noise=0.1), table(noise=0.1, parametrization="mup", alpha=0.0)])
    df = res.sort_results(df)
    cfg = SweepConfig(widths=(32, 64, 128, 256, 512), optimizers=("adam",), select="train_loss")
    outcome = write_outputs(tmp_path, df, cfg, {"dataset": {"name": "synthetic"}})
    assert {"width_exponent.csv", "width_exponent.png"} <= set(outcome.files)
    csv = pd.read_csv(tmp_path / "width_exponent.csv")
    assert list(csv.columns) == COLUMNS
    pd.testing.assert_frame_equal(csv, ex.width_exponent(df, select="train_loss"), atol=1e-8)
    lines = outcome.exponent_text.splitlines()
    assert len(lines) == 3
    pattern = (
        r"lr\* ∝ width\^α, α = (−?\d\.\d\d) \[(−?\d\.\d\d), (−?\d\.\d\d)\]  "
        r"\(adam, sp, 5 widths, 4 seeds\); divergence threshold: α = n/a"
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
    assert not (out2 / "width_exponent.png").exists()


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
