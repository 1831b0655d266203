"""transfer.csv: the regret of transferring the base width's lr*, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from jaxlr import exponent as ex
from jaxlr import results as res
from jaxlr import stats as st

Q = 0.2  # log loss per octave²
STEP = 0.125  # the grid, in octaves


def table(widths=(16, 64, 256), alpha=-0.5, seeds=3, diverge=None, parametrization="sp"):
    """Final losses ``0.05 exp(Q (log2 lr - x*(w))²)`` with ``x*(w) = -4 + alpha log2(w / 16)``
    on grid points; ``diverge(w, x)`` marks diverged runs."""
    rows = []
    for w in widths:
        target = -4.0 + alpha * math.log2(w / 16)
        for k in np.arange(-10.0, 0.0 + 1e-9, STEP):
            for s in range(seeds):
                div = bool(diverge(w, k)) if diverge else False
                loss = np.nan if div else 0.05 * math.exp(Q * (k - target) ** 2)
                rows.append(
                    dict(
                        width=w, depth=2, hidden=f"{w}-{w}", optimizer="adam", lr_rule="none",
                        parametrization=parametrization, weight_decay=0.0, lr=2.0**k, seed=s,
                        round=0, epoch=1,
                        train_loss=loss, test_loss=loss, test_accuracy=0.5, diverged=div,
                        diverged_epoch=1 if div else None,
                    )
                )  # fmt: skip
    df = pd.DataFrame(rows)
    df["diverged_epoch"] = df["diverged_epoch"].astype("Int64")
    return df[res.COLUMNS]


def test_regret_is_the_closed_form_of_the_shifted_optimum():
    t = ex.transfer_table(table(), "train_loss", n_boot=50).set_index("width")
    assert list(t.columns) == [c for c in st.TRANSFER_COLUMNS if c != "width"]
    # lr* moves by -1 octave per width x4: the base's lr* is 1 and 2 octaves off at 64 and 256
    want = {16: 0.0, 64: math.expm1(Q * 1.0), 256: math.expm1(Q * 4.0)}
    for w, r in want.items():
        assert t.loc[w, "regret_pct"] == pytest.approx(100 * r, rel=1e-6, abs=1e-9), w
        # every seed is the same curve: every resample gives the same regret
        assert t.loc[w, "regret_lo"] == pytest.approx(t.loc[w, "regret_pct"], abs=1e-6)
        assert t.loc[w, "regret_hi"] == pytest.approx(t.loc[w, "regret_pct"], abs=1e-6)
    assert (t["base_width"] == 16).all() and (t["estimator"] == "local-quadratic").all()
    np.testing.assert_allclose(t["log2_lr_star"], [-4.0, -5.0, -6.0], atol=1e-9)
    np.testing.assert_allclose(t["loss_at_best_lr"], 0.05, rtol=1e-6)
    # the basins: |d| <= sqrt(ln(1 + tol) / Q) on each side, on the interpolated curve
    for tol, col in ((0.01, "basin_1pct_octaves"), (0.05, "basin_5pct_octaves")):
        exact = 2 * math.sqrt(math.log1p(tol) / Q)
        np.testing.assert_allclose(t[col], exact, atol=STEP)
    # muP-like: lr* does not move, nothing is lost
    flat = ex.transfer_table(table(alpha=0.0), "train_loss", n_boot=20)
    np.testing.assert_allclose(flat["regret_pct"], 0.0, atol=1e-9)


def test_a_base_lr_that_diverges_costs_infinity():
    # at width 256 every lr above 2^-5.5 diverges: the base's lr* (2^-4) is not stable there
    df = table(diverge=lambda w, k: w == 256 and k > -5.5)
    t = ex.transfer_table(df, "train_loss", n_boot=20).set_index("width")
    assert math.isinf(t.loc[256, "regret_pct"]) and math.isinf(t.loc[256, "regret_hi"])
    line = st.format_transfer(t.reset_index())
    assert "SP: from width 16 to 256 costs ∞" in line and "diverges" in line


def test_the_summary_line_names_each_parametrization():
    df = pd.concat([table(), table(alpha=0.0, parametrization="mup")])
    line = st.format_transfer(ex.transfer_table(df, "train_loss", n_boot=20))
    sp = f"{100 * math.expm1(Q * 4.0):.0f}%"
    assert line == (
        "Transfer regret of lr* (adam; % of final loss): muP: from width 16 to 256 costs 0% "
        f"[0, 0]; SP: from width 16 to 256 costs {sp} [{sp[:-1]}, {sp[:-1]}]"
    )
    assert ex.transfer_table(table(widths=(16, 64)), "train_loss").empty
