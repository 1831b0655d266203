"""``python -m jaxlr.sweep`` end to end, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from jaxlr.cli import build_parser, config_from_args

# ``python -m jaxlr.sweep ARGS`` as a new process would run it, reporting which of the heavy
# packages it imported
_IMPORTS = """
import json, runpy, sys
sys.argv = ["python -m jaxlr.sweep", *sys.argv[1:]]
try:
    runpy.run_module("jaxlr.sweep", run_name="__main__", alter_sys=True)
finally:
    heavy = ("jax", "jaxlib", "optax", "flax", "pandas", "matplotlib", "torch", "scipy")
    print("imported " + json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--help"], 0, ""),
        (["--bogus"], 2, "unrecognized arguments: --bogus"),
        (["--optimizer", "rmsprop"], 2, "--optimizer: unknown value 'rmsprop'"),
        (["--widths", "0,64"], 2, "widths must be positive"),  # the config's checks
        (["--lr-rule", "per-layer"], 2, "--layer-lr-mults"),
        (["--preset", "quick", "--weight-norm-factor", "0.5"], 2, "only applies"),
        (["--resume"], 2, "--resume needs --out"),
    ],
)
def test_help_and_bad_flags_import_no_jax(args, code, needle):
    """--help and every refused command line answer before JAX, Optax or pandas is imported."""
    p = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *args], capture_output=True, text=True, timeout=120
    )
    *message, imported = p.stderr.strip().splitlines()
    assert p.returncode == code, p.stderr
    assert needle in "\n".join(message) and "Traceback" not in p.stderr, p.stderr
    assert imported == "imported []", imported
    if code == 0:
        assert "--widths" in p.stdout


_PACKAGE = """
import json, sys
import jaxlr
heavy = ("jax", "optax", "flax", "pandas")
light = [m for m in heavy if m in sys.modules]
import jaxlr.coord_check.__main__  # the submodule first, as python -m jaxlr.coord_check does
from jaxlr import MLP, coord_check, per_layer_lr
from jaxlr import transforms, models
names = {}
for name in jaxlr.__all__:
    obj = getattr(jaxlr, name)
    names[name] = [obj.__module__, getattr(sys.modules[obj.__module__], name) is obj]
try:
    from jaxlr import no_such_name
    missing = "imported"
except ImportError as e:
    missing = str(e)
print(json.dumps(dict(
    light=light,
    coord_check=[callable(coord_check), jaxlr.coord_check is coord_check],
    same=[per_layer_lr is transforms.per_layer_lr, MLP is models.MLP],
    names=names,
    dir=sorted(set(jaxlr.__all__) - set(dir(jaxlr))),
    missing=missing,
)))
"""


def test_import_jaxlr_is_lazy_and_every_public_name_resolves():
    """``import jaxlr`` imports no JAX, Optax, Flax or pandas; each name of ``__all__`` is the
    object its module defines; ``jaxlr.coord_check`` stays the function once its submodule is
    imported."""
    p = subprocess.run(
        [sys.executable, "-c", _PACKAGE], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["light"] == [] and r["coord_check"] == [True, True] and r["same"] == [True, True]
    assert len(r["names"]) == 23 and all(ok for _, ok in r["names"].values()), r["names"]
    assert {m for m, _ in r["names"].values()} == {
        "jaxlr.coord_check",
        "jaxlr.models",
        "jaxlr.mup",
        "jaxlr.neurons",
        "jaxlr.transforms",
    }
    assert r["dir"] == [] and "cannot import name 'no_such_name'" in r["missing"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--widths", ""], "empty item in the list"),
        (["--widths", "0,64"], "widths must be positive"),
        (["--lrs", "0.1,-1"], "learning rates must be positive"),
        (["--lrs", "abc"], "comma-separated numbers"),
        (["--dataset", "imagenet"], "--dataset: unknown value 'imagenet'; choose from digits"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--lr-grid", "1:2"], "--lr-grid: expected lo:hi:n"),
        (["--optimizer", "rmsprop"], "--optimizer: unknown value 'rmsprop'; choose from sgd"),
        (["--parametrization", "mup"], "--base-width"),
        (["--lr-rule", "per-layer"], "--layer-lr-mults"),
        (["--dataset", "synthetic", "--n-train", "10", "--batch-size", "64"], "larger than"),
        (["--parallel", "0"], "--parallel must be at least 1, got 0"),
        (["--sgd-update", "fast"], "--sgd-update: unknown value 'fast'; choose from generic"),
        (["--optimizer", "adam", "--sgd-update", "folded"], "--sgd-update only applies to"),
        (["--lr-rule", "adagrad-param", "--sgd-update", "folded"], "--sgd-update only applies"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle, tmp_path, cli):
    cli(*args, "--out", str(tmp_path / "o"), "--no-progress").assert_error(needle)
    assert not (tmp_path / "o").exists()


def test_lr_grid_and_presets():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["--lr-grid", "1e-4:1:5", "--lrs", "0.5"]))
    assert cfg.lrs == (1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0)
    cfg = config_from_args(parser.parse_args(["--preset", "fashion-width-sgd", "--epochs", "3"]))
    assert cfg.dataset == "fashion_mnist" and cfg.widths == (64, 256, 1024)
    assert sorted(cfg.lrs) == sorted((1.0, 0.5, 0.1, 0.01, 0.001, 0.0001, 0.00001))
    assert cfg.optimizers == ("sgd",) and cfg.batch_size == 64 and cfg.epochs == 3
    assert cfg.init == "torch"


def test_cli_end_to_end(tmp_path, cli):
    out = tmp_path / "run"
    p = cli(
        "--widths",
        "8,32",
        "--lrs",
        "0.05,0.5,100",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
    )
    assert p.returncode == 0, p.stderr
    assert "Best learning rate per width" in p.stdout
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 * 3 * 2 * 2
    assert set(df.columns) >= {
        "width",
        "depth",
        "optimizer",
        "lr",
        "seed",
        "epoch",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "diverged",
    }
    assert df[df.lr == 100].diverged.all() and not df[df.lr == 0.05].diverged.any()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.width) == [8, 32] and (summary.min_diverged_lr == 100).all()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["widths"] == [8, 32] and "jax" in cfg["versions"]
    assert cfg["dataset"]["origin"] == "embedded: scikit-learn load_digits"
    assert (out / "loss_curves.png").stat().st_size > 1000


