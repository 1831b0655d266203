r"""The GPT examples: the sweep's ``gpt`` family against its PyTorch twin, step by step.

Each example is one lane of a ``python -m jaxlr.sweep --model gpt`` sweep (:class:`GptSetting`:
parametrization, width, lr, weight decay and the :class:`jaxlr.config.SweepConfig` options),
trained on windows of a small byte corpus (:func:`word_corpus`). Both sides get

* the same initial weights: the twin (:class:`torch_parity.torch_gpt.TorchGPT`) is built and
  initialized in torch (muP: ``mup.set_base_shapes`` against the base-width twin, then
  ``mup.init.normal_``), and :func:`~torch_parity.torch_gpt.to_flax` gives the JAX side the
  same numbers;
* the same token batches: the sweep's own window starts of seed 0
  (:func:`jaxlr.engine.window_starts`, one evaluation interval of ``steps`` steps), cut out of
  the training part by :func:`jaxlr.text.window_batch`; :math:`x_{b} = s[a_b : a_b + T]`,
  :math:`y_{b} = s[a_b + 1 : a_b + T + 1]`;
* the same loss, the mean next-token cross-entropy over every position,
  :math:`\ell = -\frac{1}{BT}\sum_{b,t} \log \mathrm{softmax}(z_{bt})_{y_{bt}}`
  (:func:`jaxlr.gpt.next_token_loss`; torch: ``F.cross_entropy`` of the flattened logits).

The JAX side is the sweep's: the :class:`jaxlr.engine.RunSpec` that ``RunSpec.create(cfg,
dataset, (width,) * depth, "adamw", parametrization)`` builds for the setting, its model
``spec.gpt()`` (in the run's dtype), and at every step ``t`` its update
``make_optimizer(spec, lr, wd, spec.schedule_multiplier(t))`` (:func:`sweep_gpt_update`). The
torch side is PyTorch's and microsoft/mup's:

* SP: ``torch.optim.AdamW(lr, betas, eps=1e-8, weight_decay)``;
* muP: ``mup.MuAdamW`` (per parameter group :math:`\eta / m` on the hidden matrices, the decay
  :math:`\lambda m` there so that :math:`\eta\lambda` is unchanged), :math:`m` =
  ``width / base_width``, with the twin's ``MuReadout`` / ``MuSharedReadout`` multiplier
  :math:`1/m`;
* the schedule from torch's schedulers
  (:func:`torch_parity.optimizer_examples.torch_scheduler`: ``LinearLR`` warmup, then
  ``CosineAnnealingLR`` ... chained by ``SequentialLR``), stepped after each optimizer step;
* ``--clip-norm c``: ``torch.nn.utils.clip_grad_norm_(params, c)`` between ``backward()`` and
  ``step()``: :math:`g \leftarrow g \min(1, c / (\lVert g\rVert_2 + 10^{-6}))`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from torch_parity.examples import OnStep
from torch_parity.jax_runs import StepTransform
from torch_parity.optimizer_examples import SweepSetting, torch_scheduler
from torch_parity.torch_gpt import TorchGPT, to_flax, twin_config

TEXT_DATA = "word text"
"""The corpus's name in the results (``ParityResult.dataset``)."""

CORPUS_WORDS: tuple[str, ...] = (
    "the", "of", "and", "a", "to", "in", "is", "that", "width", "rate", "learning", "model",
    "layer", "step", "loss", "grows", "falls", "with", "each", "token", "window", "sweep",
    "seed", "transfer", "scale", "base", "readout", "attention", "head", "matrix",
)  # fmt: skip
"""The corpus's vocabulary (its first words are the most frequent)."""

CORPUS_BYTES = 4096
"""Length of :func:`word_corpus`: 3,669 training windows of 16 bytes, 409 validation bytes."""


