"""The GPT family's pieces against independent references.

Text (:mod:`jaxlr.text`): the default corpus is the standard library's text, re-read here by a
separate walk and hashed with ``hashlib``; the split, windows and batches against numpy slicing;
bad input (empty, binary, not UTF-8, missing, context too long) is a one-line ``DataError``.

Model (:mod:`jaxlr.gpt`) against its PyTorch twin (``tests/torch_gpt.py``: ``nn.LayerNorm``,
``nn.GELU``, ``F.scaled_dot_product_attention``, ``mup.MuReadout``/``MuSharedReadout``,
``mup.set_base_shapes``, ``mup.init.normal_``) in float64: logits to 1e-10 (SP and muP, tied and
untied, with residual scaling); 20 steps of ``torch.optim.AdamW`` vs ``optax.adamw``, and of
``mup.MuAdamW`` vs Optax Adam with :func:`jaxlr.gpt.gpt_mup_lr_scales`, losses to 1e-10; the
muP multipliers against ``mup.MuAdam``/``mup.MuSGD``'s param groups; the init scales against
their closed forms; causality; shape errors.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pathlib
import subprocess
import sys
import sysconfig

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import text
from jaxlr.data import DataError
from jaxlr.gpt import (
    GPT,
    check_gpt,
    gpt_mup_lr_scales,
    gpt_shapes,
    init_gpt,
    next_token_loss,
    param_count,
    param_groups,
)

T, BATCH, STEPS = 16, 4, 20
SHAKESPEARE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\n"
    "Resolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to "
    "the people.\n"
)


@pytest.fixture(scope="module")
def twin():
    """The PyTorch twin module (skips without torch and mup), on one torch thread: these
    models are tiny, and two threads on a shared 2-core machine run 10x slower."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("mup")
    import torch_gpt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch_gpt
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus() -> text.TextCorpus:
    return text.load_text(None)


def _compiled(f, *args):
    """``f`` jitted and compiled for ``args`` at XLA backend optimization level 0 (as
    jaxlr.compilation does: compile time dominates these tiny programs)."""
    return jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def test_text_module_imports_no_jax():
    code = "import sys, jaxlr.text; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_default_corpus_is_the_standard_librarys_text(corpus):
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    expected = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith(".")]
        for f in filenames:
            p = pathlib.Path(dirpath, f)
            if p.suffix in (".py", ".txt", ".rst") and not f.startswith(".") and p.is_file():
                expected.append((p.relative_to(root).as_posix(), p))
    expected.sort()
    data = b""
    for _, p in expected:
        data += p.read_bytes()
        if len(data) >= text.DEFAULT_MAX_BYTES:
            break
    data = data[: text.DEFAULT_MAX_BYTES]
    assert len(data) == text.DEFAULT_MAX_BYTES == 8 * 2**20  # the stdlib has more than 8 MiB
    assert corpus.n_bytes == len(data) and corpus.tokens.dtype == np.uint8
    assert corpus.sha256 == hashlib.sha256(data).hexdigest()
    assert corpus.tokens.tobytes() == data
    assert str(root) in corpus.origin and "standard library" in corpus.origin
    again = text.load_text(None)
    assert (again.sha256, again.n_bytes, again.files) == (corpus.sha256, 8 * 2**20, corpus.files)
    assert corpus.record() == {
        "origin": corpus.origin,
        "n_bytes": 8 * 2**20,
        "sha256": corpus.sha256,
        "n_files": len(corpus.files),
    }


def test_split_is_contiguous():
    tokens = (np.arange(1003) % 256).astype(np.uint8)
    train, val = text.split(tokens, 0.1)
    assert len(val) == 100 and len(train) == 903
    np.testing.assert_array_equal(np.concatenate([train, val]), tokens)
    np.testing.assert_array_equal(val, tokens[903:])
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(DataError) as e:
            text.split(tokens, bad)
        assert "val_fraction" in _one_line(e)