def test_output_directory_is_never_clobbered(tmp_path, cli):
    out = tmp_path / "run"
    args = ["--preset", "quick", "--widths", "8", "--lrs", "0.1", "--epochs", "1"]
    assert cli(*args, "--out", str(out), "--no-progress").returncode == 0
    before = (out / "results.csv").read_bytes()
    # a different sweep into the same directory is refused; the results stay
    p = cli(*args[:-1], "2", "--out", str(out), "--no-progress")
    assert p.returncode == 2 and "different sweep" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert (out / "results.csv").read_bytes() == before
    # the same sweep again is refused without --resume, and with it keeps the same results
    cli(*args, "--out", str(out), "--no-progress").assert_error("add --resume")
    assert cli(*args, "--resume", "--out", str(out), "--no-progress").returncode == 0
    assert (out / "results.csv").read_bytes() == before
    # --out naming a file, and --resume without --out
    (tmp_path / "f").write_text("x")
    p = cli(*args, "--out", str(tmp_path / "f"), "--no-progress")
    assert p.returncode == 2 and "is a file" in p.stderr and "Traceback" not in p.stderr
    p = cli("--resume", "--no-progress")
    assert p.returncode == 2 and "--resume needs --out" in p.stderr


def test_newcomer_tour(tmp_path, cli):
    quick = ["--preset", "quick", "--no-progress"]
    # an empty shard of a Slurm array is not a failure
    p = cli("--widths", "16", "--lrs", "0.1", "--epochs", "1", "--shard", "1/2",
            "--out", str(tmp_path / "s"), "--no-progress")  # fmt: skip
    assert p.returncode == 0 and "shard 1/2 has no runs" in p.stdout, p.stderr
    # unwritable or impossible outputs are refused before training, in one line
    (tmp_path / "afile.txt").write_text("x")
    cli(*quick, "--out", str(tmp_path / "afile.txt" / "sub")).assert_error("not writable")
    cli(*quick, "--out", "/proc/x").assert_error("not writable")
    # a run that cannot fit in memory is refused before training
    cli(*quick, "--widths", "1000000", "--out", str(tmp_path / "w")).assert_error("needs about")
    assert not (tmp_path / "w").exists()  # a refused sweep leaves no empty directory
    # a sweep of hours asks for --yes; the plan is printed even without a progress bar
    p = cli("--lr-grid", "1e-6:1:10000", "--no-progress", "--out", str(tmp_path / "l" / "m"))
    p.assert_error("add --yes")
    assert "90000 runs" in p.stderr and not (tmp_path / "l").exists()
    (tmp_path / "kept").mkdir()  # a directory that existed before is kept
    cli(*quick, "--widths", "1000000", "--out", str(tmp_path / "kept")).assert_error("needs")
    assert (tmp_path / "kept").is_dir()
    p = cli(*quick, "--widths", "8", "--lrs", "0.1", "--epochs", "1", "--out", str(tmp_path / "p"))
    assert p.returncode == 0 and "plan: 1 runs" in p.stderr, p.stderr
    # flags that would be ignored are errors
    cli(*quick, "--weight-norm-factor", "0.5").assert_error("only applies")
    cli(*quick, "--hidden", "64-16", "--widths", "32").assert_error("only applies")
    # an explicit --data-dir without the data is an error (no other directory is tried), and
    # the failed fetch leaves nothing behind
    cli(*quick, "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "nowhere")).assert_error(
        "nowhere"
    )
    assert not (tmp_path / "nowhere").exists()


def test_resume_with_other_flags_names_the_field(tmp_path, cli):
    out = str(tmp_path / "r")
    args = ["--preset", "quick", "--widths", "8", "--lrs", "0.1", "--epochs", "1"]
    assert cli(*args, "--out", out, "--no-progress").returncode == 0
    p = cli(*args[:-1], "2", "--resume", "--out", out, "--no-progress")
    p.assert_error("--epochs 1 vs 2")
