"""Smoke tests of benchmarks/sweep_vs_torch.py at tiny sizes (no timing thresholds).

The script is loaded from its path (``benchmarks/`` is not a package). Besides "every method and
width has a row with a positive rate", the methods are checked against independent references:
the torch.func ensemble (d) against the sequential in-memory loop (b) (same init, same batches,
so the same final test losses), and the FLOP count against ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("torch_dataloader", "torch_memory", "torch_func", "jaxlr_e2e", "jaxlr")
TINY = [
    "--n-train",
    "512",
    "--n-test",
    "128",
    "--lrs",
    "0.1,0.01",
    "--seeds",
    "2",
    "--threads",
    "1",
]


def _load_script():
    name = "sweep_vs_torch"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script()


@pytest.fixture(scope="module")
def grid_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.md"
    argv = ["--widths", "16", "--steps", "8", "--torch-func", "--repeats", "2", "--out", str(out)]
    argv += TINY
    assert bench.main(argv) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_grid_table_has_every_method_and_width(grid_run):
    md_path, record = grid_run
    rows = {(r["width"], r["method"]): r for r in record["rows"]}
    assert set(rows) == {(16, m) for m in METHODS}
    for r in rows.values():
        assert r["lanes"] == 4  # 2 seeds x 2 lrs
        assert r["steps"] == 8
        assert r["run_steps"] == 32
        assert r["time_s"] > 0
        assert r["runs_steps_per_s"] > 0
        assert math.isclose(r["runs_steps_per_s"], 32 / r["time_s"])
        assert not r["extrapolated"]
        assert len(r["final_test_loss"]) == 4
        assert np.isfinite(r["final_test_loss"]).all()
    base = rows[16, "torch_dataloader"]
    assert math.isclose(base["vs_a"], 1.0)
    for r in rows.values():
        assert math.isclose(r["vs_a"], r["runs_steps_per_s"] / base["runs_steps_per_s"])
    assert rows[16, "jaxlr_e2e"]["compile_s"] >= 0
    md = md_path.read_text()
    for label in ("(a) torch DataLoader", "(b) torch in-memory", "(d) torch.func vmap"):
        assert f"| 16 | {label} |" in md
    assert "| 16 | (c) jaxlr incl. compile |" in md and "| 16 | (c) jaxlr compiled |" in md
    assert "torch.set_num_threads(" in md


def test_torch_func_ensemble_equals_sequential_loop(grid_run):
    """(d) trains each (seed, lr) lane exactly as (b) does: the same final test losses."""
    _, record = grid_run
    rows = {r["method"]: r for r in record["rows"]}
    np.testing.assert_allclose(
        rows["torch_func"]["final_test_loss"], rows["torch_memory"]["final_test_loss"], rtol=1e-4
    )
    # jaxlr and the seed's DataLoader draw other inits/batches: only the same ballpark (ln 10)
    for m in ("torch_dataloader", "jaxlr"):
        np.testing.assert_allclose(rows[m]["final_test_loss"], np.log(10), rtol=0.2)


def test_seed001_workload_reports_totals_ceiling_and_precisions(bench, tmp_path):
    out = tmp_path / "workload.md"
    argv = [
        "--workload",
        "seed-001",
        "--epochs",
        "2",
        "--widths",
        "8,16",
        "--baseline-steps",
        "3",
        "--torch-func",
        "--precision",
        "highest,high",
        "--sgd-update",
        "generic,folded",
        "--ceiling-size",
        "256",
        "--out",
        str(out),
        *TINY,
    ]
    assert bench.main(argv) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert set(rows) == set(METHODS)
    for m in ("torch_dataloader", "torch_memory", "torch_func"):
        assert rows[m]["extrapolated"] and rows[m]["measured_steps"] == 3
        assert rows[m]["steps"] == 16  # 2 epochs of 512 // 64 = 8 steps
    assert not rows["jaxlr_e2e"]["extrapolated"]
    w = record["workload"]
    assert w["ceiling"]["flops_per_s"] > 0
    assert set(w["totals"]) == set(METHODS)
    share = w["flops"]["16"]["jaxlr"]["share_of_ceiling"]
    assert share > 0
    assert set(w["precisions"]) == {"high"}
    assert w["precisions"]["high"]["widths"]["16"]["time_s"] > 0
    assert set(w["targets"]) == {"grid_under_60s", "at_least_50x_vs_a", "ahead_of_torch_func"}
    md = out.read_text()
    assert "## seed-001 workload" in md and "share of ceiling" in md
    # the folded SGD step: timed per width, final losses equal to float32 rounding
    folded = record["updates"]["folded"]
    assert set(folded) == {"8", "16"}
    for v in folded.values():
        assert v["compiled_s"] > 0 and v["finite_runs"] == v["runs"] == 4
        assert v["max_abs_final_test_loss_diff"] < 1e-4
    assert "## jaxlr with `--sgd-update folded` (against `generic` above)" in md
    # both widths in one program: the same numbers as their own programs (bitwise on the CPU)
    assert w["fused"]["max_abs_final_test_loss_diff"] == 0
    assert w["fused"]["compiled_s"] > 0 and "All widths in one program" in md


def test_matmul_flops_match_torch_flop_counter(bench):
    from torch.utils.flop_counter import FlopCounterMode

    cfg = bench.BenchConfig(widths=(32,), n_test=100)
    model = bench.torch_mlp(32, cfg, 0, torch.device("cpu"))
    x, y = torch.randn(cfg.batch_size, cfg.features), torch.randint(0, 10, (cfg.batch_size,))
    with FlopCounterMode(display=False) as train:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    with FlopCounterMode(display=False) as evaluate, torch.no_grad():
        model(torch.randn(cfg.n_test, cfg.features))
    step_f, eval_f = bench.matmul_flops(cfg, 32)
    assert step_f == train.get_total_flops()
    assert eval_f == evaluate.get_total_flops()


@pytest.mark.parametrize(
    "argv",
    [
        ["--precision", "bogus"],
        ["--widths", "0"],
        ["--lrs", "-1"],
        ["--steps", "10", "--workload", "seed-001"],
        ["--precision", "highest,high"],  # several precisions: seed-001 only
        ["--sgd-update", "fast"],
        ["--sgd-update", "folded,folded"],
    ],
)
def test_bad_arguments_exit_2(bench, argv, capsys):
    assert bench.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_without_gpu_fails_clearly(bench, capsys):
    assert bench.main(["--device", "gpu", "--widths", "16", "--steps", "1", *TINY]) == 2
    assert "--device gpu" in capsys.readouterr().err