def test_windows_and_batches_are_slices():
    tokens = np.random.default_rng(0).integers(0, 256, 50).astype(np.uint8)
    assert text.windows(50, 8) == 42 and text.windows(8, 8) == 0
    starts = np.array([0, 41, 7])
    x, y = text.window_batch(tokens, starts, 8)
    for b, s in enumerate(starts):
        np.testing.assert_array_equal(x[b], tokens[s : s + 8])
        np.testing.assert_array_equal(y[b], tokens[s + 1 : s + 9])
    assert x.dtype == np.int32 and x.shape == (3, 8)
    xj, yj = jax.jit(lambda t, s: text.window_batch(t, s, 8))(jnp.asarray(tokens), starts)
    np.testing.assert_array_equal(np.asarray(xj), x)
    np.testing.assert_array_equal(np.asarray(yj), y)
    np.testing.assert_array_equal(text.eval_starts(50, 8), [0, 8, 16, 24, 32, 40])
    assert text.bits_per_byte(math.log(256.0)) == pytest.approx(8.0, abs=1e-12)


def test_tiny_shakespeare_input_txt_loads_as_is(tmp_path):
    (tmp_path / "input.txt").write_text(SHAKESPEARE)
    raw = SHAKESPEARE.encode()
    for where in (tmp_path / "input.txt", tmp_path):
        c = text.load_text(str(where))
        assert c.tokens.tobytes() == raw and c.n_bytes == len(raw)
        assert c.sha256 == hashlib.sha256(raw).hexdigest()
        assert c.files == (str(tmp_path / "input.txt"),)
    text.check_context(c, 16)


def test_directory_concatenates_text_files_sorted_and_skips_binary(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.md").write_text("first\n")
    (tmp_path / "c.bin").write_bytes(bytes(range(256)))
    (tmp_path / ".hidden.txt").write_text("hidden\n")
    c = text.load_text(str(tmp_path))
    assert c.tokens.tobytes() == b"first\nsecond\n"
    assert [pathlib.Path(f).name for f in c.files] == ["z.md", "b.txt"]


def _bad_input(tmp_path: pathlib.Path, kind: str) -> str:
    """A path of bad text input of ``kind``."""
    p = tmp_path / "input.txt"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "binary":
        p.write_bytes(np.arange(1000, dtype=np.int64).tobytes())  # has NUL bytes
    elif kind == "not utf-8":
        p.write_bytes(bytes(range(128, 256)) * 8)
    elif kind == "no text in folder":
        (tmp_path / "data.npy").write_bytes(b"\x93NUMPY\x00\x01")
        (tmp_path / "empty.txt").write_bytes(b"")
        return str(tmp_path)
    elif kind == "missing":
        return str(tmp_path / "nowhere.txt")
    return str(p)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("empty", "is empty"),
        ("binary", "NUL bytes"),
        ("not utf-8", "not valid UTF-8"),
        ("no text in folder", "no text file"),
        ("missing", "does not exist"),
    ],
)
def test_bad_text_input_is_a_one_line_data_error(tmp_path, kind, needle):
    with pytest.raises(DataError) as e:
        text.load_text(_bad_input(tmp_path, kind))
    msg = _one_line(e)
    assert needle in msg and ("--data-dir" in msg or "pass a" in msg), msg


def test_fortunes_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(text, "FORTUNES_DIR", tmp_path / "fortunes")
    with pytest.raises(DataError) as e:
        text.load_text(None, corpus="fortunes")
    assert "apt-get install fortunes" in _one_line(e)
    (tmp_path / "fortunes").mkdir()
    (tmp_path / "fortunes" / "art").write_text("A fortune.\n%\nAnother.\n")
    (tmp_path / "fortunes" / "art.dat").write_bytes(b"\x00\x00\x00\x02")
    (tmp_path / "fortunes" / "art.u8").write_text("A fortune.\n%\nAnother.\n")  # a duplicate
    c = text.load_text(None, corpus="fortunes")
    assert c.tokens.tobytes() == b"A fortune.\n%\nAnother.\n" and "fortunes" in c.origin


def test_context_longer_than_a_part_is_a_data_error():
    tokens = np.full(100, ord("a"), np.uint8)  # 90 train / 10 validation bytes
    text.check_context(tokens, 9)
    with pytest.raises(DataError) as e:
        text.check_context(tokens, 10)
    assert "too long for the validation part" in _one_line(e) and "--context" in str(e.value)
    with pytest.raises(DataError) as e:
        text.check_context(tokens, 10, val_fraction=0.9)  # 10 train / 90 validation
    assert "too long for the training part" in _one_line(e)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