def word_corpus(n_bytes: int = CORPUS_BYTES, seed: int = 0) -> np.ndarray:
    r"""A small byte corpus with structure to learn: words of :data:`CORPUS_WORDS` drawn with
    Zipf weights :math:`p_k \propto 1/(k+1)` from ``np.random.default_rng(seed)``, joined by
    spaces, a ``".\n"`` after every 12th word; the first ``n_bytes`` bytes, ``uint8``.

    Made here, so that it is the same on every machine (no file, no Python-version-dependent
    standard library text).
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(CORPUS_WORDS) + 1)
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        words = rng.choice(len(CORPUS_WORDS), 12, p=weights / weights.sum())
        sentence = " ".join(CORPUS_WORDS[i] for i in words) + ".\n"
        parts.append(sentence)
        size += len(sentence)
    return np.frombuffer("".join(parts).encode("ascii"), np.uint8)[:n_bytes].copy()


@dataclasses.dataclass(frozen=True)
class GptSetting:
    """One lane of a gpt sweep (AdamW), as both sides of a GPT example see it."""

    parametrization: Literal["sp", "mup"]  # the sweep's --parametrizations
    width: int  # d_model (--widths)
    lr: float  # the lane's base learning rate
    weight_decay: float = 0.0  # --weight-decays
    depth: int = 2  # blocks (--depth)
    context: int = 16  # bytes per window (--context)
    head_dim: int = 16  # --head-dim
    batch_size: int = 8  # windows per step (--batch-size)
    base_width: int | None = None  # muP's --base-width
    tied: bool = True  # --tied / --no-tied
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # SweepConfig fields

    def option(self, name: str, default: Any = None) -> Any:
        """``options[name]``, or ``default`` where the setting leaves it at the sweep's."""
        return self.options.get(name, default)

    @property
    def sweep_setting(self) -> SweepSetting:
        """The same lane as the optimizer examples' :class:`SweepSetting` (what
        :func:`~torch_parity.optimizer_examples.torch_scheduler` reads)."""
        hidden = (self.width,) * self.depth
        return SweepSetting("adamw", self.lr, hidden, self.weight_decay, self.options)


SETTINGS: dict[str, GptSetting] = {
    "gpt-sp-adamw-warmup": GptSetting(
        "sp",
        32,
        3e-3,
        weight_decay=0.1,
        head_dim=8,
        options={"schedule": "warmup-cosine", "warmup": 5, "final_lr_fraction": 0.1},
    ),
    "gpt-mup-adamw-warmup": GptSetting(
        "mup",
        64,
        5e-3,
        weight_decay=0.1,
        base_width=32,
        options={"schedule": "warmup-cosine", "warmup": 5, "final_lr_fraction": 0.0},
    ),
    "gpt-mup-adamw-untied": GptSetting(
        "mup",
        64,
        5e-3,
        weight_decay=0.01,
        base_width=32,
        tied=False,
        options={
            "schedule": "wsd",
            "warmup": 4,
            "decay_fraction": 0.25,
            "final_lr_fraction": 0.1,
            "depth_exponent": 0.5,
        },
    ),
    "gpt-sp-adamw-clip": GptSetting(
        "sp", 32, 3e-3, weight_decay=0.1, tied=False, options={"clip_norm": 0.5}
    ),
}
"""Each GPT example's lane; its torch program and the JAX side read the same entry.

The muP lanes run at lr 5e-3: at 1e-2, ``gpt-mup-adamw-warmup``'s loss jumps between steps 10
and 20 (an edge-of-stability event), which amplifies rounding: float64 max |Δloss| 3.9e-13
instead of 1.8e-15, and torch's own float32 run departs from its float64 run by 1.1e-4."""


