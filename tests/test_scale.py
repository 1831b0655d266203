"""Scale and resilience: devices, grid shards + merge, kill -9 + resume, memory chunking."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxlr import checkpoint as ckpt
from jaxlr import devices
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import load_dataset
from jaxlr.merge import merge_runs
from jaxlr.runner import run_sweep

METRICS = ["train_loss", "test_loss", "test_accuracy"]
BASE = SweepConfig(widths=(8, 32), lrs=(0.02, 0.1, 0.3, 0.05), seeds=(0, 1), epochs=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=512, n_test=120)


@pytest.fixture(scope="module")
def base_sweep(digits, tmp_path_factory) -> Path:
    """``BASE`` run whole (``all/``) and as shards 0/2 and 1/2 (``s0/``, ``s1/``), once for the
    tests that merge, compare or refuse them."""
    root = tmp_path_factory.mktemp("base")
    run_sweep(BASE.replace(out=str(root / "all")), dataset=digits, progress=False)
    for i in range(2):
        run_sweep(
            BASE.replace(shard=(i, 2), out=str(root / f"s{i}")), dataset=digits, progress=False
        )
    return root


def _sweep(*args: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jaxlr.sweep", "--no-progress", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


@pytest.mark.slow  # a subprocess with 4 virtual devices, three sweeps
def test_four_devices_equal_one_device(tmp_path):
    """Lanes sharded over 4 (virtual CPU) devices reproduce the single-device sweep."""
    script = textwrap.dedent(f"""
        import json, jax, numpy as np
        from jaxlr.config import SweepConfig
        from jaxlr.data import load_dataset
        from jaxlr.runner import run_sweep
        ds = load_dataset("digits", n_train=512, n_test=120)
        cfg = SweepConfig(widths=(8, 32), lrs=(0.02, 0.1, 0.3, 0.05, 0.01), seeds=(0, 1),
                          epochs=2)
        one = run_sweep(cfg.replace(devices=1), dataset=ds, progress=False)
        four = run_sweep(cfg.replace(devices=4, out={str(tmp_path / "d4")!r}), dataset=ds,
                         progress=False)
        try:  # programs shared by several chunks are single-device only
            run_sweep(cfg.replace(devices=4, fuse="on"), dataset=ds, progress=False)
            refused = ""
        except Exception as e:
            refused = str(e)
        cols = ["train_loss", "test_loss", "test_accuracy"]
        keys = ["width", "lr", "seed", "epoch"]
        print(json.dumps(dict(
            refused=refused,
            n_devices=len(jax.devices()),
            same_rows=bool((one[keys].to_numpy() == four[keys].to_numpy()).all()),
            max_rel=float(np.max(np.abs(one[cols].to_numpy() - four[cols].to_numpy())
                                 / np.abs(one[cols].to_numpy()))),
        )))
    """)
    # virtual devices are CPU devices: the test runs on the CPU on every machine
    flags = os.environ.get("XLA_FLAGS", "")  # the tests' compiler flags (conftest.py)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip(),
    }
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["n_devices"] == 4 and r["same_rows"]
    assert "--fuse on needs a single device" in r["refused"] and "--devices 1" in r["refused"]
    assert r["max_rel"] < 1e-5, r  # float32 rounding of differently-sized per-device matmuls
    plan = json.loads((tmp_path / "d4" / "config.json").read_text())["plan"]
    assert all(len(c["lrs"]) % 4 == 0 or len(c["lrs"]) == 5 for c in plan)


def test_more_devices_than_the_machine_has_is_refused(tmp_path, cli):
    p = cli("--preset", "quick", "--devices", "64", "--out", str(tmp_path / "x"))
    p.assert_error("more devices than")


@pytest.mark.slow  # ten sweeps of one-lane programs and shards
def test_shards_merged_equal_unsharded(digits, base_sweep, tmp_path):
    """Shards run the whole sweep's programs unchanged: merged, they are the same bytes."""
    # one lane per program, 6 programs in 3 shards
    cfg, n = BASE.replace(max_lanes=1, lrs=(0.02, 0.1, 0.3), seeds=(0,)), 3
    whole = tmp_path / "one-lane" / "all"
    run_sweep(cfg.replace(out=str(whole)), dataset=digits, progress=False)
    dirs = [tmp_path / "one-lane" / f"s{i}" for i in range(n)]
    for i, d in enumerate(dirs):
        run_sweep(cfg.replace(shard=(i, n), out=str(d)), dataset=digits, progress=False)
    cases = [(dirs, whole), ([base_sweep / "s0", base_sweep / "s1"], base_sweep / "all")]
    for k, (shards, unsharded) in enumerate(cases):
        merge_runs(shards, tmp_path / f"merged{k}")
        for f in ("results.csv", "summary.csv"):
            assert (tmp_path / f"merged{k}" / f).read_bytes() == (unsharded / f).read_bytes()


