"""Tests for jaxlr.coord_check: mup's coordinate check is flat for muP and grows for SP, agrees
with an independent training loop, and its CLI writes the table, summary and plot."""

from __future__ import annotations

import doctest
import subprocess
import sys

import jax
import numpy as np
import optax
import pandas as pd
import pytest

from jaxlr.coord_check import (
    CoordCheckConfig,
    coord_check,
    coord_check_summary,
    digits_batch,
    run_coord_check,
)
from jaxlr.coord_check.__main__ import main
from jaxlr.models import apply_mlp, init_mlp
from jaxlr.mup import init_mup_mlp, mlp_shapes, mup_adam, mup_lr_scales, mup_sgd

# Widths 64..1024 (base 64), 3 steps, 2 seeds, the first 256 digits training examples; Adam lr
# 1e-2, SGD lr 1.0. The CLI test reuses the same shapes, so it hits the compilation cache.
CC = CoordCheckConfig(widths=(64, 256, 1024), base_width=64, steps=3, seeds=(0, 1))
CC_ARGS = "--widths 64,256 --base-width 64 --steps 3 --seeds 0,1".split()


@pytest.fixture(scope="module")
def coord_df() -> pd.DataFrame:
    return run_coord_check(CC)


@pytest.fixture(scope="module")
def summary(coord_df) -> pd.DataFrame:
    s = coord_check_summary(coord_df)
    return s[s.step >= 1].set_index(["parametrization", "optimizer", "layer", "step"])


def _mean_l1(df: pd.DataFrame, par: str, opt: str, layer: str, step: int) -> np.ndarray:
    """Seed-averaged l1 at each width, widths increasing."""
    g = df[(df.parametrization == par) & (df.optimizer == opt) & (df.layer == layer)]
    return g[g.step == step].groupby("width")["l1"].mean().to_numpy()


def test_table_layout_and_init(coord_df):
    n = 2 * 2 * len(CC.widths) * 3 * (CC.steps + 1) * 2  # opt, par, width, layer, step, seed
    assert len(coord_df) == n
    assert list(coord_df.columns) == [
        "parametrization", "optimizer", "lr", "width", "layer", "step", "seed", "l1", "loss"
    ]  # fmt: skip
    assert np.isfinite(coord_df["l1"]).all() and np.isfinite(coord_df["loss"]).all()
    # Step 0 is the init: the same input layer for SP and muP (same torch init, finite fan-in).
    init = coord_df[(coord_df.step == 0) & (coord_df.layer == "Dense_0")]
    sp, mu = (
        init[init.parametrization == p].sort_values(["optimizer", "width", "seed"])
        for p in ("sp", "mup")
    )
    np.testing.assert_allclose(sp["l1"].to_numpy(), mu["l1"].to_numpy(), rtol=1e-6)
    # muP: zero-init readout gives zero logits at init, hence the initial loss log(10).
    mup0 = coord_df[(coord_df.step == 0) & (coord_df.parametrization == "mup")]
    assert (mup0[mup0.layer == "Dense_2"]["l1"] == 0).all()
    np.testing.assert_allclose(mup0["loss"], np.log(10), rtol=1e-6)


def test_mup_is_flat(summary):
    """muP: l1(1024) / l1(64) measured 0.86-1.01 at steps 1..3, log-log slopes -0.055..0.003
    (2 seeds: the narrowest width is the noisiest)."""
    mup = summary.loc["mup"]
    assert mup["ratio"].between(0.75, 1.25).all(), mup["ratio"]
    assert (mup["slope"].abs() < 0.1).all(), mup["slope"]


def test_sp_grows_with_width(coord_df, summary):
    """SP: the logits grow with width at every trained step, for both optimizers; Adam's at
    step 1 about linearly (measured ratio 22.2, slope 1.12), Adam's second hidden layer too
    (ratio 5.0); SGD's logits ratio 9.1 at step 2."""
    for opt in ("adam", "sgd"):
        for t in range(1, CC.steps + 1):
            assert np.all(np.diff(_mean_l1(coord_df, "sp", opt, "Dense_2", t)) > 0), (opt, t)
    for t in range(1, CC.steps + 1):
        assert np.all(np.diff(_mean_l1(coord_df, "sp", "adam", "Dense_1", t)) > 0), t
    sp = summary.loc["sp"]
    assert sp.loc[("adam", "Dense_2", 1), "ratio"] > 10
    assert sp.loc[("adam", "Dense_2", 1), "slope"] > 0.9
    assert sp.loc[("adam", "Dense_1", 1), "ratio"] > 3
    assert sp.loc[("sgd", "Dense_2", 2), "ratio"] > 4


def test_mup_loss_is_width_independent(coord_df):
    """The loss after training: spread over widths measured muP 0.014 (Adam) / 0.027 (SGD),
    SP 2.22 / 0.51."""
    last = coord_df[coord_df.step == CC.steps]
    loss = last.groupby(["parametrization", "optimizer", "width"])["loss"].mean()
    spread = loss.groupby(["parametrization", "optimizer"]).agg(np.ptp)
    assert (spread["mup"] < 0.1).all(), spread
    assert (spread["sp"] > 5 * spread["mup"]).all(), spread


