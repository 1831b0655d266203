"""Model families: a user's own Flax model (a small CNN) through the sweep's Python API, one of
its lanes against a plain Optax loop, and what a user family refuses."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import families
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import load_dataset
from jaxlr.runner import run_sweep


class CNN(nn.Module):
    """``depth`` 3x3 convolutions of ``width`` channels on the 8x8 digits, a mean pool and a
    linear readout."""

    width: int
    depth: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(-1, 8, 8, 1)
        for _ in range(self.depth):
            x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.Dense(10)(x.mean((1, 2)))


def _squared_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """A non-default per-example loss: squared error against the one-hot label."""
    return jnp.sum((logits - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, -1)


@pytest.fixture(scope="module")
def cnn():
    fam = families.register_family(
        families.Family.from_module("cnn", lambda width, depth: CNN(width, depth))
    )
    yield fam
    families.FAMILIES.pop("cnn", None)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _reference(dataset, width: int, depth: int, seed: int, lr: float, epochs: int, loss_fn):
    """One lane alone, written from the sweep's documented scheme (common random numbers):
    init from ``fold_in(PRNGKey(seed), 0)``, epoch ``e``'s batches from
    ``permutation(fold_in(fold_in(PRNGKey(seed), 1), e), n_train)`` with the remainder dropped,
    pixels normalized by the training mean and std; plain ``optax.sgd``."""
    model = CNN(width, depth)
    key = jax.random.PRNGKey(seed)
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, 64)))["params"]
    tx = optax.sgd(lr)
    state = tx.init(params)
    x_train = (jnp.asarray(dataset.x_train, jnp.float32) - dataset.mean) / dataset.std
    y_train = jnp.asarray(dataset.y_train)

    @jax.jit
    def step(p, s, x, y):
        loss, g = jax.value_and_grad(lambda q: loss_fn(model.apply({"params": q}, x), y).mean())(p)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    steps = dataset.n_train // 32
    train_losses = []
    for e in range(epochs):
        perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), e), 1437)
        losses = []
        for idx in np.asarray(perm[: steps * 32]).reshape(steps, 32):
            params, state, loss = step(params, state, x_train[idx], y_train[idx])
            losses.append(float(loss))
        train_losses.append(np.mean(losses))
    x_test = (jnp.asarray(dataset.x_test, jnp.float32) - dataset.mean) / dataset.std
    logits = model.apply({"params": params}, x_test)
    test_loss = float(loss_fn(logits, jnp.asarray(dataset.y_test)).mean())
    acc = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(dataset.y_test)))
    return np.array(train_losses), test_loss, acc


@pytest.mark.parametrize(
    "loss",
    [
        "cross-entropy",
        pytest.param("squared error", marks=pytest.mark.slow),
    ],
)
def test_a_user_cnn_sweeps_and_each_lane_equals_a_plain_optax_loop(cnn, digits, loss):
    loss_fn = _squared_error if loss == "squared error" else None
    if loss_fn is not None:
        families.register_family(
            families.Family.from_module(
                "cnn-mse", lambda width, depth: CNN(width, depth), loss=loss_fn
            )
        )
    name = "cnn" if loss_fn is None else "cnn-mse"
    cfg = SweepConfig(
        family=name, widths=(4, 8), depth=1, lrs=(0.05, 0.2), seeds=(0, 1), epochs=2,
        batch_size=32, optimizers=("sgd",), out=None,
    )  # fmt: skip
    with jax.default_matmul_precision("highest"):
        df = run_sweep(cfg, dataset=digits, progress=False)
    assert sorted(df["width"].unique()) == [4, 8]
    ref_loss = loss_fn or optax.softmax_cross_entropy_with_integer_labels
    for width, seed, lr in [(4, 0, 0.2), (8, 1, 0.05)]:
        rows = df[(df.width == width) & (df.seed == seed) & (df.lr == lr)].sort_values("epoch")
        train, test_loss, acc = _reference(digits, width, 1, seed, lr, 2, ref_loss)
        np.testing.assert_allclose(rows["train_loss"].to_numpy(), train, rtol=1e-4)
        np.testing.assert_allclose(rows["test_loss"].iloc[-1], test_loss, rtol=1e-4)
        assert abs(rows["test_accuracy"].iloc[-1] - acc) <= 1.0 / len(digits.y_test)
    families.FAMILIES.pop("cnn-mse", None)


@pytest.mark.slow  # a CNN sweep over three depths
def test_depths_sweep_every_width_at_each_depth(cnn, digits):
    cfg = SweepConfig(
        family="cnn", widths=(4, 8), depths=(1, 2), lrs=(0.1,), seeds=(0,), epochs=1,
        batch_size=32, optimizers=("sgd",), out=None,
    )  # fmt: skip
    assert cfg.architectures == ((4,), (8,), (4, 4), (8, 8))
    df = run_sweep(cfg, dataset=digits, progress=False)
    assert sorted(set(zip(df.width, df.depth, strict=True))) == [(4, 1), (4, 2), (8, 1), (8, 2)]
    # depth 2 is a different network from depth 1 (two convolutions)
    d1 = df[(df.width == 8) & (df.depth == 1)]["test_loss"].iloc[0]
    d2 = df[(df.width == 8) & (df.depth == 2)]["test_loss"].iloc[0]
    assert d1 != d2


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(parametrizations=("mup",), base_width=4), "--parametrization mup does not apply"),
        (dict(lr_rule="weight-norm"), "--lr-rule weight-norm does not apply to --model cnn"),
        (dict(dynamics=True), "--dynamics"),
        (dict(init="flax"), "--init"),
        (dict(context=32), "--context"),
        (dict(depths=(1, 2), depth=3), "either --depth or --depths"),
        (dict(depths=(1, 1)), "distinct"),
    ],
)
def test_a_user_family_refuses_what_it_does_not_take(cnn, kw, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig(family="cnn", widths=(4,), **kw)


def test_an_unregistered_family_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="--model") as e:
        SweepConfig(family="resnet")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("model", ["mlp", "gpt"])
def test_depths_with_hidden_exits_2_in_one_line(model, capsys):
    from jaxlr.cli import main

    assert main(["--model", model, "--hidden", "32-32", "--depths", "1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--depths" in err[0] or "--hidden" in err[0]), err
