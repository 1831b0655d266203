"""Test isolation: no system-wide dataset directories, whatever this machine has installed, and
no persistent compilation cache (tests that need one set their own directory)."""

import os

import pytest

os.environ["JAXLR_COMPILATION_CACHE"] = "0"  # inherited by the CLI subprocesses too


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch):
    monkeypatch.setattr("jaxlr.data.SYSTEM_DATA_DIRS", ())