CASES = {
    "sp tied": dict(width=32),
    "sp untied, CompleteP residuals": dict(width=32, tied=False, depth_exponent=1.0),
    "mup tied, depth-muP residuals": dict(
        width=64, parametrization="mup", base_width=32, depth_exponent=0.5, output_mult=2.0
    ),
    "mup untied, zero query": dict(
        width=64, parametrization="mup", base_width=32, tied=False, zero_query=True, attn_mult=2.0
    ),
}


def _model(**kw) -> GPT:
    return GPT(**{"depth": 2, "context": T, "head_dim": 16, "dtype": jnp.float64, **kw})


def _tokens(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.int64)


def _max_diff(a, b) -> float:
    diffs = jax.tree.map(lambda u, v: float(np.max(np.abs(np.asarray(u) - np.asarray(v)))), a, b)
    return max(jax.tree.leaves(diffs))


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_equals_torch_twin(twin, name):
    import torch

    with jax.enable_x64(True):
        model = _model(**CASES[name])
        tm = twin.TorchGPT(twin.twin_config(model), seed=3).double()
        params = twin.to_flax(tm)
        assert _max_diff(twin.to_flax(twin.load_flax(tm, params)), params) == 0.0
        x = _tokens((3, T))
        args = ({"params": params}, jnp.asarray(x, jnp.int32))
        got = np.asarray(_compiled(model.apply, *args)(*args))
    want = tm(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (3, T, 256)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert np.abs(want).max() > 0.05  # not a trivially small output


def test_init_scales_match_closed_forms_and_convert_to_torch(twin):
    """muP at 4x the base width: hidden matrices N(0, 0.02^2/4), embeddings and readout
    N(0, 0.02^2), zero query, zero biases, unit LayerNorm scales, in Flax and in the twin; the
    Flax init loaded into the twin gives the same logits."""
    import torch

    cfg = dict(
        width=128, parametrization="mup", base_width=32, tied=False, head_dim=32, zero_query=True
    )
    with jax.enable_x64(True):
        model = _model(**cfg)
        key = jax.random.key(1)
        params = _compiled(functools.partial(init_gpt, model), key)(key)
        x = _tokens((2, T))
        args = ({"params": params}, jnp.asarray(x, jnp.int32))
        logits = np.asarray(_compiled(model.apply, *args)(*args))
    tm = twin.TorchGPT(twin.twin_config(model), seed=1).double()

    def expected(path: str) -> tuple[float, float]:
        """(mean, std) of a parameter's init."""
        if path.endswith("bias") or "query" in path:
            return 0.0, 0.0
        if path.endswith("scale"):
            return 1.0, 0.0
        if path.startswith(("wte", "wpe", "lm_head")):
            return 0.0, 0.02
        return 0.0, 0.02 / 2.0  # hidden matrix, width_mult 4

    for tree in (params, twin.to_flax(tm)):
        leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
        assert len(leaves) == 2 + 2 * 16 + 2 + 1
        for path, leaf in leaves:
            key = "/".join(k.key for k in path)
            mean, std = expected(key)
            a = np.asarray(leaf)
            assert abs(a.mean() - mean) < 5 * std / math.sqrt(a.size) + 1e-12, key
            assert abs(a.std() - std) < 0.05 * std + 1e-12, (key, a.std(), std)
    twin.load_flax(tm, params)
    np.testing.assert_allclose(logits, tm(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-10)


def _batches(corpus: text.TextCorpus) -> tuple[np.ndarray, np.ndarray]:
    """STEPS x BATCH training windows of the default corpus."""
    train, _ = text.split(corpus.tokens)
    starts = np.random.default_rng(0).integers(0, text.windows(len(train), T), (STEPS, BATCH))
    return text.window_batch(train, starts, T)


def _train_jax(model: GPT, params, tx, xs, ys):
    """Per-step losses (before each update) and final params, in one ``lax.scan``."""

    def step(carry, batch):
        p, s = carry
        loss, g = jax.value_and_grad(
            lambda q: next_token_loss(model.apply({"params": q}, batch[0]), batch[1])
        )(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    run = _compiled(lambda p: jax.lax.scan(step, (p, tx.init(p)), (xs, ys)), params)
    (params, _), losses = run(params)
    return np.asarray(losses), params


def _train_torch(tm, opt, xs, ys) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    losses = []
    for x, y in zip(xs, ys, strict=True):
        opt.zero_grad()
        logits = tm(torch.from_numpy(np.asarray(x, np.int64)))
        targets = torch.from_numpy(np.asarray(y, np.int64)).reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, 256), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.asarray(losses)


def test_adamw_steps_equal_torch(twin, corpus):
    """SP, tied: 20 steps of torch.optim.AdamW vs optax.adamw (PyTorch's defaults)."""
    import torch

    lr = 1e-2
    xs, ys = _batches(corpus)
    with jax.enable_x64(True):
        model = _model(width=32)
        tm = twin.TorchGPT(twin.twin_config(model), seed=4).double()
        tx = optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
        got, params = _train_jax(model, twin.to_flax(tm), tx, jnp.asarray(xs), jnp.asarray(ys))
    want = _train_torch(tm, torch.optim.AdamW(tm.parameters(), lr=lr), xs, ys)
    assert abs(got[0] - want[0]) < 1e-12  # the initial loss
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert want[-1] < want[0] - 0.5  # it trained
    assert _max_diff(params, twin.to_flax(tm)) < 1e-9


def _sweep_update(model: GPT, lr: float, weight_decay: float) -> optax.GradientTransformation:
    """The sweep's own update of a muP AdamW gpt program shaped like ``model``
    (``jaxlr.optimizers.make_optimizer`` of its ``RunSpec``)."""
    import types

    from jaxlr.config import SweepConfig
    from jaxlr.engine import RunSpec
    from jaxlr.optimizers import make_optimizer

    cfg = SweepConfig(
        family="gpt", widths=(model.width,), depth=model.depth, context=model.context,
        head_dim=model.head_dim, tied=model.tied, depth_exponent=model.depth_exponent,
        optimizers=("adamw",), parametrizations=("mup",), base_width=model.base_width,
        weight_decays=(weight_decay,), steps=20, eval_every=20,
    )  # fmt: skip
    data = types.SimpleNamespace(
        in_features=model.context, num_classes=256, n_train=20, n_test=1, mean=0.0, std=1.0
    )
    spec = RunSpec.create(cfg, data, (model.width,) * model.depth, "adamw", "mup")
    return make_optimizer(spec, lr, weight_decay)


def test_mup_adamw_steps_equal_microsoft_mup(twin, corpus):
    """muP at 2x the base width, untied with zero readout, from the Flax init: mup.MuAdamW on
    the twin vs the sweep's own update (make_optimizer of a gpt muP AdamW program); the initial
    loss is ln 256 (uniform logits)."""
    import mup

    lr, wd = 1e-2, 0.01
    xs, ys = _batches(corpus)
    cfg = dict(width=64, parametrization="mup", base_width=32, tied=False, zero_readout=True)
    with jax.enable_x64(True):
        model = _model(**cfg, depth_exponent=0.5)
        scales = gpt_mup_lr_scales(model, "adam")
        assert scales["block_1"]["mlp"]["proj"]["kernel"] == 0.5
        key = jax.random.key(5)
        params = _compiled(functools.partial(init_gpt, model), key)(key)
        assert not np.any(np.asarray(params["lm_head"]["kernel"]))
        tm = twin.load_flax(twin.TorchGPT(twin.twin_config(model)).double(), params)
        got, params = _train_jax(
            model, params, _sweep_update(model, lr, wd), jnp.asarray(xs), jnp.asarray(ys)
        )
    want = _train_torch(tm, mup.MuAdamW(tm.parameters(), lr=lr, weight_decay=wd), xs, ys)
    assert abs(got[0] - math.log(256)) < 1e-12 and abs(want[0] - math.log(256)) < 1e-12
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert want[-1] < want[0] - 0.5
    assert _max_diff(params, twin.to_flax(tm)) < 1e-9


@pytest.mark.parametrize("tied", [True, False])
def test_mup_lr_scales_match_mup_param_groups(twin, tied):
    import mup

    model = _model(width=128, parametrization="mup", base_width=32, tied=tied)
    tm = twin.TorchGPT(twin.twin_config(model))
    names = {id(p): n for n, p in tm.named_parameters()}
    for optimizer, make in (("adam", mup.MuAdam), ("sgd", mup.MuSGD)):
        groups = make(tm.parameters(), lr=1.0).param_groups
        want = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
        flat, _ = jax.tree_util.tree_flatten_with_path(gpt_mup_lr_scales(model, optimizer))
        got = {"/".join(k.key for k in path): s for path, s in flat}
        to_torch = {"/".join(twin._flax_path(n)[0]): n for n in want}
        assert sorted(to_torch) == sorted(got)
        for key, s in got.items():
            assert s == pytest.approx(want[to_torch[key]], rel=1e-12), (optimizer, key)
        values = set(got.values())
        assert values == ({0.25, 1.0} if optimizer == "adam" else {1.0, 4.0}), values


def test_shapes_count_and_groups(twin):
    for tied in (True, False):
        model = GPT(64, 3, T, head_dim=16, tied=tied)
        shapes = gpt_shapes(64, 3, T, tied=tied)
        traced = jax.eval_shape(functools.partial(init_gpt, model), jax.random.key(0))
        assert jax.tree.map(lambda s: tuple(s.shape), traced) == shapes
        tm = twin.TorchGPT(twin.twin_config(model))
        assert param_count(64, 3, T, tied=tied) == sum(p.numel() for p in tm.parameters())
        groups = param_groups(shapes)
        flat = [p for paths in groups.values() for p in paths]
        n_leaves = len(jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)))
        assert len(flat) == len(set(flat)) == n_leaves
        assert list(groups) == [
            "embeddings",
            *(f"block_{i}/{part}" for i in range(3) for part in ("attn", "mlp")),
            "readout",
        ]
        assert "block_2/ln_2/scale" in groups["block_2/mlp"]
        assert "block_0/attn/query/kernel" in groups["block_0/attn"]
        assert "block_1/ln_1/scale" in groups["block_1/attn"]
        assert ("lm_head/kernel" in groups["readout"]) is not tied


