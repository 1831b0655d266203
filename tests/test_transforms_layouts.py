"""Per-neuron rules on third-party layouts, learning_rates, tree_get and TrainState.

Every expected value is computed with numpy from an explicit list of each weight's fan-in axes
(written by hand per case below), not from jaxlr's own layout code.
"""

from __future__ import annotations

import functools
import re

import chex
import equinox as eqx
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from flax.training import train_state

import jaxlr
import jaxlr.transforms as T
from jaxlr.neurons import NeuronLayout

# ------------------------------------------------------------------------------------------------
# Layout cases: flat shapes, the neurons= argument, and the reference's own answer: each weight's
# fan-in axes (reduced to one value per neuron) and each bias's weight. Other leaves: per element.
# ------------------------------------------------------------------------------------------------


def _embedding_rows(path, leaf):
    """A user's neurons= function: embedding rows are neurons, Flax kernels as usual."""
    if path[-1] == "embedding":
        return (0,)
    return (leaf.ndim - 1,) if path[-1] == "kernel" else None


def _attention(stack=(), bias=True, d_in=6, heads=2, dim=3, d_out=5):
    shapes = {}
    for name in ("query", "key", "value"):
        shapes[f"attn/{name}/kernel"] = (*stack, d_in, heads, dim)
        if bias:
            shapes[f"attn/{name}/bias"] = (*stack, heads, dim)
    shapes["attn/out/kernel"] = (*stack, heads, dim, d_out)
    if bias:
        shapes["attn/out/bias"] = (*stack, d_out)
    s = len(stack)
    fan_in = {f"attn/{n}/kernel": (s,) for n in ("query", "key", "value")}
    fan_in["attn/out/kernel"] = (s, s + 1)
    return shapes, fan_in


def _case(shapes, neurons, fan_in):
    """A case; a leaf named bias (or b) beside a listed weight is that weight's bias."""
    biases = {w.rsplit("/", 1)[0] + f"/{name}": w for w in fan_in for name in ("bias", "b")}
    biases = {b: w for b, w in biases.items() if b in shapes}
    return {"shapes": shapes, "neurons": neurons, "fan_in": fan_in, "biases": biases}


_ATTN, _ATTN_FAN_IN = _attention()
_ATTN_NB, _ = _attention(bias=False)
_SCAN_ATTN, _SCAN_ATTN_FAN_IN = _attention(stack=(2,))
_SCAN_ATTN_NB, _ = _attention(stack=(2,), bias=False)

