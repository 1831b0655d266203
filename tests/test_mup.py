"""Tests for jaxlr.mup: muP against standard parametrization, closed forms, and the ``mup`` PyPI
package (``set_base_shapes``, ``MuReadout``, ``MuAdam``, ``MuSGD``) as reference. The coordinate
check is tested in test_coord_check.py."""

from __future__ import annotations

import copy
import doctest
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import mup as mup_module
from jaxlr.models import MLP, apply_mlp, init_mlp
from jaxlr.mup import (
    infshapes,
    init_mup_mlp,
    mlp_shapes,
    mup_adam,
    mup_layer_lrs,
    mup_lr_scales,
    mup_mlp,
    mup_readout_mult,
    mup_sgd,
    scale_by_tree,
)
from jaxlr.transforms import per_layer_lr

IN, OUT = 20, 10

# (base hidden, delta hidden or None, target hidden): square, with a delta model, asymmetric
# (fan-in and fan-out multipliers differ), a hidden width that is a width dim but unchanged
# (needs the delta model), and the base model itself.
CASES = [
    ((64, 64), None, (256, 256)),
    ((64, 64), (128, 128), (1024, 1024)),
    ((64, 32), (128, 64), (256, 512)),
    ((64, 64), (128, 128), (192, 64)),
    ((64, 64), None, (64, 64)),
]


def _is_shape(x) -> bool:
    return isinstance(x, tuple)


