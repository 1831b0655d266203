"""Tests of jaxlr.transforms against numpy re-implementations of each formula and PyTorch."""

from __future__ import annotations

import doctest
import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxlr.transforms as T

# A params tree with every case the rules must handle: a conv layer (neuron = output channel),
# dense layers, a nested kernel-only layer, and two leaves outside any layer (a LayerNorm-like
# scale, a bias with no sibling kernel).
SHAPES = {
    "conv": {"kernel": (3, 3, 2, 4), "bias": (4,)},
    "Dense_0": {"kernel": (5, 3), "bias": (3,)},
    "block": {"Dense_0": {"kernel": (3, 6)}, "norm": {"scale": (6,)}},
    "Dense_1": {"kernel": (6, 2), "bias": (2,)},
    "extra": {"bias": (2,)},
}
LAYERS = ("conv", "Dense_0", "block/Dense_0", "Dense_1")  # the reference's own list
STEPS = 4


def _flat_shapes(tree, prefix=""):
    """{"a/b/kernel": shape} from the nested SHAPES dict (numpy side, independent of jax paths)."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_shapes(value, path + "/"))
        else:
            out[path] = value
    return out


FLAT = _flat_shapes(SHAPES)


def _nest(flat):
    """{"a/b": x} -> {"a": {"b": x}}."""
    tree = {}
    for path, value in flat.items():
        *heads, last = path.split("/")
        node = tree
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return tree


def _flat(tree):
    """Inverse of _nest for nested dicts of arrays, as float64 numpy arrays."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in _flat(value).items()})
        else:
            out[key] = np.asarray(value, np.float64)
    return out


