"""Test isolation: no system-wide dataset directories, whatever this machine has installed, and
no persistent compilation cache (tests that need one set their own directory), and cheaper
compilation (:data:`TEST_XLA_FLAGS`).

The ``cli`` fixture runs ``python -m jaxlr.sweep ARGS`` in this process (through
:func:`jaxlr.cli.main`), so a CLI case costs its own work, not a fresh interpreter importing JAX;
tests start a subprocess only where the process boundary is the point (no JAX imported, kill -9,
several processes, a device count fixed at start-up).

Under ``pytest -n K`` (pytest-xdist, ``--dist loadgroup`` from pyproject.toml) the tests that
read one expensive module-scoped result (:data:`SHARED`) run on one worker, so it is computed
once, and the ``slow`` tests are handed out first, so that no worker is left with a long test
at the end.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Iterator

import pytest

os.environ["JAXLR_COMPILATION_CACHE"] = "0"  # inherited by the CLI subprocesses too
# On a GPU: no whole-GPU preallocation per process (pytest -n K and the CLI subprocesses share
# the card), and no autotuning (compile time dominates the tests; results stay deterministic).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def _cpu_only() -> bool:
    """No JAX GPU plugin is installed, or ``JAX_PLATFORMS`` asks for the CPU alone."""
    import importlib.metadata

    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
        return True
    names = (d.metadata["Name"] or "" for d in importlib.metadata.distributions())
    return not any(n.lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm")) for n in names)


TEST_XLA_FLAGS = {"xla_gpu_autotune_level": "0"}
"""XLA flags for the test processes (and the subprocesses they start, which inherit
``XLA_FLAGS``), unless ``XLA_FLAGS`` already sets them."""
if _cpu_only() and os.environ.get("JAXLR_TEST_XLA_OPT", "") != "default":
    # On the CPU: LLVM at optimization level 0 (XLA's own HLO passes still run). A small sweep
    # program, whose compilation is most of the suite's time, compiles in about half the CPU
    # time and runs about as fast at the tests' sizes. Float32 rounding moves in places against
    # a default build; every test compares programs built under the same flags, or a program
    # with numpy or PyTorch within its tolerance (the engine, parity, muP and optimizer tests
    # pass unchanged under it). JAXLR_TEST_XLA_OPT=default keeps XLA's default level.
    TEST_XLA_FLAGS["xla_backend_optimization_level"] = "0"
    # ... and XLA's elemental IR emitters instead of its MLIR fusion emitters: a sweep's epoch
    # program compiles in well under half the time again (benchmarks/results/cpu_test_times.md).
    TEST_XLA_FLAGS["xla_cpu_use_fusion_emitters"] = "false"
_given = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join(
    [
        _given,
        *(f"--{k}={v}" for k, v in TEST_XLA_FLAGS.items() if f"--{k}=" not in _given),
    ]
).strip()


SHARED = {
    ("test_scale.py", "base_sweep"),  # three sweeps (whole and two shards)
    ("test_nothing_lost.py", "shards"),  # the sharded sweeps that are merged
    ("test_benchmarks.py", "grid_run"),  # the benchmark's grid run
    ("test_coord_check.py", "coord_df"),  # the coordinate check's table
    ("test_coord_check_gpt.py", "coord_df"),  # the GPT coordinate check's table
    ("test_parity_gpt.py", "results"),  # every GPT parity example, both sides
    ("test_experiment_transformer.py", "tiny"),  # the experiment's tiny scale
}
"""(test file, module-scoped fixture): the tests using it share one pytest-xdist worker.

pytest-xdist 3.8's own ``@group`` suffix has no effect under pytest 9.2 (see :func:`_group_suffix`):
each of these fixtures was computed once per worker (``test_coord_check.py``'s ``coord_df`` on
both workers, 19 s each) until this file wrote the suffix itself."""


def _group_suffix(item: pytest.Item, group: str) -> None:
    """``ID@group`` as the item's node id, as pytest-xdist's ``loadgroup`` expects: xdist 3.8
    writes it to ``item._nodeid``, which pytest 9 no longer reads (``nodeid`` is ``str(_id)``)."""
    node_id = getattr(item, "_id", None)
    if node_id is None or "@" in item.nodeid or not hasattr(node_id, "_str_cache"):
        return  # an older pytest, where xdist's own suffix works
    item._id = dataclasses.replace(node_id)
    object.__setattr__(item._id, "_str_cache", f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups the tests of each :data:`SHARED` fixture; under xdist, ``slow`` tests first (the
    same order in every worker; a serial run keeps the files' order, so that module-scoped
    fixtures are set up once)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    loadgroup = hasattr(config, "workerinput") and bool(config.getvalue("loadgroup"))
    for item in items:
        for file, fixture in sorted(SHARED):
            if item.path.name == file and fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(f"{file}::{fixture}"))
                if loadgroup:
                    _group_suffix(item, f"{file}::{fixture}")
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _sweep_programs_compiled_with(monkeypatch, **options) -> Iterator[None]:
    """The sweep's programs (``engine``'s and ``blocks``' ``compiler_options``) compiled with
    these XLA options on top of their own, and no program built under others reused."""
    from jaxlr import blocks, compilation, engine

    def compiler_options(spec):
        return {**compilation.compiler_options(spec), **options}

    for module in (engine, blocks):
        monkeypatch.setattr(module, "compiler_options", compiler_options)
    engine._cached_trainer.cache_clear()
    blocks.step_blocks.cache_clear()
    yield
    engine._cached_trainer.cache_clear()
    blocks.step_blocks.cache_clear()


@pytest.fixture
def default_cpu_emitters(monkeypatch):
    """The sweep's programs compiled with XLA's default CPU emitters, whatever
    :data:`TEST_XLA_FLAGS` say, for the tests of bitwise equalities between programs of
    different structure (a block of steps and a whole epoch; one fused program and one per
    chunk): those hold under the code generation that users run, and under the older emitters
    an Adam lane may differ from its twin in the last bit."""
    yield from _sweep_programs_compiled_with(monkeypatch, xla_cpu_use_fusion_emitters=True)


@pytest.fixture
def optimized_cpu_code(monkeypatch):
    """The sweep's programs compiled at XLA's default LLVM optimization level (3) rather than
    the tests' 0, for the few tests whose time goes into running their programs rather than
    compiling them (convolutions, many lanes of a width-256 MLP): there the unoptimized code
    costs more than its shorter compile saves (the user-model page 18 s -> 8 s, the
    refinement test 18 s -> 15 s, one process on 2 cores)."""
    yield from _sweep_programs_compiled_with(monkeypatch, xla_backend_optimization_level=3)


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch):
    monkeypatch.setattr("jaxlr.data.SYSTEM_DATA_DIRS", ())


@dataclasses.dataclass(frozen=True)
class CliResult:
    """What ``python -m jaxlr.sweep ARGS`` would have returned and printed."""

    returncode: int
    stdout: str
    stderr: str

    def assert_error(self, needle: str) -> None:
        """Exit status 2 and one line on stderr that contains ``needle``, no traceback."""
        assert self.returncode == 2, self.stderr
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], self.stderr
        assert "Traceback" not in self.stderr


@pytest.fixture
def cli(capsys, monkeypatch) -> Callable[..., CliResult]:
    """``cli(*args)``: ``python -m jaxlr.sweep *args`` in-process, as a :class:`CliResult`."""
    from jaxlr.cli import main

    monkeypatch.setattr(sys, "argv", ["python -m jaxlr.sweep"])

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # only what this call prints
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse: --help, a bad flag
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
