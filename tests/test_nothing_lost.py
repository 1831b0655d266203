"""Nothing lost, nothing silent: results survive merge, resume, shards and interrupts, and every
input that would be ignored or misreported is refused in one line (exit 2).

The sweeps here are tiny (synthetic data, two widths, two epochs) and run in-process through
``jaxlr.cli.main``; subprocesses only where the process boundary is the point (signals).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from jaxlr import cli
from jaxlr import results as res
from jaxlr.engine import EpochMetrics

TINY = [
    "--dataset", "synthetic", "--n-train", "64", "--n-test", "32", "--features", "8",
    "--num-classes", "3", "--widths", "4,8", "--lrs", "0.1,0.3", "--seeds", "2",
    "--epochs", "2", "--batch-size", "16", "--no-progress", "--max-lanes", "4",
]  # fmt: skip


def sweep(capsys, *argv: str) -> tuple[int, str]:
    """``python -m jaxlr.sweep *argv`` in-process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def one_line_error(err: str, *words: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, err)


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ results lost: merge, shards
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Shards 0/2 and 1/2 of one sweep, and another finished sweep."""
    root = tmp_path_factory.mktemp("shards")
    for i in (0, 1):
        assert cli.main([*TINY, "--shard", f"{i}/2", "--out", str(root / f"s{i}")]) == 0
    assert cli.main([*TINY, "--epochs", "1", "--out", str(root / "other")]) == 0
    return root


def test_merge_refuses_an_out_holding_another_sweep(shards, capsys):
    before = snapshot(shards / "other")
    code, err = sweep(
        capsys, "merge", str(shards / "s0"), str(shards / "s1"), "--out", str(shards / "other")
    )
    assert code == 2
    one_line_error(err, "--out", "merge into a new or empty --out")
    assert err.count("merge:") == 1  # the prefix once, not "merge: error: merge: ..."
    assert snapshot(shards / "other") == before


def test_merge_again_into_the_same_merge_is_allowed(shards, capsys):
    args = ["merge", str(shards / "s0"), str(shards / "s1"), "--out", str(shards / "merged")]
    assert sweep(capsys, *args)[0] == 0
    first = (shards / "merged" / "results.csv").read_bytes()
    assert sweep(capsys, *args)[0] == 0
    assert (shards / "merged" / "results.csv").read_bytes() == first


@pytest.mark.parametrize("target", ["/proc/jaxlr-merge", "a-file"])
def test_merge_into_an_unwritable_path_or_a_file_is_one_line(shards, capsys, tmp_path, target):
    if target == "a-file":
        target = str(tmp_path / "a-file")
        Path(target).write_text("keep me")
    code, err = sweep(capsys, "merge", str(shards / "s0"), str(shards / "s1"), "--out", target)
    assert code == 2
    one_line_error(err, "--out")
    if target.endswith("a-file"):
        assert Path(target).read_text() == "keep me"


def test_merge_of_missing_shards_needs_allow_missing(shards, capsys, tmp_path):
    code, err = sweep(capsys, "merge", str(shards / "s0"), "--out", str(tmp_path / "m"))
    assert code == 2
    one_line_error(err, "1/2", "--allow-missing")
    assert not (tmp_path / "m").exists()
    args = ["merge", str(shards / "s0"), "--out", str(tmp_path / "m"), "--allow-missing"]
    code, err = sweep(capsys, *args)
    assert code == 0 and "warning" in err and "1/2" in err


def test_resume_with_another_shard_is_refused(shards, capsys, tmp_path):
    before = snapshot(shards / "s0")
    code, err = sweep(capsys, *TINY, "--resume", "--out", str(shards / "s0"), "--shard", "1/2")
    assert code == 2
    one_line_error(err, "--shard 0/2 vs 1/2")
    assert snapshot(shards / "s0") == before


def test_a_new_sweep_into_another_shards_directory_is_refused(shards, capsys):
    before = snapshot(shards / "s0")
    code, err = sweep(capsys, *TINY, "--out", str(shards / "s0"), "--shard", "1/2")
    assert code == 2
    one_line_error(err, "shard 0/2")
    assert snapshot(shards / "s0") == before


def test_rerunning_a_finished_sweep_without_resume_is_refused(shards, capsys):
    before = snapshot(shards / "other")
    code, err = sweep(capsys, *TINY, "--epochs", "1", "--out", str(shards / "other"))
    assert code == 2
    one_line_error(err, "--resume")
    assert snapshot(shards / "other") == before


def test_resume_takes_execution_flags_and_compares_the_rest_with_the_record(shards, capsys):
    out = str(shards / "other")
    code, err = sweep(
        capsys, "--resume", "--out", out, "--parallel", "1", "--checkpoint-every", "1"
    )
    assert code == 0, err  # every chunk is finished: nothing retrains
    code, err = sweep(capsys, "--resume", "--out", out, "--epochs", "3")
    assert code == 2
    one_line_error(err, "--epochs 1 vs 3")  # against the recorded sweep, not the defaults
    assert "--widths" not in err


# --------------------------------------------------- every per-epoch output survives resume/merge
def _interrupt_after_first_checkpoint(monkeypatch):
    from jaxlr import checkpoint as ckpt

    original = ckpt.ChunkStore.save

    def save_then_interrupt(self, *a, **k):
        original(self, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.ChunkStore, "save", save_then_interrupt)


@pytest.mark.slow  # five sweeps each, with --dynamics
@pytest.mark.parametrize("rule", ["weight-norm", "adagrad-neuron"])
def test_every_metric_field_survives_resume_and_merge(capsys, tmp_path, monkeypatch, rule):
    args = [*TINY, "--epochs", "3", "--lr-rule", rule, "--checkpoint-every", "1", "--dynamics"]
    assert sweep(capsys, *args, "--out", str(tmp_path / "whole"))[0] == 0
    with monkeypatch.context() as m:
        _interrupt_after_first_checkpoint(m)
        assert sweep(capsys, *args, "--out", str(tmp_path / "cut"))[0] == 130
    assert sweep(capsys, *args, "--resume", "--out", str(tmp_path / "cut"))[0] == 0
    for i in (0, 1):
        assert sweep(capsys, *args, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}"))[0] == 0
    merge = ["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]
    assert sweep(capsys, *merge)[0] == 0
    # every field of the per-epoch record lands in a table, and that table is the same bytes
    tables = {res.METRIC_TABLES[field] for field in EpochMetrics._fields}
    assert tables == set(res.RUN_TABLES)
    for table in tables:
        whole = (tmp_path / "whole" / table).read_bytes()
        assert len(pd.read_csv(tmp_path / "whole" / table)) > 0, table
        assert (tmp_path / "cut" / table).read_bytes() == whole, table
        assert (tmp_path / "m" / table).read_bytes() == whole, table
    for field in EpochMetrics._fields:  # each field is a column (or the rates' quantiles)
        cols = pd.read_csv(tmp_path / "whole" / res.METRIC_TABLES[field]).columns
        assert (
            field in cols
            or (field == "rates" and set(res.RATE_COLUMNS) <= set(cols))
            or (field == "dynamics" and set(res.DYNAMICS_COLUMNS) <= set(cols))
        )


def test_metric_tables_cover_every_field():
    assert set(res.METRIC_TABLES) == set(EpochMetrics._fields)


# ------------------------------------------------------------------ inputs ignored or misreported
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--seeds", "0,5,7", "--first-seed", "10"], ["--first-seed"]),
        (["--widths", "16,,64"], ["empty item"]),
        (["--widths", "16", "--widths", "64"], ["--widths given twice"]),
        (["--lrs", "0.1,"], ["empty item"]),
        (["--dataset", "synthetic", "--data-seed", "-1"], ["--data-seed"]),
        (["--dataset", "fashion_mnist", "--data-dir", "/nonexistent/jaxlr"], ["--data-dir"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, words):
    code, err = sweep(capsys, *argv, "--epochs", "1", "--out", str(tmp_path / "o"))
    assert code == 2
    one_line_error(err, *words)
    assert not (tmp_path / "o").exists()
    assert not Path("/nonexistent/jaxlr").exists()


def test_an_explicit_data_dir_without_the_files_lists_them_and_creates_nothing(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = sweep(
        capsys, "--dataset", "fashion_mnist", "--data-dir", str(empty), "--out", str(tmp_path / "o")
    )
    assert code == 2
    one_line_error(err, "--data-dir", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert "download" not in err.split(";")[0]  # it leads with what is missing, not a download
    assert list(empty.iterdir()) == []


def test_out_holding_other_files_is_refused(capsys, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    code, err = sweep(capsys, *TINY, "--out", str(out))
    assert code == 2
    one_line_error(err, "--out", "thesis.tex")
    assert snapshot(out) == {"thesis.tex": b"mine"}


def test_gpu_only_options_and_an_unwritable_cache_are_reported(capsys, tmp_path, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("JAXLR_COMPILATION_CACHE", str(blocked / "cache"))
    code, err = sweep(
        capsys, *TINY, "--epochs", "1", "--autotune", "on", "--out", str(tmp_path / "o")
    )
    assert code == 0
    assert "--autotune on has no effect on the cpu" in err
    assert "compilation cache" in err and "not writable" in err


# ------------------------------------------------------------------------------ interrupts
def _python_m(*argv: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


@pytest.mark.parametrize("after_s", [0.5, 1.0, pytest.param(2.0, marks=pytest.mark.slow)])
def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path, after_s):
    p = _python_m("jaxlr.sweep", *TINY, "--out", str(tmp_path / "o"))
    time.sleep(after_s)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the sweep finished before the signal")
    if "jaxlr" not in err and "<frozen site>" in err:
        pytest.skip("the signal came while Python itself started, before any jaxlr code ran")
    assert p.returncode == 130, err
    assert "Traceback" not in err, err


def test_results_unchanged_by_interrupt_and_resume(capsys, tmp_path, monkeypatch):
    """The per-run numbers of an interrupted-and-resumed sweep are the uninterrupted ones."""
    args = [*TINY, "--epochs", "3", "--checkpoint-every", "1"]
    assert sweep(capsys, *args, "--out", str(tmp_path / "a"))[0] == 0
    with monkeypatch.context() as m:
        _interrupt_after_first_checkpoint(m)
        code, err = sweep(capsys, *args, "--out", str(tmp_path / "b"))
    assert code == 130 and "--resume" in err
    assert sweep(capsys, *args, "--resume", "--out", str(tmp_path / "b"))[0] == 0
    a = (tmp_path / "a" / "results.csv").read_bytes()
    assert (tmp_path / "b" / "results.csv").read_bytes() == a
    rec = json.loads((tmp_path / "b" / "config.json").read_text())
    assert rec["config"]["epochs"] == 3