def _random_flat(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {p: (scale * rng.standard_normal(s)).astype(np.float32) for p, s in FLAT.items()}


def _grad_seq(seed):
    return [_random_flat(seed * 100 + t) for t in range(STEPS)]


class NpAdam:
    """Numpy Adam direction (optax.scale_by_adam defaults): bias-corrected m / (sqrt(v) + eps)."""

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps, self.t, self.m, self.v = b1, b2, eps, 0, {}, {}

    def __call__(self, grads):
        self.t += 1
        out = {}
        for p, g in grads.items():
            self.m[p] = self.b1 * self.m.get(p, 0.0) + (1 - self.b1) * g
            self.v[p] = self.b2 * self.v.get(p, 0.0) + (1 - self.b2) * g * g
            mhat = self.m[p] / (1 - self.b1**self.t)
            vhat = self.v[p] / (1 - self.b2**self.t)
            out[p] = mhat / (np.sqrt(vhat) + self.eps)
        return out


def _np_direction(inner):
    return NpAdam() if inner == "adam" else (lambda g: g)


def _optax_inner(inner):
    return optax.scale_by_adam() if inner == "adam" else None


def _run_jax(tx, params_flat, grads_seq, *, x64=True):
    """Params after len(grads_seq) jitted steps of tx, as a float64 flat dict.

    With ``x64`` the whole run is in float64 (inside ``jax.enable_x64``, no global state leaks),
    so that the comparison with the float64 numpy references can be tight.
    """
    dtype = np.float64 if x64 else np.float32
    with jax.enable_x64(x64):
        params = _nest({p: jnp.asarray(v, dtype) for p, v in params_flat.items()})
        state = tx.init(params)
        update = jax.jit(tx.update)
        for grads in grads_seq:
            g = _nest({p: jnp.asarray(v, dtype) for p, v in grads.items()})
            updates, state = update(g, state, params)
            params = optax.apply_updates(params, updates)
        assert all(x.dtype == dtype for x in jax.tree.leaves(params))
        return _flat(params), state


def _layer_of(path):
    """(layer, role) from the reference's explicit layer list."""
    for layer in LAYERS:
        if path in (f"{layer}/kernel", f"{layer}/bias"):
            return layer, path.rsplit("/", 1)[1]
    return None, None


def _fan_in_axes(kernel):
    return tuple(range(kernel.ndim - 1))


def _np_weight_norm(params, grads_seq, base_lr, factor, inner):
    params = {p: v.astype(np.float64) for p, v in params.items()}
    direction = _np_direction(inner)
    for grads in grads_seq:
        d = direction({p: g.astype(np.float64) for p, g in grads.items()})
        lrs = {}
        for path, w in params.items():
            layer, _ = _layer_of(path)
            if layer is None:
                lrs[path] = base_lr * (1 + factor * np.abs(w))
            else:
                kernel = params[f"{layer}/kernel"]
                norm = np.sqrt((kernel**2).sum(axis=_fan_in_axes(kernel)))
                lrs[path] = base_lr * (1 + factor * norm)  # broadcasts over kernel[..., j], bias[j]
        params = {p: params[p] - lrs[p] * d[p] for p in params}
    return params


def _np_adagrad(params, grads_seq, base_lr, eps, granularity, inner):
    params = {p: v.astype(np.float64) for p, v in params.items()}
    direction = _np_direction(inner)
    acc = {}
    for grads in grads_seq:
        grads = {p: g.astype(np.float64) for p, g in grads.items()}
        d = direction(grads)
        for path, g in grads.items():
            layer, role = _layer_of(path)
            if granularity == "parameter" or layer is None:
                acc[path] = acc.get(path, 0.0) + g**2
            elif role == "kernel":
                acc[layer] = acc.get(layer, 0.0) + (g**2).mean(axis=_fan_in_axes(g))
        new = {}
        for path in params:
            layer, _ = _layer_of(path)
            key = path if granularity == "parameter" or layer is None else layer
            new[path] = params[path] - base_lr / (np.sqrt(acc[key]) + eps) * d[path]
        params = new
    return params


def _np_per_layer(params, grads_seq, lrs, default, inner):
    params = {p: v.astype(np.float64) for p, v in params.items()}
    direction = _np_direction(inner)

    def lr_of(path):
        keys = [k for k in lrs if path == k or path.startswith(k + "/")]
        return lrs[max(keys, key=len)] if keys else default

    for grads in grads_seq:
        d = direction({p: g.astype(np.float64) for p, g in grads.items()})
        params = {p: params[p] - lr_of(p) * d[p] for p in params}
    return params


def _assert_flat_close(actual, expected, rtol=1e-10, atol=1e-12):
    assert actual.keys() == expected.keys()
    for path in expected:
        np.testing.assert_allclose(actual[path], expected[path], rtol=rtol, atol=atol, err_msg=path)


# ------------------------------------------------------------------------------------------------
# Each rule against its numpy formula, several steps, SGD and Adam directions.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_per_layer_lr_matches_numpy(inner):
    lrs = {"conv": 0.1, "Dense_0": 0.05, "block": 0.02, "block/norm": 0.3, "Dense_1/bias": 0.07}
    params, grads = _random_flat(0), _grad_seq(1)
    tx = T.per_layer_lr(lrs, default=0.01, inner=_optax_inner(inner))
    actual, _ = _run_jax(tx, params, grads)
    _assert_flat_close(actual, _np_per_layer(params, grads, lrs, 0.01, inner))


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_weight_norm_lr_matches_numpy(inner):
    params, grads = _random_flat(2), _grad_seq(3)
    tx = T.weight_norm_lr(0.05, scaling_factor=0.3, inner=_optax_inner(inner))
    actual, _ = _run_jax(tx, params, grads)
    _assert_flat_close(actual, _np_weight_norm(params, grads, 0.05, 0.3, inner))


@pytest.mark.parametrize("granularity", ["parameter", "neuron"])
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_adagrad_lr_matches_numpy(granularity, inner):
    params, grads = _random_flat(4), _grad_seq(5)
    tx = T.adagrad_lr(0.1, eps=1e-3, granularity=granularity, inner=_optax_inner(inner))
    actual, state = _run_jax(tx, params, grads)
    _assert_flat_close(actual, _np_adagrad(params, grads, 0.1, 1e-3, granularity, inner))
    expected_keys = (
        set(FLAT)
        if granularity == "parameter"
        else {
            *LAYERS,
            "block/norm/scale",
            "extra/bias",
        }
    )
    assert set(state.sum_sq) == expected_keys
    assert int(state.rule_count) == STEPS and state.rule_count.dtype == jnp.int32


def test_neuron_accumulator_of_a_layer_with_no_gradient_history_is_per_output():
    # Closed form for one step: G_j = mean_i g_ij^2, lr_j = 1 / sqrt(G_j) on kernel[:, j], bias[j].
    g = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 4.0]], np.float32)
    grads = {"l": {"kernel": jnp.asarray(g), "bias": jnp.ones(3)}}
    tx = T.adagrad_lr(1.0, eps=0.0, granularity="neuron")
    updates, state = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_allclose(state.sum_sq["l"], [5.0, 4.0, 8.0])
    np.testing.assert_allclose(updates["l"]["bias"], -1 / np.sqrt([5.0, 4.0, 8.0]), rtol=1e-6)
    np.testing.assert_allclose(updates["l"]["kernel"], -g / np.sqrt([5.0, 4.0, 8.0]), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Equivalences with optax and PyTorch optimizers.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_per_layer_lr_with_equal_rates_is_the_plain_optimizer(name):
    params, grads = _random_flat(6), _grad_seq(7)
    lr = 0.03
    inner = optax.scale_by_adam() if name == "adam" else None
    lrs = {"conv": lr, "Dense_0": lr, "block": lr, "Dense_1": lr, "extra": lr}
    ours, _ = _run_jax(T.per_layer_lr(lrs, inner=inner), params, grads)
    plain, _ = _run_jax(getattr(optax, name)(lr), params, grads)
    _assert_flat_close(ours, plain, rtol=1e-6, atol=1e-7)


def _torch_mlp(seed, sizes):
    torch.manual_seed(seed)  # torch's generator is only used for this init; values are copied
    layers = [torch.nn.Linear(a, b).double() for a, b in itertools.pairwise(sizes)]
    return layers


def _jax_params_from(layers):
    return {
        f"Dense_{i}": {
            # copies: .numpy() aliases parameters that torch's optimizer updates in place
            "kernel": jnp.array(layer.weight.detach().numpy().T.copy()),
            "bias": jnp.array(layer.bias.detach().numpy().copy()),
        }
        for i, layer in enumerate(layers)
    }


def _jax_loss(params, x, y):
    h = x
    n = len(params)
    for i in range(n):
        h = h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]
        if i < n - 1:
            h = jax.nn.relu(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def _torch_loss(layers, x, y):
    h = x
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    return torch.nn.functional.cross_entropy(h, y)


def _compare_with_torch(tx, make_torch_opt, steps=8):
    """Trains SimpleNet (10-20-10-2) on random data with tx and a torch optimizer in float64."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 10)), rng.integers(0, 2, 32)
    layers = _torch_mlp(0, [10, 20, 10, 2])
    opt = make_torch_opt(layers)
    with jax.enable_x64(True):
        params = _jax_params_from(layers)
        state = tx.init(params)
        grad_fn = jax.jit(jax.grad(_jax_loss))
        update = jax.jit(tx.update)
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        for _ in range(steps):
            updates, state = update(grad_fn(params, xj, yj), state, params)
            params = optax.apply_updates(params, updates)
            opt.zero_grad()
            _torch_loss(layers, torch.from_numpy(x), torch.from_numpy(y)).backward()
            opt.step()
            for i, layer in enumerate(layers):
                np.testing.assert_allclose(
                    params[f"Dense_{i}"]["kernel"], layer.weight.detach().numpy().T, rtol=1e-10
                )
                np.testing.assert_allclose(
                    params[f"Dense_{i}"]["bias"], layer.bias.detach().numpy(), rtol=1e-10
                )
        assert params["Dense_0"]["kernel"].dtype == jnp.float64


def test_adagrad_lr_parameter_follows_torch_adagrad():
    lr, eps = 0.05, 1e-8
    _compare_with_torch(
        T.adagrad_lr(lr, eps=eps, granularity="parameter"),
        lambda layers: torch.optim.Adagrad(
            [p for layer in layers for p in layer.parameters()], lr=lr, eps=eps
        ),
    )


def test_per_layer_lr_adam_follows_torch_adam_parameter_groups():
    # the per-neuron lr examples' first three groups, scaled up to move visibly
    lrs = [1e-2, 5e-3, 2e-3]
    _compare_with_torch(
        T.per_layer_lr({f"Dense_{i}": lr for i, lr in enumerate(lrs)}, inner=optax.scale_by_adam()),
        lambda layers: torch.optim.Adam(
            [
                {"params": layer.parameters(), "lr": lr}
                for layer, lr in zip(layers, lrs, strict=True)
            ]
        ),
    )


# ------------------------------------------------------------------------------------------------
# reduce_lr_on_plateau against torch's ReduceLROnPlateau.
# ------------------------------------------------------------------------------------------------


def _torch_multipliers(values, **kwargs):
    """The lr used at each optimizer.step() in `step(); scheduler.step(v)`, from lr = 1.0."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", **kwargs)
    out = []
    for v in values:
        out.append(opt.param_groups[0]["lr"])
        sched.step(float(v))
    return np.array(out)