def test_merge_refuses_different_configs(digits, base_sweep, tmp_path, cli):
    a = base_sweep / "s0"
    run_sweep(
        BASE.replace(shard=(1, 2), epochs=1, out=str(tmp_path / "b")),
        dataset=digits,
        progress=False,
    )
    with pytest.raises(ConfigError, match="different sweep"):
        merge_runs([a, tmp_path / "b"], tmp_path / "m")
    with pytest.raises(ConfigError, match="twice"):
        merge_runs([a, a], tmp_path / "m")
    # a shard computed on other hardware or software would not match: refused, named
    shutil.copytree(base_sweep / "s1", tmp_path / "c")
    record = json.loads((tmp_path / "c" / "config.json").read_text())
    record["numerics"]["device_kind"] = "NVIDIA H100 80GB HBM3"
    (tmp_path / "c" / "config.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"device_kind .* vs 'NVIDIA H100"):
        merge_runs([a, tmp_path / "c"], tmp_path / "m")
    p = cli("merge", str(a), str(tmp_path / "b"), "--out", str(tmp_path / "m"))
    p.assert_error("different sweep")


@pytest.mark.slow  # 10 epochs up to width 256, three processes
def test_kill9_then_resume_gives_identical_results(tmp_path, cli):
    args = [
        "--widths",
        "16,256",
        "--lrs",
        "0.05,0.2,0.5",
        "--seeds",
        "2",
        "--epochs",
        "10",
        "--checkpoint-every",
        "1",
        "--fuse",  # one program per chunk, one at a time: chunk 0 finishes while chunk 1 trains
        "off",
        "--parallel",
        "1",
    ]
    ref = cli("--no-progress", *args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxlr.sweep", "--no-progress", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    # kill in the second chunk, after some of its epochs are checkpointed
    while time.time() < deadline and proc.poll() is None:
        if list((out / "checkpoints").glob("chunk-001-e*.npz")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "chunks" / "chunk-000.npz").exists()
    assert not (out / "summary.csv").exists()
    partial = pd.read_csv(out / "results.csv")  # finished chunks survive the kill
    assert len(partial) == 3 * 2 * 10
    res = cli("--no-progress", "--resume", "--out", str(out))  # config from out/config.json
    assert res.returncode == 0, res.stderr
    assert (out / "results.csv").read_bytes() == (tmp_path / "ref" / "results.csv").read_bytes()
    assert (out / "summary.csv").read_bytes() == (tmp_path / "ref" / "summary.csv").read_bytes()
    # resuming with other flags is refused
    bad = cli("--no-progress", "--resume", "--out", str(out), "--widths", "16", "--epochs", "10")
    assert bad.returncode == 2 and "other settings" in bad.stderr


def test_checkpoint_integrity(tmp_path):
    leaves = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), bool)]
    metrics = {"train_loss": np.zeros((1, 2, 3), np.float32)}
    meta = {"grid_hash": "abc", "chunk_key": "k"}
    for e in (1, 2, 3):
        ckpt.save_checkpoint(
            tmp_path, 0, e, [x + e for x in leaves[:1]] + leaves[1:], metrics, meta
        )
    files = sorted((tmp_path / "checkpoints").glob("*.npz"))
    assert [f.name for f in files] == ["chunk-000-e0002.npz", "chunk-000-e0003.npz"]
    warnings: list[str] = []
    epochs, _, got, _ = ckpt.latest_checkpoint(tmp_path, 0, "abc", warn=warnings.append)
    assert epochs == 3 and np.array_equal(got[0], leaves[0] + 3) and not warnings
    # a different config is refused
    with pytest.raises(ckpt.CheckpointError, match="different sweep config"):
        ckpt.load_npz(files[-1], "other")
    # truncated newest: fall back to the previous one, and say so
    files[-1].write_bytes(files[-1].read_bytes()[:100])
    epochs, _, got, _ = ckpt.latest_checkpoint(tmp_path, 0, "abc", warn=warnings.append)
    assert epochs == 2 and np.array_equal(got[0], leaves[0] + 2)
    assert any("unreadable" in w for w in warnings)
    # a flipped byte inside an array: zip's CRC catches it
    raw = bytearray(files[0].read_bytes())
    with np.load(files[0]) as z:
        payload = z["state_0000"].tobytes()
    pos = bytes(raw).find(payload)
    raw[pos] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    warnings.clear()
    assert ckpt.latest_checkpoint(tmp_path, 0, "abc", warn=warnings.append) is None
    assert any("unreadable" in w for w in warnings) and any("starts over" in w for w in warnings)
    # a well-formed file whose arrays no longer match their recorded digest
    ckpt.save_checkpoint(tmp_path, 0, 5, leaves, metrics, meta)
    path = ckpt.checkpoint_path(tmp_path, 0, 5)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["state_0000"] = arrays["state_0000"] + 1
    np.savez(path, **arrays)
    with pytest.raises(ckpt.CheckpointError, match="digest mismatch"):
        ckpt.load_npz(path, "abc")


