"""The config as the single source of options: CLI, JSON record, program spec and checks."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

from jaxlr.cli import _kept, build_parser, config_from_args
from jaxlr.config import (
    ConfigError,
    SweepConfig,
    TrainOptions,
    config_diff,
    flag_of,
)
from jaxlr.outputs import check_resumable, check_writable, load_config


def _parse(*argv: str) -> SweepConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def test_every_field_has_one_flag_with_its_default_once():
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    text = parser.format_help()
    for f in dataclasses.fields(SweepConfig):
        if not f.metadata["cli"]:
            continue
        action = actions[f.name]
        assert action.option_strings[0] == flag_of(f)
        assert action.help.count("(default: ") == 1, action.help
        assert action.default is None  # unset flags never override a preset
    assert "(default: None)" not in text and "merge" in text
    # the real default lr grid is shown
    assert "0.00195" in actions["lrs"].help and ", 2)" in actions["lrs"].help


def test_flags_set_their_fields_and_types():
    cfg = _parse(
        "--widths", "8,32", "--lrs", "0.1,1", "--seeds", "2", "--first-seed", "5",
        "--optimizer", "sgd,adam", "--epochs", "3", "--lr-rule", "weight-norm",
        "--weight-norm-factor", "0.5", "--shard", "1/3", "--select", "train_loss",
        "--out", "x",
    )  # fmt: skip
    assert cfg.widths == (8, 32) and cfg.lrs == (0.1, 1.0) and cfg.seeds == (5, 6)
    assert cfg.optimizers == ("sgd", "adam") and cfg.epochs == 3 and cfg.shard == (1, 3)
    assert cfg.weight_norm_factor == 0.5 and cfg.select == "train_loss"
    assert _parse("--seeds", "3,9", "--out", "x").seeds == (3, 9)
    assert _parse("--hidden", "64-16,32-8", "--out", "x").architectures == ((64, 16), (32, 8))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--weight-norm-factor", "0.5"], "--weight-norm-factor only applies to --lr-rule"),
        # an explicit flag equal to its default is still reported
        (["--weight-norm-factor", "0.01"], "--weight-norm-factor only applies"),
        (["--hidden", "64-16", "--widths", "32"], "--widths only applies"),
        (["--data-dir", "/tmp"], "--data-dir only applies to --dataset fashion_mnist"),
        (["--features", "5"], "--features only applies to --dataset synthetic"),
        (["--base-width", "64"], "--base-width only applies to --parametrization mup or lr-exp"),
        (["--lr-exponents", "0,1,1"], "--lr-exponents only applies to --parametrization lr-exp"),
        (["--adagrad-eps", "1e-6"], "--adagrad-eps only applies"),
    ],
)
def test_flags_that_do_not_apply_are_rejected(argv, needle):
    with pytest.raises(ConfigError, match=needle):
        _parse(*argv, "--out", "x")


def test_presets_keep_working_with_hidden():
    cfg = _parse("--preset", "fashion-width-sgd", "--hidden", "64-16", "--out", "x")
    assert cfg.hidden == ((64, 16),) and cfg.dataset == "fashion_mnist"


def test_python_users_get_coercion_and_clear_type_errors():
    cfg = SweepConfig(widths=[8, 16], lrs=[1, 0.5], hidden=None)
    assert cfg.widths == (8, 16) and cfg.lrs == (1.0, 0.5) and isinstance(cfg.lrs[0], float)
    hash(cfg)
    with pytest.raises(ConfigError, match="--widths: expected a sequence of int"):
        SweepConfig(widths="64")
    with pytest.raises(ConfigError, match=r"--optimizer: unknown value .rmsprop.; choose from sgd"):
        SweepConfig(optimizers=("rmsprop",))
    with pytest.raises(ConfigError, match="--epochs: expected int"):
        SweepConfig(epochs=2.5)


def test_json_round_trip_and_unknown_fields():
    cfg = SweepConfig(
        hidden=((64, 16), (32, 8)),
        lrs=(0.1, 0.01),
        optimizers=("adam", "sgd"),
        lr_rule="per-layer",
        layer_lr_mults=(1.0, 0.5, 0.25),
        shard=(1, 2),
    )
    d = json.loads(json.dumps(cfg.to_dict()))
    assert SweepConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="unknown config field"):
        SweepConfig.from_dict({**d, "no_such_option": 0.9})


def test_run_spec_carries_every_train_option():
    from jaxlr.engine import RunSpec

    class DS:  # the attributes RunSpec.create reads
        in_features, num_classes, n_train, n_test, mean, std = 64, 10, 100, 20, 3.0, 2.0

    cfg = SweepConfig(
        lr_rule="adagrad-neuron", adagrad_eps=1e-6, batch_size=10, divergence_loss=7.0
    )
    spec = RunSpec.create(cfg, DS(), (16, 16), "adam")
    for f in dataclasses.fields(TrainOptions):
        assert getattr(spec, f.name) == getattr(cfg, f.name), f.name
    assert spec.steps_per_epoch == 10 and spec.hidden == (16, 16) and spec.optimizer == "adam"
    hash(spec)


def test_hash_ignores_execution_fields_and_diff_names_fields():
    a = SweepConfig(lrs=(0.1, 0.2))
    b = a.replace(out="elsewhere", devices=2, shard=(1, 2), checkpoint_every=0)
    assert a.grid_hash() == b.grid_hash()
    assert a.replace(max_lanes=3).grid_hash() != a.grid_hash()  # the grouping is part of it
    c = a.replace(lrs=(0.1, 0.3), epochs=5)
    assert config_diff(a, c) == ["--lrs 0.1,0.2 vs 0.1,0.3", "--epochs 20 vs 5"]


def test_resume_and_overwrite_checks_name_the_difference(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    cfg = SweepConfig(lrs=(0.1,), out=str(out))
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
    assert load_config(out) == cfg
    check_resumable(cfg)
    check_writable(cfg)  # the same sweep again is fine
    other = cfg.replace(lrs=(0.2,))
    with pytest.raises(ConfigError, match=r"--lrs 0\.1 vs 0\.2"):
        check_resumable(other)
    with pytest.raises(ConfigError, match=r"different sweep \(--lrs 0\.1 vs 0\.2\)"):
        check_writable(other)


def test_unwritable_outputs_are_config_errors(tmp_path):
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(ConfigError, match="is not writable"):
        check_writable(SweepConfig(out=str(tmp_path / "afile.txt" / "sub")))
    with pytest.raises(ConfigError, match="is a file"):
        check_writable(SweepConfig(out=str(tmp_path / "afile.txt")))
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match="is not writable"):
            check_writable(SweepConfig(out=str(ro / "x")))


def test_interrupt_message_points_only_at_files_that_exist(tmp_path):
    cfg = SweepConfig(out=str(tmp_path / "o"))
    assert "Nothing was written" in _kept(cfg)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "config.json").write_text("{}")
    assert "results.csv" not in _kept(cfg) and "--resume" in _kept(cfg)
    (tmp_path / "o" / "results.csv").write_text("")
    assert "results.csv" in _kept(cfg)


def test_written_files_respect_the_umask(tmp_path):
    from jaxlr.results import write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
