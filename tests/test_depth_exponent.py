"""The depth exponent (``lr* ∝ depth^β`` at each width, ``depth_exponent.csv``): recovered from
loss surfaces whose optimum moves as a known power of depth, kept apart from the width
exponent, and written by a ``--depths`` sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxlr import exponent
from jaxlr.config import SweepConfig
from jaxlr.runner import run


def _surface(
    alpha: float, beta: float, noise: float = 0.0, seeds: int = 6, rng_seed: int = 0
) -> pd.DataFrame:
    """Final losses ``0.1 exp((log2 lr - c_ws)^2 / 8)`` whose optimum is
    ``c_ws = alpha log2 w + beta log2 L + noise`` (seed- and cell-specific noise)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for w in (16, 64, 256):
        for depth in (1, 2, 4, 8):
            for s in range(seeds):
                c = alpha * np.log2(w) + beta * np.log2(depth) + noise * rng.standard_normal()
                for k in np.arange(-12, 4, 0.5):
                    rows.append(
                        dict(
                            width=w, depth=depth, hidden="-".join([str(w)] * depth),
                            optimizer="adam", lr_rule="none", parametrization="sp",
                            weight_decay=0.0, lr=2.0**k, seed=s, epoch=1, diverged=False,
                            train_loss=0.1 * np.exp((k - c) ** 2 / 8),
                        )
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_known_power_of_depth_is_recovered_at_every_width():
    df = _surface(alpha=-1.0, beta=-0.5)
    t = exponent.depth_exponent(df, select="train_loss")
    assert list(t.columns) == exponent.DEPTH_COLUMNS
    assert sorted(t["width"]) == [16, 64, 256]
    np.testing.assert_allclose(t["beta"], -0.5, atol=1e-3)
    assert (t["n_depths"] == 4).all()
    # and the width exponent of the same table is still α, per depth
    w = exponent.width_exponent(df, select="train_loss")
    np.testing.assert_allclose(w["alpha"], -1.0, atol=1e-3)
    assert sorted(w["depth"]) == [1, 2, 4, 8]


def test_the_interval_covers_beta_under_seed_noise():
    """30 intervals (10 simulated sweeps x 3 widths) of nominal 95% coverage: at least 24 cover
    the true β (a binomial(30, 0.95) falls below 24 with probability 3e-4)."""
    covered = 0
    for r in range(10):
        df = _surface(alpha=0.0, beta=0.5, noise=0.3, rng_seed=r)
        t = exponent.depth_exponent(df, select="train_loss", n_boot=300)
        covered += int(((t["beta_lo"] <= 0.5) & (0.5 <= t["beta_hi"])).sum())
        assert (t["beta_hi"] - t["beta_lo"] > 0).all()
    assert covered >= 24, covered
    assert "lr* ∝ depth^β, β = " in exponent.format_depth_exponent(t)


def test_fewer_than_three_depths_give_no_table():
    df = _surface(alpha=0.0, beta=0.5)
    assert exponent.depth_exponent(df[df["depth"] <= 2], select="train_loss").empty


@pytest.mark.parametrize("depths", [(1, 2, 3)])
def test_a_depths_sweep_writes_the_depth_exponent(tmp_path, depths):
    cfg = SweepConfig(
        widths=(16,), depths=depths, lrs=(0.03, 0.1, 0.3, 1.0), seeds=(0, 1), epochs=1,
        out=str(tmp_path / "sweep"),
    )  # fmt: skip
    outcome = run(cfg, progress=False)
    assert "depth_exponent.csv" in outcome.files
    t = pd.read_csv(tmp_path / "sweep" / "depth_exponent.csv")
    assert list(t.columns) == exponent.DEPTH_COLUMNS and list(t["n_depths"]) == [3]
    assert "lr* ∝ depth^β" in outcome.exponent_text


@pytest.mark.slow  # five depth sweeps
def test_a_depths_sweep_in_shards_merges_and_resumes_to_the_same_files(tmp_path):
    """Two grid shards of a --depths sweep, merged, give the whole sweep's results and depth
    exponent byte for byte; a --resume of the finished sweep retrains nothing and keeps them."""
    from jaxlr.merge import merge_runs

    base = dict(widths=(16,), depths=(1, 2, 3), lrs=(0.1, 0.3, 1.0), seeds=(0, 1), epochs=1)
    whole = tmp_path / "whole"
    run(SweepConfig(**base, out=str(whole)), progress=False)
    shards = []
    for i in range(2):
        shards.append(tmp_path / f"shard{i}")
        run(SweepConfig(**base, shard=(i, 2), out=str(shards[i])), progress=False)
    merge_runs(shards, tmp_path / "merged")
    for name in ("results.csv", "depth_exponent.csv"):
        assert (tmp_path / "merged" / name).read_bytes() == (whole / name).read_bytes(), name
    before = {n: (whole / n).read_bytes() for n in ("results.csv", "depth_exponent.csv")}
    run(SweepConfig(**base, out=str(whole)), progress=False, resume=True)
    assert {n: (whole / n).read_bytes() for n in before} == before