def _our_multipliers(values, **kwargs):
    """Multipliers applied at each update, from a lax.scan over the values (jit, one trace)."""
    tx = T.reduce_lr_on_plateau(**kwargs)
    ones = {"w": jnp.ones(())}

    def step(state, v):
        updates, state = tx.update(ones, state, ones, value=v)
        return state, updates["w"]

    _, out = jax.jit(lambda vs: jax.lax.scan(step, tx.init(ones), vs))(jnp.asarray(values))
    return np.asarray(out)


_RNG = np.random.default_rng(42)
_NOISY = (np.linspace(3, 1, 60) + 0.3 * _RNG.standard_normal(60)).astype(np.float32)
PLATEAU_CASES = {
    "random": (_RNG.uniform(0, 1, 80), {"patience": 3}),
    "flat": (np.ones(40), {"patience": 2}),
    "flat_default": (np.ones(40), {}),
    "negative": (-np.abs(_RNG.standard_normal(60)) - 1.0, {"patience": 2}),
    "negative_decreasing": (-np.arange(30.0), {"patience": 0}),
    "noisy": (_NOISY, {"patience": 4, "cooldown": 3}),
    "patience0": (_RNG.uniform(0, 1, 50), {"patience": 0}),
    "patience0_flat": (np.full(30, 2.0), {"patience": 0}),
    "cooldown": (np.ones(50), {"patience": 1, "cooldown": 4, "factor": 0.5}),
    "abs": (_RNG.uniform(0, 1, 60), {"patience": 2, "threshold": 0.05, "threshold_mode": "abs"}),
    "abs_boundary": (
        [1.0, 0.75, 0.5, 0.5, 0.25, 0.0, 0.0, 0.0, -0.5],
        {
            "patience": 0,
            "threshold": 0.25,
            "threshold_mode": "abs",
        },
    ),
    "rel_boundary": (
        [1.0, 0.5, 0.25, 0.25, 0.125, -1.0, -0.5, -0.75],
        {
            "patience": 0,
            "threshold": 0.5,
        },
    ),
    "min_lr": (np.ones(40), {"patience": 0, "factor": 0.5, "min_lr": 0.1}),
    "eps_never": (np.ones(20), {"patience": 0, "factor": 0.6, "eps": 0.5}),
    "eps_stops": (np.ones(20), {"patience": 0, "factor": 0.5, "eps": 0.2}),
    "eps_default_tiny": (np.ones(30), {"patience": 0, "factor": 0.1}),
    "nan_inf": ([1.0, np.nan, 0.5, np.inf, np.nan, 0.4, 0.4, -np.inf, 0.0], {"patience": 1}),
    "big_threshold": (_RNG.uniform(0, 1, 30), {"patience": 1, "threshold": 1.0}),
}


