"""``--dynamics``: each epoch's relative update and each layer's output scale, per lane.

Checked against numpy from the parameters themselves: ``||W_e - W_{e-1}||_F / ||W_{e-1}||_F``
of every kernel, and the RMS of every layer's pre-activation output on the probe batch (the
first :data:`jaxlr.engine.PROBE` test examples, normalized), by a numpy forward pass.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxlr.config import SweepConfig
from jaxlr.data import device_data, load_dataset
from jaxlr.engine import PROBE, RunSpec, train_lanes


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=320, n_test=300)


def _spec(ds, **kw) -> RunSpec:
    cfg = SweepConfig(widths=(24,), epochs=2, batch_size=32, dynamics=True, **kw)
    return RunSpec.create(cfg, ds, (24, 12), cfg.optimizers[0])


def _numpy_forward_rms(params: dict, x: np.ndarray) -> list[float]:
    """RMS of each Dense layer's output (before the ReLU), numpy, float64."""
    h, out = x.astype(np.float64), []
    n = len(params)
    for i in range(n):
        z = h @ np.asarray(params[f"Dense_{i}"]["kernel"], np.float64) + np.asarray(
            params[f"Dense_{i}"]["bias"], np.float64
        )
        out.append(float(np.sqrt(np.mean(z**2))))
        h = np.maximum(z, 0)
    return out


def _lane(tree, s: int, lane: int) -> dict:
    return jax.tree.map(lambda a: np.asarray(a)[s, lane], tree)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dynamics_equal_numpy_from_the_parameters(digits, optimizer):
    spec = _spec(digits, optimizers=(optimizer,))
    lrs = [0.1, 0.02] if optimizer == "sgd" else [3e-3, 1e-3]
    data = device_data(digits)
    with jax.default_matmul_precision("highest"):
        state, _ = train_lanes(spec, data, [0, 1], lrs, epochs=1)
        start = jax.tree.map(np.asarray, state.params)  # before the next call donates it
        state, m = train_lanes(spec, data, [0, 1], lrs, epochs=2, state=state, start_epoch=1)
    end = jax.tree.map(np.asarray, state.params)
    probe = (np.asarray(digits.x_test[:PROBE], np.float64) - digits.mean) / digits.std
    got = m["dynamics"][0]  # epoch 2: (S, L, layers, 2)
    assert got.shape == (2, 2, 3, 2)
    for s in range(2):
        for li in range(2):
            p0, p1 = _lane(start, s, li), _lane(end, s, li)
            ratios = [
                np.linalg.norm(p1[k]["kernel"] - p0[k]["kernel"]) / np.linalg.norm(p0[k]["kernel"])
                for k in ("Dense_0", "Dense_1", "Dense_2")
            ]
            np.testing.assert_allclose(got[s, li, :, 0], ratios, rtol=2e-4)
            np.testing.assert_allclose(got[s, li, :, 1], _numpy_forward_rms(p1, probe), rtol=2e-4)


def test_step_blocks_give_the_one_call_dynamics(digits):
    spec = _spec(digits)
    data = device_data(digits)
    one = train_lanes(spec, data, [0], [0.1, 0.3], epochs=2)[1]["dynamics"]
    blocks = dataclasses.replace(spec, steps_per_call=3)
    split = train_lanes(blocks, data, [0], [0.1, 0.3], epochs=2)[1]["dynamics"]
    np.testing.assert_array_equal(split, one)


def test_a_diverged_lane_has_no_dynamics(digits):
    spec = _spec(digits)
    _, m = train_lanes(spec, device_data(digits), [0], [0.1, 1e4], epochs=2)
    assert np.isfinite(m["dynamics"][:, 0, 0]).all()
    assert np.isnan(m["dynamics"][-1, 0, 1]).all()


def test_without_the_flag_there_is_nothing(digits):
    spec = dataclasses.replace(_spec(digits), dynamics=False)
    _, m = train_lanes(spec, device_data(digits), [0], [0.1], epochs=1)
    assert m["dynamics"].shape == (1, 1, 1, 0, 2)
