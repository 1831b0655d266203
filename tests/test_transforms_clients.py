"""The transforms inside other people's code: Haiku trees, optax wrappers, ambiguous layouts.

Expected values come from numpy, from explicit hand-written lists of each weight's fan-in axes
and each bias's weight, or from the same optax pipeline called directly; never from jaxlr's own
layout code.
"""

from __future__ import annotations

import doctest
import functools
import itertools
import re

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jaxlr
import jaxlr.transforms as T
from jaxlr.neurons import NeuronLayout, neuron_axes

# ------------------------------------------------------------------------------------------------
# Haiku: a real hk model, its b sharing its w's per-neuron rates.
# ------------------------------------------------------------------------------------------------


def _haiku_net(x):
    h = jax.nn.relu(hk.Conv2D(3, 3)(x))
    h = hk.Flatten()(hk.LayerNorm(-1, create_scale=True, create_offset=True)(h))
    h = hk.layer_stack(2)(lambda z: jax.nn.tanh(hk.Linear(48)(z)))(h)
    return hk.nets.MLP([8, 3])(h)


# The reference's own reading of the model above: each w's fan-in axes, each b's w.
HAIKU_FAN_IN = {
    "conv2_d/w": (0, 1, 2),  # (3, 3, in, out): one neuron per output channel
    "__layer_stack_no_per_layer/linear/w": (1,),  # (L, in, out): one per (layer, out)
    "mlp/~/linear_0/w": (0,),  # (in, out)
    "mlp/~/linear_1/w": (0,),
}
HAIKU_BIAS = {p[:-1] + "b": p for p in HAIKU_FAN_IN}  # layer_norm's scale/offset: per element


@functools.cache
def _haiku_problem():
    """The transformed model, its params, data and a jitted ``params -> grads``."""
    f = hk.without_apply_rng(hk.transform(_haiku_net))
    x = jax.random.normal(jax.random.key(0), (16, 4, 4, 2))
    y = jax.random.normal(jax.random.key(1), (16, 3))
    params = f.init(jax.random.key(2), x)
    grad = jax.jit(jax.grad(lambda p: jnp.mean((f.apply(p, x) - y) ** 2)))
    return params, grad


