"""An epoch in step blocks (several device calls) computes exactly what one call computes, and a
Ctrl-C during a long epoch stops the sweep after the block in flight, keeping a checkpoint that
``--resume`` continues from with the uninterrupted results."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlr import plan as planning
from jaxlr.data import device_data, load_dataset
from jaxlr.engine import RunSpec, train_group, train_lanes

# A block of steps and a whole epoch are bitwise equal under XLA's default CPU code generation,
# the one users run (see ``default_cpu_emitters`` in conftest.py).
pytestmark = pytest.mark.usefixtures("default_cpu_emitters")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits", n_train=416, n_test=100)  # 13 steps of 32: a prime count
    return ds, device_data(ds)


def _spec(ds, hidden=(16, 16), optimizer="sgd", **kw) -> RunSpec:
    return RunSpec(
        in_features=ds.in_features,
        hidden=hidden,
        num_classes=ds.num_classes,
        optimizer=optimizer,
        batch_size=32,
        steps_per_epoch=ds.n_train // 32,
        n_train=ds.n_train,
        n_test=ds.n_test,
        data_mean=ds.mean,
        data_std=ds.std,
        **kw,
    )


def _same(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    ("optimizer", "rule", "size"),
    [
        pytest.param("sgd", "none", 4, marks=pytest.mark.slow),
        ("adam", "none", 5),
        pytest.param("sgd", "weight-norm", 13, marks=pytest.mark.slow),
        pytest.param("adam", "none", 1, marks=pytest.mark.slow),
    ],
)
def test_blocks_equal_one_call_per_epoch(digits, optimizer, rule, size):
    ds, data = digits
    kw = dict(lr_rule=rule)
    whole = _spec(ds, optimizer=optimizer, **kw)
    blocked = dataclasses.replace(whole, steps_per_call=size)
    lrs = [0.05, 0.5, 50.0]  # the last diverges: the guard inside a block too
    s1, m1 = train_lanes(whole, data, [0, 1], lrs, 3)
    calls = []
    s2, m2 = train_lanes(
        blocked, data, [0, 1], lrs, 3, on_block=lambda e, n, p: calls.append((e, n))
    )
    _same(s1, s2)
    assert m1.keys() == m2.keys()
    for k in m1:
        np.testing.assert_array_equal(m1[k], m2[k], err_msg=k)
    ends = [*range(size, 13, size), 13]
    assert calls == [(e, n) for e in range(3) for n in ends]


@pytest.mark.slow  # a fused program stopped after each block
def test_blocks_resume_mid_epoch_and_fused(digits):
    """Stopping after any block and continuing from its progress changes nothing, for a
    fused program of two buckets as for one."""
    ds, data = digits
    specs = tuple(
        dataclasses.replace(_spec(ds, hidden=h), steps_per_call=3) for h in ((8, 8), (16, 16))
    )
    seeds, lrs = ([0], [0]), ([0.1, 0.3], [0.1, 0.3])
    ref_states, ref_m = train_group(specs, data, seeds, lrs, 2)
    saved = {}

    class Stop(Exception):
        pass

    def stop_at(e, n, p):
        if (e, n) == (1, 6):
            saved["p"] = jax.tree.map(np.asarray, p)
            raise Stop

    with pytest.raises(Stop):
        train_group(specs, data, seeds, lrs, 2, on_block=stop_at)
    states, m = train_group(
        specs, data, seeds, lrs, 2, progress=saved["p"], start_epoch=1, start_step=6
    )
    _same(ref_states, states)
    for i in range(2):
        for k in m[i]:
            np.testing.assert_array_equal(ref_m[i][k][1:], m[i][k], err_msg=k)


def test_the_plan_splits_long_epochs_only():
    from jaxlr.config import SweepConfig

    cfg = SweepConfig(widths=(64, 1024), lrs=(0.1,), seeds=(0,), epochs=1, dataset="digits")
    chunks = planning.make_plan(cfg, 784, 10, memory_bytes=2**30)
    seconds = {c.bucket.hidden: (1.0 if c.bucket.hidden[0] == 64 else 130.0) for c in chunks}
    out = planning.call_steps_chunks(chunks, 937, lambda c: seconds[c.bucket.hidden])
    by_width = {c.bucket.hidden[0]: c.steps_per_call for c in out}
    assert by_width[64] == 0  # a one-second epoch: one call
    # 130 s in calls of at most CALL_S seconds: ceil(130 / CALL_S) calls over 937 steps
    calls = -(-130.0 // planning.CALL_S)
    assert by_width[1024] == -(-937 // calls)
    assert by_width[1024] * planning.CALL_S >= 937 * planning.CALL_S / calls


@pytest.mark.slow
def test_ctrl_c_in_a_long_epoch_stops_after_the_block_and_resume_continues(
    tmp_path, cli, monkeypatch
):
    """A sweep whose epoch runs in many step blocks: SIGINT once the first block has trained
    (the progress bar moved), exit 130 with the message at once, a checkpoint in the middle of
    the first epoch; ``--resume`` gives the uninterrupted run's bytes."""
    args = [
        "--dataset", "synthetic", "--n-train", "4000", "--n-test", "200", "--features", "64",
        "--num-classes", "10", "--widths", "128", "--lrs", "0.01,0.02,0.05,0.1",
        "--seeds", "2", "--epochs", "2", "--batch-size", "8",
        "--checkpoint-every", "0", "--parallel", "1",
    ]  # fmt: skip
    call_s = 0.02  # estimated seconds per device call: an epoch of 500 steps in ~10 blocks
    monkeypatch.setattr(planning, "CALL_S", call_s)  # the in-process runs' $JAXLR_CALL_S
    ref = cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "cut"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAXLR_CALL_S": str(call_s)}
    p = subprocess.Popen(
        [sys.executable, "-m", "jaxlr.sweep", *args, "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
    )
    # the bar counts run-steps after each block ("[1] 128-128 sgd:  7%|...| 576/8.00k"):
    # the first nonzero count means training is in the middle of epoch 1
    seen, deadline = b"", time.monotonic() + 300
    moved = re.compile(rb"\| *(?!0\.00/|0/)[0-9.]+k?/")
    while not moved.search(seen) and time.monotonic() < deadline:
        chunk = os.read(p.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert moved.search(seen), seen.decode(errors="replace")[-2000:]
    p.send_signal(signal.SIGINT)
    err = (seen + p.stderr.read()).decode(errors="replace")
    p.wait(timeout=600)
    assert p.returncode == 130, err[-2000:]
    assert "stopping after the current step block" in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    # it stopped inside the first epoch (after a block), not at an epoch's end: a mid-epoch
    # checkpoint of epoch 1
    (ckpt,) = (out / "checkpoints").glob("*.npz")
    assert ckpt.name.startswith("chunk-000-e0000-s"), ckpt.name
    meta = json.loads(Path(out / "config.json").read_text())
    assert meta["config"]["epochs"] == 2
    res = cli("--resume", "--no-progress", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "from step" in res.stderr, res.stderr  # it resumed mid-epoch, not from epoch 0
    assert (out / "results.csv").read_bytes() == (tmp_path / "ref" / "results.csv").read_bytes()
