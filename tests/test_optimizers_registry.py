"""The registry's optimizers and schedules in the sweep, against plain Optax loops.

Each case trains lanes of different (lr, weight decay) in one vmapped program and compares
every lane with one run trained alone, one step at a time, by Optax's own optimizers
(``optax.sgd``, ``optax.adamw``, ``optax.lion``) and schedules (``optax.join_schedules`` of
``linear_schedule`` / ``cosine_decay_schedule``), with no vmap, no scan and no divergence
logic. Independent weight decay, which Optax does not ship, is its formula written in the loop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import registry
from jaxlr.cli import main
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import device_data, load_dataset
from jaxlr.engine import Hypers, RunSpec, epoch_batches, seed_keys, train_lanes
from jaxlr.models import MLP
from jaxlr.runner import run_sweep

EPOCHS = 2


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=320, n_test=100)


def _ref_schedule(name: str, total: int, warmup: int, decay_fraction: float, final: float):
    """The schedule from Optax's own pieces: s(count), count the 0-based step."""
    warm = optax.linear_schedule(1.0 / warmup, 1.0, max(warmup - 1, 1)) if warmup else None
    if name == "constant":
        return optax.constant_schedule(1.0)
    if name == "warmup-cosine":
        rest = optax.cosine_decay_schedule(1.0, total - warmup, alpha=final)
        parts, bounds = [rest], []
    elif name == "warmup-linear":
        parts, bounds = [optax.linear_schedule(1.0, final, total - warmup)], []
    elif name == "wsd":
        start = total - round(decay_fraction * total)
        stable = optax.constant_schedule(1.0)
        decay = optax.linear_schedule(1.0, final, total - start)
        return optax.join_schedules([warm, stable, decay], [warmup, start])
    else:
        raise ValueError(name)
    return optax.join_schedules([warm, *parts], [warmup, *bounds]) if warm else parts[0]


def _ref_tx(case: dict, lr: float, wd: float, sched) -> optax.GradientTransformation:
    lr_t = lambda count: lr * sched(count)
    opt = case["optimizer"]
    if opt == "sgd":
        tx = optax.sgd(lr_t, momentum=case.get("momentum") or None, nesterov=case.get("nesterov"))
        return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
    if opt == "adam":
        return optax.adam(lr_t, b1=0.9, b2=0.999, eps=1e-8)
    if opt == "adamw":
        if case.get("weight_decay_mode") == "independent":
            return optax.chain(optax.scale_by_adam(eps=1e-8), optax.scale_by_learning_rate(lr_t))
        return optax.adamw(lr_t, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd)
    if opt == "lion":
        return optax.lion(lr_t, b1=0.9, b2=0.99, weight_decay=wd)
    raise ValueError(opt)


def _reference_run(spec: RunSpec, ds, case: dict, seed: int, lr: float, wd: float, make_tx=None):
    """One lane alone: plain Optax, one jitted step at a time; mean batch loss per epoch."""
    model = MLP(spec.hidden, spec.num_classes, init_scheme=spec.init)
    init_key, _ = seed_keys(jnp.int32(seed))
    params = model.init(init_key, jnp.zeros((1, spec.in_features)))["params"]
    total = EPOCHS * spec.steps_per_epoch
    warmup = registry.warmup_steps(spec.warmup, total)
    sched = _ref_schedule(spec.schedule, total, warmup, spec.decay_fraction, spec.final_lr_fraction)
    tx = (make_tx or _ref_tx)(case, lr, wd, sched)
    independent = case.get("weight_decay_mode") == "independent"
    wd_eff = wd * (spec.base_width / spec.hidden[0]) if spec.weight_decay_scaling == "width" else wd
    opt_state = tx.init(params)
    x_all = (np.asarray(ds.x_train, np.float32) - ds.mean) / ds.std
    y_all = np.asarray(ds.y_train)

    @jax.jit
    def step(params, opt_state, x, y, s_t):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, g = jax.value_and_grad(loss_fn)(params)
        u, opt_state = tx.update(g, opt_state, params)
        new = optax.apply_updates(params, u)
        if independent:  # theta <- theta + u - s_t * wd' * theta
            new = jax.tree.map(lambda n, p: n - s_t * wd_eff * p, new, params)
        return new, opt_state, loss

    losses, t = [], 0
    for e in range(EPOCHS):
        idx = epoch_batches(
            jnp.int32(seed), jnp.int32(e), spec.n_train, spec.batch_size, spec.steps_per_epoch
        )
        ep = []
        for b in np.asarray(idx):
            params, opt_state, loss = step(params, opt_state, x_all[b], y_all[b], sched(t))
            ep.append(float(loss))
            t += 1
        losses.append(np.mean(ep))
    return params, np.array(losses)