@pytest.mark.parametrize("case", sorted(PLATEAU_CASES))
def test_plateau_matches_torch_exactly_in_float64(case):
    values, kwargs = PLATEAU_CASES[case]
    values = np.asarray(values, np.float64)
    with jax.enable_x64(True):
        ours = _our_multipliers(values, **kwargs)
    np.testing.assert_array_equal(ours, _torch_multipliers(values, **kwargs))


@pytest.mark.parametrize("case", ["random", "noisy", "negative", "cooldown", "min_lr", "abs"])
def test_plateau_matches_torch_in_float32(case):
    values, kwargs = PLATEAU_CASES[case]
    values = np.asarray(values, np.float32)  # torch sees the same float32 values, in float64
    ours = _our_multipliers(values, **kwargs)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, _torch_multipliers(values, **kwargs), rtol=1e-6)


def test_plateau_actually_reduces_in_the_cases_that_should():
    for case in ("flat", "cooldown", "min_lr", "eps_stops", "patience0_flat", "noisy"):
        values, kwargs = PLATEAU_CASES[case]
        assert _torch_multipliers(values, **kwargs)[-1] < 1.0, case
    flat = _torch_multipliers(np.ones(8), patience=2)
    np.testing.assert_allclose(flat, [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01])  # quoted in the docstring
    np.testing.assert_allclose(
        _torch_multipliers(np.ones(6), patience=0, factor=0.5, eps=0.2)[-1], 0.25
    )


