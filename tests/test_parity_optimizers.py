"""The sweep's optimizers and schedules against PyTorch and numpy (torch_parity's fourth group).

The JAX side of every comparison is the sweep's own update, ``jaxlr.optimizers.make_optimizer``
rebuilt at each step with ``spec.schedule_multiplier(t)``; the references are torch.optim's
SGD / AdamW / Muon with torch's schedulers, and numpy formulas for Lion, AdamW with independent
decay and Muon with its Newton-Schulz iteration in float64 (:mod:`torch_parity.numpy_reference`).
Each comparison is also run with one hyperparameter wrong on the reference side, which must fail.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from jaxlr.config import SweepConfig  # noqa: E402
from jaxlr.engine import RunSpec  # noqa: E402
from torch_parity import numpy_reference as ref  # noqa: E402
from torch_parity import optimizer_examples as oe  # noqa: E402
from torch_parity.__main__ import main  # noqa: E402
from torch_parity.catalog import CATALOG, MUON_TORCH_TOLERANCE, SWEEP_OPTIMIZERS  # noqa: E402
from torch_parity.compare import compare, get_example, run_example, sweep_optimizer  # noqa: E402
from torch_parity.convert import state_dict_to_flax  # noqa: E402
from torch_parity.data import random_classification  # noqa: E402
from torch_parity.examples import torch_threads  # noqa: E402
from torch_parity.jax_runs import (  # noqa: E402
    DataShape,
    cross_entropy,
    model_for,
    train_minibatch,
)

SETTINGS = oe.SETTINGS
NAMES = [e.name for e in CATALOG if e.source == SWEEP_OPTIMIZERS]
EXACT = [n for n in NAMES if get_example(n).tolerance is None]  # all but muon-torch
SCHEDULED = [n for n in EXACT if SETTINGS[n].option("schedule", "constant") != "constant"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny nets: one intra-op thread is fastest and deterministic."""
    with torch_threads(1):
        yield


def _spec(setting: oe.SweepSetting, steps: int) -> RunSpec:
    cfg = SweepConfig(
        optimizers=(setting.optimizer,),
        hidden=(setting.hidden,),
        weight_decays=(setting.weight_decay,),
        epochs=steps,
        batch_size=100,
        **setting.options,
    )
    return RunSpec.create(cfg, DataShape(10, 2, 100), setting.hidden, setting.optimizer)


def test_the_schedule_multiplier_follows_the_run_dtype():
    with jax.enable_x64(True):
        spec = _spec(SETTINGS["sgd-momentum"], 30)
        assert jnp.asarray(spec.schedule_multiplier(jnp.int32(3))).dtype == jnp.float64


def _with(
    setting: oe.SweepSetting, weight_decay: float | None = None, **options
) -> oe.SweepSetting:
    """``setting`` with another weight decay and/or options."""
    wd = setting.weight_decay if weight_decay is None else weight_decay
    return dataclasses.replace(setting, weight_decay=wd, options={**setting.options, **options})


def _reference_with(name: str, setting: oe.SweepSetting, **program_kw):
    """Example ``name`` whose torch side runs ``setting`` (the JAX side keeps the example's)."""
    ex = get_example(name)
    program = functools.partial(ex.torch_program, setting=setting, **program_kw)
    return dataclasses.replace(ex, torch_program=program)


def _both_with(name: str, setting: oe.SweepSetting, **program_kw):
    """Example ``name`` with ``setting`` on both sides."""
    ex = _reference_with(name, setting, **program_kw)
    return dataclasses.replace(ex, jax_optimizer=sweep_optimizer(setting))


# ------------------------------------------------------------------------------ float64
@pytest.mark.parametrize("name", EXACT)
def test_float64_losses_agree_to_1e10(name):
    result = run_example(name)
    assert result.steps >= 20
    assert result.passed, result
    assert result.max_abs_loss_diff <= 1e-10
    assert result.max_rel_param_diff <= 1e-9


@pytest.mark.parametrize("name", EXACT)
def test_float32_losses_agree_to_1e4(name):
    result = run_example(name, dtype="float32")
    assert result.passed, result
    assert 0 < result.max_abs_loss_diff <= 1e-4


# one hyperparameter wrong on the reference side: the comparison must fail by far
WRONG = [
    ("sgd-momentum", {"momentum": 0.85}),
    ("sgd-momentum", {"final_lr_fraction": 0.0}),
    ("sgd-nesterov", {"nesterov": False}),
    ("sgd-nesterov", {"weight_decay": 0.0}),
    ("adamw", {"decay_fraction": 0.2}),
    ("adamw", {"weight_decay": 0.0}),
    ("adamw-independent", {"weight_decay_scaling": "none"}),
    ("lion", {"betas": (0.9, 0.999)}),
    ("lion", {"weight_decay": 0.0}),
    ("muon", {"muon_momentum": 0.9}),
    ("muon", {"muon_scaling": "spectral"}),
    ("muon-torch", {"muon_momentum": 0.9}),
]


