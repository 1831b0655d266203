"""Test isolation: no system-wide dataset directories, whatever this machine has installed."""

import pytest


@pytest.fixture(autouse=True)
def _no_system_datasets(monkeypatch):
    monkeypatch.setattr("jaxlr.data.SYSTEM_DATA_DIRS", ())
