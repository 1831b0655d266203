"""``benchmarks/gpt_vs_torch.py``: its closed forms against PyTorch, its flags, and the plan of the
gpu_checks command that runs it (the ``--smoke`` run is checked in ``test_benchmarks.py``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mup")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    path = ROOT / "benchmarks" / "gpt_vs_torch.py"
    spec = importlib.util.spec_from_file_location("gpt_vs_torch", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpt_vs_torch"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("width", "depth", "context", "batch"), [(64, 2, 32, 4), (32, 2, 128, 2)])
def test_flops_per_step_equals_torchs_flop_counter(bench, width, depth, context, batch):
    """The estimate 6·P·B·T + 12·L·B·T²·w is torch's own count of the twin's forward and
    backward matmuls (attention in its math kernel, so that the counter sees its products),
    plus 6·B·T for each parameter that is in no matmul (biases, LayerNorms, positions)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from torch_parity.torch_gpt import TorchGPT, TwinConfig

    model = TorchGPT(TwinConfig(width=width, depth=depth, context=context, head_dim=16), 0)
    x = torch.randint(0, 256, (batch, context), generator=torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x).reshape(-1, 256), x.reshape(-1)).backward()
    names = [n for n, _ in model.named_parameters()]
    hidden = {n for n in names if n.endswith("weight") and (".attn." in n or ".mlp." in n)}
    matrices = hidden | {"wte.weight"}  # the tied embedding is the readout's matrix
    not_in_matmul = sum(p.numel() for n, p in model.named_parameters() if n not in matrices)
    assert sum(p.numel() for p in model.parameters()) == bench.param_count(width, depth, context)
    estimate = bench.flops_per_step(width, depth, context, batch)
    assert estimate - 6 * batch * context * not_in_matmul == counter.get_total_flops()


def test_schedule_is_jaxlrs_warmup_cosine(bench):
    """The torch sides' multiplier equals the sweep's own program's at every step."""
    import jax.numpy as jnp

    from jaxlr.engine import RunSpec

    cfg = bench.BenchConfig(**{**bench.SMOKE, "steps": 40, "eval_every": 20, "warmup": 0.15})
    sweep = bench.sweep_config(cfg)

    class Shapes:  # what RunSpec.create reads of a text dataset
        n_train, n_test, in_features, num_classes = 20 * cfg.batch_size, 8, 8, 256
        n_windows, mean, std = 1000, 0.0, 1.0

    spec = RunSpec.create(sweep, Shapes(), (16,), "adamw")
    assert cfg.warmup_steps == 6 and spec.total_steps == 40
    ours = [bench.schedule_multiplier(t, cfg.steps, cfg.warmup_steps) for t in range(40)]
    theirs = [float(spec.schedule_multiplier(jnp.int32(t))) for t in range(40)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_adamw_step_equals_torch_adamw(bench):
    """The hand-written AdamW of (c), lanes stacked on a leading axis with their own lrs,
    against ``torch.optim.AdamW`` on each lane alone, over 5 steps."""
    gen = torch.Generator().manual_seed(0)
    lrs, wd = [1e-3, 3e-2], 0.1
    p0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    grads = [torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) for _ in range(5)]
    params = {"w": p0.clone()}
    m, v = {"w": torch.zeros_like(p0)}, {"w": torch.zeros_like(p0)}
    eta = {"w": torch.tensor(lrs, dtype=torch.float64).reshape(2, 1, 1) * 0.5}
    for k, g in enumerate(grads, start=1):
        bench.adamw_step(params, {"w": g}, m, v, eta, k, wd)
    for lane, lr in enumerate(lrs):
        p = torch.nn.Parameter(p0[lane].clone())
        opt = torch.optim.AdamW([p], lr=lr * 0.5, betas=bench.BETAS, eps=bench.EPS, weight_decay=wd)
        for g in grads:
            p.grad = g[lane].clone()
            opt.step()
        np.testing.assert_allclose(params["w"][lane].numpy(), p.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "argv",
    [["--widths", "24"], ["--steps", "10", "--eval-every", "4"], ["--lrs", "0"], ["--bogus"]],
)
def test_bad_arguments_exit_2_with_one_line(bench, argv, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python benchmarks/gpt_vs_torch.py: error: ") and err.count("\n") == 1


# The --smoke run itself (its JSON, table and printout) is checked in the smoke run of every
# GPU command, tests/test_benchmarks.py::test_gpu_checks_smoke, whose gpt stage runs it.


# --------------------------------------------------- the gpt command of benchmarks/gpu_checks.py


@pytest.fixture(scope="module")
def checks():
    path = ROOT / "benchmarks" / "gpu_checks.py"
    spec = importlib.util.spec_from_file_location("gpu_checks_for_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_checks_for_gpt"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpu_checks_gpt_command_fits_its_slot(checks, capsys):
    """The gpt command's plan fits its limit; ``--gpt`` with ``--second`` is refused."""
    assert 0 < checks.plan_total("gpt") <= checks.GPT_LIMIT_S
    assert [s.stage for s in checks.STEPS["gpt"]] == ["gpt"]
    assert checks.main(["out", "--second", "--gpt"]) == 2
    assert "--second and --gpt" in capsys.readouterr().err


def test_gpu_checks_smoke_gpt_runs_the_gpt_stage_alone(checks, tmp_path, monkeypatch):
    """``gpu_checks.sh OUT --smoke --gpt`` runs the gpt command's steps only, without a time
    budget (the steps themselves run in ``test_benchmarks.py::test_gpu_checks_smoke``)."""
    ran = []
    monkeypatch.setattr(checks, "run", lambda which, ctx, budget: ran.append((which, budget)) or 0)
    out, work = tmp_path / "out", tmp_path / "work"
    assert checks.main([str(out), "--smoke", "--gpt", "--work", str(work)]) == 0
    assert ran == [("gpt", float("inf"))]
    ran.clear()
    assert checks.main([str(out), "--smoke", "--work", str(work)]) == 0
    assert ran == [("main", float("inf")), ("second", float("inf")), ("gpt", float("inf"))]