def test_plateau_docstring_claims_about_optax_contrib():
    def contrib(values, **kwargs):
        tx = optax.contrib.reduce_on_plateau(**kwargs)

        def step(state, v):
            u, state = tx.update(jnp.ones(()), state, value=v)
            return state, u

        return np.asarray(jax.lax.scan(step, tx.init(jnp.zeros(())), jnp.asarray(values))[1])

    flat = np.ones(8)
    contrib_flat = [1, 1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3]
    np.testing.assert_allclose(contrib(flat, patience=2), contrib_flat, rtol=1e-5)
    np.testing.assert_allclose(
        _our_multipliers(flat, patience=2), [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01]
    )
    # patience=0: optax.contrib reduces at each improvement, never on a plateau; torch the opposite.
    np.testing.assert_allclose(contrib(flat, patience=0), np.full(8, 0.1), rtol=1e-6)
    decreasing = np.arange(8.0, 0.0, -1.0)
    np.testing.assert_allclose(contrib(decreasing, patience=0), 0.1 ** np.arange(1, 9), rtol=1e-5)
    np.testing.assert_allclose(_our_multipliers(decreasing, patience=0), np.ones(8))
    np.testing.assert_allclose(
        _our_multipliers(flat, patience=0), [1, 1, *(0.1 ** np.arange(1, 7))], rtol=1e-5
    )
    # min_scale is re-applied at every evaluation (it can raise the scale); min_lr never raises.
    np.testing.assert_allclose(contrib(flat, patience=1, min_scale=2.0), np.full(8, 2.0))
    np.testing.assert_allclose(_our_multipliers(flat, patience=1, min_lr=2.0), np.ones(8))


def test_plateau_requires_value_and_validates():
    tx = T.reduce_lr_on_plateau()
    state = tx.init({"w": jnp.zeros(())})
    with pytest.raises(ValueError, match="value=loss"):
        tx.update({"w": jnp.ones(())}, state)
    with pytest.raises(ValueError, match="factor"):
        T.reduce_lr_on_plateau(factor=1.0)
    with pytest.raises(ValueError, match="threshold_mode"):
        T.reduce_lr_on_plateau(threshold_mode="max")


@pytest.mark.parametrize("where", ["after", "inside"])
def test_plateau_composes_with_other_rules(where):
    """chain(rule, plateau) and rule(inner=chain(adam, plateau)) scale the rule by torch's lr."""
    params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    grads = jax.tree.map(lambda p: 2.0 * p, params)
    plateau = T.reduce_lr_on_plateau(patience=0)
    if where == "after":
        rule = T.per_layer_lr({"Dense_0": 0.1}, inner=optax.scale_by_adam())
        tx = optax.chain(rule, plateau)
    else:
        rule = T.adagrad_lr(0.1, inner=optax.scale_by_adam())
        tx = T.adagrad_lr(0.1, inner=optax.chain(optax.scale_by_adam(), plateau))
    state, rule_state, ratios = tx.init(params), rule.init(params), []
    for _ in range(4):
        updates, state = tx.update(grads, state, params, value=1.0)
        unscaled, rule_state = rule.update(grads, rule_state, params)
        ratios.append(float(updates["Dense_0"]["bias"][0] / unscaled["Dense_0"]["bias"][0]))
    np.testing.assert_allclose(ratios, _torch_multipliers(np.ones(4), patience=0), rtol=1e-6)