def _flat(tree):
    return {
        "/".join(str(k.key) for k in p): np.asarray(v, np.float64)
        for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def _np_onto(per, path, shape):
    """Per-neuron values laid onto a weight, its bias, or (per element) a leaf of its own."""
    if path in HAIKU_FAN_IN:
        return np.broadcast_to(np.expand_dims(per[path], HAIKU_FAN_IN[path]), shape)
    if path in HAIKU_BIAS:
        return per[HAIKU_BIAS[path]].reshape(shape)
    return per[path]


def _np_weight_norm(p, lr, s):
    per = {
        k: lr * (1 + s * np.sqrt(np.sum(w**2, axis=HAIKU_FAN_IN.get(k, ()))))
        for k, w in p.items()
        if k not in HAIKU_BIAS
    }
    return {k: _np_onto(per, k, w.shape) for k, w in p.items()}


def _haiku_run(tx, steps=2):
    """jaxlr's params after each step with the model's own gradients, and the final state."""
    params, grad = _haiku_problem()
    state, history = tx.init(params), [params]
    step = jax.jit(lambda p, s, g: tx.update(g, s, p))
    for _ in range(steps):
        g = grad(history[-1])
        updates, state = step(history[-1], state, g)
        history.append(optax.apply_updates(history[-1], updates))
    return history, state


@pytest.mark.parametrize("neurons", ["haiku", pytest.param("callable", marks=pytest.mark.slow)])
def test_haiku_weight_norm_matches_numpy_with_b_sharing_its_neuron_rate(neurons):
    lr, s = 0.05, 0.3
    if neurons == "callable":  # no layer stack for a per-leaf callable: drop its axis by hand
        fn = lambda path, leaf: (
            ((0, 2) if path[0].startswith("__layer") else (leaf.ndim - 1,))
            if path[-1] == "w"
            else ("bias" if path[-1] == "b" else None)
        )
        tx = T.weight_norm_lr(lr, scaling_factor=s, neurons=fn)
    else:
        tx = T.weight_norm_lr(lr, scaling_factor=s, neurons="haiku")
    history, state = _haiku_run(tx)
    _, grad = _haiku_problem()
    for before, after in itertools.pairwise(history):
        p, g = _flat(before), _flat(grad(before))
        rates = _np_weight_norm(p, lr, s)
        for k in p:
            np.testing.assert_allclose(
                _flat(after)[k], p[k] - rates[k] * g[k], rtol=2e-5, atol=1e-7, err_msg=k
            )
    rates = _flat(jaxlr.learning_rates(state, history[-1]))
    expected = _np_weight_norm(_flat(history[-1]), lr, s)
    for k in rates:
        np.testing.assert_allclose(rates[k], expected[k], rtol=1e-5, err_msg=k)
    b = rates["mlp/~/linear_0/b"]
    np.testing.assert_array_equal(rates["mlp/~/linear_0/w"], np.broadcast_to(b, (48, 8)))


def test_haiku_adagrad_neuron_matches_numpy():
    lr, eps = 0.1, 1e-3
    tx = T.adagrad_lr(lr, eps=eps, granularity="neuron", neurons="haiku")
    history, state = _haiku_run(tx)
    _, grad = _haiku_problem()
    acc = {}
    for before, after in itertools.pairwise(history):
        p, g = _flat(before), _flat(grad(before))
        for k in p:
            if k not in HAIKU_BIAS:
                acc[k] = acc.get(k, 0.0) + np.mean(g[k] ** 2, axis=HAIKU_FAN_IN.get(k, ()))
        per = {k: lr / (np.sqrt(v) + eps) for k, v in acc.items()}
        for k in p:
            expected = p[k] - _np_onto(per, k, p[k].shape) * g[k]
            np.testing.assert_allclose(_flat(after)[k], expected, rtol=2e-5, atol=1e-7, err_msg=k)
    assert sorted(state.sum_sq) == sorted(
        [k.rsplit("/", 1)[0] for k in HAIKU_FAN_IN] + ["layer_norm/offset", "layer_norm/scale"]
    )


def test_haiku_reading_is_what_the_module_docs_say():
    params, _ = _haiku_problem()
    axes = neuron_axes(params, "haiku")
    expected = {
        k: tuple(i for i in range(len(_flat(params)[k].shape)) if i not in v)
        for k, v in HAIKU_FAN_IN.items()
    }
    assert axes == {**expected, **{b: "bias" for b in HAIKU_BIAS}}
    bn = {
        "batch_norm": {"scale": jnp.ones((1, 1, 1, 4)), "offset": jnp.ones((1, 1, 1, 4))},
        "linear": {"w": jnp.ones((4, 2)), "b": jnp.ones(2)},
        "conv_nchw": {"w": jnp.ones((3, 3, 2, 5)), "b": jnp.ones((5, 1, 1))},
    }
    assert neuron_axes(bn, "haiku") == {
        "linear/w": (1,),
        "linear/b": "bias",
        "conv_nchw/w": (3,),
        "conv_nchw/b": "bias",
    }


# ------------------------------------------------------------------------------------------------
# per_layer_lr: keys that contain '/' (Haiku's module names).
# ------------------------------------------------------------------------------------------------


def test_per_layer_lr_addresses_haiku_module_names():
    params, grad = _haiku_problem()
    lrs = {"mlp/~/linear_0": 0.1, "mlp/~/linear_1/w": 0.2, "conv2_d": 0.3}
    tx = T.per_layer_lr(lrs, default=0.01)
    g = grad(params)
    updates, state = tx.update(g, tx.init(params), params)
    expected_lr = {
        "mlp/~/linear_0/w": 0.1,
        "mlp/~/linear_0/b": 0.1,
        "mlp/~/linear_1/w": 0.2,
        "mlp/~/linear_1/b": 0.01,
        "conv2_d/w": 0.3,
        "conv2_d/b": 0.3,
    }
    flat_g, flat_u = _flat(g), _flat(updates)
    for k in flat_g:
        np.testing.assert_allclose(flat_u[k], -expected_lr.get(k, 0.01) * flat_g[k], rtol=1e-6)
    rates = _flat(jaxlr.learning_rates(state, params))
    for k in flat_g:
        np.testing.assert_allclose(rates[k], expected_lr.get(k, 0.01), rtol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match=r"\['mlp/~/linear_2'\] of lrs match no parameter"):
        T.per_layer_lr({"mlp/~/linear_2": 0.1}, default=0.1).init(params)


# ------------------------------------------------------------------------------------------------
# TrainState.apply_gradients with a tx that is not GradientTransformationExtraArgs.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["multisteps", "gradient_transformation"])
def test_train_state_passes_value_through_optax_multisteps(form):
    inner = optax.chain(optax.sgd(0.5), T.reduce_lr_on_plateau(factor=0.5, patience=0))
    multi = optax.MultiSteps(inner, every_k_schedule=2)
    tx = multi if form == "multisteps" else multi.gradient_transformation()
    params = {"w": jnp.ones(2)}
    ts = jaxlr.TrainState.create(apply_fn=None, params=params, tx=tx)
    state, update = multi.init(params), jax.jit(multi.update)
    apply = jax.jit(lambda ts, g, value: ts.apply_gradients(grads=g, value=value))
    for t, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]):
        g = {"w": jnp.full(2, 1.0 + t)}
        ts = apply(ts, g, loss)
        updates, state = update(g, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(ts.params["w"], params["w"], rtol=1e-6)
    # 3 inner steps of flat losses, mean gradients 1.5, 3.5, 5.5: w = 1 - .5 (1.5 + 3.5 + .5 5.5)
    np.testing.assert_allclose(ts.params["w"], 1 - 0.5 * (1.5 + 3.5 + 0.5 * 5.5), rtol=1e-6)


def test_train_state_refuses_an_extra_argument_tx_update_cannot_take():
    plain = optax.GradientTransformation(lambda p: optax.EmptyState(), lambda u, s, p=None: (u, s))
    ts = jaxlr.TrainState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=plain)
    with pytest.raises(TypeError, match=r"value.*tx\.update"):
        ts.apply_gradients(grads={"w": jnp.ones(2)}, value=1.0)
    ts.apply_gradients(grads={"w": jnp.ones(2)})  # without one it is fine