CASES = {
    "sgd-momentum-warmup-cosine": dict(
        optimizer="sgd", momentum=0.9, schedule="warmup-cosine", warmup=3, final_lr_fraction=0.1
    ),
    "sgd-nesterov-l2": dict(optimizer="sgd", momentum=0.9, nesterov=True, wd=(0.0, 1e-2)),
    "adam-warmup-linear": dict(optimizer="adam", schedule="warmup-linear", warmup=0.25),
    "adamw-coupled-wsd": dict(
        optimizer="adamw", wd=(0.0, 0.05), schedule="wsd", warmup=2, decay_fraction=0.3
    ),
    "adamw-independent": dict(optimizer="adamw", weight_decay_mode="independent", wd=(0.0, 0.02)),
    "adamw-independent-width": dict(
        optimizer="adamw",
        weight_decay_mode="independent",
        weight_decay_scaling="width",
        base_width=8,
        wd=(0.0, 0.02),
    ),
    "lion-decay": dict(optimizer="lion", wd=(0.0, 0.1)),
}


def _config(case: dict) -> SweepConfig:
    opts = {k: v for k, v in case.items() if k not in ("optimizer", "wd")}
    return SweepConfig(
        widths=(16,),
        optimizers=(case["optimizer"],),
        weight_decays=case.get("wd", (0.0,)),
        epochs=EPOCHS,
        batch_size=32,
        **opts,
    )


SLOW_CASES = {
    "adam-warmup-linear", "adamw-coupled-wsd", "adamw-independent", "adamw-independent-width",
    "lion-decay",
}  # fmt: skip


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_CASES else []) for n in sorted(CASES)],
)
def test_each_lane_equals_a_plain_optax_run(digits, name):
    case = CASES[name]
    cfg = _config(case)
    spec = RunSpec.create(cfg, digits, (16, 16), case["optimizer"])
    lr_base = 0.05 if case["optimizer"] == "sgd" else 3e-3
    wds = case.get("wd", (0.0,))
    lanes = [(lr_base, wds[-1]), (lr_base / 4, wds[0]), (lr_base / 4, wds[-1])]
    hypers = [lr for lr, _ in lanes]
    if spec.decays:
        hypers = Hypers(jnp.asarray(hypers), jnp.asarray([wd for _, wd in lanes]))
    seeds = [0, 3]
    with jax.default_matmul_precision("highest"):
        state, m = train_lanes(spec, device_data(digits), seeds, hypers, epochs=EPOCHS)
        for si, s in enumerate(seeds):
            for li, (lr, wd) in enumerate(lanes):
                ref_params, ref_losses = _reference_run(spec, digits, case, s, lr, wd)
                lane = jax.tree.map(lambda a, si=si, li=li: a[si, li], state.params)
                for a, b in zip(jax.tree.leaves(lane), jax.tree.leaves(ref_params), strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
                np.testing.assert_allclose(m["train_loss"][:, si, li], ref_losses, rtol=1e-5)


def test_weight_decays_are_lanes_of_one_program_with_their_own_rows(digits, tmp_path):
    cfg = SweepConfig(
        widths=(16,), lrs=(1e-3, 3e-3), seeds=(0,), epochs=EPOCHS, batch_size=32,
        optimizers=("adamw",), weight_decays=(0.0, 0.1), compilation_cache=False,
    )  # fmt: skip
    both = run_sweep(cfg, dataset=digits, progress=False)
    assert sorted(both["weight_decay"].unique()) == [0.0, 0.1]
    alone = run_sweep(cfg.replace(weight_decays=(0.1,)), dataset=digits, progress=False)
    got = both[both["weight_decay"] == 0.1].reset_index(drop=True)
    np.testing.assert_array_equal(got["test_loss"], alone["test_loss"])
    zero = both[both["weight_decay"] == 0.0]["test_loss"].to_numpy()
    assert not np.array_equal(zero, got["test_loss"].to_numpy())  # the decay did something


def test_a_toy_optimizer_through_the_registry_alone(digits):
    """signSGD, registered with one entry (no other file knows it), runs a sweep that equals
    Optax's ``sign`` + ``scale`` run lane by lane."""

    def sign_direction(spec):
        return optax.scale_by_sign()

    registry.register(
        registry.OptimizerEntry(
            "signsgd", "sign of the gradient", sign_direction, slots=lambda o: 0, rules=("none",)
        )
    )
    try:
        cfg = SweepConfig(
            widths=(16,), lrs=(1e-3, 1e-2), seeds=(0,), epochs=EPOCHS, batch_size=32,
            optimizers=("signsgd",), compilation_cache=False,
        )  # fmt: skip
        df = run_sweep(cfg, dataset=digits, progress=False)
        assert set(df["optimizer"]) == {"signsgd"}
        spec = RunSpec.create(cfg, digits, (16, 16), "signsgd")
        for lr in cfg.lrs:
            case = {"optimizer": "sgd"}
            ref_spec = dataclasses.replace(spec, optimizer="sgd")
            _, want = _reference_run(ref_spec, digits, case, 0, lr, 0.0, make_tx=_sign_tx)
            got = df[(df["lr"] == lr)].sort_values("epoch")["train_loss"].to_numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5)
        with pytest.raises(ConfigError, match="does not compose"):
            SweepConfig(optimizers=("signsgd",), lr_rule="weight-norm")
    finally:
        del registry.OPTIMIZERS["signsgd"]


