r"""The GPT's coordinate check (imports JAX, Flax, Optax, pandas): the RMS of the transformer's
activations against width, during a few steps on one fixed batch of text.

For each width :math:`n`, parametrization and seed, :class:`jaxlr.gpt.GPT` is trained for
``steps`` full-batch steps on a fixed batch of byte windows (next-byte cross-entropy); before
each step and after the last, the root mean square :math:`\mathrm{rms}(y) = \sqrt{\mathrm{mean}\,
y^2}` (over the batch, positions and features) of each of these activations is recorded:

* ``embedding``: :math:`x_0 = W_{te}[s] + W_{pe}[0{:}T]`;
* ``block_i/attn_logits``: the attention logits :math:`\tau\, q_{t} k_{t'}^\top` of every head,
  over the causal pairs :math:`t' \le t` only (the masked ones are :math:`-\infty`);
* ``block_i/attn_out``: :math:`\mathrm{Attn}_i(\mathrm{LN}(x_i))`, before the residual
  multiplier;
* ``block_i/mlp_out``: :math:`\mathrm{MLP}_i(\mathrm{LN}(x_{i+\frac12}))`, likewise;
* ``block_i/residual``: the residual stream after the block, :math:`x_{i+1}`;
* ``logits``: the readout :math:`W_{\mathrm{out}}^\top(\rho\,\mathrm{LN}_f(x_L))`.

Under muP (1/d_head attention, :math:`\rho = 1/m`, :func:`~jaxlr.gpt.gpt_mup_lr_scales`) each
curve :math:`\mathrm{rms}(n)` stays about flat once trained; under SP the trained activations
grow with :math:`n`. They are read from the model as it is: Flax's ``capture_intermediates``
returns every submodule's output (the embeddings, each block, its attention and MLP, the query
and key projections), and the attention logits are formed from the captured :math:`q, k` with
the model's own :attr:`~jaxlr.gpt.GPT.attn_scale` :math:`\tau`.

SP is ``optax.adam`` / ``optax.sgd`` (:func:`~jaxlr.mup.mup_adam` / :func:`~jaxlr.mup.mup_sgd`
with all scales 1); muP is ``mup.MuAdam`` / ``mup.MuSGD``'s rates. One program is compiled per
(width, parametrization, optimizer), training vmapped over the seeds; the init of seed ``s`` is
``init_gpt(model, jax.random.key(s))``'s (threefry draws do not depend on the batch).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxlr import text
from jaxlr.coord_check.check import record_steps
from jaxlr.coord_check.config import PARAMETRIZATIONS, GPTCoordCheckConfig, Parametrization
from jaxlr.gpt import GPT, gpt_mup_lr_scales, init_gpt, next_token_loss
from jaxlr.mup import OPTIMIZERS, Optimizer, mup_adam, mup_sgd

BLOCK_ACTIVATIONS: tuple[str, ...] = ("attn_logits", "attn_out", "mlp_out", "residual")
"""What is recorded in each block, in order (``block_i/<name>``)."""


def gpt_activations(depth: int) -> list[str]:
    """The recorded activations of a ``depth``-block GPT, in the table's order: ``embedding``,
    ``block_i/...`` (:data:`BLOCK_ACTIVATIONS`) for each block, ``logits``."""
    blocks = [f"block_{i}/{name}" for i in range(depth) for name in BLOCK_ACTIVATIONS]
    return ["embedding", *blocks, "logits"]


def _rms(a: jax.Array) -> jax.Array:
    """:math:`\\sqrt{\\mathrm{mean}\\, a^2}` over all coordinates."""
    return jnp.sqrt(jnp.mean(jnp.square(a)))


def _forward_coords(model: GPT, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``model``'s logits and the RMS of each of :func:`gpt_activations` (one vector), from its
    captured intermediates (each module's ``__call__`` output)."""
    logits, state = model.apply({"params": params}, tokens, capture_intermediates=True)
    seen = state["intermediates"]
    b, t = tokens.shape
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    n_causal = b * model.heads * (t * (t + 1) // 2)
    out = [_rms(seen["wte"]["__call__"][0] + seen["wpe"]["__call__"][0])]
    for i in range(model.depth):
        block = seen[f"block_{i}"]
        q, k = (
            block["attn"][name]["__call__"][0].reshape(b, t, model.heads, model.head_dim)
            for name in ("query", "key")
        )
        attn_logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * model.attn_scale
        out.append(jnp.sqrt(jnp.sum(jnp.where(causal, jnp.square(attn_logits), 0)) / n_causal))
        out.append(_rms(block["attn"]["__call__"][0]))
        out.append(_rms(block["mlp"]["__call__"][0]))
        out.append(_rms(block["__call__"][0]))
    out.append(_rms(logits))
    return logits, jnp.stack(out)


@functools.partial(
    jax.jit,
    static_argnames=("model", "optimizer", "steps"),
    compiler_options={"xla_backend_optimization_level": 0},  # compile time dominates on CPU
)
def _train_coords(
    keys: jax.Array,
    lr: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    model: GPT,
    optimizer: str,
    steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Each seed's ``init_gpt(model, key)`` trained ``steps`` full-batch steps (vmapped over
    ``keys``); returns the loss ``(seeds, steps + 1)`` and the RMS of every forward pass
    ``(seeds, steps + 1, activations)``. One program per (model, optimizer, steps, shapes)."""
    scales = gpt_mup_lr_scales(model, optimizer) if model.parametrization == "mup" else None

    def run(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        params = init_gpt(model, key)
        s = jax.tree.map(lambda _: 1.0, params) if scales is None else scales
        tx = mup_adam(lr, s) if optimizer == "adam" else mup_sgd(lr, s)

        def stats(p: Any) -> tuple[jax.Array, jax.Array]:
            logits, rms = _forward_coords(model, p, x)
            return next_token_loss(logits, y), rms

        return record_steps(stats, tx, params, steps)

    return jax.vmap(run)(keys)


def gpt_model(
    width: int,
    *,
    parametrization: Parametrization,
    base_width: int,
    depth: int,
    head_dim: int,
    context: int,
) -> GPT:
    """The (tied) :class:`~jaxlr.gpt.GPT` of one point of the check (``base_width`` for muP
    only)."""
    return GPT(
        width, depth, context, head_dim=head_dim, parametrization=parametrization,
        base_width=base_width if parametrization == "mup" else None,
    )  # fmt: skip


def measure_gpt(
    widths: Sequence[int],
    *,
    parametrization: Parametrization,
    optimizer: Optimizer,
    lr: float,
    steps: int = 4,
    base_width: int,
    seeds: Sequence[int] = (0, 1, 2),
    data: tuple[jax.typing.ArrayLike, jax.typing.ArrayLike],
    depth: int = 2,
    head_dim: int = 16,
) -> pd.DataFrame:
    """:func:`jaxlr.coord_check.gpt_coord_check`'s computation (its docstring has the math and
    the arguments): the arguments checked, then one compiled program per width."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}; choose {PARAMETRIZATIONS}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    x = jnp.asarray(data[0], jnp.int32)
    y = jnp.asarray(data[1], jnp.int32)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(
            f"data: token windows x {x.shape} and targets y {y.shape} must both be (batch, T)"
        )
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    names = gpt_activations(depth)
    frames = []
    for width in widths:
        model = gpt_model(
            int(width), parametrization=parametrization, base_width=base_width, depth=depth,
            head_dim=head_dim, context=x.shape[1],
        )  # fmt: skip
        loss, rms = jax.device_get(
            _train_coords(keys, jnp.asarray(lr, jnp.float32), x, y, model=model,
                          optimizer=optimizer, steps=steps)
        )  # fmt: skip
        frames.append(
            _frame(rms, loss, seeds, names, parametrization=parametrization,
                   optimizer=optimizer, lr=float(lr), width=int(width))
        )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _frame(
    rms: np.ndarray, loss: np.ndarray, seeds: Sequence[int], names: list[str], **tags: Any
) -> pd.DataFrame:
    """Tidy rows from ``rms`` ``(seeds, steps + 1, activations)`` and ``loss`` ``(seeds,
    steps + 1)``, ordered by seed, step, activation; ``tags`` are constant columns put first."""
    seed_i, step, layer_i = (a.ravel() for a in np.indices(rms.shape))
    return pd.DataFrame(
        {
            **tags,
            "layer": np.asarray(names, dtype=object)[layer_i],
            "step": step,
            "seed": np.asarray(seeds, np.int64)[seed_i],
            "rms": rms.ravel().astype(np.float64),
            "loss": loss[seed_i, step].astype(np.float64),
        }
    )