CASES = {
    "torch_linear": _case(
        {"layers/0/weight": (4, 3), "layers/0/bias": (4,), "layers/1/weight": (2, 4)},
        "torch",
        {"layers/0/weight": (1,), "layers/1/weight": (1,)},
    ),
    "equinox_conv_bias_out11": _case(
        {"conv/weight": (5, 2, 3, 3), "conv/bias": (5, 1, 1), "norm/weight": (5,)},
        "torch",
        {"conv/weight": (1, 2, 3)},
    ),
    "torch_vmapped_stack": _case(
        {"blocks/weight": (3, 4, 5), "blocks/bias": (3, 4)}, "torch", {"blocks/weight": (2,)}
    ),
    "torch_layernorm_is_per_element": _case(
        {"ln/weight": (4,), "ln/bias": (4,), "head/weight": (2, 4), "head/bias": (2,)},
        "torch",
        {"head/weight": (1,)},
    ),
    "flax_attention_bias": _case(_ATTN, "flax", _ATTN_FAN_IN),
    "flax_attention_no_bias": _case(_ATTN_NB, "flax", _ATTN_FAN_IN),
    "flax_scanned_attention_bias": _case(_SCAN_ATTN, "flax", _SCAN_ATTN_FAN_IN),
    "flax_scanned_attention_no_bias": _case(_SCAN_ATTN_NB, "flax", _SCAN_ATTN_FAN_IN),
    "flax_scan_dense_bias": _case(
        {"ScanDense/kernel": (3, 4, 5), "ScanDense/bias": (3, 5)},
        "flax",
        {"ScanDense/kernel": (1,)},
    ),
    "flax_dense_general": _case(
        {"dg/kernel": (6, 2, 3), "dg/bias": (2, 3), "Dense_0/kernel": (6, 4)},
        "flax",
        {"dg/kernel": (0,), "Dense_0/kernel": (0,)},
    ),
    "flax_conv_no_bias_and_norm": _case(
        {"Conv_0/kernel": (3, 3, 2, 4), "BatchNorm_0/scale": (4,), "BatchNorm_0/bias": (4,)},
        NeuronLayout("flax", conv=True),
        {"Conv_0/kernel": (0, 1, 2)},
    ),
    "torch_conv_no_bias": _case(
        {"conv/weight": (4, 2, 3, 3), "head/weight": (2, 4)},
        NeuronLayout("torch", conv=True),
        {"conv/weight": (1, 2, 3), "head/weight": (1,)},
    ),
    "haiku_linear_conv_nchw_batchnorm_stack": _case(
        {
            "mlp/~/linear_0/w": (4, 3),
            "mlp/~/linear_0/b": (3,),
            "conv2_d/w": (3, 3, 2, 5),
            "conv2_d/b": (5, 1, 1),  # channels-first conv bias
            "batch_norm/scale": (1, 1, 1, 5),
            "batch_norm/offset": (1, 1, 1, 5),
            "stack/linear/w": (2, 4, 4),  # hk.layer_stack: (L, in, out) with b (L, out)
            "stack/linear/b": (2, 4),
            "layer_norm/scale": (3,),
        },
        "haiku",
        {"mlp/~/linear_0/w": (0,), "conv2_d/w": (0, 1, 2), "stack/linear/w": (1,)},
    ),
    "layout_axes_bias_free_stack_and_embedding": _case(
        {"ScanDense/kernel": (3, 4, 5), "emb/embedding": (7, 4), "Dense_0/kernel": (5, 2)},
        NeuronLayout("flax", axes={"ScanDense/kernel": (0, 2), "emb/embedding": None}),
        {"ScanDense/kernel": (1,), "Dense_0/kernel": (0,)},
    ),
    "callable_says_bias": _case(
        {"lin/w": (4, 3), "lin/b": (3,), "free/b": (2,)},
        lambda path, x: (1,) if path[-1] == "w" else ("bias" if path[0] == "lin" else None),
        {"lin/w": (0,)},
    ),
    "callable_embedding_rows": _case(
        {"emb/embedding": (7, 4), "Dense_0/kernel": (4, 3), "Dense_0/bias": (3,), "s": ()},
        _embedding_rows,
        {"emb/embedding": (1,), "Dense_0/kernel": (0,)},
    ),
    "callable_scan_no_bias": _case(
        {"ScanDense/kernel": (3, 4, 5), "Other/kernel": (4, 2)},
        lambda path, x: (0, 2) if path[0] == "ScanDense" else (1,),
        {"ScanDense/kernel": (1,), "Other/kernel": (0,)},
    ),
    "callable_none_is_per_element": _case(
        {"w": (3, 4), "Dense_0/kernel": (3, 2)},
        lambda path, x: () if path[0] == "Dense_0" and path[-1] == "kernel" else None,
        {"Dense_0/kernel": (0, 1)},  # () neuron axes: the whole kernel is one neuron
    ),
}


def _merged(neurons):
    """The cases of one built-in ``neurons`` side by side in one tree, under their names."""
    shapes, fan_in = {}, {}
    for name, case in CASES.items():
        if case["neurons"] == neurons:
            shapes.update({f"{name}/{p}": v for p, v in case["shapes"].items()})
            fan_in.update({f"{name}/{p}": v for p, v in case["fan_in"].items()})
    return _case(shapes, neurons, fan_in)


# One params tree per built-in layout (one compile each), and each callable case on its own.
LAYOUTS = {
    "all_flax_cases": _merged("flax"),
    "all_torch_cases": _merged("torch"),
    "all_haiku_cases": _merged("haiku"),
    **{name: case for name, case in CASES.items() if not isinstance(case["neurons"], str)},
}


def _nest(flat):
    tree = {}
    for path, value in flat.items():
        *heads, last = path.split("/")
        node = tree
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return tree


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value, np.float64)
    return out


def _random(shapes, seed):
    rng = np.random.default_rng(seed)
    return {p: rng.standard_normal(s) for p, s in shapes.items()}


def _np_onto(per_neuron, path, case, shape):
    """Per-neuron values (neuron axes in order) laid onto a weight, its bias, or an element."""
    if path in case["fan_in"]:
        return np.broadcast_to(np.expand_dims(per_neuron[path], case["fan_in"][path]), shape)
    if path in case["biases"]:
        return per_neuron[case["biases"][path]].reshape(shape)
    return per_neuron[path]


def _np_weight_norm_rates(params, case, lr, s):
    per = {}
    for path, w in params.items():
        axes = case["fan_in"].get(path, ())  # elements: |w|
        per[path] = lr * (1 + s * np.sqrt(np.sum(w**2, axis=axes)))
    return {p: _np_onto(per, p, case, w.shape) for p, w in params.items()}


def _train_step(tx):
    """A jitted ``(params, state, grads, **extra) -> (params, state)`` (one compile per tx)."""

    def step(params, state, grads, **extra):
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


_rates = jax.jit(jaxlr.learning_rates)


