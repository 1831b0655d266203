"""The results table, summary and CSV round trip against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxlr.results import (
    chunk_frame,
    describe_shift,
    read_results,
    sort_results,
    summarize,
    write_csv,
)


def _frame(hidden, lrs, final_losses, diverged_epoch):
    """Two seeds x len(lrs) lanes, 2 epochs; final test losses given per (seed, lr)."""
    final = np.asarray(final_losses, np.float32)  # (S, L)
    metrics = {
        "train_loss": np.stack([final + 1, final]),
        "test_loss": np.stack([final + 1, final]),
        "test_accuracy": np.stack([final * 0 + 0.5, final * 0 + 0.9]),
    }
    div = np.asarray(diverged_epoch)
    for k in metrics:
        for s, lane in zip(*np.nonzero(div >= 0), strict=True):
            metrics[k][div[s, lane] :, s, lane] = np.nan
    return chunk_frame(hidden, "sgd", "none", "sp", (0, 1), lrs, metrics, div)


def test_summary_best_lr_std_and_divergence():
    lrs = (0.01, 0.1, 1.0)
    narrow = _frame((16, 16), lrs, [[0.5, 0.3, 0.2], [0.7, 0.5, 0.2]], [[-1, -1, -1]] * 2)
    wide = _frame((64, 64), lrs, [[0.4, 0.1, 9.0], [0.4, 0.3, 9.0]], [[-1, -1, 1], [-1, -1, -1]])
    s = summarize(sort_results(pd.concat([narrow, wide])))
    n, w = s.iloc[0], s.iloc[1]
    assert n["best_lr"] == 1.0 and n["best_test_loss"] == pytest.approx(0.2)
    assert n["best_test_loss_std"] == pytest.approx(0.0, abs=1e-7)
    assert np.isnan(n["min_diverged_lr"])
    # lr 1.0 diverged for seed 0 at epoch 2 (0-based 1): excluded although seed 1 is finite
    assert w["best_lr"] == 0.1 and w["best_test_loss"] == pytest.approx(0.2)
    assert w["best_test_loss_std"] == pytest.approx(np.std([0.1, 0.3], ddof=1), rel=1e-5)
    assert w["min_diverged_lr"] == 1.0 and w["n_diverged_runs"] == 1
    assert describe_shift(s) == (
        "sgd: best lr 1 at hidden 16-16 -> 0.1 at hidden 64-64 (log2 shift -3.3)"
    )


def test_diverged_flags_and_csv_round_trip(tmp_path):
    df = _frame((8,), (0.1, 2.0), [[0.3, 0.2], [0.3, 0.2]], [[-1, 0], [-1, 1]])
    rows = df.set_index(["seed", "lr", "epoch"])
    assert not rows.loc[(0, 0.1, 1), "diverged"] and rows.loc[(0, 2.0, 1), "diverged"]
    assert not rows.loc[(1, 2.0, 1), "diverged"] and rows.loc[(1, 2.0, 2), "diverged"]
    assert rows.loc[(1, 2.0, 2), "diverged_epoch"] == 2
    assert pd.isna(rows.loc[(0, 0.1, 2), "diverged_epoch"])
    write_csv(tmp_path / "r.csv", df)
    back = read_results(tmp_path / "r.csv")
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True), check_dtype=True)


@pytest.mark.slow  # a per-neuron sweep and its plot
def test_rates_csv_and_plot_for_a_per_neuron_rule(tmp_path):
    """rates.csv: one row per run, epoch and layer with the 5 quantiles, NaN once diverged;
    rates.png beside it. A rule with one rate per layer writes neither."""
    from jaxlr import results as res
    from jaxlr.config import SweepConfig
    from jaxlr.data import load_dataset
    from jaxlr.runner import run

    data = load_dataset("digits", n_train=256, n_test=64)
    cfg = SweepConfig(
        widths=(8, 16), lrs=(0.05, 1000.0), seeds=(0,), epochs=2, lr_rule="adagrad-neuron",
        out=str(tmp_path / "a"),
    )  # fmt: skip
    outcome = run(cfg, dataset=data, progress=False)
    rates = pd.read_csv(tmp_path / "a" / "rates.csv", dtype={"hidden": str})
    assert list(rates.columns) == [*res.RUN_KEYS, "round", "epoch", "layer", *res.RATE_STATS]
    assert len(rates) == 2 * 2 * 1 * 2 * 3  # widths, lrs, seeds, epochs, layers
    ok = rates[rates.lr == 0.05]
    assert (ok["min"] <= ok["p05"]).all() and (ok["p05"] <= ok["median"]).all()
    assert (ok["median"] <= ok["p95"]).all() and (ok["p95"] <= ok["max"]).all()
    assert (ok["min"] > 0).all()
    diverged = outcome.results[outcome.results.diverged]
    assert len(diverged) and rates[rates.lr == 1000.0]["median"].isna().all()
    assert "rates.png" in outcome.files and (tmp_path / "a" / "rates.png").exists()
    plain = cfg.replace(lr_rule="none", widths=(8,), out=str(tmp_path / "b"))
    plain = run(plain, dataset=data, progress=False)
    assert "rates.csv" not in plain.files and plain.rates is None
