"""The GPU measurements of jaxlr in two prepared commands that fit a short GPU slot.

A GPU slot is 15 minutes of device time in all, the machine's start (1-3 minutes) included, at
most 10 minutes a command. So the checks come as two commands, each a list of steps in order of
value, each stage writing its own report as it finishes (a run cut short keeps what it measured):

* the **main** command (about 6 minutes on one H100/H200 by the plan below):
  ``correctness`` (the tests that matter on a GPU: NaN-lane isolation bitwise, all widths in one
  program equal to separate programs, kill -9 + resume; a lane's GPU result against its CPU
  result) and ``fashion`` (the Fashion-MNIST width grid, preset ``fashion-width-sgd``, whole
  process: fp32 "highest" cold and with a warm compilation cache, the same ``results.csv``
  bytes twice; its programs in one process: the width-1024 program's share of the fp32 matmul
  ceiling measured in the same run, the whole grid in one program against the width-1024
  program alone; TF32 cold and warm);
* the optional **second** command (``--second``, about 5 minutes): ``digits`` (the default
  sweep cold and warm), ``steps`` (the folded against the generic SGD step and the cost of
  deterministic GPU ops, on the width-1024 program) and ``science`` (the Fashion-MNIST width grid
  with 5 seeds on the real data, and what fits of the width-exponent experiment).

The **gpt** command (``--gpt``, about 2 minutes) has one stage, ``gpt``: the GPT sweep's
programs against PyTorch one run at a time and ``torch.func`` (``benchmarks/gpt_vs_torch.py``,
widths 128..1024); its own command because the main and second ones are full.

``--smoke`` runs every step on the CPU with tiny shapes (about a minute or two), so that the
script and every GPU-only path it drives (the compiler options the CPU ignores, the autotuning
policy, deterministic ops, fused programs, the benchmark's precision handling) run on every
submission (``tests/test_benchmarks.py``).

Usage (from the repository root; ``benchmarks/gpu_checks.sh`` wraps it)::

    bash benchmarks/gpu_checks.sh OUT [--data-dir DIR]             # the main command
    bash benchmarks/gpu_checks.sh OUT --second [--data-dir DIR]    # the second command
    bash benchmarks/gpu_checks.sh OUT --gpt                        # the gpt command
    bash benchmarks/gpu_checks.sh OUT --smoke [--gpt]              # --gpt: its stage only
    bash benchmarks/gpu_checks.sh OUT --smoke                      # every step, CPU, tiny
    bash benchmarks/gpu_checks.sh OUT --plan [--second]            # the plan and its estimate

``OUT`` receives at most 8 files (what the device tool brings back): ``gpu_checks.md`` (every
stage's table so far), ``<stage>.md`` and ``<stage>.json`` per stage, ``gpu_checks.log``.
Sweep directories and caches go under ``--work`` (default: a fresh temporary directory).
Without ``--data-dir`` the Fashion-MNIST grid runs on synthetic data of the same shapes
(60,000 x 784, 10 classes), and the science stage, which needs the real data, is skipped.

**The estimate.** Each step carries its expected seconds on one H100, from the only GPU
measurement of jaxlr so far (``/work/shared/gpu/H100-2026-11-22.md``, older code; an H200 has
the same arithmetic ceilings and 1.4x the memory bandwidth, so these are upper bounds there):
the grid through the CLI took 95 s whole process cold (7 lrs x 3 seeds); compile and first-epoch
overheads 11.6 + 18.6 + 16.6 s, so about 48 s warm; TF32 46.5 s in process (8 lrs), its
compiled part about 20 s; the default digits sweep 41-50 s cold and 10.4 s warm; a small digits
sweep 16-21 s; an untuned program compiles in about 4 s, an autotuned one in 11.5-18.6 s; a
process starts in about 6 s. :data:`STEPS` writes each step's sum beside it. Where a step's
estimate no longer fits in what is left of ``--budget`` (default: the plan's own total plus
a third), it is skipped and reported as such, so the command ends inside its slot.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MAIN_LIMIT_S = 360.0  # the main command's plan must fit in 6 minutes
SECOND_LIMIT_S = 300.0  # the second command's in 5
GPT_LIMIT_S = 180.0  # the gpt command's in 3
GPT_GPU_SHAPES = ["--widths", "128,256,512,1024", "--lrs", "3e-4,1e-3,3e-3,1e-2", "--seeds", "2"]
GPT_GPU_SHAPES += ["--depth", "2", "--context", "64", "--batch-size", "16", "--steps", "100"]
GPT_GPU_SHAPES += ["--eval-every", "50", "--no-autotune"]  # 100 steps do not pay autotuning back
FASHION_LRS = "1,0.5,0.1,0.01,0.001,0.0001,0.00001"  # the preset's 7 lrs (for the benchmark)
GPU_TESTS = (
    "tests/test_engine.py::test_nan_lane_leaves_other_lanes_identical",
    "tests/test_scale.py::test_fused_programs_equal_separate_programs_and_resume",
    "tests/test_scale.py::test_kill9_then_resume_gives_identical_results",
)
SMOKE_SHAPES = ["--dataset", "synthetic", "--n-train", "512", "--n-test", "128"]
SMOKE_SHAPES += ["--features", "784", "--num-classes", "10", "--widths", "8,16"]
SMOKE_SHAPES += ["--epochs", "1"]
SMOKE_FUSE = ["--fuse", "on"]  # on the CPU too: one program per round, as on a GPU
SYNTHETIC_FASHION = ["--dataset", "synthetic", "--n-train", "60000", "--n-test", "10000"]
SYNTHETIC_FASHION += ["--features", "784", "--num-classes", "10"]


class CheckError(ValueError):
    """A bad command line; the message says how to fix it."""


@dataclasses.dataclass
class Ctx:
    """What every step needs: where to write, how big to run, and the stage records."""

    out: Path
    work: Path
    data_dir: str | None
    smoke: bool
    preset: str
    log_file: Path
    records: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    stages: dict[str, list[dict]] = dataclasses.field(default_factory=dict)  # rows so far

    def log(self, line: str) -> None:
        """One line to stdout and the log."""
        print(line, flush=True)
        with self.log_file.open("a") as f:
            f.write(line + "\n")


@dataclasses.dataclass(frozen=True)
class Step:
    """One measurement: its stage, name, H100 estimate (seconds) and how it is run."""

    stage: str
    name: str
    estimate_s: float
    how: str  # the estimate's reasoning, for --plan
    run: Callable[[Ctx], list[dict[str, Any]]]  # returns table rows (see _row)


def _row(what: str, value: Any, target: str, ok: bool | None, unit: str = "") -> dict:
    """A report row: a figure, the target beside it and whether it is met (None: no target).
    A value that says the step failed (``"failed ..."``, ``"error: ..."``) marks it broken."""
    broken = isinstance(value, str) and value.startswith(("failed", "error"))
    return {"what": what, "value": value, "unit": unit, "target": target, "ok": ok,
            "broken": broken}  # fmt: skip


# ------------------------------------------------------------------------------ processes
def _env(ctx: Ctx, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if ctx.smoke:
        env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _timed(ctx: Ctx, name: str, cmd: Sequence[str], **env: str) -> tuple[float, int]:
    """Runs ``cmd`` (its output into ``work/name.out``); its whole-process wall time and exit
    status."""
    path = ctx.work / f"{name}.out"
    t0 = time.perf_counter()
    with path.open("w") as f:
        rc = subprocess.call(
            list(cmd), stdout=f, stderr=subprocess.STDOUT, env=_env(ctx, **env), cwd=REPO
        )
    dt = time.perf_counter() - t0
    ctx.log(f"  {name}: {dt:.1f} s (exit {rc})")
    if rc != 0:
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        ctx.log("    " + "\n    ".join(tail))
    return dt, rc


def _sweep(ctx: Ctx, name: str, args: Sequence[str], cache: str | None, **env: str):
    """``python -m jaxlr.sweep ARGS --out work/name``, timed, with compilation cache ``cache``
    (a directory under work, or None: no cache)."""
    cache_env = {"JAXLR_COMPILATION_CACHE": str(ctx.work / cache) if cache else "0"}
    shutil.rmtree(ctx.work / name, ignore_errors=True)  # a rerun with the same --work
    cmd = [sys.executable, "-m", "jaxlr.sweep", "--no-progress", *args]
    return _timed(ctx, name, [*cmd, "--out", str(ctx.work / name)], **cache_env, **env)


def _same_bytes(ctx: Ctx, a: str, b: str) -> bool | None:
    pa, pb = ctx.work / a / "results.csv", ctx.work / b / "results.csv"
    if not (pa.exists() and pb.exists()):
        return None
    return pa.read_bytes() == pb.read_bytes()


def _time_row(what: str, t: float, rc: int, target_s: float | None) -> dict:
    """A row for a whole-process time ``t`` of a command that exited ``rc``."""
    target = "" if target_s is None else f"<= {target_s:g} s"
    if rc != 0:
        return _row(what, f"failed (exit {rc})", target, False)
    return _row(what, round(t, 1), target, None if target_s is None else t <= target_s, "s")


# --------------------------------------------------------------------------- correctness
def missing_tests(ids: Sequence[str] = GPU_TESTS) -> list[str]:
    """The test ids (``file::name``, without parameters) whose file or function is gone."""
    missing = []
    for test_id in ids:
        path, name = test_id.split("::")
        text = (REPO / path).read_text() if (REPO / path).exists() else ""
        if f"def {name.split('[')[0]}(" not in text:
            missing.append(test_id)
    return missing


def step_tests(ctx: Ctx) -> list[dict]:
    """The GPU-relevant tests, one row each (from pytest's JUnit XML)."""
    xml = ctx.work / "tests.xml"
    gone = missing_tests()
    rows = (
        [_row("the GPU tests exist", f"failed: {', '.join(gone)} gone", "all", False)]
        if gone
        else []
    )
    ids = [t for t in GPU_TESTS if t not in gone]
    if ctx.smoke:  # the quickest one for real, to run this step's code
        ids = [f"{GPU_TESTS[0]}[generic]"]
    _timed(
        ctx,
        "tests",
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *ids],
    )
    if not xml.exists():
        return [*rows, _row("the GPU tests", "failed: pytest wrote no report", "pass", False)]
    for case in ET.parse(xml).iter("testcase"):
        bad = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        outcome = "failed" if bad else "skipped" if skipped else "passed"
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        rows.append(
            _row(
                f"{name} ({float(case.get('time', 0)):.1f} s)",
                outcome,
                "passed",
                None if skipped else not bad,
            )
        )
    return rows


