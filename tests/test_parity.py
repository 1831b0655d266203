"""Tests of the torch_parity package: conversion, the torch references, the suite and its CLI.

The references here are torch itself (forward passes, ``torch.optim.Adam``) and numpy formulas;
the suite tests assert that every example matches across frameworks to 1e-10 in float64.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxlr.models import MLP  # noqa: E402
from torch_parity import examples  # noqa: E402
from torch_parity.__main__ import main  # noqa: E402
from torch_parity.catalog import CATALOG, GPT_EXAMPLES, SWEEP_OPTIMIZERS  # noqa: E402
from torch_parity.compare import (  # noqa: E402
    EXAMPLE_NAMES,
    JSON_KEYS,
    float32_drift,
    max_rel_param_diff,
    run_example,
    trace_steps,
)
from torch_parity.convert import (  # noqa: E402
    flax_to_state_dict,
    linear_prefixes,
    state_dict_to_flax,
)
from torch_parity.data import (  # noqa: E402
    batch_indices,
    image_classification,
    random_classification,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny nets: one intra-op thread is fastest and deterministic."""
    with examples.torch_threads(1):
        yield


def _nets(dtype: torch.dtype) -> list[torch.nn.Module]:
    """A named-attribute net and an nn.Sequential one (indices 0, 2, 4), seeded."""
    return [
        examples.build(examples.SimpleNet, 1, dtype),
        examples.build(lambda: examples.width_experiment_mlp(64, 32, 10), 2, dtype),
    ]


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dict_round_trip_is_exact(dtype):
    for net in _nets(dtype):
        sd = net.state_dict()
        params = state_dict_to_flax(sd)
        back = flax_to_state_dict(params, linear_prefixes(sd))
        assert list(back) == list(sd)
        for key, tensor in sd.items():
            assert back[key].dtype == tensor.numpy().dtype
            np.testing.assert_array_equal(back[key], tensor.numpy())


def test_state_dict_to_flax_layout():
    net = examples.build(lambda: examples.width_experiment_mlp(64, 32, 10), 0, torch.float32)
    sd = net.state_dict()
    assert linear_prefixes(sd) == ["0", "2", "4"]
    params = state_dict_to_flax(sd)
    assert sorted(params) == ["Dense_0", "Dense_1", "Dense_2"]
    w = sd["2.weight"].numpy()  # [out=32, in=32]
    kernel = params["Dense_1"]["kernel"]
    for i, j in [(0, 1), (5, 17), (31, 0)]:
        assert kernel[i, j] == w[j, i]
    assert params["Dense_2"]["kernel"].shape == (32, 10)
    np.testing.assert_array_equal(params["Dense_2"]["bias"], sd["4.bias"].numpy())


def test_converted_params_reproduce_torch_logits():
    x = np.random.default_rng(0).standard_normal((7, 10))
    net = examples.build(examples.SimpleNet, 3, torch.float64)
    expected = net(torch.from_numpy(x)).detach().numpy()
    params = state_dict_to_flax(net.state_dict())
    with jax.enable_x64(True):
        logits = MLP((20, 10), 2, dtype=jnp.float64).apply({"params": params}, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(logits), expected, rtol=0, atol=1e-14)


def test_convert_rejects_what_is_not_a_linear_stack():
    with pytest.raises(ValueError, match=r"nn\.Linear"):
        state_dict_to_flax({"bn.running_mean": np.zeros(3), "bn.weight": np.ones(3)})
    with pytest.raises(ValueError, match="bias=False"):
        state_dict_to_flax({"fc1.weight": np.ones((3, 2))})
    with pytest.raises(ValueError, match="forward order"):
        state_dict_to_flax(
            {
                "a.weight": np.ones((3, 2)),
                "a.bias": np.ones(3),
                "b.weight": np.ones((4, 5)),
                "b.bias": np.ones(4),
            }
        )


