"""Calibration of the width exponent's interval on simulated sweeps with a known exponent.

The sweeps come from :data:`jaxlr.simulate.FAMILIES`, curve families fitted to committed jaxlr
sweeps (SP Adam and SP SGD on digits: the valley's shape, seed noise, jaggedness, stability
cliffs). Over
200 sweeps at each of 3, 5 and 8 seeds (families and grid spacings of 1/2 and 1 octave taken in
turn, the true exponent uniform in [-1, 0.5]) the 95% interval must cover the true exponent in
90-98% of the sweeps, and the estimator's bias must stay below 0.05. Pure numpy; seeded.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from jaxlr import exponent as ex
from jaxlr import results as res
from jaxlr import simulate as sim
from jaxlr import stats

N_SWEEPS = 200


def simulate(n_seeds: int, rng_seed: int = 0):
    """``N_SWEEPS`` sweeps at ``n_seeds`` seeds: (sweep, interval) each."""
    return sim.calibration_sweeps(n_seeds, N_SWEEPS, rng_seed)


@pytest.fixture(scope="module", params=[3, 5, 8])
def sims(request):
    return request.param, simulate(request.param, rng_seed=request.param)


def test_the_95_interval_covers_90_to_98_percent_and_is_unbiased(sims):
    n_seeds, runs = sims
    truth = np.array([s.true_alpha for s, _ in runs])
    est = np.array([iv.estimate for _, iv in runs])
    covered = np.array([iv.lo <= t <= iv.hi for t, (_, iv) in zip(truth, runs, strict=True)])
    assert np.isfinite(est).all()
    assert 0.90 <= covered.mean() <= 0.98, (n_seeds, covered.mean())
    assert abs(np.mean(est - truth)) < 0.05, (n_seeds, np.mean(est - truth))
    # the interval is honest, not merely wide: its median half-width is within a factor of 1.6
    # of t_{n-1} x the actual spread of the estimates about the truth
    half = np.median([(iv.hi - iv.lo) / 2 for _, iv in runs])
    spread = stats.t_quantile(0.975, n_seeds - 1) * np.std(est - truth)
    assert spread / 1.6 < half < 1.6 * spread, (n_seeds, half, spread)


def test_a_percentile_bootstrap_would_not_cover_at_3_seeds():
    # the interval jaxlr printed before: percentiles of the same paired resamples. With 3 seeds
    # (10 distinct resamples) it covers far less than 95%
    runs = simulate(3, rng_seed=3)
    covered = [
        np.nanpercentile(iv.boot, 2.5) <= s.true_alpha <= np.nanpercentile(iv.boot, 97.5)
        for s, iv in runs
    ]
    assert np.mean(covered) < 0.85, np.mean(covered)


def test_the_simulated_path_is_the_tables_path():
    # sweep_alpha (used above) gives the numbers width_exponent.csv gives for the same runs
    rng = np.random.default_rng(11)
    for name, spacing, extra in sim.CALIBRATION[::2]:
        fam = sim.calibration_family(name, extra)
        sweep = sim.simulate_sweep(fam, -0.4, rng, n_seeds=4, spacing=spacing)
        iv = sim.sweep_alpha(sweep, n_boot=300, rng=np.random.default_rng(5))
        frame = sim.sweep_frame(sweep)
        t = ex.width_exponent(frame, "train_loss", n_boot=300, seed=5, chance_loss=math.log(10))
        assert t["alpha"].item() == pytest.approx(iv.estimate, abs=1e-6)
        assert t["alpha_lo"].item() == pytest.approx(iv.lo, abs=1e-6)
        assert t["alpha_hi"].item() == pytest.approx(iv.hi, abs=1e-6)


def test_true_alpha_is_the_slope_of_the_best_stable_lr():
    # the cliff's cut, E min(0, g + σn), against a Monte Carlo estimate
    fam = sim.FAMILIES["sgd-sp"]
    u = np.array([0.0, 2.0, 4.0])
    g = fam.cliff_gap + fam.cliff_slope * u
    draws = np.random.default_rng(0).standard_normal((200_000, 1))
    mc = np.minimum(0.0, g + fam.cliff_jitter * draws).mean(axis=0)
    np.testing.assert_allclose(sim._cliff_cut(fam, u), mc, atol=0.01)
    no_cliff = dataclasses.replace(fam, cliff_gap=math.inf)
    sweep = sim.simulate_sweep(no_cliff, -0.3, np.random.default_rng(0), n_seeds=2)
    assert sweep.true_alpha == pytest.approx(-0.3) and not sweep.diverged.any()


def test_fit_family_recovers_a_known_family():
    # a dense, many-seed simulated sweep of a known family: the fit finds its parameters
    fam = dataclasses.replace(sim.FAMILIES["adam-sp"], seed_shift=0.3, seed_corr=0.5)
    sweep = sim.simulate_sweep(
        fam, -0.5, np.random.default_rng(1), n_seeds=12, spacing=0.25, x0=-4.0
    )
    got = sim.fit_family(sim.sweep_frame(sweep), "train_loss", name="adam-sp")
    assert got.slope_left == pytest.approx(fam.slope_left, rel=0.1)
    assert got.slope_right == pytest.approx(fam.slope_right, rel=0.1)
    assert got.floor_slope == pytest.approx(fam.floor_slope, abs=0.02)
    assert got.jitter_left == pytest.approx(fam.jitter_left, rel=0.1)
    assert got.jitter_right == pytest.approx(fam.jitter_right, rel=0.1)
    assert got.seed_shift == pytest.approx(fam.seed_shift, abs=0.1)
    assert got.seed_corr == pytest.approx(fam.seed_corr, abs=0.25)
    assert got.cliff_gap == pytest.approx(fam.cliff_gap, abs=0.3)
    # a cliff that comes down onto the valley (SGD): the shape and the cliff are found, the
    # seed shift is overestimated (the simulated sweeps are noisier than the real ones)
    fam = dataclasses.replace(sim.FAMILIES["sgd-sp"], seed_shift=0.3, seed_corr=0.5)
    sweep = sim.simulate_sweep(
        fam, -0.5, np.random.default_rng(1), n_seeds=12, spacing=0.25, x0=-4.0
    )
    got = sim.fit_family(sim.sweep_frame(sweep), "train_loss", name="sgd-sp")
    assert got.slope_left == pytest.approx(fam.slope_left, rel=0.1)
    assert got.slope_right == pytest.approx(fam.slope_right, rel=0.2)
    assert got.jitter_left == pytest.approx(fam.jitter_left, rel=0.1)
    assert got.cliff_gap == pytest.approx(fam.cliff_gap, abs=0.3)
    assert got.cliff_slope == pytest.approx(fam.cliff_slope, abs=0.2)
    assert fam.seed_shift <= got.seed_shift <= fam.seed_shift + 0.5


def test_families_are_the_fits_of_the_committed_sweeps():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    spec = importlib.util.spec_from_file_location("fit_simulator", root / "fit_simulator.py")
    import sys

    sys.path.insert(0, str(root))
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        fams = {f.name: f for f in mod.families()}
    finally:
        sys.path.remove(str(root))
    assert set(fams) == set(sim.FAMILIES)
    for name, fam in sim.FAMILIES.items():
        for k, v in dataclasses.asdict(fam).items():
            if k != "name":
                assert getattr(fams[name], k) == pytest.approx(v, abs=6e-5), (name, k)
    assert res is not None
