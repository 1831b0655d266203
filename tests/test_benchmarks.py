"""Smoke tests of benchmarks/sweep_vs_torch.py at tiny sizes (no timing thresholds).

The script is loaded from its path (``benchmarks/`` is not a package). Besides "every method and
width has a row with a positive rate", the methods are checked against independent references:
the torch.func ensemble (d) against the sequential in-memory loop (b) (same init, same batches,
so the same final test losses), and the FLOP count against ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import traceback
import types
from pathlib import Path
from unittest import mock

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


def _load_script(name: str = "sweep_vs_torch"):
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


@pytest.mark.slow  # the whole workload: 2 widths, torch.func, 2 variants, the fused grid
def test_fashion_workload_reports_totals_ceiling_and_variants(bench, tmp_path):
    out = tmp_path / "workload.md"
    argv = [
        "--workload",
        "fashion-width-sgd",
        "--epochs",
        "2",
        "--widths",
        "8,16",
        "--baseline-steps",
        "3",
        "--torch-func",
        "--compare",
        "precision=high",
        "--compare",
        "sgd-update=folded",
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
    assert set(w["targets"]) == {"grid_under_60s", "at_least_50x_vs_a", "ahead_of_torch_func"}
    md = out.read_text()
    assert "## fashion-width-sgd workload" in md and "share of ceiling" in md
    variants = record["variants"]
    assert set(variants) == {"precision=high", "sgd-update=folded"}
    high = variants["precision=high"]
    assert high["ceiling"]["precision"] == "high" and high["widths"]["16"]["time_s"] > 0
    assert high["widths"]["16"]["hlo_precision"] == ["HIGH"]
    assert high["widths"]["16"]["share_of_ceiling"] > 0
    # the folded SGD step: timed per width, final losses equal to float32 rounding
    folded = variants["sgd-update=folded"]
    assert folded["ceiling"] is None and set(folded["widths"]) == {"8", "16"}
    for v in folded["widths"].values():
        assert v["compiled_s"] > 0 and v["finite_runs"] == v["runs"] == 4
        assert v["max_abs_final_test_loss_diff"] < 1e-4
        assert v["hlo_precision"] == ["HIGHEST"]
    assert "## jaxlr with `sgd-update=folded`" in md
    # both widths in one program: the same numbers as their own programs (bitwise on the CPU)
    assert w["fused"]["max_abs_final_test_loss_diff"] == 0
    assert w["fused"]["compiled_s"] > 0 and "All widths in one program" in md
    assert w["fused"]["hlo_precision"] == ["HIGHEST"]


def _dot_precisions(spec, data, n_seeds, n_lrs):
    """The precision attributes of the matrix products in ``spec``'s epoch program, lowered
    here with jax.jit's own ``lower`` (independently of the benchmark's HLO reader)."""
    import re

    import jax
    import jax.numpy as jnp

    from jaxlr import engine

    trainer = engine.make_trainer(spec)
    seeds = jax.ShapeDtypeStruct((n_seeds,), jnp.int32)
    lrs = jax.ShapeDtypeStruct((n_lrs,), jnp.float32)
    state = trainer.abstract_init(seeds, lrs)
    text = trainer.epoch.lower(state, seeds, lrs, jax.ShapeDtypeStruct((), jnp.int32), data)
    dots = [line for line in text.as_text().splitlines() if "dot_general" in line]
    assert dots
    return {p for line in dots for p in re.findall(r"precision = \[(\w+), \w+\]", line)}


@pytest.mark.slow  # 4 programs trained, then lowered again
def test_each_row_trains_at_its_own_precision(bench, monkeypatch, tmp_path):
    """``--precision`` reaches jaxlr's programs, and a ``--compare precision=...`` re-run is
    compiled at its own precision: every program the benchmark trains is lowered again here
    and its matrix products checked (HIGHEST for the first run, DEFAULT for the re-run)."""
    from jaxlr import engine

    trained = []
    original = engine.train_lanes

    def recording(spec, data, seeds, lrs, epochs, **kw):
        trained.append((spec, data, len(seeds), len(lrs)))
        return original(spec, data, seeds, lrs, epochs, **kw)

    monkeypatch.setattr(engine, "train_lanes", recording)
    argv = ["--widths", "8,16", "--steps", "2", "--precision", "highest"]
    argv += ["--compare", "precision=default", *TINY]
    assert bench.main(argv) == 0
    # one-epoch runs are trained twice (the second call is the compiled time): once each here
    programs = list({(t[0], t[2], t[3]): t for t in trained}.values())
    precisions = [_dot_precisions(*t) for t in programs]
    assert precisions == [{"HIGHEST"}] * 2 + [{"DEFAULT"}] * 2  # widths 8, 16, then again
    assert [t[0].hidden for t in programs] == [(8, 8), (16, 16)] * 2


def test_torch_precision_follows_jaxlr_precision(bench):
    """jaxlr's three precisions map onto PyTorch's float32 ("highest") and TF32 ("high")."""
    from jaxlr.config import PRECISIONS

    assert {p: bench.torch_precision(p) for p in PRECISIONS} == {
        "highest": "highest",
        "high": "high",
        "default": "high",
    }
    cfg = bench.parse_args(["--precision", "default", "--batch-size", "32"])
    assert (cfg.options.precision, cfg.options.batch_size) == ("default", 32)


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
        ["--precision", "tensorfloat32"],  # the library's three precisions only
        ["--widths", "0"],
        ["--lrs", "-1"],
        ["--batch-size", "0"],
        ["--steps", "10", "--workload", "fashion-width-sgd"],
        ["--workload", "seed-001"],
        ["--sgd-update", "fast"],
        ["--compare", "precision=bogus"],
        ["--compare", "precision=highest"],  # changes nothing
        ["--compare", "sgd-update=folded", "--compare", "sgd-update=folded"],
        ["--compare", "batch-size=32"],  # not comparable: the torch side would differ
        ["--compare-widths", "64"],  # without --compare
        ["--compare", "no-deterministic", "--compare-widths", "7"],
        ["--no-fused"],  # fashion-width-sgd only
        ["--bogus"],
    ],
)
def test_bad_arguments_exit_2(bench, argv, capsys):
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python benchmarks/sweep_vs_torch.py: error: ")
    assert err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_without_gpu_fails_clearly(bench, capsys):
    assert bench.main(["--device", "gpu", "--widths", "16", "--steps", "1", *TINY]) == 2
    assert "--device gpu" in capsys.readouterr().err


# ------------------------------------------------------------------ benchmarks/gpu_checks.sh


@pytest.fixture(scope="module")
def checks():
    return _load_script("gpu_checks")


def test_gpu_checks_plan_fits_the_slot(checks):
    """By the plan's own estimate, the main command fits in 6 minutes and the second in 5,
    each step says how it is estimated, and the tests it runs on the GPU exist."""
    assert checks.plan_total("main") <= 360
    assert checks.plan_total("second") <= 300
    for which in ("main", "second"):
        for step in checks.STEPS[which]:
            assert step.estimate_s > 0 and step.how
        text = checks.plan_text(which)
        assert f"| **total** | **{checks.plan_total(which):.0f}** |" in text
    # stages in order of value: correctness first, the science last
    assert checks.STEPS["main"][0].stage == "correctness"
    assert checks.STEPS["second"][-1].stage == "science"
    assert checks.missing_tests() == []
    assert checks.missing_tests(["tests/test_engine.py::test_no_such_test"]) != []


def test_gpu_checks_stage_table_marks_targets(checks):
    rows = [
        checks._row("cold", 28.4, "<= 30", True, "s"),
        checks._row("warm", 25.0, "<= 22", False, "s"),
        checks._row("ceiling", 51.2, "measured", None, "TFLOP/s"),
        checks._row("tf32", "failed (exit 1)", "<= 12", False),
    ]
    assert checks.stage_markdown("fashion", rows, {}) == (
        "## fashion\n\n| what | measured | target | |\n|:---|---:|:---|:---:|\n"
        "| cold | 28.4 s | <= 30 | ✓ |\n| warm | 25.0 s | <= 22 | ✗ |\n"
        "| ceiling | 51.2 TFLOP/s | measured |  |\n| tf32 | failed (exit 1) | <= 12 | ✗ |\n"
    )
    assert [r["broken"] for r in rows] == [False, False, False, True]
    # a whole-process time: the figure in seconds, the target beside it
    warm = checks._time_row("warm", 25.04, 0, 22)
    assert [warm[k] for k in ("value", "unit", "target", "ok")] == [25.0, "s", "<= 22 s", False]
    failed = checks._time_row("tf32", 3.0, 1, 12)
    assert failed["broken"] and failed["value"] == "failed (exit 1)" and failed["ok"] is False


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["out", "--data-dir", "/nonexistent/fashion"],
        ["out", "--smoke", "--data-dir", "."],
        ["out", "--budget", "0"],
        ["out", "--bogus"],
    ],
)
def test_gpu_checks_bad_arguments_exit_2(checks, argv, capsys):
    assert checks.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bash benchmarks/gpu_checks.sh: error: ") and err.count("\n") == 1


class _CommandsInProcess:
    """``subprocess`` as benchmarks/gpu_checks.py sees it in the smoke test: its ``python -m
    jaxlr.sweep ARGS`` and ``python benchmarks/sweep_vs_torch.py ARGS`` commands run in this
    process (12 fresh interpreters would each spend 3-6 s importing JAX and torch), after
    checking that each is the command a subprocess would have run (this interpreter, from the
    repository root, with the repository on ``PYTHONPATH`` and the CPU as the platform), under
    the environment variables it was given. Anything else (the step that runs pytest, git) is a
    real subprocess, so the script's own process handling runs too."""

    def __init__(self):
        self.ran: list[tuple[str, list[str]]] = []  # (entry point, args) run in this process

    def __getattr__(self, name):  # DEVNULL, STDOUT, run, TimeoutExpired, ...
        return getattr(subprocess, name)

    def _entry_point(self, cmd):
        if list(cmd[:3]) == [sys.executable, "-m", "jaxlr.sweep"]:
            from jaxlr.cli import main

            return main, list(cmd[1:])
        if list(cmd[:2]) == [sys.executable, "benchmarks/sweep_vs_torch.py"]:
            return _load_script().main, list(cmd[1:])
        return None, None

    def _run(self, main, args, env, cwd, stdout) -> int:
        assert Path(cwd) == ROOT, cwd
        assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep) and env["JAX_PLATFORMS"] == "cpu"
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
        sink = io.StringIO() if stdout in (None, subprocess.DEVNULL) else stdout
        self.ran.append((" ".join(args[:2]) if args[0] == "-m" else args[0], args))
        args = args[2:] if args[0] == "-m" else args[1:]
        with (
            mock.patch.dict(os.environ, changed),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            try:
                return main(args)
            except SystemExit as e:
                return e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # as a subprocess would: the traceback, exit status 1
                traceback.print_exc()
                return 1

    def call(self, cmd, *, stdout=None, stderr=None, env=None, cwd=None, **kw):
        main, args = self._entry_point(cmd)
        if main is None:
            return subprocess.call(cmd, stdout=stdout, stderr=stderr, env=env, cwd=cwd, **kw)
        assert stderr in (subprocess.STDOUT, stdout) and not kw, (stderr, kw)
        return self._run(main, args, env, cwd, stdout)

    def Popen(self, cmd, *, stdout=None, stderr=None, env=None, cwd=None, **kw):
        main, args = self._entry_point(cmd)
        if main is None:
            return subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env, cwd=cwd, **kw)
        assert stderr in (subprocess.STDOUT, subprocess.DEVNULL, stdout) and not kw
        rc = self._run(main, args, env, cwd, stdout)  # at once: the caller only waits for it
        return types.SimpleNamespace(wait=lambda timeout=None: rc, poll=lambda: rc, returncode=rc)