def _ce_loss(model: MLP, params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = apply_mlp(model, params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _train(model: MLP, tx: optax.GradientTransformation, params: dict, x, y, *, steps: int):
    """``steps`` full-batch cross-entropy steps (jitted step)."""

    @jax.jit
    def step(p, state):
        grads = jax.grad(lambda q: _ce_loss(model, q, jnp.asarray(x), jnp.asarray(y)))(p)
        updates, state = tx.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def _batch(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, IN)).astype(np.float32), rng.integers(0, OUT, n)


# --------------------------------------------------------------------------------------------
# At the base width, muP is SP.
# --------------------------------------------------------------------------------------------


def test_base_width_init_equals_sp():
    key = jax.random.key(3)
    _, sp = init_mlp(key, IN, (64, 32), OUT, init="torch")
    model, mup = init_mup_mlp(key, IN, (64, 32), OUT, base_hidden=(64, 32), readout_zero_init=False)
    assert model.readout_mult == 1.0
    chex.assert_trees_all_equal(mup, sp)
    # Readout zero-init aside, still the same draws.
    model0, mup0 = init_mup_mlp(key, IN, (64, 32), OUT, base_hidden=(64, 32))
    assert model0.readout_mult == 1.0
    chex.assert_trees_all_equal(mup0["Dense_0"], sp["Dense_0"])
    chex.assert_trees_all_equal(mup0["Dense_1"], sp["Dense_1"])
    chex.assert_trees_all_equal(mup0["Dense_2"], jax.tree.map(jnp.zeros_like, sp["Dense_2"]))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("delta", [None, (128, 64)])
def test_base_width_scales_are_one(optimizer, delta):
    shapes = mlp_shapes(IN, (64, 32), OUT)
    delta_shapes = None if delta is None else mlp_shapes(IN, delta, OUT)
    scales = mup_lr_scales(shapes, shapes, optimizer, delta_params=delta_shapes)
    assert jax.tree.leaves(scales) == [1.0] * 6
    assert mup_readout_mult(32, 32, delta_width=None if delta is None else delta[-1]) == 1.0


@pytest.mark.parametrize(
    ("optimizer", "make_mup", "reference"),
    [
        ("adam", lambda s: mup_adam(3e-3, s), optax.adam(3e-3)),
        ("sgd", lambda s: mup_sgd(0.1, s, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    ],
)
def test_base_width_updates_equal_optax(optimizer, make_mup, reference):
    key = jax.random.key(0)
    model, params = init_mup_mlp(
        key, IN, (64, 32), OUT, base_hidden=(64, 32), readout_zero_init=False
    )
    sp_model, _ = init_mlp(key, IN, (64, 32), OUT)
    scales = mup_lr_scales(params, jax.eval_shape(lambda: params), optimizer)
    x, y = _batch()
    trajectories = [
        _train(m, tx, params, x, y, steps=3)
        for m, tx in [(model, make_mup(scales)), (sp_model, reference)]
    ]
    chex.assert_trees_all_equal(*trajectories)


# --------------------------------------------------------------------------------------------
# Shapes and transforms (closed forms).
# --------------------------------------------------------------------------------------------


def test_lr_scales_closed_form():
    """MLP 20-256-512-10 with base 20-64-32-10: m = 4 and 16 for the two hidden widths."""
    shapes = mlp_shapes(IN, (256, 512), OUT)
    base = mlp_shapes(IN, (64, 32), OUT)
    adam = mup_lr_scales(shapes, base, "adam")
    sgd = mup_lr_scales(shapes, base, "sgd")
    assert adam == {
        "Dense_0": {"kernel": 1.0, "bias": 1.0},
        "Dense_1": {"kernel": 1 / 4, "bias": 1.0},
        "Dense_2": {"kernel": 1.0, "bias": 1.0},
    }
    assert sgd == {
        "Dense_0": {"kernel": 4.0, "bias": 4.0},  # vector-like: times the fan-out mult
        "Dense_1": {"kernel": 16 / 4, "bias": 16.0},  # m_out / m_in; bias: its own mult
        "Dense_2": {"kernel": 16.0, "bias": 1.0},  # readout: times the fan-in mult; scalar
    }
    s = infshapes(shapes, base)["Dense_1"]["kernel"]
    assert (s.dims, s.base_dims, s.ninf(), s.width_mult()) == ((512, 256), (32, 64), 2, 4.0)


def test_lr_scales_accept_arrays_shape_structs_and_tuples():
    params = jax.tree.map(jnp.zeros, mlp_shapes(IN, (96, 96), OUT), is_leaf=_is_shape)
    base = jax.tree.map(jnp.zeros, mlp_shapes(IN, (32, 32), OUT), is_leaf=_is_shape)
    from_arrays = mup_lr_scales(params, base, "sgd")
    from_structs = mup_lr_scales(
        jax.eval_shape(lambda: params), jax.eval_shape(lambda: base), "sgd"
    )
    from_tuples = mup_lr_scales(mlp_shapes(IN, (96, 96), OUT), mlp_shapes(IN, (32, 32), OUT), "sgd")
    assert from_arrays == from_structs == from_tuples
    assert from_arrays["Dense_0"]["kernel"] == 3.0


def test_lr_scales_errors():
    shapes = mlp_shapes(IN, (64,), OUT)
    with pytest.raises(KeyError, match="same keys"):
        mup_lr_scales(shapes, {"params": shapes})
    with pytest.raises(ValueError, match="unknown optimizer"):
        mup_lr_scales(shapes, shapes, "lion")
    with pytest.raises(ValueError, match="delta_hidden"):
        init_mup_mlp(jax.random.key(0), IN, (256, 64), OUT, base_hidden=64)


def test_scale_by_tree_multiplies_leafwise():
    scales = {"a": 0.5, "b": {"c": 3.0}}
    updates = {"a": jnp.array([1.0, -2.0]), "b": {"c": jnp.ones((2, 2))}}
    tx = scale_by_tree(scales)
    out, _ = tx.update(updates, tx.init(updates))
    chex.assert_trees_all_close(
        out, {"a": jnp.array([0.5, -1.0]), "b": {"c": 3 * jnp.ones((2, 2))}}
    )


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_layer_lrs_compose_with_per_layer_lr(optimizer):
    """per_layer_lr(mup_layer_lrs(scales, lr)) (jaxlr.transforms) == mup_adam / mup_sgd."""
    shapes = mlp_shapes(IN, (256, 512), OUT)
    scales = mup_lr_scales(shapes, mlp_shapes(IN, (64, 32), OUT), optimizer)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), shapes,
                         is_leaf=_is_shape)  # fmt: skip
    lr = 0.01
    if optimizer == "adam":
        ours = mup_adam(lr, scales)
        theirs = per_layer_lr(mup_layer_lrs(scales, lr), inner=optax.scale_by_adam())
    else:
        ours, theirs = mup_sgd(lr, scales), per_layer_lr(mup_layer_lrs(scales, lr))
    a, b = jax.jit(lambda g: [tx.update(g, tx.init(g), g)[0] for tx in (ours, theirs)])(grads)
    chex.assert_trees_all_close(a, b, rtol=1e-6)
    assert mup_layer_lrs(scales, lr)["Dense_1/kernel"] == lr * scales["Dense_1"]["kernel"]


def test_readout_mult_closed_form():
    assert mup_readout_mult(1024, 64) == 1 / 16
    assert mup_readout_mult(256, 64, output_mult=2.0) == 0.5
    assert mup_readout_mult(64, 64, delta_width=128) == 1.0
    assert mup_readout_mult(64, 32, delta_width=32) == 1.0  # not a width dim: no multiplier
    model, _ = mup_mlp(IN, (512, 256), OUT, base_hidden=64)
    assert model.readout_mult == 0.25


# --------------------------------------------------------------------------------------------
# Cross-check against the `mup` package (PyTorch).
# --------------------------------------------------------------------------------------------


def _torch_mup_mlp(hidden, base, delta, *, output_mult=1.0, readout_zero_init=False, seed=0):
    """nn.Linear hidden layers + mup.MuReadout, before and after set_base_shapes."""
    torch = pytest.importorskip("torch")
    mup = pytest.importorskip("mup")

    class TorchMLP(torch.nn.Module):
        def __init__(self, hidden):
            super().__init__()
            sizes = [IN, *hidden]
            layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
            layers.append(
                mup.MuReadout(
                    sizes[-1], OUT, output_mult=output_mult, readout_zero_init=readout_zero_init
                )
            )
            self.layers = torch.nn.ModuleList(layers)

        def forward(self, x):
            for layer in self.layers[:-1]:
                x = torch.relu(layer(x))
            return self.layers[-1](x)

    torch.manual_seed(seed)
    model = TorchMLP(hidden)
    before = copy.deepcopy(model)
    delta_model = None if delta is None else TorchMLP(delta)
    mup.set_base_shapes(model, TorchMLP(base), delta=delta_model)
    return model, before


def _flax_name(torch_name: str) -> tuple[str, str]:
    _, i, kind = torch_name.split(".")
    return f"Dense_{i}", "kernel" if kind == "weight" else "bias"


def _to_flax(model) -> dict:
    params = {}
    for name, p in model.named_parameters():
        layer, leaf = _flax_name(name)
        # a copy: .numpy() aliases the parameter, which torch's optimizer then updates in place
        # while JAX (asynchronous dispatch) may still be reading it
        a = p.detach().numpy().copy()
        params.setdefault(layer, {})[leaf] = np.ascontiguousarray(a.T if leaf == "kernel" else a)
    return params


@pytest.mark.parametrize(("base", "delta", "hidden"), CASES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_lr_scales_match_mup_param_groups(base, delta, hidden, optimizer):
    mup = pytest.importorskip("mup")
    model, _ = _torch_mup_mlp(hidden, base, delta)
    base_lr = 0.0123
    make = mup.MuAdam if optimizer == "adam" else mup.MuSGD
    groups = make(model.parameters(), lr=base_lr).param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    scales = mup_lr_scales(
        mlp_shapes(IN, hidden, OUT),
        jax.eval_shape(lambda: init_mlp(jax.random.key(0), IN, base, OUT)[1]),
        optimizer,
        delta_params=None if delta is None else mlp_shapes(IN, delta, OUT),
    )
    names = []
    for name, p in model.named_parameters():
        layer, leaf = _flax_name(name)
        flax_shape = mlp_shapes(IN, hidden, OUT)[layer][leaf]
        assert tuple(p.shape) == flax_shape[::-1]  # torch (out, in) is Flax (in, out) reversed
        assert base_lr * scales[layer][leaf] == pytest.approx(lr_of[id(p)], rel=1e-12), name
        names.append((layer, leaf))
    assert len(names) == len(jax.tree.leaves(scales))


@pytest.mark.parametrize(("base", "delta", "hidden"), CASES[2:4])
def test_init_matches_mup_rescaled_torch_init(base, delta, hidden):
    """Each leaf of init_mup_mlp is U(-B, B) with B = torch's 1/sqrt(fan_in) times the factor by
    which mup.set_base_shapes rescaled that torch parameter."""
    model, before = _torch_mup_mlp(hidden, base, delta, seed=1)
    _, params = init_mup_mlp(
        jax.random.key(1), IN, hidden, OUT, base_hidden=base, delta_hidden=delta,
        readout_zero_init=False,
    )  # fmt: skip
    old = dict(before.named_parameters())
    for name, p in model.named_parameters():
        layer, leaf = _flax_name(name)
        factor = float(p.detach().norm() / old[name].detach().norm())
        fan_in = mlp_shapes(IN, hidden, OUT)[layer]["kernel"][0]
        bound = factor / np.sqrt(fan_in)
        ours = np.asarray(params[layer][leaf])
        assert np.abs(p.detach().numpy()).max() <= bound * (1 + 1e-6), name  # reference sanity
        assert np.abs(ours).max() <= bound * (1 + 1e-6), name
        if ours.size >= 500:
            assert np.abs(ours).max() >= 0.99 * bound, name
            assert ours.std() == pytest.approx(bound / np.sqrt(3), rel=0.05), name
        else:
            assert np.abs(ours).max() >= 0.5 * bound, name


@pytest.mark.parametrize(("base", "delta", "hidden"), CASES[:4])
def test_forward_matches_mup_torch(base, delta, hidden):
    torch = pytest.importorskip("torch")
    model, _ = _torch_mup_mlp(hidden, base, delta, output_mult=1.7, seed=2)
    x, _ = _batch()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    mult = mup_readout_mult(
        hidden[-1], base[-1], delta_width=None if delta is None else delta[-1], output_mult=1.7
    )
    ours = apply_mlp(MLP(hidden, OUT, readout_mult=mult), _to_flax(model), jnp.asarray(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    jax_model, _ = init_mup_mlp(
        jax.random.key(0), IN, hidden, OUT, base_hidden=base, delta_hidden=delta, output_mult=1.7
    )
    assert jax_model.readout_mult == mult

    # The readout alone: MuReadout.forward(h) == Dense(readout_mult * h).
    h = np.random.default_rng(0).standard_normal((8, hidden[-1])).astype(np.float32)
    readout = model.layers[-1]
    with torch.no_grad():
        expected = readout(torch.from_numpy(h)).numpy()
    w, b = readout.weight.detach().numpy(), readout.bias.detach().numpy()
    np.testing.assert_allclose((mult * h) @ w.T + b, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_matches_mup_torch(optimizer):
    """Three steps of jaxlr's muAdam / muSGD (momentum) == mup.MuAdam / mup.MuSGD, in float64
    (in float32 Adam's near-sign updates flip on gradients at rounding level)."""
    torch = pytest.importorskip("torch")
    mup = pytest.importorskip("mup")
    base, delta, hidden = (64, 32), (128, 64), (256, 512)
    model, _ = _torch_mup_mlp(hidden, base, delta, readout_zero_init=True, seed=3)
    model = model.double()  # keeps the infshape attributes
    lr = {"adam": 1e-2, "sgd": 0.05}[optimizer]
    if optimizer == "adam":
        opt = mup.MuAdam(model.parameters(), lr=lr)
    else:
        opt = mup.MuSGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = _batch(64, seed=1)
    x = x.astype(np.float64)
    with jax.enable_x64(True):
        params = _to_flax(model)
        scales = mup_lr_scales(
            params, mlp_shapes(IN, base, OUT), optimizer, delta_params=mlp_shapes(IN, delta, OUT)
        )
        tx = mup_adam(lr, scales) if optimizer == "adam" else mup_sgd(lr, scales, momentum=0.9)
        mult = mup_readout_mult(hidden[-1], base[-1], delta_width=delta[-1])
        jax_model = MLP(hidden, OUT, readout_mult=mult, dtype=jnp.float64)
        params = jax.block_until_ready(_train(jax_model, tx, params, x, y, steps=3))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    expected = _to_flax(model)
    assert np.abs(np.asarray(params["Dense_2"]["kernel"])).max() > 1e-3  # the readout moved
    chex.assert_trees_all_close(params, expected, rtol=1e-9, atol=1e-12)


def test_doctests():
    result = doctest.testmod(mup_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