@pytest.mark.parametrize(("name", "change"), WRONG, ids=[f"{n}-{next(iter(c))}" for n, c in WRONG])
def test_a_wrong_reference_fails(name, change):
    change = dict(change)
    wrong = _with(SETTINGS[name], change.pop("weight_decay", None), **change)
    result = compare(_reference_with(name, wrong))
    assert not result.passed
    # far above the bound: 1e-10 (1e-8 with a float32 multiplier); twice muon-torch's 5e-4
    assert result.max_abs_loss_diff > max(2 * result.tolerance, 1e-6), result


# ------------------------------------------------------------------------------ Muon
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_muon_in_bfloat16_agrees_within_the_stated_tolerance(dtype):
    result = run_example("muon-torch", dtype=dtype)
    assert result.tolerance == MUON_TORCH_TOLERANCE == 5e-4
    assert result.passed, result
    assert result.steps >= 20
    # bfloat16 matters: the difference is far above float64 rounding
    assert 1e-6 < result.max_abs_loss_diff <= MUON_TORCH_TOLERANCE


@pytest.mark.parametrize("scaling", ["spectral", "rms"])
def test_torch_muon_with_its_iteration_in_float64_agrees_to_1e10(scaling):
    """torch.optim.Muon's own code (lerp momentum, Nesterov, adjust_lr_fn, decay) with only the
    bfloat16 cast of its Newton-Schulz iteration removed is jaxlr's Muon to rounding."""
    setting = _with(SETTINGS["muon-torch"], muon_scaling=scaling)
    result = compare(_both_with("muon-torch", setting, newton_schulz="param"), tolerance=1e-10)
    assert result.passed, result
    assert result.max_rel_param_diff <= 1e-9


def test_numpy_muon_with_spectral_scaling_agrees_to_1e10():
    setting = _with(SETTINGS["muon"], muon_scaling="spectral", muon_momentum=0.9)
    result = compare(_both_with("muon", setting))
    assert result.passed, result


@pytest.mark.parametrize("shape", [(48, 10), (24, 48), (16, 16)])
def test_numpy_newton_schulz_is_torchs(shape):
    g = np.random.default_rng(3).standard_normal(shape)
    ours = ref.newton_schulz5(g)
    import torch.optim._muon as torch_muon

    coefficients = (torch_muon.DEFAULT_A, torch_muon.DEFAULT_B, torch_muon.DEFAULT_C)
    args = (coefficients, torch_muon.DEFAULT_NS_STEPS, torch_muon.EPS)
    bf16 = torch_muon._zeropower_via_newtonschulz(torch.from_numpy(g), *args).double().numpy()
    with oe.newton_schulz_in_param_dtype():
        f64 = torch_muon._zeropower_via_newtonschulz(torch.from_numpy(g), *args).numpy()
    np.testing.assert_allclose(f64, ours, rtol=0, atol=1e-12)
    assert np.max(np.abs(bf16 - ours)) / np.max(np.abs(ours)) < 0.05  # bfloat16: ~1e-2
    # singular values pushed towards 1 (Keller Jordan's iteration: roughly 0.7 .. 1.2)
    sv = np.linalg.svd(ours, compute_uv=False)
    assert 0.6 < sv.min() and sv.max() < 1.25


def test_muon_trains_exactly_the_hidden_matrices():
    net = oe.mlp(random_classification(0), (48, 24))
    names = [n for n, _ in net.named_parameters()]
    mask = oe.hidden_matrices(net)
    assert [n for n, m in zip(names, mask, strict=True) if m] == ["fc1.weight", "fc2.weight"]