def test_plateau_vmaps_over_factor():
    values = jnp.ones(6)
    ones = {"w": jnp.ones(())}

    def multipliers(factor):
        tx = T.reduce_lr_on_plateau(factor=factor, patience=0)

        def step(state, v):
            u, state = tx.update(ones, state, value=v)
            return state, u["w"]

        return jax.lax.scan(step, tx.init(ones), values)[1]

    out = jax.jit(jax.vmap(multipliers))(jnp.array([0.5, 0.1]))
    np.testing.assert_allclose(out[0], _torch_multipliers(np.ones(6), patience=0, factor=0.5))
    np.testing.assert_allclose(out[1], _torch_multipliers(np.ones(6), patience=0), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Errors, params-tree flavours, schedules.
# ------------------------------------------------------------------------------------------------


def test_per_layer_lr_unmatched_paths_error_says_how_to_fix():
    params = _nest({p: jnp.zeros(s) for p, s in FLAT.items()})
    tx = T.per_layer_lr({"conv": 0.1, "Dense_0": 0.1})
    with pytest.raises(ValueError) as err:
        tx.init(params)
    msg = str(err.value)
    for path in ("block/Dense_0/kernel", "block/norm/scale", "Dense_1/bias", "extra/bias"):
        assert path in msg
    assert "conv/kernel" not in msg
    assert "default=" in msg and "Dense_0" in msg
    state = T.PerLayerLRState(jnp.zeros([], jnp.int32), {}, optax.EmptyState())
    with pytest.raises(ValueError, match="block/norm/scale"):
        tx.update(params, state, params)


def test_per_layer_lr_matches_whole_path_components_and_rejects_unknown_keys():
    params = {"Dense_1": {"kernel": jnp.ones(2)}, "Dense_10": {"kernel": jnp.ones(2)}}
    tx = T.per_layer_lr({"Dense_1": 1.0}, default=0.5)
    updates, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_allclose(updates["Dense_1"]["kernel"], [-1.0, -1.0])
    np.testing.assert_allclose(updates["Dense_10"]["kernel"], [-0.5, -0.5])
    with pytest.raises(ValueError, match=r"\['Dense_2'\] of lrs match no parameter"):
        T.per_layer_lr({"Dense_2": 1.0}, default=0.5).init(params)


def test_weight_norm_lr_needs_params_and_checks_bias_shape():
    params = {"l": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    tx = T.weight_norm_lr(0.1)
    with pytest.raises(ValueError, match="update\\(updates, state, params\\)"):
        tx.update(params, tx.init(params))
    bad = {"l": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(2)}}
    with pytest.raises(ValueError, match=r"kernel.*\(2, 3\).*bias.*\(2,\).*neurons="):
        tx.init(bad)
    with pytest.raises(ValueError, match="granularity"):
        T.adagrad_lr(0.1, granularity="row")


def test_rules_work_on_nnx_state_like_on_plain_dicts():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.Dense_0 = nnx.Linear(4, 5, rngs=rngs)
            self.Dense_1 = nnx.Linear(5, 3, rngs=rngs)

    state = nnx.state(Net(nnx.Rngs(0)), nnx.Param)
    plain = jax.tree.map(lambda x: x, nnx.to_pure_dict(state))
    grads_plain = jax.tree.map(lambda x: jnp.cos(3.0 * x), plain)
    grads_state = jax.tree.map(lambda x: jnp.cos(3.0 * x), state)
    for tx in (
        T.weight_norm_lr(0.1, scaling_factor=0.5, inner=optax.scale_by_adam()),
        T.adagrad_lr(0.1, granularity="neuron"),
        T.per_layer_lr({"Dense_0": 0.1, "Dense_1/bias": 0.2}, default=0.3),
    ):
        update = jax.jit(tx.update)
        u_plain, _ = update(grads_plain, tx.init(plain), plain)
        u_state, s_state = update(grads_state, tx.init(state), state)
        chex.assert_trees_all_close(nnx.to_pure_dict(u_state), u_plain, rtol=1e-6)
        if isinstance(s_state, T.AdagradLRState):
            assert set(s_state.sum_sq) == {"Dense_0", "Dense_1"}


def test_schedules_get_the_step_count():
    params = {"a": {"kernel": jnp.ones(3)}, "b": {"kernel": jnp.ones(3)}}
    sched = optax.linear_schedule(1.0, 0.0, transition_steps=4)
    tx = T.per_layer_lr({"a": sched, "b": 0.5})
    state, seen = tx.init(params), []
    for _ in range(5):
        u, state = tx.update(params, state, params)
        seen.append((-float(u["a"]["kernel"][0]), -float(u["b"]["kernel"][0])))
    np.testing.assert_allclose(seen, [(1.0, 0.5), (0.75, 0.5), (0.5, 0.5), (0.25, 0.5), (0, 0.5)])
    wn = T.weight_norm_lr(sched, scaling_factor=0.0)
    ag = T.adagrad_lr(sched, eps=0.0)
    for tx in (wn, ag):
        state = tx.init(params)
        for t in range(3):
            u, state = tx.update(params, state, params)
            expected = 1.0 - 0.25 * t
            if tx is ag:
                expected /= math.sqrt(t + 1)  # G = (t + 1) * 1^2
            np.testing.assert_allclose(u["a"]["kernel"], -expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Under jit, vmap and lax.scan.
# ------------------------------------------------------------------------------------------------

RULES = {
    "per_layer": lambda lr: T.per_layer_lr({"Dense_0": lr, "conv": 2 * lr}, default=lr / 2),
    "weight_norm": lambda lr: T.weight_norm_lr(lr, inner=optax.scale_by_adam()),
    "adagrad_param": lambda lr: T.adagrad_lr(lr),
    "adagrad_neuron": lambda lr: T.adagrad_lr(
        lr, granularity="neuron", inner=optax.scale_by_adam()
    ),
}


def _scan_train(tx, params, grads_seq):
    """Final params after one update per stacked gradient, inside lax.scan."""

    def step(carry, grads):
        params, state = carry
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    return jax.lax.scan(step, (params, tx.init(params)), grads_seq)[0][0]


def _stacked_grads(seed):
    seq = _grad_seq(seed)
    return _nest({p: jnp.stack([jnp.asarray(g[p]) for g in seq]) for p in FLAT})


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(r, marks=[pytest.mark.slow] if r == "adagrad_neuron" else [])
        for r in sorted(RULES)
    ],
)
def test_vmap_over_base_lr_equals_separate_runs(rule):
    params = _nest({p: jnp.asarray(v) for p, v in _random_flat(8).items()})
    grads = _stacked_grads(9)
    lrs = jnp.array([0.01, 0.3])
    batched = jax.jit(jax.vmap(lambda lr: _scan_train(RULES[rule](lr), params, grads)))(lrs)
    for i, lr in enumerate([0.01, 0.3]):
        single = _scan_train(RULES[rule](lr), params, grads)  # Python float lr, eager scan
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("rule", sorted(RULES))
def test_scan_equals_python_loop(rule):
    params_flat, grads = _random_flat(10), _grad_seq(11)
    loop, _ = _run_jax(RULES[rule](0.05), params_flat, grads, x64=False)
    params = _nest({p: jnp.asarray(v) for p, v in params_flat.items()})
    scanned = _scan_train(RULES[rule](0.05), params, _stacked_grads(11))
    _assert_flat_close(_flat(scanned), loop, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rule", [*sorted(RULES), "plateau"])
def test_jit_does_not_recompile_and_state_is_stable(rule):
    params = _nest({p: jnp.asarray(v) for p, v in _random_flat(12).items()})
    if rule == "plateau":
        tx = optax.chain(T.adagrad_lr(0.1), T.reduce_lr_on_plateau(patience=0))
    else:
        tx = RULES[rule](0.1)
    traces = []

    def step(params, state, lr_scale):
        traces.append(None)
        updates, state = tx.update(params, state, params, value=jnp.sum(params["extra"]["bias"]))
        return optax.apply_updates(params, jax.tree.map(lambda u: lr_scale * u, updates)), state

    jitted = jax.jit(step)
    state0 = tx.init(params)
    p1, s1 = jitted(params, state0, 1.0)
    _, s2 = jitted(p1, s1, 0.5)
    assert len(traces) == 1 and jitted._cache_size() == 1
    shapes = [jax.tree.map(lambda x: (x.shape, x.dtype), s) for s in (state0, s1, s2)]
    assert shapes[0] == shapes[1] == shapes[2]
    counts = [x for x in jax.tree.leaves(s2) if x.dtype == jnp.int32]
    assert counts, "each state keeps an int32 counter"


def test_bfloat16_params_keep_their_dtype():
    params = {"l": {"kernel": jnp.ones((3, 2), jnp.bfloat16), "bias": jnp.ones(2, jnp.bfloat16)}}
    rules = [
        T.per_layer_lr({"l": 0.1}, inner=optax.scale_by_adam()),
        T.weight_norm_lr(jnp.float32(0.1)),
        T.adagrad_lr(0.1, granularity="neuron"),
        optax.chain(T.adagrad_lr(0.1), T.reduce_lr_on_plateau()),
    ]
    for tx in rules:
        state = tx.init(params)
        updates, new_state = tx.update(params, state, params, value=1.0)
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
        assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)


def test_doctests_pass():
    result = doctest.testmod(T, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