def _quick(ctx: Ctx) -> list[str]:
    return ["--preset", "quick", "--seeds", "2"] + (["--epochs", "1"] if ctx.smoke else [])


def step_device_vs_cpu(ctx: Ctx) -> list[dict]:
    """A small sweep on the device and on the CPU: every lane's final losses, finite in both,
    equal to float32 rounding (relative difference <= 1e-3 after training's amplification)."""
    cmd = [sys.executable, "-m", "jaxlr.sweep", "--no-progress", *_quick(ctx)]
    shutil.rmtree(ctx.work / "quick-cpu", ignore_errors=True)
    cpu = subprocess.Popen(  # the CPU run overlaps the device run (the host has cores to spare)
        [*cmd, "--out", str(ctx.work / "quick-cpu")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(ctx, JAX_PLATFORMS="cpu", JAXLR_COMPILATION_CACHE="0"),
        cwd=REPO,
    )
    t, rc = _sweep(ctx, "quick-device", _quick(ctx), None)
    cpu_rc = cpu.wait()
    if rc or cpu_rc:
        return [_row("device vs CPU, final losses", f"failed (exit {rc}/{cpu_rc})", "", False)]
    import numpy as np
    import pandas as pd

    a = pd.read_csv(ctx.work / "quick-device" / "results.csv")
    b = pd.read_csv(ctx.work / "quick-cpu" / "results.csv")
    worst, compared = 0.0, 0
    for col in ("train_loss", "test_loss"):
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        both = np.isfinite(x) & np.isfinite(y)
        compared = int(both.sum())
        if compared:
            worst = max(worst, float(np.max(np.abs(x[both] - y[both]) / np.abs(y[both]))))
    return [
        _row(
            f"device vs CPU: max relative diff of losses ({compared} finite rows, {t:.1f} s)",
            f"{worst:.2g}",
            "<= 1e-3",
            worst <= 1e-3 and len(a) == len(b),
        )
    ]


# ------------------------------------------------------------------------------- fashion
def _fashion(ctx: Ctx) -> list[str]:
    args = ["--preset", ctx.preset]
    if ctx.smoke:
        return [*args, *SMOKE_SHAPES, "--seeds", "2", *SMOKE_FUSE]
    return [*args, *(["--data-dir", ctx.data_dir] if ctx.data_dir else SYNTHETIC_FASHION)]


def step_fashion_cold_warm(ctx: Ctx) -> list[dict]:
    """The grid whole process with a new compilation cache, then again with it warm."""
    shutil.rmtree(ctx.work / "cache-fashion", ignore_errors=True)
    cold, rc1 = _sweep(ctx, "fashion-cold", _fashion(ctx), "cache-fashion")
    warm, rc2 = _sweep(ctx, "fashion-warm", _fashion(ctx), "cache-fashion")
    same = _same_bytes(ctx, "fashion-cold", "fashion-warm")
    return [
        _time_row("fp32 highest, cold cache (whole process)", cold, rc1, 30),
        _time_row("fp32 highest, warm cache (whole process)", warm, rc2, 22),
        _row("the same command twice: results.csv bytes", _yes(same), "identical", same),
    ]


def _yes(v: bool | None) -> str:
    return "n/a" if v is None else "identical" if v else "different"


def step_fashion_tf32(ctx: Ctx) -> list[dict]:
    """The grid at TF32 (``--precision default``) whole process, cold then warm."""
    args = [*_fashion(ctx), "--precision", "default"]
    cold, rc1 = _sweep(ctx, "fashion-tf32-cold", args, "cache-fashion")
    warm, rc2 = _sweep(ctx, "fashion-tf32-warm", args, "cache-fashion")
    return [
        _time_row("TF32, its programs not yet cached (whole process)", cold, rc1, None),
        _time_row("TF32, warm cache (whole process)", warm, rc2, 12),
    ]


def _bench(ctx: Ctx, name: str, args: Sequence[str]) -> tuple[dict | None, str]:
    """``benchmarks/sweep_vs_torch.py ARGS`` on the device (the CPU in smoke mode); its JSON."""
    out = ctx.work / f"{name}.md"
    common = ["--device", "cpu" if ctx.smoke else "gpu", "--note", "benchmarks/gpu_checks.py"]
    if ctx.smoke:
        common += ["--n-train", "512", "--n-test", "128", "--lrs", "0.1,0.01", "--seeds", "2"]
        common += ["--ceiling-size", "256", "--threads", "1", "--baseline-steps", "3"]
    else:
        common += ["--lrs", FASHION_LRS, "--seeds", "3", "--baseline-steps", "20"]
    cmd = [sys.executable, "benchmarks/sweep_vs_torch.py", *common, *args, "--out", str(out)]
    _, rc = _timed(ctx, name, cmd)
    if rc != 0 or not out.with_suffix(".json").exists():
        return None, ""
    return json.loads(out.with_suffix(".json").read_text()), out.read_text()


def _widths(ctx: Ctx) -> list[str]:
    return ["--widths", "8,16" if ctx.smoke else "64,256,1024"]


def step_fashion_programs(ctx: Ctx) -> list[dict]:
    """The grid's programs in one process: each width's, and all widths in one program."""
    widest = "16" if ctx.smoke else "1024"
    args = ["--workload", "fashion-width-sgd", "--epochs", "2", *_widths(ctx), "--no-torch-func"]
    args += ["--autotune-widths", widest]  # as the sweep's policy: only long programs tune
    record, md = _bench(ctx, "fashion-programs", args)
    ctx.records.setdefault("fashion", {})["programs_report"] = md
    if record is None:
        return [_row("the grid's programs (sweep_vs_torch.py)", "failed", "", False)]
    w = record["workload"]
    share = w["flops"][widest]["jaxlr"]["share_of_ceiling"]
    fused = w["fused"]
    hlo = sorted({p for r in record["rows"] for p in (r.get("hlo_precision") or [])})
    return [
        _row(
            f"matmul ceiling, fp32 highest ({w['ceiling']['n']}^2)",
            round(w["ceiling"]["flops_per_s"] / 1e12, 2),
            "measured",
            None,
            "TFLOP/s",
        ),
        _row(f"width-{widest} program's share of the ceiling", f"{100 * share:.1f}%", ">= 70%",
             share >= 0.70),
        _row(f"whole grid in one program, compiled, vs the width-{widest} program alone",
             f"{fused['vs_widest']:.2f}x", "<= 1.15x", fused["vs_widest"] <= 1.15),
        _row("one program vs separate programs: max |diff| of final test losses",
             f"{fused['max_abs_final_test_loss_diff']:.3g}", "0 (bitwise)",
             fused["max_abs_final_test_loss_diff"] == 0),
        _row("the programs' matmul precision (lowered HLO)", "/".join(hlo), "HIGHEST",
             hlo == ["HIGHEST"]),
    ]  # fmt: skip


# ----------------------------------------------------------------------- second command
def _digits(ctx: Ctx) -> list[str]:
    return ["--epochs", "1", "--widths", "8,16", "--seeds", "1", *SMOKE_FUSE] if ctx.smoke else []


def step_digits(ctx: Ctx) -> list[dict]:
    """The default sweep (digits) whole process, a new compilation cache, then warm."""
    shutil.rmtree(ctx.work / "cache-digits", ignore_errors=True)
    cold, rc1 = _sweep(ctx, "digits-cold", _digits(ctx), "cache-digits")
    warm, rc2 = _sweep(ctx, "digits-warm", _digits(ctx), "cache-digits")
    same = _same_bytes(ctx, "digits-cold", "digits-warm")
    return [
        _time_row("default sweep, cold cache (whole process)", cold, rc1, 12),
        _time_row("default sweep, warm cache (whole process)", warm, rc2, 6),
        _row("the same command twice: results.csv bytes", _yes(same), "identical", same),
    ]


def step_sgd_and_determinism(ctx: Ctx) -> list[dict]:
    """The width-1024 program with the folded SGD step and without deterministic ops."""
    widest = "16" if ctx.smoke else "1024"
    args = ["--workload", "fashion-width-sgd", "--epochs", "2", "--widths", widest]
    args += ["--no-fused", "--no-torch-func", "--compare", "sgd-update=folded"]
    args += ["--compare", "no-deterministic"]
    record, md = _bench(ctx, "sgd-and-determinism", args)
    ctx.records.setdefault("steps", {})["programs_report"] = md
    if record is None:
        return [_row("the SGD steps (sweep_vs_torch.py)", "failed", "", False)]
    folded = record["variants"]["sgd-update=folded"]["widths"][widest]
    nodet = record["variants"]["no-deterministic"]["widths"][widest]
    cost = 1 / nodet["compiled_vs_base"] - 1  # deterministic over non-deterministic, - 1
    return [
        _row(f"width {widest}: folded / generic SGD step, compiled time",
             f"{folded['compiled_vs_base']:.2f}", "< 1 (folded is faster)",
             folded["compiled_vs_base"] < 1),
        _row("folded vs generic: max |diff| of final test losses",
             f"{folded['max_abs_final_test_loss_diff']:.2g}", "float32 rounding (< 1e-3)",
             (folded["max_abs_final_test_loss_diff"] or 0) < 1e-3),
        _row(f"width {widest}: cost of deterministic ops", f"{100 * cost:+.1f}%",
             "<= 10% (else make --no-deterministic the fast mode)", cost <= 0.10),
    ]  # fmt: skip


def step_fashion_seeds(ctx: Ctx) -> list[dict]:
    """The Fashion-MNIST width grid on the real data with 5 seeds: the science."""
    if ctx.smoke:
        args = ["--preset", ctx.preset, *SMOKE_SHAPES, "--seeds", "5", *SMOKE_FUSE]
    elif not ctx.data_dir:
        return [_row("Fashion-MNIST grid, 5 seeds", "skipped: no --data-dir", "", None)]
    else:
        args = ["--preset", ctx.preset, "--data-dir", ctx.data_dir, "--seeds", "5"]
    t, rc = _sweep(ctx, "fashion-5-seeds", args, "cache-science")
    rows = [_time_row("Fashion-MNIST grid, 5 seeds (whole process)", t, rc, None)]
    summary = ctx.work / "fashion-5-seeds" / "summary.csv"
    if summary.exists():
        ctx.records.setdefault("science", {})["fashion_5_seeds_summary"] = summary.read_text()
    return rows


def step_width_exponent(ctx: Ctx) -> list[dict]:
    """What fits of the width-exponent experiment: SGD under sp, mup and lr-exp, widths
    64..1024, 2 seeds, 5 epochs, one refinement round; alpha of lr* ∝ width^alpha."""
    if ctx.smoke:
        data = ["--dataset", "synthetic", "--n-train", "512", "--n-test", "128"]
        shape = ["--widths", "8,16", "--epochs", "1", "--seeds", "2", "--base-width", "8"]
        shape += SMOKE_FUSE
    elif not ctx.data_dir:
        return [_row("width exponent", "skipped: no --data-dir", "", None)]
    else:
        data = ["--dataset", "fashion_mnist", "--data-dir", ctx.data_dir]
        shape = ["--widths", "64,128,256,512,1024", "--epochs", "5", "--seeds", "2"]
        shape += ["--base-width", "64"]
    args = [*data, *shape, "--optimizer", "sgd", "--parametrization", "sp,mup,lr-exp"]
    grid = "0.0625:16:3" if ctx.smoke else "0.0009765625:16:8"  # every 2 octaves from 2^-10
    args += ["--lr-exponents=-1,0,1", "--lr-grid", grid, "--refine", "1"]
    args += ["--select", "train_loss"]
    t, rc = _sweep(ctx, "width-exponent", args, "cache-science")
    rows = [_time_row("width exponent sweep (whole process)", t, rc, None)]
    table = ctx.work / "width-exponent" / "width_exponent.csv"
    if table.exists():
        ctx.records.setdefault("science", {})["width_exponent_csv"] = table.read_text()
    return rows


# ----------------------------------------------------------------------------------- gpt
def step_gpt(ctx: Ctx) -> list[dict]:
    """``benchmarks/gpt_vs_torch.py``: the GPT sweep's program (a) against torch one run at a
    time (b) and torch.func (c), per width, with the share of the fp32 matmul ceiling."""
    out = ctx.work / "gpt.md"
    args = ["--smoke", "--threads", "1"] if ctx.smoke else ["--device", "gpu", *GPT_GPU_SHAPES]
    cmd = [sys.executable, "benchmarks/gpt_vs_torch.py", *args, "--note", "gpu_checks.py"]
    _, rc = _timed(ctx, "gpt", [*cmd, "--out", str(out)])
    if rc != 0 or not out.with_suffix(".json").exists():
        return [_row("the GPT benchmark (gpt_vs_torch.py)", f"failed (exit {rc})", "", False)]
    record = json.loads(out.with_suffix(".json").read_text())
    ctx.records.setdefault("gpt", {})["gpt_report"] = out.read_text()
    rows = {(r["width"], r["method"]): r for r in record["rows"]}
    ceiling = max(c["flops_per_s"] for c in record["environment"]["ceilings"].values())
    table = [_row("fp32 matmul ceiling (the faster of JAX's and torch's)",
                  round(ceiling / 1e12, 3), "measured", None, "TFLOP/s")]  # fmt: skip
    widths = sorted(w for w, _ in rows if w != "all")
    for w in [*widths, "all"]:
        a = rows[w, "jaxlr"]
        table.append(_row(f"width {w}: jaxlr compiled vs (b) torch one run at a time",
                          f"{a['vs_b']:.2f}x", "> 1x", a["vs_b"] > 1))  # fmt: skip
        if (w, "torch_func") in rows:
            c = rows[w, "torch_func"]
            table.append(_row(f"width {w}: jaxlr compiled vs (c) torch.func vmap",
                              f"{a['vs_b'] / c['vs_b']:.2f}x", "measured", None))  # fmt: skip
        table.append(_row(f"width {w}: jaxlr's share of the ceiling",
                          f"{100 * a['share_of_ceiling']:.1f}%", "measured", None))  # fmt: skip
    table.append(_row("jaxlr compile, all widths", round(rows["all", "jaxlr_e2e"]["compile_s"], 1),
                      "measured", None, "s"))  # fmt: skip
    return table


# ---------------------------------------------------------------------------- the plan
STEPS: dict[str, tuple[Step, ...]] = {
    "main": (
        Step("correctness", "tests", 55, "3 tests, ~10 small untuned programs at ~4 s, the "
             "kill -9 test's 2 extra processes at ~6 s", step_tests),
        Step("correctness", "device-vs-cpu", 12, "a 1-program digits sweep (6 s start + 4 s "
             "compile + 2 s); its CPU twin runs at the same time on the host", step_device_vs_cpu),
        Step("fashion", "cold-warm", 143, "95 s cold (the H100's CLI run of the grid) + 48 s "
             "warm (95 - 47 s of compile and first-epoch overhead)", step_fashion_cold_warm),
        Step("fashion", "programs", 80, "6 s start + 3 s ceiling + widths 64/256 untuned "
             "(2 x 4 s) + width 1024 autotuned (18.6 s) + all widths in one autotuned program "
             "(~40 s) + 2 epochs each (~4 s)", step_fashion_programs),
        Step("fashion", "tf32", 69, "46 s cold (6 s start + 40 s of the H100's 46.5 s TF32 grid "
             "at 7/8 the lanes) + 23 s warm (6 s + its ~17 s compiled part)", step_fashion_tf32),
    ),
    "second": (
        Step("digits", "cold-warm", 56, "46 s cold, 10.4 s warm (the H100's default sweep)",
             step_digits),
        Step("steps", "sgd-and-determinism", 68, "6 s start + 3 s ceiling + width 1024 three "
             "times autotuned (3 x 18.6 s) + 2 epochs each", step_sgd_and_determinism),
        Step("science", "fashion-5-seeds", 115, "6 s start + 47 s compile + the 3-seed grid's "
             "37 s compiled x 5/3", step_fashion_seeds),
        Step("science", "width-exponent", 55, "6 s start + 2 programs at ~15 s compile + 15 "
             "programs' lanes over 5 epochs (~15 s)", step_width_exponent),
    ),
    "gpt": (
        Step("gpt", "gpt-vs-torch", 120, "2 processes at ~6 s; 4 untuned GPT programs at "
             "~8 s compile; jaxlr ~10 s (width 1024: 8 runs x 100 steps x ~160 GFLOP at ~40% "
             "of ~50 TFLOP/s fp32, smaller widths launch-bound); torch (b) ~20 s (~4 ms a step "
             "x 800 run-steps per width); torch.func (c) ~20 s; no GPU measurement yet",
             step_gpt),
    ),
}  # fmt: skip


def plan_total(which: str) -> float:
    """The H100 estimate of a command, in seconds."""
    return sum(s.estimate_s for s in STEPS[which])


def plan_text(which: str) -> str:
    """The plan as a table: step, estimate, reasoning."""
    lines = [f"The {which} command:", "", "| step | H100 estimate (s) | how |", "|:---|---:|:---|"]
    for s in STEPS[which]:
        lines.append(f"| {s.stage}/{s.name} | {s.estimate_s:.0f} | {s.how} |")
    lines.append(f"| **total** | **{plan_total(which):.0f}** | |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reporting
def stage_markdown(stage: str, rows: list[dict], record: dict) -> str:
    """One stage's table: figure, target, ✓/✗ (blank: no target)."""
    lines = [f"## {stage}", "", "| what | measured | target | |", "|:---|---:|:---|:---:|"]
    for r in rows:
        mark = "" if r["ok"] is None else "✓" if r["ok"] else "✗"
        value = f"{r['value']} {r['unit']}".strip()
        lines.append(f"| {r['what']} | {value} | {r['target']} | {mark} |")
    for key in ("programs_report",):
        if record.get(key):
            lines += ["", "<details><summary>sweep_vs_torch.py report</summary>", ""]
            lines += [record[key].replace("\n# ", "\n### "), "</details>"]
    for key, title in (
        ("fashion_5_seeds_summary", "summary.csv"),
        ("width_exponent_csv", "width_exponent.csv"),
    ):
        if record.get(key):
            lines += ["", f"`{title}`:", "", "```", record[key].strip(), "```"]
    return "\n".join(lines) + "\n"


def _environment() -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "gpu": out(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]),
        "python": sys.version.split()[0],
    }