# ------------------------------------------------------------------------------ torch side
def _grads_and_step(model, optimizer, x, y, steps):
    """``steps`` full-batch CrossEntropy steps; returns the final params as numpy."""
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_tensor_lr_adam_equals_torch_adam():
    data = random_classification(0)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    ref_model = examples.build(examples.SimpleNet, 0, torch.float64)
    ref = _grads_and_step(ref_model, torch.optim.Adam(ref_model.parameters(), lr=3e-3), x, y, 25)
    for as_tensor in (False, True):
        model = examples.build(examples.SimpleNet, 0, torch.float64)
        optimizer = examples.one_group_per_parameter(model, 3e-3)
        if as_tensor:
            shapes = [(p.shape[0], 1) if p.ndim == 2 else p.shape for p in model.parameters()]
            rates = [torch.full(s, 3e-3, dtype=torch.float64) for s in shapes]
            examples.set_group_lrs(optimizer, rates)
        got = _grads_and_step(model, optimizer, x, y, 25)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_neuron_rate_rules_match_numpy():
    data = random_classification(0)
    model = examples.build(examples.SimpleNet, 0, torch.float64)
    torch.nn.functional.cross_entropy(
        model(torch.from_numpy(data.x)), torch.from_numpy(data.y)
    ).backward()
    layers = [model.fc1, model.fc2, model.fc3]
    norm_rates = examples.calculate_neuron_lrs(model, 1e-3, 0.01)
    sums = {n: torch.zeros(m.out_features, dtype=torch.float64) for n, m in model.named_children()}
    row_rates = examples.calculate_and_update_row_lrs(model, 1e-2, sums, 1e-8)
    row_rates = examples.calculate_and_update_row_lrs(model, 1e-2, sums, 1e-8)  # G = 2 mean g^2
    for i, layer in enumerate(layers):
        w, g = layer.weight.detach().numpy(), layer.weight.grad.numpy()
        expected = 1e-3 * (1 + 0.01 * np.sqrt((w**2).sum(axis=1)))
        np.testing.assert_allclose(norm_rates[2 * i].numpy(), expected[:, None], rtol=1e-14)
        np.testing.assert_allclose(norm_rates[2 * i + 1].numpy(), expected, rtol=1e-14)
        expected = 1e-2 / (np.sqrt(2 * (g**2).mean(axis=1)) + 1e-8)
        np.testing.assert_allclose(row_rates[2 * i].numpy(), expected[:, None], rtol=1e-14)
        np.testing.assert_allclose(row_rates[2 * i + 1].numpy(), expected, rtol=1e-14)


def test_mixed_plateau_cuts_the_lr():
    run = examples.mixed_plateau(random_classification(0), 100, torch.float64)
    cuts = np.flatnonzero(np.diff(run.lrs)) + 1  # 0-based index of the first step at a new lr
    np.testing.assert_array_equal(cuts, [52, 56, 59, 62, 65, 68])
    np.testing.assert_allclose(run.lrs[-1], 5e-9, rtol=1e-12)  # torch's eps rule stops there


def test_batch_indices_are_shuffled_epochs():
    idx = batch_indices(7, n=100, batch_size=16, steps=14)  # 6 batches per epoch
    assert idx.shape == (14, 16)
    for epoch in (idx[:6], idx[6:12]):
        assert len(set(epoch.ravel().tolist())) == 96  # no repeats within an epoch
    np.testing.assert_array_equal(idx[6:], batch_indices(7, 100, 16, 20)[6:14])
    assert not np.array_equal(np.sort(idx[:6].ravel()), idx[:6].ravel())