# ------------------------------------------------------------------------------ the sweep's side
def sweep_config(setting: GptSetting, steps: int) -> Any:
    """The :class:`jaxlr.config.SweepConfig` of the lane: ``--model gpt``, one width, AdamW,
    ``--steps steps --eval-every steps`` (one evaluation interval, so that the sweep's window
    draw of "epoch" 0 covers the run and a horizon-dependent schedule spans it), validated
    as the command line's is."""
    from jaxlr.config import SweepConfig

    return SweepConfig(
        family="gpt",
        widths=(setting.width,),
        depth=setting.depth,
        context=setting.context,
        head_dim=setting.head_dim,
        tied=setting.tied,
        batch_size=setting.batch_size,
        optimizers=("adamw",),
        parametrizations=(setting.parametrization,),
        base_width=setting.base_width,
        weight_decays=(setting.weight_decay,),
        steps=steps,
        eval_every=steps,
        **setting.options,
    )


def text_dataset(setting: GptSetting, steps: int) -> Any:
    """:func:`word_corpus` as the sweep's :class:`jaxlr.data.TextDataset` (the contiguous
    train/validation split of :func:`jaxlr.text.split`, ``n_train`` = steps x batch)."""
    import hashlib

    from jaxlr import text
    from jaxlr.data import TextDataset

    tokens = word_corpus()
    text.check_context(tokens, setting.context)
    corpus = text.TextCorpus(
        tokens, f"{TEXT_DATA} ({len(tokens)} bytes)", (), hashlib.sha256(tokens).hexdigest()
    )
    train, val = text.split(tokens)
    return TextDataset(
        train, val, setting.context, steps * setting.batch_size, corpus, name=TEXT_DATA
    )


def gpt_spec(setting: GptSetting, steps: int) -> Any:
    """The sweep's :class:`jaxlr.engine.RunSpec` of the lane (family gpt, AdamW)."""
    from jaxlr.engine import RunSpec

    spec = RunSpec.create(
        sweep_config(setting, steps),
        text_dataset(setting, steps),
        (setting.width,) * setting.depth,
        "adamw",
        setting.parametrization,
    )
    if spec.family != "gpt" or spec.steps_per_epoch != steps:
        raise AssertionError(f"the spec is {spec.family} with {spec.steps_per_epoch} steps")
    return spec


def gpt_model(setting: GptSetting, steps: int, dtype: str = "float64") -> Any:
    """The sweep's :class:`jaxlr.gpt.GPT` of the lane (``spec.gpt()``), in ``dtype``."""
    import jax.numpy as jnp

    return gpt_spec(setting, steps).gpt().clone(dtype=jnp.dtype(dtype))


def sweep_gpt_update(setting: GptSetting, steps: int) -> StepTransform:
    """The sweep's update of the lane, per step:
    ``t -> make_optimizer(spec, lr, weight_decay, spec.schedule_multiplier(t))``, what
    ``jaxlr.engine``'s training step calls (nothing here re-implements it)."""
    from jaxlr.optimizers import make_optimizer

    spec = gpt_spec(setting, steps)
    lr, wd = setting.lr, setting.weight_decay
    return lambda t: make_optimizer(spec, lr, wd, spec.schedule_multiplier(t))


