"""torch_parity's command line: flags that do not apply are refused (one line, exit 2), --steps
is bounded, a long run says how far it is, --help and flag errors import neither torch nor JAX,
and Ctrl-C at any moment exits 130 with one line.

Flag errors run in this process (``main(argv)``); subprocesses only for what the process is
(what it imported, a signal).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
from test_coord_check_cli import ROOT, assert_interrupted, interrupt_at, on_load

from torch_parity.__main__ import INTERRUPTED_MESSAGE, ProgressPrinter, main
from torch_parity.catalog import CATALOG, EXAMPLE_NAMES, MAX_STEPS, selected_examples


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Runs ``main(argv)``, which must exit 2 (returned or raised) with one line on stderr."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("torch_parity: ")
    assert captured.out == ""
    return captured.err


# ------------------------------------------------------------------------ flags that do not apply
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--dataset", "digits", "--data-dir", "X"],
            "--data-dir does not apply to --dataset digits",
        ),
        (["--example", "narrow", "--data-dir", "X"], "--data-dir only applies to the examples on"),
        (["--example", "narrow,wide", "--dataset", "mnist"], "--dataset only applies to"),
        (["--list", "--steps", "3"], "--list takes no other flags; remove --steps"),
        (["--list", "--example", "narrow"], "remove --example"),
        (["--steps", "3", "--steps", "4"], "--steps given twice"),
        (["--dtype", "float32", "--dtype", "float64"], "--dtype given twice"),
        (["--data-dir", "a", "--data-dir", "b"], "--data-dir given twice"),
        (["--example", "narrow,,wide"], "empty item in --example 'narrow,,wide'"),
        (["--steps", "0"], f"must be in 1..{MAX_STEPS:,}, got 0"),
        (["--steps", "100000000"], f"must be in 1..{MAX_STEPS:,}, got 100000000"),
        (["--steps", "ten"], "expected an integer, got 'ten'"),
    ],
)
def test_flags_that_do_not_apply_are_refused(capsys, flags, expected):
    assert expected in _one_line_error(capsys, flags)


def test_max_steps_covers_the_width_experiments_own_run():
    """The bound is above the Fashion-MNIST width experiment's 50 epochs of 937 batches."""
    assert MAX_STEPS >= 50 * (60_000 // 64)
    with pytest.raises(KeyError, match="unknown example nope"):
        selected_examples(["narrow", "nope"])
    assert selected_examples(["wide,narrow", "narrow"]) == ["narrow", "wide"]


def test_data_flags_are_accepted_where_they_apply(capsys):
    """--dataset/--data-dir with an image example get past the checks (the missing directory is
    then reported by the data loader, one line, exit 2)."""
    err = _one_line_error(
        capsys, ["--example", "narrow,sgd-w64", "--data-dir", "/nonexistent/fashion"]
    )
    assert "/nonexistent/fashion" in err


# ------------------------------------------------------------------------ --list, --help
def test_list_names_the_source_documents(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(EXAMPLE_NAMES)
    sources = {e.source for e in CATALOG}
    assert sources == {
        "the width examples",
        "the Fashion-MNIST width experiment",
        "the per-neuron learning-rate examples",
        "the sweep's optimizers and schedules",
        "the GPT examples",
    }
    assert all(any(s in line for s in sources) for line in lines)
    assert not any("seed" in line.lower() for line in lines)


def test_help_and_flag_errors_import_neither_torch_nor_jax():
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from torch_parity.__main__ import main
        codes = []
        for argv in (["--help"], ["--list"], ["--steps", "0"], ["--example", "nope"],
                     ["--dataset", "digits", "--data-dir", "x"]):
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    codes.append(main(argv))
                except SystemExit as e:
                    codes.append(e.code)
        import torch_parity
        torch_parity.EXAMPLE_NAMES  # the package's lazy names: the catalog needs no torch
        heavy = sorted(m for m in ("jax", "optax", "pandas", "torch") if m in sys.modules)
        print(codes, heavy)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.stdout.strip() == "[0, 0, 2, 2, 2] []", proc.stdout + proc.stderr


# ------------------------------------------------------------------------ progress
class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_printer_prints_at_most_every_interval():
    clock, stream = _Clock(), io.StringIO()
    printer = ProgressPrinter(3, every_s=5.0, stream=stream, clock=clock)
    progress = printer.for_example(2, "weight-norm")
    for t in range(1, 40):  # a step every 0.5 s: lines at 5.0, 10.0, 15.0 s
        clock.t = 100.0 + 0.5 * t
        progress("torch", t * 1000, 100_000)
    assert stream.getvalue().splitlines() == [
        "torch_parity: [2/3] weight-norm: torch step 10,000 of 100,000 (5 s)",
        "torch_parity: [2/3] weight-norm: torch step 20,000 of 100,000 (10 s)",
        "torch_parity: [2/3] weight-norm: torch step 30,000 of 100,000 (15 s)",
    ]


@pytest.mark.slow  # two examples trained and compiled: about 10 s of CPU
def test_a_long_run_reports_progress_of_both_sides(capsys, monkeypatch):
    """With the interval at 0, every step of the torch side and every epoch of the JAX side
    is reported, with true counts; the results on stdout are unchanged."""
    monkeypatch.setattr("torch_parity.__main__.PROGRESS_EVERY_S", 0.0)
    code = main(["--example", "narrow,sgd-w64", "--steps", "44", "--dataset", "digits", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert [r["example"] for r in json.loads(captured.out)] == ["narrow", "sgd-w64"]
    lines = captured.err.splitlines()
    torch_narrow = [x for x in lines if x.startswith("torch_parity: [1/2] narrow: torch step")]
    assert len(torch_narrow) == 44 and torch_narrow[-1].split(" (")[0].endswith("44 of 44")
    jax_narrow = [x for x in lines if "[1/2] narrow: JAX step" in x]
    assert [x.split(" (")[0].rsplit(" ", 3)[-3] for x in jax_narrow] == ["0", "44"]
    # digits: 1,437 training images, 22 batches of 64 per epoch -> epochs end at steps 22, 44
    jax_sgd = [x.split(" (")[0] for x in lines if "[2/2] sgd-w64: JAX step" in x]
    assert jax_sgd == [
        "torch_parity: [2/2] sgd-w64: JAX step 22 of 44",
        "torch_parity: [2/2] sgd-w64: JAX step 44 of 44",
    ]


# ------------------------------------------------------------------------ Ctrl-C
@pytest.mark.slow
def test_ctrl_c_at_any_moment_exits_130():
    """During the numpy, torch and JAX imports, 1 and 3 s after JAX's, and mid-run (after a
    progress line): exit 130 with one line every time. The previous entry point crashed with SIGSEGV
    (139) in about half the tries, printed tracebacks, or had the interrupt swallowed by JAX's
    garbage-collector callback and exited 0."""
    long_run = ["-m", "torch_parity", "--example", "weight-norm", "--steps", str(MAX_STEPS)]
    progress_line = lambda proc, err: any("weight-norm: torch step" in x for x in err)
    moments = [
        on_load("numpy/_core"),  # the first import after the checks
        on_load("libtorch"),
        on_load("jaxlib/"),
        on_load("jaxlib/", then=1.0),
        on_load("jaxlib/", then=3.0),
        progress_line,  # training, 5 s in
    ]
    for moment in moments:
        assert_interrupted(interrupt_at(long_run, moment), INTERRUPTED_MESSAGE)