# ------------------------------------------------------------------------------ schedules
SCHEDULES = {
    "warmup-cosine": {"warmup": 4, "final_lr_fraction": 0.1},
    "warmup-linear": {"warmup": 0.1, "final_lr_fraction": 0.0},  # a fraction: 4 of 40 steps
    "wsd": {"warmup": 3, "decay_fraction": 0.3, "final_lr_fraction": 0.05},
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_torch_schedulers_follow_the_closed_form_and_jaxlr(name):
    total, lr = 40, 0.1
    setting = oe.SweepSetting("sgd", lr, (32, 32), options={"schedule": name, **SCHEDULES[name]})
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = oe.torch_scheduler(optimizer, setting, total)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    closed = [lr * s for s in map(oe.numpy_schedule(setting, total), range(total))]
    np.testing.assert_allclose(lrs, closed, rtol=1e-12, atol=1e-15)
    spec = _spec(setting, total)
    with jax.enable_x64(True):
        jaxlr = [lr * float(spec.schedule_multiplier(jnp.int32(t))) for t in range(total)]
    np.testing.assert_allclose(jaxlr, closed, rtol=1e-12, atol=1e-15)


def test_closed_form_schedules_by_hand():
    s = ref.schedule_multiplier
    assert [s("warmup-linear", t, 20, 4) for t in (0, 1, 3, 4, 12, 19)] == [
        0.25, 0.5, 1.0, 1.0, 0.5, 1 - 15 / 16,
    ]  # fmt: skip
    assert s("warmup-cosine", 12, 20, 4, final_lr_fraction=0.1) == pytest.approx(0.55)
    assert s("warmup-cosine", 4, 20, 4, final_lr_fraction=0.1) == 1.0
    # wsd: T_d = 20 - round(0.3 * 20) = 14
    wsd = [s("wsd", t, 20, 2, decay_fraction=0.3, final_lr_fraction=0.1) for t in (0, 13, 14, 17)]
    assert wsd == pytest.approx([0.5, 1.0, 1.0, 1 - 0.9 * 3 / 6])


# --------------------------------------------------------------------- the numpy references
def test_numpy_adam_is_torch_adamw_when_the_decay_is_scaled_by_the_lr():
    """Independent decay wd' = lr * wd without a schedule is AdamW(lr, wd): numpy's Adam and
    its decay against torch.optim.AdamW."""
    data = random_classification(0)
    lr, wd = 3e-3, 0.1
    numpy_side = oe.SweepSetting("adamw", lr, (32, 32), weight_decay=lr * wd)
    torch_side = oe.SweepSetting("adamw", lr, (32, 32), weight_decay=wd)
    a = oe.adamw_independent(data, 30, torch.float64, setting=numpy_side)
    b = oe.adamw(data, 30, torch.float64, setting=torch_side)
    np.testing.assert_allclose(a.losses, b.losses, rtol=0, atol=1e-13)
    for key in a.final_state:
        np.testing.assert_allclose(a.final_state[key], b.final_state[key], rtol=0, atol=1e-13)


def test_numpy_lion_first_steps_by_hand():
    p0, g0, g1 = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.0]), np.array([-1.0, 1.0, 2.0])
    lion = ref.Lion([p0], lr=0.1, weight_decay=0.5, betas=(0.9, 0.99))
    (p1,) = lion.update([p0], [g0])
    np.testing.assert_allclose(p1, p0 - 0.1 * (np.sign(g0) + 0.5 * p0))
    (p2,) = lion.update([p1], [g1])
    m1 = 0.01 * g0
    np.testing.assert_allclose(p2, p1 - 0.1 * (np.sign(0.9 * m1 + 0.1 * g1) + 0.5 * p1))


# ------------------------------------------------------------------------------ the CLI
def test_cli_lists_the_sweep_optimizers(capsys):
    assert main(["--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in NAMES:
        assert SWEEP_OPTIMIZERS in lines[name]
    assert "(30 steps)" in lines["muon-torch"]


def test_cli_runs_them_with_their_tolerances(capsys):
    assert main(["--json", "--example", "sgd-nesterov,muon-torch", "--steps", "20"]) == 0
    records = {r["example"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["sgd-nesterov"]["tolerance"] == 1e-10
    assert records["muon-torch"]["tolerance"] == MUON_TORCH_TOLERANCE
    assert all(r["passed"] and r["steps"] == 20 for r in records.values())
    assert math.isfinite(records["muon-torch"]["max_abs_loss_diff"])


# ------------------------------------------------------------------------------ JAX side
def test_a_transform_per_step_sees_the_global_step_across_epochs():
    """Only step 4 (the first of the third two-step epoch) moves the params: p0 - 0.1 grad."""
    data = random_classification(0)
    net = oe.mlp(data, (8, 8))
    params = state_dict_to_flax(net.state_dict())
    batches = np.arange(50).reshape(5, 10)
    run = train_minibatch(
        params, lambda t: optax.scale(-jnp.where(t == 4, 0.1, 0.0)),
        data.x, data.y, batches, 2, "float64",
    )  # fmt: skip
    with jax.enable_x64(True):
        model = model_for(params, "float64")
        p0 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x, y = jnp.asarray(data.x[batches[4]]), jnp.asarray(data.y[batches[4]])
        grads = jax.grad(lambda p: cross_entropy(model.apply({"params": p}, x), y))(p0)
        want = jax.tree.map(lambda p, g: np.asarray(p - 0.1 * g), p0, grads)
    for layer, leaves in want.items():
        for leaf, value in leaves.items():
            np.testing.assert_allclose(run.final_params[layer][leaf], value, rtol=0, atol=1e-15)
    assert len(set(run.losses[:5])) == 5  # different batches, same params until step 4