# ------------------------------------------------------------------------------------------------
# learning_rates under optax.masked and optax.multi_transform.
# ------------------------------------------------------------------------------------------------

D = {
    "D": {"kernel": np.arange(6.0).reshape(3, 2) - 2, "bias": np.ones(2)},
    "E": {"kernel": np.full((2, 2), 0.5), "bias": np.zeros(2)},
    "s": np.ones(3),
}


def test_learning_rates_under_masked_covers_the_masked_leaves_only():
    params = jax.tree.map(jnp.asarray, D)
    mask = {"D": {"kernel": True, "bias": True}, "E": {"kernel": False, "bias": False}, "s": True}
    tx = optax.masked(T.weight_norm_lr(0.1, scaling_factor=0.5), mask)
    state = tx.init(params)
    rates = jaxlr.learning_rates(state, params)
    norms = np.sqrt((D["D"]["kernel"] ** 2).sum(axis=0))  # per output column
    np.testing.assert_allclose(rates["D"]["bias"], 0.1 * (1 + 0.5 * norms), rtol=1e-6)
    np.testing.assert_allclose(
        rates["D"]["kernel"], np.broadcast_to(0.1 * (1 + 0.5 * norms), (3, 2)), rtol=1e-6
    )
    np.testing.assert_allclose(rates["s"], 0.1 * 1.5, rtol=1e-6)
    assert rates["E"]["kernel"] is None and rates["E"]["bias"] is None


def test_learning_rates_inside_multi_transform_reads_each_groups_rule():
    params = jax.tree.map(jnp.asarray, D)
    labels = {"D": "neuron", "E": "layer", "s": "sgd"}
    tx = optax.multi_transform(
        {
            "neuron": optax.chain(
                T.adagrad_lr(0.2, eps=1e-3, granularity="neuron"),
                T.reduce_lr_on_plateau(patience=0),
            ),
            "layer": T.per_layer_lr({"E/kernel": 0.3}, default=0.05),
            "sgd": optax.sgd(0.4),
        },
        labels,
    )
    state = tx.init(params)
    g = jax.tree.map(lambda x: jnp.full(x.shape, 2.0), params)
    for _ in range(2):  # flat losses: the plateau scales only its own group, by .1 after the 2nd
        _, state = tx.update(g, state, params, value=1.0)
    rates = jaxlr.learning_rates(state, params)
    acc = 2 * np.mean(np.full((3, 2), 4.0), axis=0)  # two steps of mean squares per column
    np.testing.assert_allclose(rates["D"]["bias"], 0.1 * 0.2 / (np.sqrt(acc) + 1e-3), rtol=1e-6)
    np.testing.assert_allclose(rates["E"]["kernel"], np.full((2, 2), 0.3), rtol=1e-6)
    np.testing.assert_allclose(rates["E"]["bias"], np.full(2, 0.05), rtol=1e-6)
    assert rates["s"] is None  # optax.sgd is not a jaxlr rule