# ------------------------------------------------------------------------------ the suite
@pytest.mark.parametrize(  # the sweep's optimizers and the GPT: their own test files
    "name", [e.name for e in CATALOG if e.source not in (SWEEP_OPTIMIZERS, GPT_EXAMPLES)]
)
def test_float64_parity(name):
    steps = 60 if name in ("per-layer", "weight-norm", "adagrad-param", "adagrad-neuron") else None
    x64_before = jax.config.jax_enable_x64
    result = run_example(name, dtype="float64", steps=steps, dataset="digits")
    assert result.passed, result
    assert result.max_abs_loss_diff <= 1e-10
    assert result.max_rel_param_diff <= 1e-9
    assert jax.config.jax_enable_x64 == x64_before  # x64 stayed inside the run
    if not x64_before:
        assert jnp.ones(2).dtype == jnp.float32


@pytest.mark.parametrize("name", ["narrow", "mixed-plateau", "sgd-w64"])
def test_float32_parity(name):
    result = run_example(name, dtype="float32", dataset="digits")
    assert result.passed, result
    assert 0 < result.max_abs_loss_diff <= 1e-4
    assert result.jax_losses.dtype == np.float64  # recorded losses are float32 values


def test_float32_drift_is_torch_rounding():
    drift = float32_drift("narrow", steps=5)
    assert drift.shape == (5,)
    assert np.all(drift < 1e-6) and np.any(drift > 0)


def test_max_rel_param_diff():
    ref = {"Dense_0": {"kernel": np.array([[2.0, -4.0]]), "bias": np.array([1.0])}}
    other = {"Dense_0": {"kernel": np.array([[2.0, -3.0]]), "bias": np.array([1.5])}}
    assert max_rel_param_diff(ref, other) == 0.5  # bias: 0.5 / 1; kernel: 1 / 4
    assert trace_steps(120) == [1, 2, 5, 10, 20, 50, 100, 120]


# ------------------------------------------------------------------------------ the CLI
def test_cli_json(capsys):
    code = main(["--json", "--example", "narrow,wide", "--example", "narrow", "--steps", "3"])
    records = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [r["example"] for r in records] == ["narrow", "wide"]
    for record in records:
        assert tuple(record) == JSON_KEYS
        assert record["steps"] == 3 and record["dtype"] == "float64"
        assert record["tolerance"] == 1e-10 and record["passed"] is True
        assert abs(record["torch_final_loss"] - record["jax_final_loss"]) <= 1e-10


def test_cli_unknown_example_exits_2(capsys):
    assert main(["--example", "narrow,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope" in err
    assert all(name in err for name in EXAMPLE_NAMES)


def test_cli_forced_failure_exits_1(capsys):
    # A negative tolerance (hidden --tolerance option) makes every example fail.
    assert main(["--example", "narrow", "--steps", "2", "--tolerance", "-1", "--json"]) == 1
    (record,) = json.loads(capsys.readouterr().out)
    assert record["passed"] is False and record["tolerance"] == -1


def test_python_dash_m_exit_code():
    proc = subprocess.run(
        [sys.executable, "-m", "torch_parity", "--example", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("torch_parity: unknown example nope; choose from: narrow")


@pytest.mark.parametrize("given", ["", ",", " , "])
def test_cli_example_naming_nothing_exits_2(capsys, given):
    assert main(["--example", given]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "names no example" in err and "narrow" in err


def test_cli_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("torch_parity.compare.run_example", interrupted)
    assert main(["--example", "narrow"]) == 130
    captured = capsys.readouterr()
    assert captured.err.strip() == "torch_parity: interrupted (Ctrl-C); no results"
    assert captured.out == ""


@pytest.mark.parametrize("content", ["missing", "corrupt"])
def test_cli_explicit_data_dir_without_good_files_exits_2(tmp_path, capsys, content):
    """An explicit --data-dir never falls back to digits: missing or corrupt files are errors."""
    from jaxlr.data import IDX_FILES

    if content == "corrupt":
        for name in IDX_FILES:
            (tmp_path / name.removesuffix(".gz")).write_bytes(b"\x00\x00\x08\x03garbage")
    image_classification.cache_clear()
    assert main(["--example", "sgd-w64", "--steps", "1", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err
