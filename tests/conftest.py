"""Test isolation: no system-wide dataset directories, whatever this machine has installed, and
no persistent compilation cache (tests that need one set their own directory)."""

import os

import pytest

os.environ["JAXLR_COMPILATION_CACHE"] = "0"  # inherited by the CLI subprocesses too
# On a GPU: no whole-GPU preallocation per process (pytest -n K and the CLI subprocesses share
# the card), and no autotuning (compile time dominates the tests; results stay deterministic).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
if "xla_gpu_autotune_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0"
    ).strip()


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch):
    monkeypatch.setattr("jaxlr.data.SYSTEM_DATA_DIRS", ())