def _jax_steps(tx, params, grads_seq):
    """Flat params after each jitted step, the final state and params (float64 under x64)."""
    params = _nest({p: jnp.asarray(v) for p, v in params.items()})
    state, step, history = tx.init(params), _train_step(tx), []
    for grads in grads_seq:
        params, state = step(params, state, _nest({p: jnp.asarray(v) for p, v in grads.items()}))
        history.append(_flat(params))
    return history, state, params


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_weight_norm_lr_layouts_match_numpy(name):
    case, lr, s = LAYOUTS[name], 0.05, 0.3
    params = _random(case["shapes"], 0)
    grads = [_random(case["shapes"], 1 + t) for t in range(3)]
    with jax.enable_x64(True):
        tx = T.weight_norm_lr(lr, scaling_factor=s, neurons=case["neurons"])
        history, state, final = _jax_steps(tx, params, grads)
        rates = _flat(_rates(state, final))
    for t, g in enumerate(grads):
        lrs = _np_weight_norm_rates(params, case, lr, s)
        params = {p: params[p] - lrs[p] * g[p] for p in params}
        for p in params:
            np.testing.assert_allclose(history[t][p], params[p], rtol=1e-12, err_msg=f"{t} {p}")
    expected = _np_weight_norm_rates(params, case, lr, s)
    for p in params:
        np.testing.assert_allclose(rates[p], expected[p], rtol=1e-12, err_msg=p)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_adagrad_neuron_layouts_match_numpy(name):
    case, lr, eps = LAYOUTS[name], 0.1, 1e-3
    params = _random(case["shapes"], 2)
    grads = [_random(case["shapes"], 10 + t) for t in range(3)]
    with jax.enable_x64(True):
        tx = T.adagrad_lr(lr, eps=eps, granularity="neuron", neurons=case["neurons"])
        history, state, final = _jax_steps(tx, params, grads)
        rates = _flat(_rates(state, final))
    acc = {}
    for t, g in enumerate(grads):
        for path in params:
            if path in case["biases"]:
                continue
            axes = case["fan_in"].get(path, ())
            acc[path] = acc.get(path, 0.0) + np.mean(g[path] ** 2, axis=axes)
        per = {k: lr / (np.sqrt(v) + eps) for k, v in acc.items()}
        params = {p: params[p] - _np_onto(per, p, case, w.shape) * g[p] for p, w in params.items()}
        for p in params:
            np.testing.assert_allclose(history[t][p], params[p], rtol=1e-12, err_msg=f"{t} {p}")
    for p, w in params.items():
        np.testing.assert_allclose(rates[p], _np_onto(per, p, case, w.shape), rtol=1e-12)
    assert set(state.sum_sq) == {p.rsplit("/", 1)[0] if p in case["fan_in"] else p for p in acc}