@pytest.fixture
def jax_cache_restored():
    """The sweeps run in this process point JAX's persistent compilation cache at their
    ``--work`` directory; the tests that follow get this process's setting back."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()


def test_gpu_checks_shell_script_runs_from_anywhere(tmp_path):
    """``benchmarks/gpu_checks.sh`` (the wrapper the GPU machine runs) from another directory:
    it finds the repository and its Python, and prints the plan."""
    p = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_checks.sh"), str(tmp_path / "out"), "--plan"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("The main command:") and "| **total** |" in p.stdout


@pytest.mark.slow
def test_gpu_checks_smoke(checks, tmp_path, monkeypatch, jax_cache_restored):
    """Every step of both GPU commands, on the CPU with tiny shapes (``--smoke``): each stage
    writes its table and JSON, no step fails to run, and the figures are there. The sweeps and
    benchmark runs are in-process (see :class:`_CommandsInProcess`); the step that runs pytest
    is a real subprocess."""
    out = tmp_path / "out"
    commands = _CommandsInProcess()
    monkeypatch.setattr(checks, "subprocess", commands)
    rc = checks.main([str(out), "--smoke", "--work", str(tmp_path / "work")])
    assert rc == 0, (out / "gpu_checks.log").read_text()[-3000:]
    # every sweep and benchmark command of both plans ran (the pytest step in its own process)
    ran = [entry for entry, _ in commands.ran]
    assert ran.count("-m jaxlr.sweep") >= 10 and ran.count("benchmarks/sweep_vs_torch.py") >= 2
    stages = ("correctness", "fashion", "digits", "steps", "science")
    for stage in stages:
        record = json.loads((out / f"{stage}.json").read_text())
        assert record["smoke"] and record["rows"], stage
        assert not any(r["broken"] for r in record["rows"]), record["rows"]
        assert not any(str(r["value"]).startswith("skipped") for r in record["rows"])
        assert f"## {stage}" in (out / f"{stage}.md").read_text()
    rows = {
        s: {r["what"]: r for r in json.loads((out / f"{s}.json").read_text())["rows"]}
        for s in stages
    }
    device_cpu = [r for w, r in rows["correctness"].items() if w.startswith("device vs CPU")]
    assert device_cpu and device_cpu[0]["value"] == "0" and device_cpu[0]["ok"]  # CPU vs CPU
    passed = [r for w, r in rows["correctness"].items() if "test_nan_lane" in w]
    assert passed and passed[0]["value"] == "passed"
    for stage, what in (("fashion", "the same command twice"), ("digits", "the same command")):
        same = [r for w, r in rows[stage].items() if w.startswith(what)]
        assert same and same[0]["value"] == "identical", rows[stage]
    for stage, what, target in (
        ("fashion", "fp32 highest, cold cache (whole process)", "<= 30 s"),
        ("fashion", "TF32, warm cache (whole process)", "<= 12 s"),
        ("digits", "default sweep, warm cache (whole process)", "<= 6 s"),
    ):
        r = rows[stage][what]
        assert r["target"] == target and r["unit"] == "s" and isinstance(r["ok"], bool), r
        assert r["value"] > 0
    hlo = rows["fashion"]["the programs' matmul precision (lowered HLO)"]
    assert hlo["value"] == "HIGHEST" and hlo["ok"]
    fused = [r for w, r in rows["fashion"].items() if w.startswith("one program vs separate")]
    assert fused[0]["ok"]  # bitwise equal on the CPU
    assert any("folded / generic" in w for w in rows["steps"])
    assert any("deterministic" in w for w in rows["steps"])
    summary = (out / "gpu_checks.md").read_text()
    assert all(f"## {s}" in summary for s in stages) and "✓" in summary
    _check_gpt_stage(out, tmp_path / "work")


def _check_gpt_stage(out: Path, work: Path) -> None:
    """The gpt command's stage of the smoke run (``benchmarks/gpt_vs_torch.py --smoke``, a real
    subprocess): its table has every figure and none broken; and the benchmark's own JSON has
    both processes, every method at every width, positive rates and FLOP shares, the same
    final losses from (b) and (c) (same init, batches and update), and every side trained
    (final losses below the chance level ln 256)."""
    stage = json.loads((out / "gpt.json").read_text())
    rows = {r["what"]: r for r in stage["rows"]}
    assert stage["smoke"] and not any(r["broken"] for r in rows.values()), rows
    assert rows["fp32 matmul ceiling (the faster of JAX's and torch's)"]["value"] > 0
    for w in (16, 32, "all"):
        ratio = rows[f"width {w}: jaxlr compiled vs (b) torch one run at a time"]
        assert ratio["value"].endswith("x") and isinstance(ratio["ok"], bool)
    assert "## gpt" in (out / "gpt.md").read_text()
    assert "| (a) jaxlr compiled |" in stage["gpt_report"]

    gpt = _load_script("gpt_vs_torch")
    record = json.loads((work / "gpt.json").read_text())
    cfg = gpt.BenchConfig(**{**gpt.SMOKE, "smoke": True})
    by = {(r["width"], r["method"]): r for r in record["rows"]}
    methods = ("torch_loop", "torch_func", "jaxlr_e2e", "jaxlr")
    assert set(by) == {(w, m) for w in (*cfg.widths, "all") for m in methods}
    for r in by.values():
        assert r["runs_steps_per_s"] > 0 and 0 < r["share_of_ceiling"] < 1, r
        assert len(r["final_val_loss"]) == cfg.lanes * (2 if r["width"] == "all" else 1)
        assert all(v < math.log(256) for v in r["final_val_loss"]), r
    for w in cfg.widths:
        assert by[w, "torch_loop"]["vs_b"] == 1.0
        assert by[w, "jaxlr_e2e"]["compile_s"] > 0
        np.testing.assert_allclose(
            by[w, "torch_func"]["final_val_loss"], by[w, "torch_loop"]["final_val_loss"],
            rtol=1e-4,
        )  # fmt: skip
    assert gpt.b_vs_c_diff(record) < 1e-4
    assert "| all | (a) jaxlr compiled |" in (work / "gpt.md").read_text()
    assert "(a) jaxlr compiled" in (work / "gpt.out").read_text()  # what it printed