def window_batches(setting: GptSetting, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The token batches of every step, ``(xs, ys)`` int64 ``[steps, batch, context]``: the
    windows at the sweep's starts of ``seed`` (:func:`jaxlr.engine.window_starts`, epoch 0)."""
    from jaxlr import text
    from jaxlr.engine import window_starts

    ds = text_dataset(setting, steps)
    starts = np.asarray(window_starts(seed, 0, ds.n_windows, setting.batch_size, steps))
    xs, ys = text.window_batch(np.asarray(ds.train), starts, setting.context)
    return xs.astype(np.int64), ys.astype(np.int64)


# ------------------------------------------------------------------------------ the torch side
@dataclasses.dataclass(frozen=True)
class GptTorchRun:
    """What the twin did: its weights before and after (Flax layout), and its loss per step."""

    init_params: dict[str, Any]  # to_flax(twin) before the first step, in the run's dtype
    final_params: dict[str, Any]  # to_flax(twin) after the last step
    losses: np.ndarray  # float64 [steps]: the loss of step t (computed before update t)
    lrs: np.ndarray  # float64 [steps]: the first parameter group's lr used by step t


class GptTorchProgram(Protocol):
    """A GPT reference program: setting, token batches, dtype -> :class:`GptTorchRun`."""

    def __call__(
        self,
        setting: GptSetting,
        xs: np.ndarray,
        ys: np.ndarray,
        dtype: torch.dtype,
        *,
        on_step: OnStep | None = None,
    ) -> GptTorchRun: ...


MakeTorchOptimizer = Callable[[GptSetting, torch.nn.Module], torch.optim.Optimizer]
"""``make_optimizer(setting, twin)``: the reference's optimizer over the twin's parameters."""

ClipGradNorm = Callable[[Any, float], Any]
"""``clip_grad_norm(parameters, max_norm)``: scales the gradients in place."""


def torch_optimizer(setting: GptSetting, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` (SP) or ``mup.MuAdamW`` (muP) over the twin's parameters, with the
    setting's lr, betas, ``eps=1e-8`` and weight decay (one group; MuAdamW splits it)."""
    kw = dict(
        lr=setting.lr,
        betas=setting.option("betas", (0.9, 0.999)),
        eps=1e-8,
        weight_decay=setting.weight_decay,
    )
    if setting.parametrization == "mup":
        import mup

        return mup.MuAdamW(model.parameters(), **kw)
    return torch.optim.AdamW(model.parameters(), **kw)


def adamw_twin(
    setting: GptSetting,
    xs: np.ndarray,
    ys: np.ndarray,
    dtype: torch.dtype,
    *,
    seed: int = 0,
    on_step: OnStep | None = None,
    make_optimizer: MakeTorchOptimizer = torch_optimizer,
    clip_grad_norm: ClipGradNorm = torch.nn.utils.clip_grad_norm_,
) -> GptTorchRun:
    """The twin of the lane's model, trained on ``xs[t] -> ys[t]`` at step ``t``: zero_grad,
    ``F.cross_entropy`` of the flattened logits, backward, ``clip_grad_norm_`` (with
    ``clip_norm``), ``optimizer.step()``, ``scheduler.step()``.

    The twin is built from the sweep's model (:func:`twin_config` of ``spec.gpt()``) and
    initialized under ``torch.manual_seed(seed)`` (inside ``fork_rng``) in float32, then cast to
    ``dtype``. ``make_optimizer`` and ``clip_grad_norm`` are torch's unless replaced (a test's
    deliberately wrong reference). A muP cosine schedule must end at 0: ``CosineAnnealingLR``'s
    ``eta_min`` is one absolute lr for every group, not a fraction of each group's (MuAdamW's
    groups differ).
    """
    steps = len(xs)
    model = gpt_model(setting, steps)
    twin = TorchGPT(twin_config(model), seed).to(dtype)
    init_params = to_flax(twin)
    optimizer = make_optimizer(setting, twin)
    if (
        setting.parametrization == "mup"
        and setting.option("schedule") == "warmup-cosine"
        and setting.option("final_lr_fraction", 0.0) != 0.0
    ):
        raise ValueError(
            "CosineAnnealingLR's eta_min is one lr for every muP group; use final_lr_fraction 0"
        )
    scheduler = torch_scheduler(optimizer, setting.sweep_setting, steps)
    clip = setting.option("clip_norm")
    losses, lrs = [], []
    for t, (x, y) in enumerate(zip(xs, ys, strict=True), 1):
        optimizer.zero_grad()
        logits = twin(torch.from_numpy(x))
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1)
        )
        loss.backward()
        if clip is not None:
            clip_grad_norm(twin.parameters(), clip)
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(t)
    return GptTorchRun(init_params, to_flax(twin), np.asarray(losses), np.asarray(lrs))