def test_logits_at_t_do_not_depend_on_later_tokens(twin):
    with jax.enable_x64(True):
        model = _model(width=32, tied=False)
        params = twin.to_flax(twin.TorchGPT(twin.twin_config(model), seed=6))
        x = _tokens((2, T), seed=1)
        f = _compiled(lambda x: model.apply({"params": params}, x), jnp.asarray(x, jnp.int32))
        base = np.asarray(f(jnp.asarray(x, jnp.int32)))
        for t in (0, 7, T - 2):
            y = x.copy()
            y[:, t + 1 :] = (y[:, t + 1 :] + 1 + _tokens((2, T - t - 1), seed=t)) % 256
            out = np.asarray(f(jnp.asarray(y, jnp.int32)))
            np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
            assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).min() > 0


def test_mup_at_base_width_is_sp(twin):
    """Backward compatibility: muP at its base width with attn_mult = sqrt(head_dim) is SP."""
    with jax.enable_x64(True):
        sp = _model(width=32, tied=False)
        mp = _model(width=32, tied=False, parametrization="mup", base_width=32, attn_mult=4.0)
        assert (mp.readout_mult, mp.hidden_std, mp.attn_scale) == (1.0, 0.02, sp.attn_scale)
        params = twin.to_flax(twin.TorchGPT(twin.twin_config(sp), seed=7))
        x = jnp.asarray(_tokens((2, T)), jnp.int32)
        args = ({"params": params}, x)
        a = _compiled(sp.apply, *args)(*args)
        b = _compiled(mp.apply, *args)(*args)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert set(jax.tree.leaves(gpt_mup_lr_scales(mp))) == {1.0}


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(width=48, head_dim=32), "width 48 is not divisible by the head size 32"),
        (dict(parametrization="mup"), "muP needs base_width"),
        (dict(parametrization="mup", base_width=24, head_dim=16), "multiple of the head size"),
        (dict(base_width=32), "base_width applies to muP only"),
        (dict(tied=True, zero_readout=True), "zero_readout needs an untied readout"),
        (dict(parametrization="ntk"), "unknown parametrization"),
        (dict(depth=0), "depth must be a positive integer"),
    ],
)
def test_bad_model_sizes_raise_one_line(kw, needle):
    args = {"width": 64, "depth": 2, "context": T, "head_dim": 16, **kw}
    with pytest.raises(ValueError) as e:
        GPT(**args)
    assert needle in _one_line(e)
    with pytest.raises(ValueError, match=needle):
        check_gpt(
            args.pop("width"),
            args.pop("depth"),
            args.pop("context"),
            args.pop("head_dim"),
            **args,
        )


def test_sequence_longer_than_context_is_refused():
    model = GPT(32, 1, 8, head_dim=16)
    with pytest.raises(ValueError, match="exceeds the context 8"):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 9), jnp.int32)))