def run(which: str, ctx: Ctx, budget_s: float) -> int:
    """Runs the steps of command ``which`` in order; writes each stage's files as it ends."""
    env = _environment()
    ctx.log(f"# gpu_checks {which}{' --smoke' if ctx.smoke else ''} {env}")
    t0 = time.perf_counter()
    stages = ctx.stages  # every stage this process ran (both commands under --smoke)
    failed = False
    steps = STEPS[which]
    for i, step in enumerate(steps):
        left = budget_s - (time.perf_counter() - t0)
        rows = stages.setdefault(step.stage, [])
        if not ctx.smoke and step.estimate_s > left:
            ctx.log(f"{step.stage}/{step.name}: skipped ({step.estimate_s:.0f} s > {left:.0f} s)")
            rows.append(_row(f"{step.name}", "skipped: out of time", "", None))
        else:
            ctx.log(f"{step.stage}/{step.name} (estimate {step.estimate_s:.0f} s)")
            s0 = time.perf_counter()
            try:
                rows += step.run(ctx)
            except Exception as e:  # a broken step must not lose the others
                rows.append(_row(step.name, f"error: {type(e).__name__}: {e}", "", False))
            ctx.log(f"  {step.stage}/{step.name}: {time.perf_counter() - s0:.1f} s")
        last = i + 1 == len(steps) or steps[i + 1].stage != step.stage
        if last:
            failed |= any(r["broken"] for r in rows)
            _write_stage(ctx, step.stage, rows, env)
            _write_summary(ctx, stages, env, which)
    ctx.log(f"# done in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


def _write_stage(ctx: Ctx, stage: str, rows: list[dict], env: dict) -> None:
    record = ctx.records.get(stage, {})
    (ctx.out / f"{stage}.md").write_text(stage_markdown(stage, rows, record))
    data = {"stage": stage, "environment": env, "smoke": ctx.smoke, "rows": rows, **record}
    (ctx.out / f"{stage}.json").write_text(json.dumps(data, indent=1) + "\n")


def _write_summary(ctx: Ctx, stages: dict[str, list[dict]], env: dict, which: str) -> None:
    head = [
        "# jaxlr GPU checks ("
        + ("both commands, smoke: CPU, tiny shapes)" if ctx.smoke else f"{which} command)"),
        "",
        f"{env['date']}, commit {env['commit']}, {env['gpu'] or 'no GPU'}, "
        f"data: {ctx.data_dir or 'synthetic, Fashion-MNIST shapes'}.",
        "",
    ]
    body = [stage_markdown(s, rows, ctx.records.get(s, {})) for s, rows in stages.items()]
    (ctx.out / "gpu_checks.md").write_text("\n".join(head) + "\n".join(body))


# -------------------------------------------------------------------------- command line
def _fashion_preset() -> str:
    """The Fashion-MNIST width grid's preset, checked to exist in this jaxlr."""
    from jaxlr.cli import PRESETS

    if "fashion-width-sgd" not in PRESETS:
        raise CheckError("jaxlr.cli has no preset fashion-width-sgd; update gpu_checks.py")
    return "fashion-width-sgd"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The command line (raises :class:`CheckError`)."""

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise CheckError(message)

    p = Parser(prog="bash benchmarks/gpu_checks.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="directory for the reports (at most 8 files)")
    p.add_argument("--data-dir", help="the real Fashion-MNIST's IDX files (see the README)")
    p.add_argument("--second", action="store_true", help="the second, optional command")
    p.add_argument("--gpt", action="store_true", help="the gpt command (its stage alone)")
    p.add_argument("--smoke", action="store_true", help="every step on the CPU, tiny shapes")
    p.add_argument("--plan", action="store_true", help="print the plan and its estimate only")
    p.add_argument("--work", help="sweep directories and caches (default: a temporary dir)")
    p.add_argument(
        "--budget", type=float, help="seconds; steps that would not fit are skipped "
        "(default: the plan's estimate + a third)",
    )  # fmt: skip
    a = p.parse_args(argv)
    if a.data_dir is not None and not Path(a.data_dir).is_dir():
        raise CheckError(f"--data-dir {a.data_dir}: no such directory")
    if a.smoke and a.data_dir:
        raise CheckError("--smoke runs on synthetic data; remove --data-dir")
    if a.second and a.gpt:
        raise CheckError("--second and --gpt are two commands; give one")
    if a.budget is not None and not a.budget > 0:
        raise CheckError(f"--budget must be positive, got {a.budget}")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad arguments, 1: a step failed to run; a missed
    target is a ✗ in the report, not a failure)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse(argv)
        preset = _fashion_preset()
    except CheckError as e:
        print(f"bash benchmarks/gpu_checks.sh: error: {e}", file=sys.stderr)
        return 2
    which = "gpt" if a.gpt else "second" if a.second else "main"
    if a.plan:
        print(plan_text(which))
        return 0
    if a.smoke and a.second:
        raise SystemExit("bash benchmarks/gpu_checks.sh: error: --smoke runs both commands")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="jaxlr-gpu-checks-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(out, work, a.data_dir, a.smoke, preset, out / "gpu_checks.log")
    budget = a.budget if a.budget is not None else math.ceil(plan_total(which) * 4 / 3)
    if a.smoke and a.gpt:  # the gpt stage alone, on the CPU
        return run("gpt", ctx, math.inf)
    if a.smoke:  # every command, on the CPU
        return max(run(w, ctx, math.inf) for w in ("main", "second", "gpt"))
    return run(which, ctx, budget)


if __name__ == "__main__":
    sys.exit(main())