def text_batch(
    batch: int, context: int, data_dir: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch of ``batch`` byte windows of ``context`` tokens and their next bytes
    (:func:`jaxlr.text.window_batch`), their starts evenly spaced over the training part
    (:func:`jaxlr.text.split`) of :func:`jaxlr.text.load_text` ``(data_dir)`` (the built-in
    corpus for ``None``): starts :math:`\\lfloor k (W - 1) / (B - 1) \\rfloor`, :math:`W` the
    number of windows. Raises :class:`~jaxlr.data.DataError` for a corpus too small."""
    corpus = text.load_text(data_dir)
    text.check_context(corpus, context)
    train, _ = text.split(corpus.tokens)
    n = text.windows(len(train), context)
    starts = (np.arange(batch, dtype=np.int64) * (n - 1)) // max(batch - 1, 1)
    return text.window_batch(train, starts.astype(np.int32), context)


def run_gpt_coord_check(cfg: GPTCoordCheckConfig) -> pd.DataFrame:
    """:func:`gpt_coord_check` for each of ``cfg``'s optimizers and parametrizations, on
    :func:`text_batch` ``(cfg.batch, cfg.context, cfg.data_dir)``."""
    data = text_batch(cfg.batch, cfg.context, cfg.data_dir)
    frames = [
        measure_gpt(
            cfg.widths,
            parametrization=par,
            optimizer=opt,
            lr=cfg.adam_lr if opt == "adam" else cfg.sgd_lr,
            steps=cfg.steps,
            base_width=cfg.base_width,
            seeds=cfg.seeds,
            data=data,
            depth=cfg.depth,
            head_dim=cfg.head_dim,
        )
        for opt in cfg.optimizers
        for par in cfg.parametrizations
    ]
    return pd.concat(frames, ignore_index=True)