def test_learning_rates_still_refuses_two_rules_for_one_leaf():
    params = {"l": {"kernel": jnp.ones((2, 2))}}
    two = optax.chain(T.adagrad_lr(0.1), T.weight_norm_lr(0.1))
    with pytest.raises(ValueError, match=r"2 jaxlr rule states.*'l/kernel'"):
        jaxlr.learning_rates(two.init(params), params)


# ------------------------------------------------------------------------------------------------
# Ambiguous layouts raise; NeuronLayout resolves them.
# ------------------------------------------------------------------------------------------------


def _eqx_stack():
    """eqx.filter_vmap over Linear(use_bias=False): weight (L, out, in) = (3, 5, 4)."""
    make = eqx.filter_vmap(lambda k: eqx.nn.Linear(4, 5, use_bias=False, key=k))
    return make(jax.random.split(jax.random.key(0), 3))


def _linen_stack():
    """nn.scan over Dense(use_bias=False): kernel (L, in, out) = (3, 4, 4)."""

    class Block(nn.Module):
        @nn.compact
        def __call__(self, c, _):
            return nn.tanh(nn.Dense(4, use_bias=False)(c)), None

    scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
    return jax.jit(scan().init)(jax.random.key(0), jnp.ones((2, 4)), None)["params"]


def test_bias_free_stacks_raise_and_name_the_fix():
    model = _eqx_stack()
    assert model.weight.shape == (3, 5, 4)
    params = eqx.filter(model, eqx.is_array)
    for tx in (
        T.weight_norm_lr(0.1, neurons="torch"),
        T.adagrad_lr(0.1, granularity="neuron", neurons="torch"),
    ):
        with pytest.raises(ValueError) as err:
            tx.init(params)
        msg = str(err.value)
        for part in (
            "'weight'",
            r"\(3, 5, 4\)",
            "ambiguous",
            "conv=True",
            re.escape("NeuronLayout('torch', axes={'weight': (0, 1)})"),
        ):
            assert re.search(part, msg), (part, msg)
    linen = _linen_stack()
    assert linen["Dense_0"]["kernel"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match=re.escape("axes={'Dense_0/kernel': (0, 2)}")):
        T.weight_norm_lr(0.1).init(linen)


@pytest.mark.parametrize("which", ["equinox", "linen"])
def test_neuron_layout_axes_give_one_rate_per_row_of_a_stack(which):
    lr, s = 0.1, 0.5
    if which == "equinox":
        params = eqx.filter(_eqx_stack(), eqx.is_array)
        neurons, fan_in = NeuronLayout("torch", axes={"weight": (0, 1)}), 2
        w = np.asarray(params.weight, np.float64)
    else:
        params = _linen_stack()
        neurons, fan_in = NeuronLayout("flax", axes={"Dense_0/kernel": (0, 2)}), 1
        w = np.asarray(params["Dense_0"]["kernel"], np.float64)
    tx = T.weight_norm_lr(lr, scaling_factor=s, neurons=neurons)
    rates = jax.tree.leaves(jaxlr.learning_rates(tx.init(params), params))[0]
    expected = lr * (1 + s * np.sqrt((w**2).sum(axis=fan_in, keepdims=True)))
    np.testing.assert_allclose(rates, np.broadcast_to(expected, w.shape), rtol=1e-6)
    assert len(np.unique(np.asarray(rates))) == w.shape[0] * w.shape[3 - fan_in]


