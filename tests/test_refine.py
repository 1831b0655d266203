"""``--refine``: finding each optimum without a dense grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import load_dataset
from jaxlr.exponent import width_exponent
from jaxlr.plan import Bucket, Chunk, refine_chunks, refine_lrs
from jaxlr.results import summarize
from jaxlr.runner import run_sweep


def test_refine_lrs_halves_the_log_spacing():
    grid = [2.0**k for k in range(-8, 0, 2)]  # 2-octave spacing
    # interior optimum: one new lr on each side, one octave away
    assert refine_lrs(grid, 2.0**-4) == pytest.approx((2.0**-5, 2.0**-3), rel=1e-5)
    # at an edge, the missing side mirrors the other: the search can leave the grid
    assert refine_lrs(grid, 2.0**-8) == pytest.approx((2.0**-9, 2.0**-7), rel=1e-5)
    assert refine_lrs(grid, 2.0**-2) == pytest.approx((2.0**-3, 2.0**-1), rel=1e-5)
    # the spacing is the local one: after a round, the next halves it again
    assert refine_lrs([*grid, 2.0**-5, 2.0**-3], 2.0**-4) == pytest.approx(
        (2.0**-4.5, 2.0**-3.5), rel=1e-5
    )
    # a single lr has no spacing to halve
    assert refine_lrs([0.1], 0.1) == ()


def test_refine_chunks_reuse_the_grid_lane_shape():
    b = Bucket((8, 8), "sgd", (0.1, 0.01, 0.001), (0, 1))
    grid = [Chunk(b, (0, 1), (0.1, 0.01, 0.001))]
    key = ((8, 8), "sgd", "sp", 0.0)  # Bucket.key: hidden, optimizer, parametrization, wd
    assert b.key == key
    (c,) = refine_chunks(grid, {key: 0.01}, {key: [0.001, 0.01, 0.1]}, 1)
    assert c.round == 1 and c.lanes_lrs == 3 and c.seeds == (0, 1)
    assert c.lrs == pytest.approx((math.sqrt(1e-5), math.sqrt(1e-3)))


def test_refine_cannot_be_sharded():
    with pytest.raises(ConfigError, match="cannot be sharded"):
        SweepConfig(refine=1, shard=(0, 2))


@pytest.mark.slow  # 207 + 90 runs up to width 256, 4 epochs
@pytest.mark.usefixtures("optimized_cpu_code")  # running them, more than compiling
def test_refine_finds_the_dense_grids_optimum_with_fewer_runs():
    """SP Adam on digits, widths 16/64/256, 3 seeds: a 2-octave grid refined twice finds the
    optimum of a half-octave grid (within half an octave, or a loss within 2%) with at most 60%
    of its runs, and the half-octave grid's width exponent lies in the refined run's bootstrap
    interval (± 0.25). The optimum is that of the final train loss, as in muP studies: digits'
    test set (360 images) gives a flat, noisy test-loss curve whose minimum moves by octaves
    with the noise."""
    ds = load_dataset("digits")
    base = SweepConfig(
        widths=(16, 64, 256), optimizers=("adam",), seeds=(0, 1, 2), epochs=4, select="train_loss"
    )
    dense = base.replace(lrs=tuple(2.0 ** (k / 2) for k in range(-26, -3)))  # 2^-13 .. 2^-2
    coarse = base.replace(lrs=tuple(2.0**k for k in range(-13, -1, 2)), refine=2)
    d = run_sweep(dense, dataset=ds, progress=False)
    r = run_sweep(coarse, dataset=ds, progress=False)
    runs = lambda df: len(df[["width", "lr", "seed"]].drop_duplicates())
    assert runs(r) <= 0.6 * runs(d), (runs(r), runs(d))
    assert set(r["round"]) == {0, 1, 2}
    sd = summarize(d, select="train_loss").set_index("width")
    sr = summarize(r, select="train_loss").set_index("width")
    for w in (16, 64, 256):
        octaves = abs(math.log2(sr.loc[w, "best_lr"] / sd.loc[w, "best_lr"]))
        rel_loss = sr.loc[w, "best_loss"] / sd.loc[w, "best_loss"] - 1
        assert octaves <= 0.5 or rel_loss <= 0.02, (w, octaves, rel_loss)
    assert np.isfinite(sr["best_lr"]).all()
    (ed,), (er,) = (width_exponent(df, select="train_loss").to_dict("records") for df in (d, r))
    assert er["n_widths"] == 3 and er["n_seeds"] == 3
    assert er["alpha_lo"] - 0.25 <= ed["alpha"] <= er["alpha_hi"] + 0.25, (ed, er)
