"""Tests for the GPT's coordinate check (jaxlr.coord_check.gpt_check): muP's activations stay flat
in width while SP's grow, every recorded RMS equals the PyTorch twin's (nn.LayerNorm, torch Adam,
mup.MuAdam) trained on the same batch, step 0 equals a numpy forward, and the CLI writes the
gpt files."""

from __future__ import annotations

import math

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlr import text
from jaxlr.coord_check import (
    GPTCoordCheckConfig,
    coord_check_summary,
    gpt_coord_check,
    run_gpt_coord_check,
    text_batch,
)
from jaxlr.coord_check.__main__ import main
from jaxlr.coord_check.gpt_check import gpt_activations, gpt_model
from jaxlr.gpt import init_gpt

# Widths 32 and 256 (base 32, head size 16), 2 blocks, context 32, 8 sequences, Adam lr 1e-2 for
# 3 steps, 2 seeds: 4 programs (compilation is most of the time). The CLI test reuses the same
# shapes, so it compiles nothing new.
CC = GPTCoordCheckConfig(widths=(32, 256), steps=3, seeds=(0, 1), optimizers=("adam",))
CC_ARGS = "--model gpt --widths 32,256 --steps 3 --seeds 0,1 --optimizer adam".split()


@pytest.fixture(scope="module")
def coord_df() -> pd.DataFrame:
    return run_gpt_coord_check(CC)


@pytest.fixture(scope="module")
def summary(coord_df) -> pd.DataFrame:
    return coord_check_summary(coord_df).set_index(["parametrization", "layer", "step"])


def _rows(df: pd.DataFrame, par: str, width: int, seed: int) -> pd.DataFrame:
    """One run's table, steps as rows and activations as columns (the table's order)."""
    g = df[(df.parametrization == par) & (df.width == width) & (df.seed == seed)]
    return g.pivot(index="step", columns="layer", values="rms")[gpt_activations(CC.depth)]


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_table_layout(coord_df):
    names = gpt_activations(2)
    assert names == [
        "embedding",
        *(f"block_{i}/{a}" for i in (0, 1) for a in ("attn_logits", "attn_out", "mlp_out",
                                                       "residual")),
        "logits",
    ]  # fmt: skip
    assert len(coord_df) == 2 * len(CC.widths) * len(CC.seeds) * (CC.steps + 1) * len(names)
    assert list(coord_df.columns) == [
        "parametrization", "optimizer", "lr", "width", "layer", "step", "seed", "rms", "loss"
    ]  # fmt: skip
    assert list(coord_df.layer.unique()) == names
    assert np.isfinite(coord_df["rms"]).all() and (coord_df["rms"] > 0).all()


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_step0_at_the_base_width_differs_only_by_the_attention_scale(coord_df):
    """At the base width muP's init is SP's (hidden std sigma / sqrt(m), m = 1): the same
    embedding; the attention logits are scaled by 1/d instead of 1/sqrt(d), so their RMS ratio
    is exactly 1/sqrt(16) = 0.25."""
    for seed in CC.seeds:
        sp, mu = (_rows(coord_df, p, CC.base_width, seed).loc[0] for p in ("sp", "mup"))
        assert mu["embedding"] == pytest.approx(sp["embedding"], rel=1e-6)
        for i in range(CC.depth):
            ratio = mu[f"block_{i}/attn_logits"] / sp[f"block_{i}/attn_logits"]
            if i == 0:  # block 0's q and k depend on the embedding only
                assert ratio == pytest.approx(1 / math.sqrt(CC.head_dim), rel=1e-5)


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_mup_logits_are_flat_and_sp_logits_grow(summary):
    """rms(256) / rms(32) of the readout logits after Adam steps 2 and 3: muP measured
    1.03 and 0.93, SP 4.6 and 3.9 (step 1 still shows the init, whose tied logits shrink as n^(-1/2)
    under muP's 1/m multiplier). A muP without the readout multiplier fails this (its logits
    then grow as SP's)."""
    for t in (2, CC.steps):
        assert 0.7 < summary.loc[("mup", "logits", t), "ratio"] < 1.4
        assert summary.loc[("sp", "logits", t), "ratio"] > 3


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_mup_hidden_activations_stay_flat_while_sp_blows_up(summary):
    """Every block activation at steps 1..3: muP's ratio rms(256) / rms(32) measured 0.66-1.15,
    SP's 6-51 (its residual stream after block 1 25 and 37 at steps 2 and 3, block 0's
    attention logits 22 and 30)."""
    for name in gpt_activations(CC.depth)[1:-1]:
        for t in range(1, CC.steps + 1):
            assert 0.45 < summary.loc[("mup", name, t), "ratio"] < 2.0, (name, t)
    for t in (2, CC.steps):
        assert summary.loc[("sp", "block_1/residual", t), "ratio"] > 8
        assert summary.loc[("sp", "block_0/attn_logits", t), "ratio"] > 8