def test_linen_scan_and_attention_modules_are_laid_out_as_the_cases_say():
    """The shapes in CASES are the ones flax makes (attention, nn.scan stacks)."""

    class Block(nn.Module):
        @nn.compact
        def __call__(self, c, _):
            return nn.relu(nn.Dense(5)(c)), None

    scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
    params = jax.jit(scan().init)(jax.random.key(0), jnp.ones((2, 5)), None)["params"]
    assert jax.tree.map(jnp.shape, params) == {"Dense_0": {"kernel": (3, 5, 5), "bias": (3, 5)}}
    attn = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, out_features=5)
    attn_params = jax.eval_shape(attn.init, jax.random.key(0), jnp.ones((1, 4, 6)))["params"]
    shapes = jax.tree_util.tree_flatten_with_path(attn_params)[0]
    assert {"attn/" + "/".join(k.key for k in p): x.shape for p, x in shapes} == _ATTN
    # nn.scan's (3, 5, 5) kernel with bias (3, 5): the layer axis is 0, the fan-in axis 1.
    tx = T.weight_norm_lr(0.1, scaling_factor=1.0)
    rates = _rates(tx.init(params), params)
    k = np.asarray(params["Dense_0"]["kernel"])
    expected = 0.1 * (1 + np.sqrt((k**2).sum(axis=1)))  # (layer, out)
    np.testing.assert_allclose(rates["Dense_0"]["bias"], expected, rtol=1e-6)
    np.testing.assert_allclose(rates["Dense_0"]["kernel"][:, 2, :], expected, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Errors: no silent fallback.
# ------------------------------------------------------------------------------------------------

ERRORS = {
    "issue_example_plain_dict": (
        {"w1": (64, 32), "b1": (32,)},
        "flax",
        [r"'w1'", r"\(64, 32\)", "neurons="],
    ),
    "torch_tree_read_as_flax": (
        {"layers/0/weight": (4, 3), "layers/0/bias": (4,)},
        "flax",
        ["layers/0/weight", "neurons='torch'"],
    ),
    "flax_tree_read_as_torch": (
        {"Dense_0/kernel": (3, 4), "Dense_0/bias": (4,)},
        "torch",
        ["Dense_0/kernel", "neurons='flax'"],
    ),
    "flax_embedding": ({"Embed_0/embedding": (10, 4)}, "flax", ["Embed_0/embedding", "neurons="]),
    "ambiguous_stack_or_dense_general": (
        {"x/kernel": (8, 8, 8), "x/bias": (8, 8)},
        "flax",
        ["x/kernel", "ambiguous", r"\(0, 2\)", r"\(1, 2\)", "neurons="],
    ),
    "flax_bias_mismatch": (
        {"l/kernel": (2, 3), "l/bias": (2,)},
        "flax",
        ["l/kernel", r"\(2, 3\)", "fits none", "neurons="],
    ),
    "flax_attention_bias_mismatch": (
        {**_ATTN_NB, "attn/query/bias": (3, 2)},
        "flax",
        ["attn/query/kernel", r"\(3, 2\)", "neurons="],
    ),
    "torch_bias_mismatch": (
        {"l/weight": (4, 3), "l/bias": (3,)},
        "torch",
        ["l/weight", r"\(3,\)", "neurons="],
    ),
    "torch_bias_free_stack": (
        {"blocks/weight": (3, 4, 5)},
        "torch",
        ["blocks/weight", "ambiguous", "conv=True", re.escape("axes={'blocks/weight': (0, 1)}")],
    ),
    "flax_bias_free_3d_kernel": (
        {"x/kernel": (3, 4, 5)},
        "flax",
        ["x/kernel", "ambiguous", "conv=True", re.escape("axes={'x/kernel': (0, 2)}")],
    ),
    "haiku_bias_free_conv": (
        {"conv/w": (3, 3, 2, 4)},
        "haiku",
        ["conv/w", "ambiguous", re.escape("NeuronLayout('haiku', conv=True)")],
    ),
    "haiku_tree_read_as_flax": (
        {"linear/w": (4, 3), "linear/b": (3,)},
        "flax",
        ["linear/w", "neurons='haiku'"],
    ),
    "haiku_embeddings": ({"embed/embeddings": (10, 4)}, "haiku", ["embed/embeddings", "neurons="]),
    "haiku_bias_mismatch": (
        {"l/w": (4, 3), "l/b": (4,)},
        "haiku",
        ["l/w", r"\(4,\)", "fits none", "neurons="],
    ),
    "layout_axes_unknown_leaf": (
        {"l/kernel": (4, 3)},
        NeuronLayout("flax", axes={"l/kernal": (1,)}),
        ["l/kernal", "name no float leaf", "l/kernel"],
    ),
    "callable_bias_beside_no_weight": (
        {"l/b": (3,)},
        lambda p, x: "bias",
        ["l/b", "beside 0 weights"],
    ),
    "callable_unknown_string": ({"l/w": (3,)}, lambda p, x: "weight", ["'weight'", "'bias'"]),
    "lora_factor_beside_kernel": (
        {"l/kernel": (4, 3), "l/lora_a": (4, 2)},
        "flax",
        ["l/lora_a", "neurons="],
    ),
    "callable_axis_out_of_range": ({"w": (3, 4)}, lambda p, x: (2,), ["axes", r"\(3, 4\)"]),
    "callable_bias_not_one_per_neuron": (
        {"l/kernel": (3, 2), "l/bias": (2,)},
        lambda p, x: () if p[-1] == "kernel" else None,
        ["l/bias", "one bias entry per neuron"],
    ),
    "callable_bias_beside_two_weights": (
        {"l/a": (3, 2), "l/b": (3, 2), "l/bias": (2,)},
        lambda p, x: (1,) if p[-1] != "bias" else None,
        ["l/bias", "several weights"],
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
@pytest.mark.parametrize("rule", ["weight_norm", "adagrad_neuron"])
def test_unplaceable_leaves_raise_with_the_path_and_the_fix(name, rule):
    shapes, neurons, patterns = ERRORS[name]
    params = _nest({p: jnp.zeros(s) for p, s in shapes.items()})
    if rule == "weight_norm":
        tx = T.weight_norm_lr(0.1, neurons=neurons)
    else:
        tx = T.adagrad_lr(0.1, granularity="neuron", neurons=neurons)
    with pytest.raises(ValueError) as err:
        tx.init(params)
    for pattern in patterns:
        assert re.search(pattern, str(err.value)), (pattern, str(err.value))


def test_parameter_granularity_and_per_layer_accept_any_tree():
    params = _nest({p: jnp.ones(s) for p, s in ERRORS["issue_example_plain_dict"][0].items()})
    state = T.adagrad_lr(0.1).init(params)
    assert state.sum_sq["w1"].shape == (64, 32)  # per parameter, as asked for
    with pytest.raises(ValueError, match="neurons must be 'flax', 'torch', 'haiku'"):
        T.adagrad_lr(0.1, neurons="jax")
    with pytest.raises(ValueError, match="base must be"):
        NeuronLayout("jax")
    with pytest.raises(ValueError, match="a tuple of neuron axes or None, got 'w': 0"):
        NeuronLayout("torch", axes={"w": 0})


def test_update_with_a_tree_init_did_not_see_raises():
    tx = T.adagrad_lr(0.1, granularity="neuron")
    state = tx.init({"l": {"kernel": jnp.ones((2, 3))}})
    with pytest.raises(ValueError, match="'m/kernel' was not in the params passed to init"):
        tx.update({"m": {"kernel": jnp.ones((2, 3))}}, state)


# ------------------------------------------------------------------------------------------------
# Non-array leaves and None gradients pass through.
# ------------------------------------------------------------------------------------------------

RULES = {
    "per_layer": lambda: T.per_layer_lr({"l": 0.1}, default=0.2),
    "weight_norm": lambda: T.weight_norm_lr(0.1, scaling_factor=0.5),
    "adagrad_param": lambda: T.adagrad_lr(0.1),
    "adagrad_neuron": lambda: T.adagrad_lr(0.1, granularity="neuron"),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_non_array_leaves_and_none_grads_pass_through(rule):
    arrays = {"l": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
    grads = {"l": {"kernel": jnp.full((2, 3), 0.5), "bias": jnp.full(3, 2.0)}}
    tx = RULES[rule]()
    expected, _ = tx.update(grads, tx.init(arrays), arrays)
    model = {**arrays, "act": jax.nn.relu, "name": "mlp", "steps": 3, "mask": jnp.ones(3, bool)}
    filtered = {**arrays, "act": None, "name": None, "steps": None, "mask": None}
    for init_params in (filtered, model):
        updates, _ = tx.update({**grads, "act": None}, tx.init(init_params), model)
        np.testing.assert_array_equal(updates["l"]["kernel"], expected["l"]["kernel"])
        np.testing.assert_array_equal(updates["l"]["bias"], expected["l"]["bias"])
        assert updates["act"] is None
    rates = jaxlr.learning_rates(tx.init(filtered), model)
    assert rates["act"] is None and rates["name"] is None and rates["mask"] is None
    assert rates["l"]["kernel"].shape == (2, 3)


# ------------------------------------------------------------------------------------------------
# learning_rates: each rule, inside chain and inject_hyperparams.
# ------------------------------------------------------------------------------------------------

FLAX_SHAPES = {"Dense_0/kernel": (4, 3), "Dense_0/bias": (3,), "Dense_1/kernel": (3, 2), "s": (2,)}
FLAX_CASE = _case(FLAX_SHAPES, "flax", {"Dense_0/kernel": (0,), "Dense_1/kernel": (0,)})


def _steps(tx, params, grads_seq, **extra):
    state, step = tx.init(params), _train_step(tx)
    for grads in grads_seq:
        params, state = step(params, state, grads, **extra)
    return state, params


def _grads(seed, n=4):
    return [
        _nest({p: jnp.asarray(v) for p, v in _random(FLAX_SHAPES, seed + t).items()})
        for t in range(n)
    ]


def test_learning_rates_per_layer_with_a_schedule_uses_the_next_step():
    sched = optax.linear_schedule(1.0, 0.0, transition_steps=8)
    tx = T.per_layer_lr({"Dense_0": sched, "Dense_1/kernel": 0.3}, default=0.01)
    params = _nest({p: jnp.asarray(v) for p, v in _random(FLAX_SHAPES, 0).items()})
    state, params = _steps(tx, params, _grads(1, n=3))
    rates = _flat(_rates(state, params))
    np.testing.assert_allclose(rates["Dense_0/kernel"], np.full((4, 3), 1 - 3 / 8))  # step 3
    np.testing.assert_allclose(rates["Dense_1/kernel"], np.full((3, 2), 0.3))
    np.testing.assert_allclose(rates["s"], [0.01, 0.01])
    # ... and it is the rate that the next update applies (SGD: u = -rate * g).
    g = _grads(7, n=1)[0]
    u, _ = tx.update(g, state, params)
    np.testing.assert_allclose(-u["Dense_0"]["kernel"] / g["Dense_0"]["kernel"], 0.625, rtol=1e-6)


def _np_adagrad_rates(grads_seq, case, lr, eps, granularity):
    acc = {}
    for grads in grads_seq:
        g = _flat(grads)
        for p, v in g.items():
            if granularity == "neuron" and p in case["biases"]:
                continue
            axes = case["fan_in"].get(p, ()) if granularity == "neuron" else ()
            acc[p] = acc.get(p, 0.0) + np.mean(v**2, axis=axes)
    per = {k: lr / (np.sqrt(v) + eps) for k, v in acc.items()}
    if granularity == "parameter":
        return per
    return {p: _np_onto(per, p, case, s) for p, s in case["shapes"].items()}


WRAPS = {
    "alone": lambda make: make(),
    "chain_with_plateau": lambda make: optax.chain(make(), T.reduce_lr_on_plateau(patience=0)),
}


@pytest.mark.parametrize("wrap", sorted(WRAPS))
@pytest.mark.parametrize("rule", ["weight_norm", "adagrad_param", "adagrad_neuron"])
def test_learning_rates_after_several_steps_match_numpy(rule, wrap):
    lr, s, eps = 0.05, 0.4, 1e-3
    makers = {
        "weight_norm": lambda: T.weight_norm_lr(lr, scaling_factor=s, inner=optax.scale_by_adam()),
        "adagrad_param": lambda: T.adagrad_lr(lr, eps=eps, inner=optax.scale_by_adam()),
        "adagrad_neuron": lambda: T.adagrad_lr(lr, eps=eps, granularity="neuron"),
    }
    tx = WRAPS[wrap](makers[rule])
    with jax.enable_x64(True):
        grads = _grads(3)
        params0 = _nest({p: jnp.asarray(v) for p, v in _random(FLAX_SHAPES, 0).items()})
        state, params = _steps(tx, params0, grads, value=1.0)
        rates = _flat(_rates(state, params))
    # the plateau multiplier after four flat losses with patience 0: 1, 1, .1, .01 -> next .001
    scale = 1e-3 if wrap == "chain_with_plateau" else 1.0
    if rule == "weight_norm":
        expected = _np_weight_norm_rates(_flat(params), FLAX_CASE, lr, s)
    else:
        granularity = "parameter" if rule == "adagrad_param" else "neuron"
        expected = _np_adagrad_rates(grads, FLAX_CASE, lr, eps, granularity)
    for p in FLAX_SHAPES:
        np.testing.assert_allclose(rates[p], scale * expected[p], rtol=1e-10, err_msg=p)


def test_learning_rates_inside_inject_hyperparams_follow_a_changed_hyperparameter():
    tx = optax.inject_hyperparams(T.weight_norm_lr)(base_lr=0.1, scaling_factor=0.5)
    params = _nest({p: jnp.asarray(v) for p, v in _random(FLAX_SHAPES, 0).items()})
    state, params = _steps(tx, params, _grads(5, n=2))
    expected = _np_weight_norm_rates(_flat(params), FLAX_CASE, 0.1, 0.5)
    rates = _flat(_rates(state, params))
    for p in FLAX_SHAPES:
        np.testing.assert_allclose(rates[p], expected[p], rtol=1e-6)
    state.hyperparams["base_lr"] = jnp.asarray(0.2)  # set by hand: the next update uses it
    rates = _rates(state, params)
    g = _grads(9, n=1)[0]
    u, _ = tx.update(g, state, params)
    for p in FLAX_SHAPES:
        np.testing.assert_allclose(_flat(rates)[p], 2 * expected[p], rtol=1e-6)
        np.testing.assert_allclose(-_flat(u)[p] / _flat(g)[p], 2 * expected[p], rtol=1e-5)
    inject_adagrad = optax.inject_hyperparams(T.adagrad_lr, static_args=("granularity",))
    tx = inject_adagrad(base_lr=0.1, eps=1e-3, granularity="neuron")
    state, _ = _steps(tx, params, _grads(11, n=3))
    expected = _np_adagrad_rates(_grads(11, n=3), FLAX_CASE, 0.1, 1e-3, "neuron")
    rates = _flat(_rates(state, params))
    for p in FLAX_SHAPES:
        np.testing.assert_allclose(rates[p], expected[p], rtol=1e-5)


def test_learning_rates_needs_exactly_one_rule():
    params = {"l": {"kernel": jnp.ones((2, 2))}}
    with pytest.raises(ValueError, match="found 0 jaxlr rule states"):
        jaxlr.learning_rates(optax.adam(0.1).init(params), params)
    two = optax.chain(T.adagrad_lr(0.1), T.weight_norm_lr(0.1))
    with pytest.raises(ValueError, match="found 2 jaxlr rule states"):
        jaxlr.learning_rates(two.init(params), params)


# ------------------------------------------------------------------------------------------------
# tree_get, serialization, TrainState.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(RULES))
def test_tree_get_count_finds_the_inner_optimizers_count(rule):
    params = {"l": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    makers = {
        "per_layer": lambda inner: T.per_layer_lr({"l": 0.1}, inner=inner),
        "weight_norm": lambda inner: T.weight_norm_lr(0.1, inner=inner),
        "adagrad_param": lambda inner: T.adagrad_lr(0.1, inner=inner),
        "adagrad_neuron": lambda inner: T.adagrad_lr(0.1, granularity="neuron", inner=inner),
    }
    tx = makers[rule](optax.scale_by_adam())
    state, _ = _steps(tx, params, [params] * 3)
    assert int(optax.tree_utils.tree_get(state, "count")) == 3  # adam's; no "multiple values"
    assert int(optax.tree_utils.tree_get(state, "rule_count")) == 3
    restored = flax.serialization.from_bytes(state, flax.serialization.to_bytes(state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_state_passes_value_to_tx_update():
    tx = optax.chain(
        T.weight_norm_lr(0.1, inner=optax.scale_by_adam()), T.reduce_lr_on_plateau(patience=0)
    )
    params = _nest({p: jnp.asarray(v) for p, v in _random(FLAX_SHAPES, 0).items()})
    ts = jaxlr.TrainState.create(apply_fn=None, params=params, tx=tx)
    opt_state, losses = tx.init(params), [1.0, 1.0, 1.0, 0.5, 0.5]
    for t, loss in enumerate(losses):
        g = _grads(20 + t, n=1)[0]
        ts = ts.apply_gradients(grads=g, value=loss)
        updates, opt_state = tx.update(g, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        chex.assert_trees_all_equal(ts.params, params)
    assert int(ts.step) == len(losses)
    # torch's multipliers: 1, then .1, .01 (bad), kept at the better 0.5, then .001 (bad)
    np.testing.assert_allclose(ts.opt_state[1].multiplier, 1e-3, rtol=1e-6)
    with pytest.raises(ValueError, match="needs the monitored value"):  # flax's: not to tx
        train_state.TrainState.create(apply_fn=None, params=params, tx=tx).apply_gradients(
            grads=g, value=1.0
        )


def test_train_state_still_replaces_fields_of_subclasses():
    class WithStats(jaxlr.TrainState):
        batch_stats: dict

    tx = optax.chain(optax.sgd(0.5), T.reduce_lr_on_plateau())
    ts = WithStats.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=tx, batch_stats={"m": 0})
    ts = ts.apply_gradients(grads={"w": jnp.ones(2)}, value=2.0, batch_stats={"m": 1})
    assert ts.batch_stats == {"m": 1}
    np.testing.assert_array_equal(ts.params["w"], [0.5, 0.5])
    np.testing.assert_array_equal(ts.opt_state[1].best, 2.0)


# ------------------------------------------------------------------------------------------------
# Unmodified third-party models: Equinox MLP, Flax linen attention, nnx.Optimizer.
# ------------------------------------------------------------------------------------------------

EQX_RULES = {
    "per_layer": lambda: T.per_layer_lr(
        {"layers/0": 3e-2, "layers/1": 2e-2, "layers/2": 1e-2}, inner=optax.scale_by_adam()
    ),
    "weight_norm": lambda: T.weight_norm_lr(1e-2, neurons="torch", inner=optax.scale_by_adam()),
    "adagrad_param": lambda: T.adagrad_lr(0.05),
    "adagrad_neuron": lambda: T.adagrad_lr(0.05, granularity="neuron", neurons="torch"),
}


@functools.cache
def _equinox_problem():
    """An eqx.nn.MLP, regression data and a jitted ``model -> (loss, grads)`` shared by rules."""
    model = eqx.nn.MLP(4, 3, 16, 2, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 4))
    y = jnp.stack([x[:, 0] * x[:, 1], jnp.sin(x[:, 2]), x[:, 3]], axis=1)
    loss_fn = lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2)
    return model, eqx.filter_jit(eqx.filter_value_and_grad(loss_fn))


@pytest.mark.parametrize("unfiltered", [False, True], ids=["filtered", "model"])
@pytest.mark.parametrize("rule", sorted(EQX_RULES))
def test_equinox_mlp_trains_with_each_rule(rule, unfiltered):
    model, value_and_grad = _equinox_problem()
    tx = EQX_RULES[rule]()
    opt_state = tx.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def apply(model, grads, opt_state):
        params = model if unfiltered else eqx.filter(model, eqx.is_array)
        updates, opt_state = tx.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state

    losses = []
    for _ in range(15):
        loss, grads = value_and_grad(model)
        model, opt_state = apply(model, grads, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    rates = eqx.filter_jit(jaxlr.learning_rates)(opt_state, model)
    assert rates.activation is None and rates.final_activation is None
    for layer, rate in zip(model.layers, rates.layers, strict=True):
        assert rate.weight.shape == layer.weight.shape and rate.bias.shape == layer.bias.shape
        if rule in ("weight_norm", "adagrad_neuron"):  # one rate per output row and its bias
            np.testing.assert_array_equal(
                rate.weight, np.broadcast_to(rate.bias[:, None], rate.weight.shape)
            )
    if rule == "weight_norm":
        w = np.asarray(model.layers[1].weight)
        expected = 1e-2 * (1 + 0.01 * np.sqrt((w**2).sum(axis=1)))
        np.testing.assert_allclose(rates.layers[1].bias, expected, rtol=1e-6)


class AttentionBlock(nn.Module):
    """A linen attention block: attention, residual, LayerNorm, readout."""

    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, use_bias=self.use_bias)(x)
        h = nn.LayerNorm()(x + h)
        return nn.Dense(1)(h.mean(axis=1))[:, 0]


@functools.cache
def _attention_problem(use_bias):
    """The block, its params and a jitted ``params -> (loss, grads)`` shared by rules."""
    model = AttentionBlock(use_bias=use_bias)
    x = jax.random.normal(jax.random.key(0), (32, 5, 8))
    y = x[:, :, 0].mean(axis=1) - x[:, 0, 1]
    params = jax.jit(model.init)(jax.random.key(1), x)["params"]
    loss_fn = lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)
    return model, params, jax.jit(jax.value_and_grad(loss_fn))


LINEN_RULES = {
    "per_layer": lambda: T.per_layer_lr(
        {"MultiHeadDotProductAttention_0": 3e-3}, default=1e-2, inner=optax.scale_by_adam()
    ),
    "weight_norm": lambda: T.weight_norm_lr(1e-2, inner=optax.scale_by_adam()),
    "adagrad_param": lambda: T.adagrad_lr(3e-2),
    "adagrad_neuron": lambda: T.adagrad_lr(3e-2, granularity="neuron"),
}


@pytest.mark.parametrize(
    ("rule", "use_bias"),
    [(rule, True) for rule in sorted(LINEN_RULES)]
    + [("weight_norm", False), ("adagrad_neuron", False)],  # the rules with neurons
)
def test_linen_attention_block_trains_with_each_rule(rule, use_bias):
    model, params, value_and_grad = _attention_problem(use_bias)
    ts = jaxlr.TrainState.create(apply_fn=model.apply, params=params, tx=LINEN_RULES[rule]())
    apply = jax.jit(lambda ts, grads: ts.apply_gradients(grads=grads))
    losses = []
    for _ in range(15):
        loss, grads = value_and_grad(ts.params)
        ts = apply(ts, grads)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    rates = _rates(ts.opt_state, ts.params)
    attn_rates = rates["MultiHeadDotProductAttention_0"]
    attn = ts.params["MultiHeadDotProductAttention_0"]
    assert jax.tree.map(jnp.shape, rates) == jax.tree.map(jnp.shape, ts.params)
    if rule in ("weight_norm", "adagrad_neuron"):
        q = np.asarray(attn_rates["query"]["kernel"])  # (in, heads, dim): one rate per (head, dim)
        np.testing.assert_array_equal(q, np.broadcast_to(q[:1], q.shape))
        assert len(np.unique(q[0])) == q[0].size  # ... and not one per dim shared across heads
        o = np.asarray(attn_rates["out"]["kernel"])  # (heads, dim, out): one rate per out
        np.testing.assert_array_equal(o, np.broadcast_to(o[:1, :1], o.shape))
    if rule == "weight_norm":
        k = np.asarray(attn["query"]["kernel"])
        np.testing.assert_allclose(q[0], 1e-2 * (1 + 0.01 * np.sqrt((k**2).sum(axis=0))), rtol=1e-6)


def test_nnx_optimizer_passes_value_to_the_rules():
    """The README's nnx way: nnx.Optimizer(...).update(model, grads, value=loss)."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.attn = nnx.MultiHeadAttention(2, 8, qkv_features=8, decode=False, rngs=rngs)
            self.head = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(self.attn(x).mean(axis=1))[:, 0]

    x = jax.random.normal(jax.random.key(0), (16, 4, 8))
    y = x[:, 0, 0]
    model = nnx.jit(lambda: Net(nnx.Rngs(0)))()
    tx = optax.chain(
        T.weight_norm_lr(1e-2, inner=optax.scale_by_adam()), T.reduce_lr_on_plateau(patience=0)
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    opt_state = tx.init(params)

    @nnx.jit
    def train_step(model, optimizer, value):
        grads = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
        optimizer.update(model, grads, value=value)
        return nnx.to_pure_dict(grads)

    update = jax.jit(tx.update)
    for value in [1.0, 1.0]:  # flat losses, to see the plateau act
        grads = train_step(model, optimizer, value)
        updates, opt_state = update(grads, opt_state, params, value=value)
        params = optax.apply_updates(params, updates)
    ours = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    rates = _rates(opt_state, params)
    np.testing.assert_allclose(opt_state[1].multiplier, 0.1)  # two flat losses: 1, then .1
    q = np.asarray(rates["attn"]["query"]["kernel"])
    k = np.asarray(params["attn"]["query"]["kernel"])
    expected = 0.1 * 1e-2 * (1 + 0.01 * np.sqrt((k**2).sum(axis=0)))  # one per (head, dim)
    np.testing.assert_allclose(q, np.broadcast_to(expected, q.shape), rtol=1e-6)
