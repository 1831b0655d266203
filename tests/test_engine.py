"""The vectorized engine against independent references: a plain per-step loop and PyTorch."""

from __future__ import annotations

import concurrent.futures

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr.config import SweepConfig
from jaxlr.data import device_data, load_dataset
from jaxlr.engine import RunSpec, epoch_batches, seed_keys, train_lanes
from jaxlr.models import MLP
from jaxlr.runner import run_sweep


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", n_train=640, n_test=200)


def _spec(ds, hidden=(32, 32), optimizer="sgd", **kw) -> RunSpec:
    batch = 64
    return RunSpec(
        in_features=ds.in_features,
        hidden=hidden,
        num_classes=ds.num_classes,
        optimizer=optimizer,
        batch_size=batch,
        steps_per_epoch=ds.n_train // batch,
        n_train=ds.n_train,
        n_test=ds.n_test,
        data_mean=ds.mean,
        data_std=ds.std,
        **kw,
    )


def _ref_tx(optimizer: str, lr):
    return optax.sgd(lr) if optimizer == "sgd" else optax.adam(lr)


_STEPS: dict = {}


def _ref_step(model, optimizer):
    key = (model, optimizer)
    if key not in _STEPS:

        @jax.jit
        def step(params, opt_state, x, y, lr):
            def loss_fn(p):
                logits = model.apply({"params": p}, x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            loss, g = jax.value_and_grad(loss_fn)(params)
            u, opt_state = _ref_tx(optimizer, lr).update(g, opt_state, params)
            return optax.apply_updates(params, u), opt_state, loss

        _STEPS[key] = step
    return _STEPS[key]


def _reference_run(spec: RunSpec, ds, seed: int, lr: float, epochs: int):
    """One run, one step at a time, with plain optax: no vmap, no scan, no divergence logic."""
    model = MLP(spec.hidden, spec.num_classes, init_scheme=spec.init)
    init_key, _ = seed_keys(jnp.int32(seed))
    params = model.init(init_key, jnp.zeros((1, spec.in_features)))["params"]
    opt_state = _ref_tx(spec.optimizer, 0.0).init(params)
    x_all = (np.asarray(ds.x_train, np.float32) - ds.mean) / ds.std
    y_all = np.asarray(ds.y_train)

    step = _ref_step(model, spec.optimizer)

    losses = []
    for e in range(epochs):
        idx = np.asarray(
            epoch_batches(
                jnp.int32(seed), jnp.int32(e), spec.n_train, spec.batch_size, spec.steps_per_epoch
            )
        )
        ep = []
        for b in idx:
            params, opt_state, loss = step(params, opt_state, x_all[b], y_all[b], lr)
            ep.append(float(loss))
        losses.append(np.mean(ep))
    return params, np.array(losses)


@pytest.mark.parametrize(
    ("optimizer", "update"), [("sgd", "generic"), ("sgd", "folded"), ("adam", "generic")]
)
def test_vmapped_lane_equals_run_trained_alone(digits, optimizer, update):
    spec = _spec(digits, optimizer=optimizer, sgd_update=update)
    lrs = [0.3, 0.05, 0.01] if optimizer == "sgd" else [1e-2, 1e-3, 1e-4]
    seeds = [0, 1]
    data = device_data(digits)
    with jax.default_matmul_precision("highest"):
        state, m = train_lanes(spec, data, seeds, lrs, epochs=3)
        for si, s in enumerate(seeds):
            for li, lr in enumerate(lrs):
                ref_params, ref_losses = _reference_run(spec, digits, s, lr, 3)
                lane = jax.tree.map(lambda a, si=si, li=li: a[si, li], state.params)
                for a, b in zip(jax.tree.leaves(lane), jax.tree.leaves(ref_params), strict=True):
                    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
                np.testing.assert_allclose(m["train_loss"][:, si, li], ref_losses, rtol=1e-5)


def test_common_random_numbers(digits):
    """Lanes of one seed start from the same weights; different seeds differ."""
    spec = _spec(digits)
    from jaxlr.engine import cached_trainer

    st = cached_trainer(spec).init(jnp.array([3, 4]), jnp.array([0.1, 0.2, 0.3]))
    k = st.params["Dense_0"]["kernel"]
    np.testing.assert_array_equal(k[0, 0], k[0, 2])
    assert not np.allclose(k[0, 0], k[1, 0])


@pytest.mark.parametrize("update", ["generic", "folded"])
def test_nan_lane_leaves_other_lanes_identical(digits, update):
    """Replacing a lane by a diverging one leaves every other lane bit-identical."""
    spec = _spec(digits, sgd_update=update)
    data = device_data(digits)
    _, m1 = train_lanes(spec, data, [0], [0.1, 0.05, 0.01], epochs=3)
    st2, m2 = train_lanes(spec, data, [0], [0.1, 1e6, 0.01], epochs=3)
    for k in m1:
        np.testing.assert_array_equal(m1[k][:, :, 0], m2[k][:, :, 0])
        np.testing.assert_array_equal(m1[k][:, :, 2], m2[k][:, :, 2])
    div = np.asarray(st2.diverged_epoch)
    assert div[0, 1] == 0 and div[0, 0] == -1 and div[0, 2] == -1
    assert np.isnan(m2["train_loss"][:, 0, 1]).all()
    if update == "generic":  # the frozen lane keeps finite parameters (folded: see _make_step)
        assert all(np.isfinite(np.asarray(x)[0, 1]).all() for x in jax.tree.leaves(st2.params))
    # adding a lane changes the shared matmul's shape, hence float rounding only
    _, m3 = train_lanes(spec, data, [0], [0.1, 1e6, 0.05, 0.01], epochs=3)
    for k in m1:
        np.testing.assert_allclose(m1[k][:, :, [0, 1, 2]], m3[k][:, :, [0, 2, 3]], rtol=1e-6)


@pytest.mark.parametrize(("update", "lr"), [("generic", 0.1), ("folded", 0.1), ("folded", 0.125)])
def test_engine_matches_torch_sgd(digits, update, lr):
    """One lane against torch: same init weights (converted), same batches, float32 SGD."""
    torch = pytest.importorskip("torch")
    spec = _spec(digits, hidden=(32,), sgd_update=update)
    seed, epochs = 0, 2
    data = device_data(digits)
    with jax.default_matmul_precision("highest"):
        state, m = train_lanes(spec, data, [seed], [lr], epochs=epochs)
    model = MLP(spec.hidden, spec.num_classes)
    p0 = model.init(seed_keys(jnp.int32(seed))[0], jnp.zeros((1, spec.in_features)))["params"]
    net = torch.nn.Sequential(
        torch.nn.Linear(spec.in_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    with torch.no_grad():
        for i, layer in enumerate([net[0], net[2]]):
            layer.weight.copy_(torch.from_numpy(np.asarray(p0[f"Dense_{i}"]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.array(p0[f"Dense_{i}"]["bias"])))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    x = torch.from_numpy((np.asarray(digits.x_train, np.float32) - digits.mean) / digits.std)
    y = torch.from_numpy(np.asarray(digits.y_train)).long()
    losses = []
    for e in range(epochs):
        idx = np.asarray(
            epoch_batches(jnp.int32(seed), jnp.int32(e), spec.n_train, 64, spec.steps_per_epoch)
        )
        ep = []
        for b in idx:
            b = torch.from_numpy(b.astype(np.int64))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
            loss.backward()
            opt.step()
            ep.append(loss.item())
        losses.append(np.mean(ep))
    np.testing.assert_allclose(m["train_loss"][:, 0, 0], losses, rtol=1e-5, atol=1e-6)
    k = np.asarray(state.params["Dense_1"]["kernel"][0, 0])
    np.testing.assert_allclose(k, net[2].weight.detach().numpy().T, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # three sweeps
def test_sweep_is_deterministic_and_chunking_invariant(digits, tmp_path):
    cfg = SweepConfig(widths=(8, 16), lrs=(0.5, 0.05), seeds=(0, 1), epochs=2)
    a = run_sweep(cfg.replace(out=str(tmp_path / "a")), dataset=digits, progress=False)
    b = run_sweep(cfg.replace(out=str(tmp_path / "b")), dataset=digits, progress=False)
    c = run_sweep(cfg.replace(max_lanes=1), dataset=digits, progress=False)
    assert (tmp_path / "a" / "results.csv").read_bytes() == (
        tmp_path / "b" / "results.csv"
    ).read_bytes()
    assert len(a) == 2 * 2 * 2 * 2
    cols = ["train_loss", "test_loss", "test_accuracy"]
    np.testing.assert_allclose(a[cols].to_numpy(), c[cols].to_numpy(), rtol=1e-5)
    assert (
        a[["width", "lr", "seed", "epoch"]].to_numpy()
        == b[["width", "lr", "seed", "epoch"]].to_numpy()
    ).all()
    for f in ("summary.csv", "config.json", "loss_curves.png", "lr_sensitivity.png"):
        assert (tmp_path / "a" / f).stat().st_size > 0


def test_large_lr_is_flagged_diverged_not_a_crash(digits):
    cfg = SweepConfig(widths=(256,), lrs=(1e-2, 50.0), seeds=(0,), epochs=2)
    df = run_sweep(cfg, dataset=digits, progress=False)
    last = df[df.epoch == 2].set_index("lr")
    assert bool(last.loc[50.0, "diverged"]) and not bool(last.loc[1e-2, "diverged"])
    assert np.isfinite(last.loc[1e-2, "test_loss"])
    from jaxlr.results import summarize

    s = summarize(df)
    assert s.loc[0, "min_diverged_lr"] == 50.0 and s.loc[0, "best_lr"] == 1e-2


@pytest.mark.slow  # seven sweeps, five programs to compile, per optimizer
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_rules_in_the_sweep(digits, optimizer):
    """per-layer with unit multipliers reproduces the plain optimizer; every rule is recorded."""
    base = SweepConfig(
        widths=(16,), lrs=(0.05, 0.005), seeds=(0,), epochs=2, optimizers=(optimizer,)
    )
    plain = run_sweep(base, dataset=digits, progress=False)
    ones = run_sweep(
        base.replace(lr_rule="per-layer", layer_lr_mults=(1.0, 1.0, 1.0)),
        dataset=digits,
        progress=False,
    )
    cols = ["train_loss", "test_loss", "test_accuracy"]
    np.testing.assert_allclose(plain[cols].to_numpy(), ones[cols].to_numpy(), rtol=1e-5)
    assert set(ones.lr_rule) == {"per-layer"}
    half = run_sweep(
        base.replace(lr_rule="per-layer", layer_lr_mults=(0.5, 0.5, 0.5)),
        dataset=digits,
        progress=False,
    )
    halved = run_sweep(base.replace(lrs=(0.025, 0.0025)), dataset=digits, progress=False)
    np.testing.assert_allclose(half[cols].to_numpy(), halved[cols].to_numpy(), rtol=1e-5)
    for rule in ("weight-norm", "adagrad-param", "adagrad-neuron"):
        # AdaGrad rates through Adam's ~sign(g) direction need far smaller base rates
        lrs = (1e-4, 1e-5) if optimizer == "adam" and rule != "weight-norm" else base.lrs
        df = run_sweep(base.replace(lr_rule=rule, lrs=lrs), dataset=digits, progress=False)
        assert set(df.lr_rule) == {rule} and len(df) == 4
        assert np.isfinite(df.train_loss).any()


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adam", marks=pytest.mark.slow)])
def test_mup_sweep_equals_sp_at_base_width_and_differs_elsewhere(digits, optimizer):
    base = SweepConfig(
        widths=(32,), lrs=(0.05, 0.005), seeds=(0,), epochs=2, optimizers=(optimizer,)
    )
    sp = run_sweep(base, dataset=digits, progress=False)
    mup = run_sweep(
        base.replace(parametrizations=("mup",), base_width=32), dataset=digits, progress=False
    )
    cols = ["train_loss", "test_loss", "test_accuracy"]
    np.testing.assert_array_equal(sp[cols].to_numpy(), mup[cols].to_numpy())
    assert set(mup.parametrization) == {"mup"}
    wide = run_sweep(
        base.replace(parametrizations=("mup",), base_width=8), dataset=digits, progress=False
    )
    assert not np.allclose(sp[cols].to_numpy(), wide[cols].to_numpy())
    # both in one sweep (the parametrization axis): the same numbers as the separate sweeps
    both = run_sweep(
        base.replace(parametrizations=("sp", "mup"), base_width=8), dataset=digits, progress=False
    )
    for par, alone in (("sp", sp), ("mup", wide)):
        got = both[both.parametrization == par].reset_index(drop=True)
        np.testing.assert_array_equal(got[cols].to_numpy(), alone[cols].to_numpy())


def test_lr_exponents_scale_each_layer(digits):
    """lr-exp trains layer l at lr (w / base)^(-e_l): zero exponents are SP, bit for bit, and a
    common exponent e is SP at the rescaled rate lr (w / base)^(-e) (SGD: the same step)."""
    base = SweepConfig(widths=(32,), lrs=(0.05, 0.2), seeds=(0,), epochs=2)
    cols = ["train_loss", "test_loss", "test_accuracy"]
    sp = run_sweep(base, dataset=digits, progress=False)
    zero = run_sweep(
        base.replace(parametrizations=("lr-exp",), base_width=8, lr_exponents=(0.0, 0.0, 0.0)),
        dataset=digits,
        progress=False,
    )
    np.testing.assert_array_equal(sp[cols].to_numpy(), zero[cols].to_numpy())
    assert set(zero.parametrization) == {"lr-exp"}
    one = run_sweep(
        base.replace(parametrizations=("lr-exp",), base_width=8, lr_exponents=(1.0, 1.0, 1.0)),
        dataset=digits,
        progress=False,
    )
    scaled = run_sweep(base.replace(lrs=(0.05 / 4, 0.2 / 4)), dataset=digits, progress=False)
    np.testing.assert_allclose(one[cols].to_numpy(), scaled[cols].to_numpy(), rtol=1e-4)
    # different exponents per layer are not a global rescaling
    mixed = run_sweep(
        base.replace(parametrizations=("lr-exp",), base_width=8, lr_exponents=(0.0, 1.0, 1.0)),
        dataset=digits,
        progress=False,
    )
    assert not np.allclose(mixed[cols].to_numpy(), scaled[cols].to_numpy(), rtol=1e-3)


def test_ahead_of_time_program_equals_jit(digits):
    """The sweep trains with programs compiled ahead of time in threads: the same bits as jit."""
    from jaxlr.engine import cached_trainer, compile_epoch

    spec = _spec(digits, (16, 16), "adam")
    data = device_data(digits)
    seeds, lrs = jnp.asarray([0, 1], jnp.int32), jnp.asarray([0.01, 0.1, 3.0], jnp.float32)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        aot = pool.submit(compile_epoch, spec, 2, 3, data).result()
    trainer = cached_trainer(spec)
    outs = []
    for step in (trainer.epoch, aot):
        state = trainer.init(seeds, lrs)
        for e in range(2):
            state, m = step(state, seeds, lrs, jnp.int32(e), data)
        outs.append(jax.tree.map(np.asarray, (state.params, m)))
    jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])


@pytest.mark.parametrize("parametrization", ["sp", "lr-exp"])
def test_rate_quantiles_match_numpy_from_the_final_params(digits, parametrization):
    """weight-norm with SGD: the recorded quantiles of each layer's per-neuron rates equal
    numpy's, computed from the returned params: lr (1 + s ||W[:, j]||) times the lr-exp
    multiplier."""
    kw = dict(base_width=8, lr_exponents=(0.0, 1.0, 0.5)) if parametrization == "lr-exp" else {}
    spec = _spec(
        digits, lr_rule="weight-norm", weight_norm_factor=0.5, parametrization=parametrization, **kw
    )
    lrs = np.array([0.02, 0.1], np.float32)
    state, metrics = train_lanes(spec, device_data(digits), [0, 1], lrs, 2)
    assert metrics["rates"].shape == (2, 2, 2, 3, 5)  # epochs, seeds, lrs, layers, quantiles
    for s in range(2):
        for j, lr in enumerate(lrs):
            for i in range(3):
                w = np.asarray(state.params[f"Dense_{i}"]["kernel"][s, j], np.float64)
                mult = (32 / 8) ** -kw["lr_exponents"][i] if kw else 1.0
                rate = lr * (1 + 0.5 * np.sqrt((w**2).sum(0))) * mult
                want = np.quantile(rate, [0, 0.05, 0.5, 0.95, 1])  # over the neurons
                np.testing.assert_allclose(metrics["rates"][-1, s, j, i], want, rtol=2e-5)
    plain = train_lanes(_spec(digits), device_data(digits), [0], lrs, 1)[1]
    assert plain["rates"].shape == (1, 1, 2, 0, 5)  # one rate per layer: nothing recorded


@pytest.mark.slow  # three architectures fused, then each alone: 4 programs
def test_buckets_in_one_program_equal_their_own_programs(digits):
    """train_group (several architectures, lane shapes and optimizers per scan step) gives each
    member the bits of train_lanes alone on the CPU: final state, metrics and rates."""
    from jaxlr.engine import train_group

    data = device_data(digits)
    specs = (
        _spec(digits, (16, 16), "sgd", lr_rule="adagrad-neuron"),
        _spec(digits, (64, 64), "adam", lr_rule="adagrad-neuron"),
        _spec(digits, (48,), "adam", lr_rule="adagrad-neuron"),
    )
    seeds, lrs = ([0, 1], [0, 1, 2], [3]), ([0.1, 0.01], [0.05, 1e3, 0.002], [0.01])
    states, metrics = train_group(specs, data, seeds, lrs, 2)
    for spec, s, lr, state, m in zip(specs, seeds, lrs, states, metrics, strict=True):
        alone_state, alone = train_lanes(spec, data, s, lr, 2)
        assert set(m) == set(alone)
        for k in alone:
            np.testing.assert_array_equal(m[k], alone[k], err_msg=k)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(alone_state), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.isnan(metrics[1]["train_loss"][-1, :, 1]).all()  # lr 1e3 diverged, alone too


@pytest.mark.slow  # two sweeps of 4 programs each
def test_folded_sgd_in_a_mixed_sweep(digits, tmp_path):
    """``--sgd-update folded`` changes only the plain-SGD programs: the Adam runs of the same
    sweep keep their bytes, the SGD runs agree with the generic step to float32 rounding, and
    the choice is recorded (it changes results, so it is part of the config hash)."""
    import json

    cfg = SweepConfig(
        widths=(16, 32), lrs=(0.1, 0.01), seeds=(0,), epochs=2, optimizers=("sgd", "adam")
    )
    a = run_sweep(cfg.replace(out=str(tmp_path / "a")), dataset=digits, progress=False)
    folded = cfg.replace(sgd_update="folded", out=str(tmp_path / "b"))
    b = run_sweep(folded, dataset=digits, progress=False)
    cols = ["train_loss", "test_loss", "test_accuracy"]
    adam = a.optimizer == "adam"
    np.testing.assert_array_equal(a[adam][cols].to_numpy(), b[adam][cols].to_numpy())
    np.testing.assert_allclose(a[~adam][cols].to_numpy(), b[~adam][cols].to_numpy(), rtol=1e-5)
    record = json.loads((tmp_path / "b" / "config.json").read_text())
    assert record["config"]["sgd_update"] == "folded"
    assert folded.grid_hash() != cfg.grid_hash()


def test_cached_trainer_is_single_flight(digits, monkeypatch):
    """Threads asking for one spec at once (a background compilation and a program starting to
    train) get one trainer: a second trainer would compile the same programs again."""
    import threading
    import time

    from jaxlr import engine

    spec = _spec(digits, hidden=(24, 24))
    built, make = [], engine.make_trainer

    def slow_make(s):
        built.append(s)
        time.sleep(0.2)  # both threads are inside cached_trainer by now
        return make(s)

    monkeypatch.setattr(engine, "make_trainer", slow_make)
    barrier, got = threading.Barrier(2), []

    def ask():
        barrier.wait()
        got.append(engine.cached_trainer(spec))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and got[0] is got[1]
