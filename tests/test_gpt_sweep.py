"""``--model gpt`` in the sweep: one lane against a plain Optax loop, the record, bad input."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import text
from jaxlr.cli import main
from jaxlr.config import SweepConfig
from jaxlr.data import device_data, load_text_dataset
from jaxlr.engine import Hypers, RunSpec, seed_keys, train_lanes, window_starts
from jaxlr.gpt import init_gpt, next_token_loss

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_text(SAMPLE)
    return path


def _cfg(corpus_file, **kw) -> SweepConfig:
    base = dict(
        family="gpt", widths=(32,), depth=2, context=16, head_dim=16, batch_size=4, steps=6,
        eval_every=3, eval_sequences=8, data_dir=str(corpus_file), optimizers=("adamw",),
        clip_norm=0.5, weight_decays=(0.0, 0.1),
    )  # fmt: skip
    return SweepConfig(**{**base, **kw})


def _reference_tx(clip_norm: float, lr, wd) -> optax.GradientTransformation:
    """Plain ``optax.adamw`` after global-norm clipping."""
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd),
    )


@functools.cache
def _reference_step(spec: RunSpec):
    """One optax step of ``spec``'s GPT, the rate and decay as arguments: compiled once for
    every lane of the test (the optimizer's state does not depend on them)."""
    model = spec.gpt()

    @jax.jit
    def step(p, s, x, y, lr, wd):
        loss, g = jax.value_and_grad(lambda q: next_token_loss(model.apply({"params": q}, x), y))(p)
        u, s = _reference_tx(spec.clip_norm, lr, wd).update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    return step


def _reference(spec: RunSpec, ds, seed: int, lr: float, wd: float):
    """One lane alone: the same windows, plain ``optax.adamw`` after global-norm clipping."""
    model = spec.gpt()
    params = init_gpt(model, seed_keys(jnp.int32(seed))[0])
    state = _reference_tx(spec.clip_norm, lr, wd).init(params)
    train = jnp.asarray(ds.train)
    rate, decay = jnp.float32(lr), jnp.float32(wd)

    def step(p, s, x, y):
        return _reference_step(spec)(p, s, x, y, rate, decay)

    losses = []
    for e in range(spec.total_steps // spec.steps_per_epoch if spec.total_steps else 2):
        starts = window_starts(
            jnp.int32(seed), jnp.int32(e), ds.n_windows, spec.batch_size, spec.steps_per_epoch
        )
        ep = []
        for b in np.asarray(starts):
            x, y = text.window_batch(train, jnp.asarray(b), spec.context)
            params, state, loss = step(params, state, x, y)
            ep.append(float(loss))
        losses.append(np.mean(ep))
    x, y = text.window_batch(np.asarray(ds.val), ds.eval_starts, spec.context)
    val = float(next_token_loss(model.apply({"params": params}, jnp.asarray(x)), jnp.asarray(y)))
    return params, np.array(losses), val


@pytest.mark.slow  # 4 GPT lanes against 4 optax runs
def test_a_gpt_lane_equals_a_plain_optax_run(corpus_file):
    cfg = _cfg(corpus_file)
    ds = load_text_dataset(cfg)
    spec = RunSpec.create(cfg, ds, (32, 32), "adamw")
    assert spec.decays and spec.steps_per_epoch == 3
    lanes = [(3e-3, 0.1), (1e-2, 0.0)]
    hypers = Hypers(jnp.asarray([lr for lr, _ in lanes]), jnp.asarray([wd for _, wd in lanes]))
    with jax.default_matmul_precision("highest"):
        state, m = train_lanes(spec, device_data(ds), [0, 1], hypers, epochs=2)
        for si, s in enumerate([0, 1]):
            for li, (lr, wd) in enumerate(lanes):
                params, losses, val = _reference(spec, ds, s, lr, wd)
                np.testing.assert_allclose(m["train_loss"][:, si, li], losses, rtol=2e-5)
                np.testing.assert_allclose(m["test_loss"][-1, si, li], val, rtol=2e-5)
                lane = jax.tree.map(lambda a, si=si, li=li: a[si, li], state.params)
                for a, b in zip(jax.tree.leaves(lane), jax.tree.leaves(params), strict=True):
                    # Adam amplifies float32 rounding where a gradient is ~0: leaves of ~1e-6
                    np.testing.assert_allclose(a, b, rtol=2e-4, atol=3e-5)


@pytest.mark.slow  # a whole GPT sweep through the CLI
def test_the_sweep_records_the_corpus_and_answers(corpus_file, tmp_path, capsys):
    out = tmp_path / "gpt"
    code = main(
        ["--model", "gpt", "--widths", "16,32,48", "--head-dim", "16", "--context", "16",
         "--steps", "4", "--eval-every", "2", "--eval-sequences", "4", "--batch-size", "4",
         "--lrs", "1e-3,1e-2", "--seeds", "2", "--data-dir", str(corpus_file),
         "--no-progress", "--out", str(out)]
    )  # fmt: skip
    report = capsys.readouterr().out
    assert code == 0
    corpus = json.loads((out / "config.json").read_text())["dataset"]["corpus"]
    assert corpus["n_bytes"] == len(SAMPLE.encode())
    import hashlib

    assert corpus["sha256"] == hashlib.sha256(SAMPLE.encode()).hexdigest()
    assert "gpt on text, 4 steps of 4 x 16 bytes" in report and "lr* ∝ width^α" in report


BAD = {
    "width not divisible by the head size": (["--widths", "24"], "not divisible"),
    "--hidden": (["--hidden", "32-32"], "--hidden does not apply to --model gpt"),
    "--epochs": (["--epochs", "3"], "--epochs"),
    "--dataset": (["--dataset", "mnist"], "--dataset"),
    "--lr-rule": (["--lr-rule", "weight-norm"], "--lr-rule"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_flags_are_one_line_and_exit_2(name, capsys, tmp_path):
    flags, needle = BAD[name]
    code = main(["--model", "gpt", *flags, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"\x00\x01\x02binary" * 50, "nul bytes"), (b"short text\n", "context")],
)
def test_bad_text_is_one_line_and_exit_2(content, needle, capsys, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    code = main(["--model", "gpt", "--data-dir", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert needle in err.lower(), err