def _twin_rms(twin, tm, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The RMS of each activation of the torch twin ``tm`` on ``x`` (forward hooks; the
    attention logits from the hooked q, k and the twin's own scale), and its logits."""
    import torch

    seen = {}
    hooks = []

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = output.detach()

        return hook

    hooks.append(tm.wte.register_forward_hook(keep("wte")))
    hooks.append(tm.wpe.register_forward_hook(keep("wpe")))
    for i, block in enumerate(tm.blocks):
        for name, module in (("attn", block.attn), ("mlp", block.mlp), ("block", block),
                             ("q", block.attn.query), ("k", block.attn.key)):  # fmt: skip
            hooks.append(module.register_forward_hook(keep(f"{name}{i}")))
    tokens = torch.from_numpy(np.asarray(x, np.int64))
    logits = tm(tokens)
    for h in hooks:
        h.remove()

    def rms(a):
        return float(torch.sqrt(torch.mean(a.double() ** 2)))

    b, t = x.shape
    out = [rms(seen["wte"] + seen["wpe"])]
    for i, block in enumerate(tm.blocks):
        heads, d = block.attn.heads, block.attn.head_dim
        q, k = (seen[f"{n}{i}"].view(b, t, heads, d).transpose(1, 2) for n in ("q", "k"))
        scores = (q @ k.transpose(-1, -2)) * block.attn.scale
        causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
        out += [rms(scores[..., causal]), rms(seen[f"attn{i}"]), rms(seen[f"mlp{i}"])]
        out.append(rms(seen[f"block{i}"]))
    out.append(rms(logits.detach()))
    return np.array(out), logits


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
@pytest.mark.parametrize("par", ["sp", "mup"])
def test_every_activation_equals_the_torch_twins(coord_df, par):
    """The table at width 256 (m = 8), seed 1, steps 0..3 against the PyTorch twin (float64)
    loaded with init_gpt's params for key 1 and trained on the same batch by torch.optim.Adam
    (SP) or mup.MuAdam (muP, base shapes from mup.set_base_shapes); the twin computes its
    attention scale, readout multiplier and learning rates itself. Measured max relative
    differences (float32 here) by step: muP 9e-8, 7e-6, 1.1e-5, 2.0e-5; SP 9e-8, 2.6e-5, 8e-5,
    1.5e-4 (SP's wide model is unstable: its loss rises at step 2)."""
    rtol = 1e-4 if par == "mup" else 1e-3
    torch = pytest.importorskip("torch")
    mup = pytest.importorskip("mup")
    from torch_parity import torch_gpt as twin

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, y = text_batch(CC.batch, CC.context)
        model = gpt_model(256, parametrization=par, base_width=CC.base_width, depth=CC.depth,
                          head_dim=CC.head_dim, context=CC.context)  # fmt: skip
        params = jax.device_get(init_gpt(model, jax.random.key(1)))
        tm = twin.load_flax(twin.TorchGPT(twin.twin_config(model)).double(), params)
        make = mup.MuAdam if par == "mup" else torch.optim.Adam
        opt = make(tm.parameters(), lr=CC.adam_lr)
        targets = torch.from_numpy(np.asarray(y, np.int64)).reshape(-1)
        want, losses = [], []
        for t in range(CC.steps + 1):
            rms, logits = _twin_rms(twin, tm, x)
            want.append(rms)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets)
            losses.append(float(loss.detach()))
            if t < CC.steps:
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    got = _rows(coord_df, par, 256, 1).to_numpy()
    np.testing.assert_allclose(got, np.array(want), rtol=rtol)
    g = coord_df[(coord_df.parametrization == par) & (coord_df.width == 256) & (coord_df.seed == 1)]
    np.testing.assert_allclose(g.groupby("step")["loss"].first(), losses, rtol=rtol)


def _layer_norm(h: np.ndarray) -> np.ndarray:
    """torch.nn.LayerNorm at init (scale 1, bias 0, eps 1e-5)."""
    mu = h.mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_step0_equals_a_numpy_forward(coord_df):
    """Width 256, seed 0, muP, step 0, from init_gpt's params in numpy (float64): the embedding
    RMS, and block 0's attention logits with muP's closed-form scale 1/d_head on the causal
    pairs."""
    x, _ = text_batch(CC.batch, CC.context)
    model = gpt_model(256, parametrization="mup", base_width=CC.base_width, depth=CC.depth,
                      head_dim=CC.head_dim, context=CC.context)  # fmt: skip
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), init_gpt(model, jax.random.key(0)))
    x0 = p["wte"]["embedding"][x] + p["wpe"]["embedding"][None, : CC.context]
    h = _layer_norm(x0)
    attn = p["block_0"]["attn"]
    q, k = (h @ attn[n]["kernel"] + attn[n]["bias"] for n in ("query", "key"))
    b, t, d = len(x), CC.context, CC.head_dim
    q, k = (a.reshape(b, t, 256 // d, d) for a in (q, k))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / d
    causal = np.tril(np.ones((t, t), bool))
    got = _rows(coord_df, "mup", 256, 0).loc[0]
    assert got["embedding"] == pytest.approx(np.sqrt(np.mean(x0**2)), rel=1e-6)
    assert got["block_0/attn_logits"] == pytest.approx(np.sqrt(np.mean(scores[..., causal] ** 2)),
                                                       rel=1e-4)  # fmt: skip


def test_text_batch_is_evenly_spaced_windows_of_the_training_part(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_bytes(bytes(range(32, 127)) * 3)  # 285 bytes: 257 train, 28 validate
    x, y = text_batch(5, 16, str(corpus))
    raw = np.frombuffer(corpus.read_bytes(), np.uint8)[:257].astype(np.int32)
    starts = [0, 60, 120, 180, 240]  # k (257 - 16 - 1) / 4
    np.testing.assert_array_equal(x, [raw[s : s + 16] for s in starts])
    np.testing.assert_array_equal(y, [raw[s + 1 : s + 17] for s in starts])
    with pytest.raises(text.DataError, match="too long"):
        text_batch(2, 40, str(corpus))


def test_errors():
    x = np.zeros((2, 8), np.int32)
    kw = dict(lr=0.1, base_width=16, data=(x, x), head_dim=16)
    with pytest.raises(ValueError, match="unknown parametrization"):
        gpt_coord_check((16,), parametrization="ntk", optimizer="adam", **kw)
    with pytest.raises(ValueError, match="unknown optimizer"):
        gpt_coord_check((16,), parametrization="sp", optimizer="lion", **kw)
    with pytest.raises(ValueError, match=r"must both be \(batch, T\)"):
        gpt_coord_check((16,), parametrization="sp", optimizer="adam", **{**kw, "data": (x, x[0])})
    with pytest.raises(ValueError, match="width 40: not a multiple of the head size 16"):
        GPTCoordCheckConfig(widths=(32, 40))
    with pytest.raises(ValueError, match="choose one or more of adam,sgd"):
        GPTCoordCheckConfig(optimizers=("adam", "adam"))


@pytest.mark.slow  # the GPT coordinate check's table: 4 GPT programs
def test_cli_writes_the_gpt_files(coord_df, tmp_path, capsys):
    assert main(["--out", str(tmp_path), *CC_ARGS]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpt_coord_check.csv", "gpt_coord_check.png", "gpt_coord_check_summary.csv"
    ]  # fmt: skip
    df = pd.read_csv(tmp_path / "gpt_coord_check.csv")
    expected = coord_df  # the same shapes: the same programs and numbers
    pd.testing.assert_frame_equal(df, expected, check_exact=False, rtol=1e-6)
    summary = pd.read_csv(tmp_path / "gpt_coord_check_summary.csv")
    pd.testing.assert_frame_equal(summary, coord_check_summary(expected), rtol=1e-6)
    assert (tmp_path / "gpt_coord_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "rms(width 256) / rms(width 32) after each step" in out
    rows = [line for line in out.splitlines() if any(n in line for n in gpt_activations(2))]
    assert len(rows) == 2 * 10  # SP and muP, 10 activations each
