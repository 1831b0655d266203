"""The GPT examples (torch_parity's fifth group): the sweep's gpt step against the PyTorch twin.

The JAX side of every comparison is the sweep's own: the ``RunSpec`` of a ``--model gpt`` lane,
its ``spec.gpt()`` in float64 and ``make_optimizer(spec, lr, wd, spec.schedule_multiplier(t))``
on the loss ``next_token_loss``; the reference is the twin (``torch_parity/torch_gpt.py``)
trained by ``torch.optim.AdamW`` or ``mup.MuAdamW``, torch's schedulers and
``clip_grad_norm_``. Each comparison is also run with one thing wrong on the reference side
(torch only, against the JAX losses of the right run), which must fail by far.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mup")

from torch_parity import gpt_examples as ge  # noqa: E402
from torch_parity.__main__ import main  # noqa: E402
from torch_parity.catalog import (  # noqa: E402
    CATALOG,
    GPT_EXAMPLES,
    group_examples,
)
from torch_parity.compare import TOLERANCES, ParityResult, get_example, run_example  # noqa: E402
from torch_parity.examples import torch_threads  # noqa: E402

NAMES = [e.name for e in CATALOG if e.source == GPT_EXAMPLES]
SETTINGS = ge.SETTINGS


@pytest.fixture(scope="module")
def results() -> dict[str, ParityResult]:
    """Every GPT example at its default length, float64 (both sides, once per module)."""
    return {name: run_example(name) for name in NAMES}


def _torch_losses(name: str, setting: ge.GptSetting | None = None, **program) -> np.ndarray:
    """The reference side of example ``name`` alone, with another setting or program pieces."""
    example = get_example(name)
    setting = setting or example.setting
    xs, ys = ge.window_batches(example.setting, example.steps)
    with torch_threads(1):
        return ge.adamw_twin(setting, xs, ys, torch.float64, **program).losses


def _with(setting: ge.GptSetting, **options) -> ge.GptSetting:
    """``setting`` with ``options`` changed (a value None removes the option)."""
    merged = {**setting.options, **options}
    return dataclasses.replace(setting, options={k: v for k, v in merged.items() if v is not None})


def test_the_group_has_the_examples_the_sweep_needs():
    assert set(NAMES) >= {"gpt-sp-adamw-warmup", "gpt-mup-adamw-warmup", "gpt-sp-adamw-clip"}
    assert group_examples(["gpt"]) == NAMES
    assert all(get_example(n).steps >= 20 for n in NAMES)
    mup = SETTINGS["gpt-mup-adamw-warmup"]
    assert mup.parametrization == "mup" and mup.width == 2 * mup.base_width


@pytest.mark.slow  # every GPT example, both sides
@pytest.mark.parametrize("name", NAMES)
def test_gpt_example_agrees_in_float64(results, name):
    """Same init (ln 256 up to the init's logits), same losses at every step to 1e-10, same
    final params, and it trained."""
    r = results[name]
    assert r.passed, r
    assert r.max_abs_loss_diff <= TOLERANCES["float64"]
    assert r.max_rel_param_diff <= 1e-9
    assert abs(r.torch_losses[0] - r.jax_losses[0]) <= 1e-13
    assert abs(r.torch_losses[0] - math.log(256)) < 0.1
    assert r.torch_losses[-1] < r.torch_losses[0] - 1.0  # the word corpus is being learned


@pytest.mark.slow  # every GPT example, both sides
@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("gpt-sp-adamw-warmup", {"setting": {"warmup": 0}}),  # no warmup: cosine from step 0
        ("gpt-sp-adamw-warmup", {"weight_decay": 0.0}),
        ("gpt-mup-adamw-warmup", {"optimizer": "torch.optim.AdamW"}),  # no muP lr scaling
        ("gpt-mup-adamw-warmup", {"readout": "no 1/m"}),
        ("gpt-mup-adamw-untied", {"setting": {"depth_exponent": None}}),  # residuals unscaled
        ("gpt-sp-adamw-clip", {"setting": {"clip_norm": None}}),  # no clipping
    ],
)
def test_a_wrong_reference_fails_by_far(results, name, wrong):
    """One thing wrong on the torch side moves max |Δloss| 100x above the example's bound."""
    setting = SETTINGS[name]
    program = {}
    if "setting" in wrong:
        setting = _with(setting, **wrong["setting"])
    if "weight_decay" in wrong:
        setting = dataclasses.replace(setting, weight_decay=wrong["weight_decay"])
    if "optimizer" in wrong:
        program["make_optimizer"] = lambda s, twin: torch.optim.AdamW(
            twin.parameters(), lr=s.lr, eps=1e-8, weight_decay=s.weight_decay
        )
    if "readout" in wrong:  # MuSharedReadout computes output_mult * h / m: cancel the 1/m

        def make_optimizer(s, twin):
            twin.lm_head.output_mult = twin.lm_head.width_mult()
            return ge.torch_optimizer(s, twin)

        program["make_optimizer"] = make_optimizer
    diff = np.max(np.abs(_torch_losses(name, setting, **program) - results[name].jax_losses))
    assert diff > 100 * get_example(name).tolerance_for("float64"), diff


@pytest.mark.slow  # every GPT example, both sides
def test_the_clip_has_torchs_epsilon(results):
    """The sweep's --clip-norm scales by torch's c / (||g|| + 1e-6): the twin with that 1e-6
    removed (optax's clip_by_global_norm) misses it by more than 1e-10, the twin as it is
    (torch's clip_grad_norm_) agrees to 1e-10."""

    def clip_without_epsilon(parameters, max_norm):
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        if norm >= max_norm:
            for g in grads:
                g.mul_(max_norm / norm)
        return norm

    name = "gpt-sp-adamw-clip"
    want = results[name].jax_losses
    without = _torch_losses(name, clip_grad_norm=clip_without_epsilon)
    # the sweep's --clip-norm has torch's epsilon: without it the losses move by ~2e-8
    assert 1e-10 < np.max(np.abs(without - want)) <= 5e-7
    assert results[name].max_abs_loss_diff <= TOLERANCES["float64"]


def test_the_reference_schedule_is_warmup_then_cosine():
    """torch's lr per step: LinearLR's warmup lr (t+1)/W, then CosineAnnealingLR down to f lr,
    against the closed form."""
    setting = SETTINGS["gpt-sp-adamw-warmup"]
    xs, ys = ge.window_batches(setting, 24)
    with torch_threads(1):
        lrs = ge.adamw_twin(setting, xs, ys, torch.float64).lrs
    w, total, f, lr = 5, 24, 0.1, setting.lr
    t = np.arange(total)
    cos = f + (1 - f) * 0.5 * (1 + np.cos(np.pi * (t - w) / (total - w)))
    want = lr * np.where(t < w, (t + 1) / w, cos)
    np.testing.assert_allclose(lrs, want, rtol=1e-12, atol=0)


def test_window_batches_are_next_byte_pairs_of_the_corpus():
    setting = SETTINGS["gpt-sp-adamw-warmup"]
    xs, ys = ge.window_batches(setting, 24)
    assert xs.shape == ys.shape == (24, setting.batch_size, setting.context)
    np.testing.assert_array_equal(xs[..., 1:], ys[..., :-1])
    corpus = ge.word_corpus()
    assert len(corpus) == ge.CORPUS_BYTES
    words = set(bytes(corpus).decode("ascii").replace(".\n", " ").split()[:-1])
    assert words <= set(ge.CORPUS_WORDS)
    train = bytes(corpus[: len(corpus) - len(corpus) // 10])
    assert all(bytes(x.astype(np.uint8)) in train for x in xs[0])


def test_list_and_group_flags(capsys):
    assert main(["--list", "--group", "gpt"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(GPT_EXAMPLES in line for line in lines)
    assert main(["--group", "gpt", "--example", "narrow"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["--group", "gpt,nope"]) == 2
    assert "unknown group nope" in capsys.readouterr().err