def _reference(par: str, opt: str, width: int, lr: float, x, y, *, steps: int, seed: int):
    """l1 per layer and loss at each step from init_mup_mlp / init_mlp, trained by mup_adam /
    mup_sgd (muP) or optax.adam / optax.sgd (SP) through apply_mlp; l1 from a numpy forward."""
    key, hidden = jax.random.key(seed, impl="rbg"), (width, width)
    if par == "mup":
        model, params = init_mup_mlp(key, x.shape[1], hidden, 10, base_hidden=CC.base_width)
        base = mlp_shapes(x.shape[1], (CC.base_width,) * 2, 10)
        scales = mup_lr_scales(params, base, opt)
        tx = mup_adam(lr, scales) if opt == "adam" else mup_sgd(lr, scales)
    else:
        model, params = init_mlp(key, x.shape[1], hidden, 10, init="torch")
        tx = optax.adam(lr) if opt == "adam" else optax.sgd(lr)

    def loss_fn(p):
        logits = apply_mlp(model, p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, state):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    state, l1, losses = tx.init(params), [], []
    for t in range(steps + 1):
        h, row = np.asarray(x, np.float64), []
        for i in range(3):
            w, b = (np.asarray(params[f"Dense_{i}"][k], np.float64) for k in ("kernel", "bias"))
            h = (h * model.readout_mult if i == 2 else h) @ w + b
            row.append(np.abs(h).mean())
            h = np.maximum(h, 0)
        l1.append(row)
        if t < steps:
            params, state, loss = step(params, state)
            losses.append(float(loss))
    losses.append(float(loss_fn(params)))
    return np.array(l1), np.array(losses)


@pytest.mark.parametrize(
    ("par", "opt", "lr"), [("mup", "adam", CC.adam_lr), ("sp", "sgd", CC.sgd_lr)]
)
def test_matches_independent_training_loop(coord_df, par, opt, lr):
    """coord_check's shared SP/muP program (torch draws times init factors, traced readout
    multiplier and lr scales, vmapped over seeds) equals the models of jaxlr.mup / jaxlr.models
    trained step by step, at width 256 and seed 1."""
    x, y = digits_batch(CC.batch)
    l1, loss = _reference(par, opt, 256, lr, x, y, steps=CC.steps, seed=1)
    g = coord_df[(coord_df.parametrization == par) & (coord_df.optimizer == opt)]
    g = g[(g.width == 256) & (g.seed == 1)]
    ours = g.pivot_table(index="step", columns="layer", values="l1").to_numpy()
    np.testing.assert_allclose(ours, l1, rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(g.groupby("step")["loss"].first(), loss, rtol=1e-5)


def test_digits_batch_is_the_library_normalization():
    """The first training examples of load_dataset("digits"), standardized by the training
    split's scalar mean/std (not per pixel, not per batch)."""
    from jaxlr.data import load_dataset

    ds = load_dataset("digits")
    x, y = digits_batch(100)
    assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (100, 64)
    raw = ds.x_train[:100].astype(np.float64)
    np.testing.assert_allclose(x, (raw - ds.mean) / ds.std, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y, ds.y_train[:100])
    with pytest.raises(ValueError, match="training examples"):
        digits_batch(ds.n_train + 1)


def test_errors():
    x, y = np.zeros((4, 3), np.float32), np.arange(4) % 2
    kw = dict(lr=0.1, base_width=8, data=(x, y))
    with pytest.raises(ValueError, match="unknown parametrization"):
        coord_check((8,), parametrization="ntk", optimizer="sgd", **kw)
    with pytest.raises(ValueError, match="unknown optimizer"):
        coord_check((8,), parametrization="sp", optimizer="lion", **kw)
    with pytest.raises(ValueError, match="at least 1 hidden layer"):
        coord_check((8,), parametrization="sp", optimizer="sgd", depth=0, **kw)
    with pytest.raises(ValueError, match="increasing"):
        CoordCheckConfig(widths=(256, 64))
    with pytest.raises(ValueError, match="without repeats"):
        CoordCheckConfig(seeds=(0, 0))


def test_cli_writes_table_summary_and_plot(coord_df, tmp_path, capsys):
    assert main(["--out", str(tmp_path), *CC_ARGS]) == 0
    df = pd.read_csv(tmp_path / "coord_check.csv")
    # The fixture's first two widths: same shapes (no recompilation) and the same numbers.
    expected = coord_df[coord_df.width <= 256].reset_index(drop=True)
    pd.testing.assert_frame_equal(df, expected, check_exact=False, rtol=1e-6)
    summary = pd.read_csv(tmp_path / "coord_check_summary.csv")
    pd.testing.assert_frame_equal(summary, coord_check_summary(expected), rtol=1e-6)
    assert (tmp_path / "coord_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(tmp_path.iterdir())) == 3  # atomic writes leave no temporary files
    out = capsys.readouterr().out
    assert "l1(width 256) / l1(width 64) after each step" in out
    assert len([line for line in out.splitlines() if "Dense_" in line]) == 12  # 2 x 2 x 3 layers


def test_cli_rejects_bad_config(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "out"), "--widths", "256,64"]) == 2
    err = capsys.readouterr().err
    assert "increasing" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_python_m_runs_without_runpy_warning():
    """jaxlr/__init__ imports the library package, not the CLI module __main__ that runpy runs."""
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "jaxlr.coord_check", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout and "Warning" not in proc.stderr


def test_doctests():
    mod = sys.modules["jaxlr.coord_check"]
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_package_exports_the_library_without_importing_it_eagerly():
    """The lazily exported names are the computation module's own functions."""
    from jaxlr.coord_check import check

    mod = sys.modules["jaxlr.coord_check"]
    for name in ("coord_check_summary", "digits_batch", "plot_coord_check", "run_coord_check"):
        assert getattr(mod, name) is getattr(check, name)
    assert sorted(mod.__all__) == sorted(n for n in dir(mod) if n in mod.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mod.nope  # noqa: B018