def test_small_memory_limit_chunks_without_changing_results(
    digits, base_sweep, monkeypatch, tmp_path
):
    whole = pd.read_csv(base_sweep / "all" / "results.csv")
    # room for 2-3 runs per chunk (a run here needs about 1 MB, mostly the evaluation chunk)
    monkeypatch.setattr(devices, "device_memory_bytes", lambda device=None: 6_000_000)
    chunked = run_sweep(BASE.replace(out=str(tmp_path / "c")), dataset=digits, progress=False)
    plan = json.loads(Path(tmp_path / "c" / "config.json").read_text())["plan"]
    assert len(plan) > 2 and all(len(c["seeds"]) * len(c["lrs"]) < 8 for c in plan)
    assert len(chunked) == len(whole)
    np.testing.assert_allclose(chunked[METRICS].to_numpy(), whole[METRICS].to_numpy(), rtol=1e-5)


@pytest.mark.slow  # three processes, each importing JAX and compiling
def test_two_processes_equal_two_devices(tmp_path):
    """One sweep over 2 processes (1 CPU device each, jax.distributed on localhost) writes the
    same bytes as 1 process with 2 devices: the same program, partitioned the same way."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    grid = ["--widths", "8,32", "--lrs", "0.02,0.1,0.3,0.05", "--seeds", "2", "--epochs", "2",
            "--n-train", "512", "--n-test", "120"]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # virtual devices are CPU devices, also on a GPU
    flags = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    two_dev = {**env, "XLA_FLAGS": flags}  # the same compiler flags as the 2 processes
    p = _sweep(*grid, "--devices", "2", "--out", str(tmp_path / "dev"), env=two_dev)
    assert p.returncode == 0, p.stderr
    cluster = ["--coordinator-address", f"localhost:{port}", "--num-processes", "2"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jaxlr.sweep",
                "--no-progress",
                *grid,
                *cluster,
                "--process-id",
                str(i),
                "--out",
                str(tmp_path / "mp"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    record = json.loads((tmp_path / "mp" / "config.json").read_text())
    assert record["numerics"]["processes"] == 2
    for f in ("results.csv", "summary.csv"):
        assert (tmp_path / "mp" / f).read_bytes() == (tmp_path / "dev" / f).read_bytes()


@pytest.mark.slow  # six sweeps with a refinement round
def test_fused_programs_equal_separate_programs_and_resume(
    digits, tmp_path, monkeypatch, default_cpu_emitters
):
    """Every chunk of a round in one program (--fuse on) gives the bytes of one program per
    chunk, checkpoints its chunks together and resumes them, also from unequal checkpoints."""
    from jaxlr import runner

    cfg = BASE.replace(optimizers=("sgd", "adam"), epochs=3, checkpoint_every=1, refine=1)
    ref = tmp_path / "ref"
    run_sweep(cfg.replace(out=str(ref), fuse="off"), dataset=digits, progress=False)
    fused = tmp_path / "fused"
    run_sweep(cfg.replace(out=str(fused), fuse="on"), dataset=digits, progress=False)
    for f in ("results.csv", "summary.csv"):
        assert (fused / f).read_bytes() == (ref / f).read_bytes(), f
    programs = json.loads((fused / "config.json").read_text())["programs"]
    assert [p["architectures"] for p in programs] == [
        ["8-8 sgd", "8-8 adam", "32-32 sgd", "32-32 adam"]
    ] * 2  # the grid, then the refinement round
    assert [p["chunks"] for p in programs] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(json.loads((ref / "config.json").read_text())["programs"]) == 8

    # interrupted after epoch 2 of the grid's program: every chunk checkpointed at epoch 2
    calls = []
    original = ckpt.EpochSaver.save

    def interrupt(self, epochs_done, *args, **kw):
        original(self, epochs_done, *args, **kw)
        calls.append(epochs_done)
        if len(calls) == 4 * 2:
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    monkeypatch.setattr(ckpt.EpochSaver, "save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg.replace(out=str(killed), fuse="on"), dataset=digits, progress=False)
    monkeypatch.setattr(ckpt.EpochSaver, "save", original)
    latest = sorted(p.name for p in (killed / "checkpoints").glob("chunk-*-e0002.npz"))
    assert len(latest) == 4 and not list((killed / "chunks").glob("*.npz")), latest
    together = tmp_path / "together"  # all from epoch 2, in one program
    shutil.copytree(killed, together)
    starts = []
    group = runner.train_group
    monkeypatch.setattr(
        runner, "train_group", lambda *a, **kw: starts.append(kw["start_epoch"]) or group(*a, **kw)
    )
    run_sweep(
        cfg.replace(out=str(together), fuse="on"), dataset=digits, progress=False, resume=True
    )
    assert starts == [2, 0]  # the grid's program resumed at epoch 2, then the refinement round
    assert (together / "results.csv").read_bytes() == (ref / "results.csv").read_bytes()
    # one chunk loses its last checkpoint: the chunks resume from different epochs, one by one
    (killed / "checkpoints" / latest[0]).unlink()
    run_sweep(cfg.replace(out=str(killed), fuse="on"), dataset=digits, progress=False, resume=True)
    assert (killed / "results.csv").read_bytes() == (ref / "results.csv").read_bytes()


# ------------------------------------------------------------------------------------------
# programs trained at the same time (--parallel)


@pytest.mark.slow  # four sweeps, two programs at a time
def test_parallel_programs_equal_one_at_a_time_and_resume(digits, tmp_path, monkeypatch):
    """Two programs at a time give the bytes of one at a time, really run two at once, and a
    Ctrl-C while both train stops both; --resume then finishes the same bytes."""
    import _thread
    import threading

    from jaxlr import runner, scheduling

    cfg = BASE.replace(optimizers=("sgd", "adam"), epochs=3, checkpoint_every=1, fuse="off")
    ref = tmp_path / "ref"
    run_sweep(cfg.replace(out=str(ref), parallel=1), dataset=digits, progress=False)

    active, peak, lock = set(), [0], threading.Lock()
    original = runner._run_program

    def tracked(sweep, chunks):
        with lock:
            active.add(threading.get_ident())
            peak[0] = max(peak[0], len(active))
        try:
            return original(sweep, chunks)
        finally:
            with lock:
                active.discard(threading.get_ident())

    compiled, started = [], []  # the programs in the order they compile and start training
    compile_epoch, describe = scheduling.compile_epoch, scheduling.describe_program

    def compile_in_order(spec, *args):
        with lock:
            compiled.append((spec.hidden, spec.optimizer))
        return compile_epoch(spec, *args)

    def describe_in_order(sweep, indices, chunks):
        started.append(
            tuple((chunks[i].bucket.hidden, chunks[i].bucket.optimizer) for i in indices)
        )
        return describe(sweep, indices, chunks)

    monkeypatch.setattr(runner, "_run_program", tracked)
    monkeypatch.setattr(scheduling, "compile_epoch", compile_in_order)
    monkeypatch.setattr(scheduling, "describe_program", describe_in_order)
    two = tmp_path / "two"
    run_sweep(cfg.replace(out=str(two), parallel=2), dataset=digits, progress=False)
    for f in ("results.csv", "summary.csv"):
        assert (two / f).read_bytes() == (ref / f).read_bytes(), f
    assert peak[0] == 2
    # the background compilations go in the order the programs start (longest first)
    assert [s[0] for s in started] == compiled and len(compiled) == 4
    monkeypatch.setattr(scheduling, "compile_epoch", compile_epoch)
    monkeypatch.setattr(scheduling, "describe_program", describe)
    record = json.loads((two / "config.json").read_text())
    assert record["config"]["parallel"] == 2 and len(record["programs"]) == 4

    # Ctrl-C (in the main thread) once both programs have trained an epoch
    saver = ckpt.EpochSaver.epoch_done
    calls, stops = [], []
    on_interrupt = runner.stop_on_interrupt

    def recording(stop, bar):
        stops.append(stop)
        return on_interrupt(stop, bar)

    def interrupt_main(self, epoch, *args, **kw):
        with lock:
            calls.append(epoch)
            n = len(calls)
        if n == 2:
            _thread.interrupt_main()
        if n >= 2:  # every program waits here for the interruption to reach it
            assert stops[0].wait(60)
        saver(self, epoch, *args, **kw)

    monkeypatch.setattr(runner, "stop_on_interrupt", recording)
    monkeypatch.setattr(ckpt.EpochSaver, "epoch_done", interrupt_main)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg.replace(out=str(killed), parallel=2), dataset=digits, progress=False)
    monkeypatch.setattr(ckpt.EpochSaver, "epoch_done", saver)
    assert not (killed / "results.csv").exists()  # both stopped; no program had finished
    run_sweep(cfg.replace(out=str(killed), parallel=2), dataset=digits, progress=False, resume=True)
    for f in ("results.csv", "summary.csv"):
        assert (killed / f).read_bytes() == (ref / f).read_bytes(), f


def _tasks_log(slots, memory, sizes, fail=None):
    """Runs fake tasks ``name -> (cost, bytes)`` through run_concurrently; returns the start
    order, the peak of concurrently used slots and bytes, and the results reported."""
    import threading

    from jaxlr.scheduling import run_concurrently

    lock = threading.Lock()
    running, started, done, peak = {}, [], {}, {"slots": 0, "bytes": 0}
    release = {k: threading.Event() for k in sizes}

    def run(k):
        with lock:
            running[k] = sizes[k][1]
            peak["slots"] = max(peak["slots"], len(running))
            peak["bytes"] = max(peak["bytes"], sum(running.values()))
        time.sleep(0.05 * sizes[k][0])
        with lock:
            del running[k]
        if k == fail:
            raise ValueError(f"task {k} failed")
        return k.upper()

    run_args = dict(
        slots=slots,
        cost=lambda k: sizes[k][0],
        nbytes=lambda k: sizes[k][1],
        memory=memory,
        on_start=started.append,
        on_done=lambda k, r: done.__setitem__(k, r),
        stop=threading.Event(),
    )
    error = None
    try:
        run_concurrently(list(sizes), run, **run_args)
    except ValueError as e:
        error = str(e)
    del release
    return started, peak, done, error


def test_run_concurrently_longest_first_within_slots_and_memory():
    sizes = {"a": (1, 10), "b": (4, 10), "c": (2, 10), "d": (3, 10), "e": (1, 10)}
    started, peak, done, error = _tasks_log(2, 100, sizes)
    assert started == ["b", "d", "c", "a", "e"] and error is None  # by cost, ties in order
    assert peak["slots"] == 2 and done == {k: k.upper() for k in sizes}

    # memory 25: two 10-byte tasks fit together, the 20-byte one only with nothing else...
    sizes = {"big": (3, 20), "x": (2, 10), "y": (2, 10), "z": (1, 10)}
    started, peak, done, _ = _tasks_log(3, 25, sizes)
    assert peak["bytes"] <= 25 and len(done) == 4
    # ...and a task larger than the whole budget still runs, alone
    started, peak, done, _ = _tasks_log(2, 15, {"huge": (1, 40), "x": (1, 10)})
    assert peak["bytes"] == 40 and peak["slots"] == 1 and len(done) == 2


def test_run_concurrently_reports_the_others_then_raises_a_failure():
    sizes = {"long": (6, 1), "bad": (2, 1), "later": (1, 1)}
    started, _, done, error = _tasks_log(2, 100, sizes, fail="bad")
    assert error == "task bad failed"
    assert done == {"long": "LONG"}  # the running task finished and was reported
    assert "later" not in started  # nothing starts after a failure