def _sign_tx(case, lr, wd, sched):
    return optax.chain(optax.scale_by_sign(), optax.scale(-lr))


BAD = {
    "--momentum with adam": ["--optimizer", "adam", "--momentum", "0.9"],
    "--weight-decay-mode without adamw": ["--optimizer", "sgd", "--weight-decay-mode", "coupled"],
    "--nesterov without momentum": ["--optimizer", "sgd", "--nesterov"],
    "negative decay": ["--optimizer", "adamw", "--weight-decay", "-0.1"],
    "weight decay for adam": ["--optimizer", "adam", "--weight-decay", "0.1"],
    "muon under mup": ["--optimizer", "muon", "--parametrization", "mup", "--base-width", "16"],
    "warmup of a constant lr": ["--warmup", "10"],
    "unknown schedule": ["--schedule", "step"],
    "one beta": ["--optimizer", "lion", "--betas", "0.9"],
    "a beta of 1.5": ["--optimizer", "lion", "--betas", "0.9,1.5"],
    "warmup longer than training": [
        "--schedule", "warmup-cosine", "--warmup", "100000", "--widths", "8", "--epochs", "1",
    ],
    "warmup overlapping wsd's decay": [
        "--schedule", "wsd", "--warmup", "0.9", "--decay-fraction", "0.5",
        "--widths", "8", "--epochs", "1",
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(name, capsys, tmp_path):
    try:
        code = main([*BAD[name], "--out", str(tmp_path / "out"), "--no-progress", "--seeds", "1"])
    except SystemExit as e:  # a flag argparse itself refuses
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out" / "results.csv").exists()


@pytest.mark.slow  # three sweeps
def test_epoch_horizons_of_a_constant_schedule_are_the_shorter_sweeps(digits, tmp_path):
    """``--epochs 1,3`` trains 3 epochs once; its horizon-1 answer is a 1-epoch sweep's."""
    out = tmp_path / "horizons"
    code = main(
        ["--widths", "8,16,32", "--epochs", "1,3", "--seeds", "2", "--lrs", "0.05,0.2,0.8",
         "--n-train", "320", "--n-test", "100", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    cfg = SweepConfig(
        widths=(8, 16, 32), epochs=1, seeds=(0, 1), lrs=(0.05, 0.2, 0.8), n_train=320,
        n_test=100, out=str(tmp_path / "one"),
    )  # fmt: skip
    from jaxlr.runner import run

    short = run(cfg, progress=False)
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["horizon"].unique()) == [1, 3]
    at_1 = summary[summary["horizon"] == 1].drop(columns="horizon").reset_index(drop=True)
    want = pd.read_csv(tmp_path / "one" / "summary.csv")
    pd.testing.assert_frame_equal(at_1, want)
    exps = pd.read_csv(out / "width_exponent.csv")
    want_exp = short.exponents.reset_index(drop=True)
    got_exp = exps[exps["horizon"] == 1].drop(columns="horizon").reset_index(drop=True)
    np.testing.assert_allclose(got_exp["alpha"], want_exp["alpha"], rtol=1e-6)


def test_epoch_horizons_of_a_horizon_dependent_schedule_are_refused(capsys, tmp_path):
    code = main(["--epochs", "2,4", "--schedule", "warmup-cosine", "--warmup", "0.1",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "its own sweep" in err, err