def test_bias_free_conv_needs_conv_true():
    params = {"Conv_0": {"kernel": jnp.ones((3, 3, 2, 4))}, "BatchNorm_0": {"scale": jnp.ones(4)}}
    with pytest.raises(ValueError, match=r"Conv_0/kernel.*ambiguous.*conv=True"):
        T.adagrad_lr(0.1, granularity="neuron").init(params)
    assert neuron_axes(params, NeuronLayout("flax", conv=True)) == {"Conv_0/kernel": (3,)}
    torch = {"conv": {"weight": jnp.ones((4, 2, 3, 3))}}
    assert neuron_axes(torch, NeuronLayout("torch", conv=True)) == {"conv/weight": (0,)}
    with pytest.raises(ValueError, match=r"\['nope'\] name no float leaf"):
        neuron_axes(params, NeuronLayout("flax", conv=True, axes={"nope": (0,)}))


# ------------------------------------------------------------------------------------------------
# inner=, and what learning_rates returns under AdaGrad and inject_hyperparams.
# ------------------------------------------------------------------------------------------------

P = {"l": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}


@pytest.mark.parametrize("rule", ["per_layer", "weight_norm", "adagrad"])
def test_inner_that_is_not_a_transformation_or_that_ascends_is_refused(rule):
    make = {
        "per_layer": lambda inner: T.per_layer_lr({"l": 0.1}, inner=inner),
        "weight_norm": lambda inner: T.weight_norm_lr(0.1, inner=inner),
        "adagrad": lambda inner: T.adagrad_lr(0.1, inner=inner),
    }[rule]
    with pytest.raises(TypeError, match=re.escape("inner=optax.scale_by_adam()")):
        make(optax.scale_by_adam)
    for full in (optax.sgd(1.0), optax.adam(1e-3)):
        with pytest.raises(ValueError, match=r"reverses the sign.*scale_by_adam\(\)"):
            make(full).init(P)
    make(optax.scale_by_adam()).init(P)  # a direction is fine ...
    jax.jit(make(optax.scale_by_adam()).init)(P)  # ... also when init is traced


def test_adagrad_learning_rates_are_the_rate_before_the_next_gradient():
    tx = T.adagrad_lr(0.1)
    state = tx.init(P)
    np.testing.assert_allclose(jaxlr.learning_rates(state, P)["l"]["bias"], 0.1 / 1e-8)
    g = {"l": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full(2, 2.0)}}
    u, state = tx.update(g, state, P)
    rate = jaxlr.learning_rates(state, P)["l"]["bias"]
    np.testing.assert_allclose(rate, -u["l"]["bias"] / 2.0, rtol=1e-6)  # the last update's rate
    np.testing.assert_allclose(rate, 0.1 / (2.0 + 1e-8), rtol=1e-6)


def test_inject_hyperparams_schedule_is_one_step_behind_and_layouts_pass_through():
    sched = optax.linear_schedule(1.0, 0.0, transition_steps=4)
    tx = optax.inject_hyperparams(T.weight_norm_lr)(base_lr=sched, scaling_factor=0.0)
    state = tx.init(P)
    for _ in range(2):
        _, state = tx.update(P, state, P)
    # the state holds the value its last update used (step 1: 0.75), not the next (step 2: 0.5)
    np.testing.assert_allclose(jaxlr.learning_rates(state, P)["l"]["bias"], 0.75)
    haiku = {"linear": {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}}
    layout = NeuronLayout("haiku")
    tx = optax.inject_hyperparams(T.weight_norm_lr)(base_lr=0.1, neurons=layout)
    np.testing.assert_allclose(
        jaxlr.learning_rates(tx.init(haiku), haiku)["linear"]["b"],
        0.1 * (1 + 0.01 * np.sqrt(3)),
        rtol=1e-6,
    )
    fn = lambda path, leaf: (1,) if path[-1] == "w" else ("bias" if path[-1] == "b" else None)
    with pytest.raises(TypeError):  # a callable is taken for a schedule ...
        optax.inject_hyperparams(T.weight_norm_lr)(base_lr=0.1, neurons=fn).init(haiku)
    inject = optax.inject_hyperparams(T.weight_norm_lr, static_args=("neurons",))
    state = inject(base_lr=0.1, neurons=fn).init(haiku)  # ... unless it is static
    np.testing.assert_allclose(
        jaxlr.learning_rates(state, haiku)["linear"]["b"], 0.1 * (1 + 0.01 * np.sqrt(3)), rtol=1e-6
    )


def test_neurons_doctests_pass():
    import jaxlr.neurons

    result = doctest.testmod(jaxlr.neurons, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
