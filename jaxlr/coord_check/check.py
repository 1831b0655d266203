r"""The computation behind :mod:`jaxlr.coord_check` (imports JAX, Optax, pandas): one compiled
init and training program per width, shared by SP and muP, and the committed digits run.

The public functions are documented and re-exported by :mod:`jaxlr.coord_check`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from jaxlr.coord_check.config import PARAMETRIZATIONS, CoordCheckConfig, Parametrization
from jaxlr.data import load_dataset
from jaxlr.models import MLP
from jaxlr.mup import (
    OPTIMIZERS,
    Optimizer,
    mlp_shapes,
    mup_adam,
    mup_init_factors,
    mup_lr_scales,
    mup_mlp,
    mup_sgd,
)
from jaxlr.results import atomic_write

# --------------------------------------------------------------------------------------------
# The measurement: one compiled init and training program per width, shared by SP and muP.
# --------------------------------------------------------------------------------------------


def _forward_coords(
    params: dict, x: jax.Array, readout_mult: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:class:`~jaxlr.models.MLP`'s forward with a traced ``readout_mult``: (logits, the mean
    |output| of each Dense layer, readout last)."""
    n = len(params)
    h, l1 = x, []
    for i in range(n):
        layer = params[f"Dense_{i}"]
        if i == n - 1:
            h = h * readout_mult
        h = h @ layer["kernel"] + layer["bias"]
        l1.append(jnp.mean(jnp.abs(h)))
        if i < n - 1:
            h = jax.nn.relu(h)
    return h, jnp.stack(l1)


@functools.partial(jax.jit, static_argnames=("in_features", "hidden", "num_classes"))
def _init_coords(
    key: jax.Array, *, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> dict:
    """SP (torch) init of one seed; compiled once per shape, shared by SP and muP. Not vmapped:
    batched ``rbg`` draws would differ from ``init_mlp``'s and depend on the other seeds."""
    model = MLP(hidden, num_classes, init_scheme="torch")
    return model.init(key, jnp.zeros((1, in_features)))["params"]


@functools.partial(jax.jit, static_argnames=("optimizer", "steps"))
def _train_coords(
    params: dict,
    init_factors: dict,
    scales: dict,
    readout_mult: jax.Array,
    lr: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    optimizer: str,
    steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Trains the seed-batched ``params * init_factors`` for ``steps`` full-batch steps; returns
    the loss and the per-layer l1 of every forward pass, ``(seeds, steps + 1[, layers])``. SP
    is the case ``init_factors = scales = readout_mult = 1``: SP and muP share one program."""
    tx = mup_adam(lr, scales) if optimizer == "adam" else mup_sgd(lr, scales)

    def stats(p: dict) -> tuple[jax.Array, jax.Array]:
        logits, l1 = _forward_coords(p, x, readout_mult)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), l1

    def run(p: dict) -> tuple[jax.Array, jax.Array]:
        return record_steps(stats, tx, jax.tree.map(lambda a, f: a * f, p, init_factors), steps)

    return jax.vmap(run)(params)


def record_steps(
    stats: Any, tx: optax.GradientTransformation, params: Any, steps: int
) -> tuple[jax.Array, jax.Array]:
    """``steps`` full-batch steps of ``tx`` on ``stats(p) -> (loss, recorded)``, in ``lax.scan``;
    returns the loss ``(steps + 1,)`` and what was recorded ``(steps + 1, ...)`` at every forward
    pass, the last after the final update (shared by the MLP's and the GPT's checks)."""

    def step(carry: Any, _: None) -> Any:
        p, opt_state = carry
        (loss, rec), grads = jax.value_and_grad(stats, has_aux=True)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), (loss, rec)

    (params, _), (loss, rec) = jax.lax.scan(step, (params, tx.init(params)), None, steps)
    last_loss, last_rec = stats(params)
    return jnp.append(loss, last_loss), jnp.vstack([rec, last_rec])


def _parametrize(
    parametrization: Parametrization,
    optimizer: Optimizer,
    in_features: int,
    hidden: tuple[int, ...],
    num_classes: int,
    *,
    base_width: int,
    output_mult: float,
    readout_zero_init: bool,
) -> tuple[float, dict, dict]:
    """``(readout_mult, init factors, lr scales)`` turning the SP model into ``parametrization``'s
    (all 1 for SP; for muP, :func:`~jaxlr.mup.init_mup_mlp`'s rescaling of the same draws)."""
    shapes = mlp_shapes(in_features, hidden, num_classes)
    if parametrization == "sp":
        ones = {layer: {"kernel": 1.0, "bias": 1.0} for layer in shapes}
        return 1.0, ones, ones
    model, _ = mup_mlp(
        in_features,
        hidden,
        num_classes,
        base_hidden=base_width,
        output_mult=output_mult,
        readout_zero_init=readout_zero_init,
    )
    base = mlp_shapes(in_features, (base_width,) * len(hidden), num_classes)
    factors = mup_init_factors(shapes, base)
    if readout_zero_init:
        factors[f"Dense_{len(hidden)}"] = {"kernel": 0.0, "bias": 0.0}
    return model.readout_mult, factors, mup_lr_scales(shapes, base, optimizer)


def _as_f32(tree: Any) -> Any:
    """A tree of Python floats as float32 arrays (traced, so one program serves SP and muP)."""
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), tree)


def _frame(l1: np.ndarray, loss: np.ndarray, seeds: Sequence[int], **tags: Any) -> pd.DataFrame:
    """Tidy rows from ``l1`` ``(seeds, steps + 1, layers)`` and ``loss`` ``(seeds, steps + 1)``,
    ordered by seed, step, layer; ``tags`` are constant columns put first."""
    seed_i, step, layer_i = (a.ravel() for a in np.indices(l1.shape))
    return pd.DataFrame(
        {
            **tags,
            "layer": [f"Dense_{i}" for i in layer_i],
            "step": step,
            "seed": np.asarray(seeds, np.int64)[seed_i],
            "l1": l1.ravel().astype(np.float64),
            "loss": loss[seed_i, step].astype(np.float64),
        }
    )


def measure(
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
    num_classes: int | None = None,
    output_mult: float = 1.0,
    readout_zero_init: bool = True,
) -> pd.DataFrame:
    """:func:`jaxlr.coord_check.coord_check`'s computation (its docstring has the math and the
    arguments): the arguments checked, then one compiled init and training program per width."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"unknown parametrization {parametrization!r}; choose {PARAMETRIZATIONS}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if depth < 1:
        raise ValueError(f"depth={depth}: the coordinate check needs at least 1 hidden layer")
    x = jnp.asarray(data[0], jnp.float32)
    y = jnp.asarray(data[1], jnp.int32)
    n_out = int(np.max(np.asarray(y))) + 1 if num_classes is None else num_classes
    keys = [jax.random.key(s, impl="rbg") for s in seeds]
    frames = []
    for width in widths:
        hidden = (int(width),) * depth
        mult, factors, scales = _parametrize(
            parametrization, optimizer, x.shape[-1], hidden, n_out, base_width=base_width,
            output_mult=output_mult, readout_zero_init=readout_zero_init,
        )  # fmt: skip
        params = jax.tree.map(
            lambda *leaves: jnp.stack(leaves),
            *(_init_coords(k, in_features=x.shape[-1], hidden=hidden, num_classes=n_out)
              for k in keys),
        )  # fmt: skip
        loss, l1 = jax.device_get(
            _train_coords(
                params, _as_f32(factors), _as_f32(scales), _as_f32(mult), _as_f32(lr), x, y,
                optimizer=optimizer, steps=steps,
            )
        )  # fmt: skip
        frames.append(
            _frame(l1, loss, seeds, parametrization=parametrization, optimizer=optimizer,
                   lr=float(lr), width=int(width))
        )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _value_column(df: pd.DataFrame) -> str:
    """The measured column: ``l1`` (the MLP's table) or ``rms`` (the GPT's)."""
    for name in ("l1", "rms"):
        if name in df.columns:
            return name
    raise ValueError(f"a coordinate-check table has an l1 or rms column; got {list(df.columns)}")


def coord_check_summary(df: pd.DataFrame) -> pd.DataFrame:
    r"""Growth of each activation's size with width, per (parametrization, optimizer, layer,
    step), for the MLP's table (:math:`\ell_1`) and the GPT's (RMS) alike.

    Seeds are averaged first. With :math:`a(n)` the seed-averaged size at width :math:`n`,
    ``ratio`` is :math:`a(n_{\max}) / a(n_{\min})` and ``slope`` the least-squares slope of
    :math:`\log_2 a` against :math:`\log_2 n` (0: flat, 1: linear growth). Zero activations
    (the zero-init readout at step 0) give ``nan``. Rows keep the table's layer order.
    """
    value = _value_column(df)
    keys = ["parametrization", "optimizer", "layer", "step"]
    mean = df.groupby([*keys, "width"], as_index=False, sort=False)[value].mean()
    out = []
    for key, g in mean.groupby(keys, sort=False):
        g = g.sort_values("width")
        lw, a = np.log2(g["width"].to_numpy(float)), g[value].to_numpy(float)
        ratio = a[-1] / a[0] if a[0] > 0 else np.nan
        slope = np.polyfit(lw, np.log2(a), 1)[0] if len(a) > 1 and np.all(a > 0) else np.nan
        out.append(dict(zip(keys, key, strict=True), ratio=float(ratio), slope=float(slope)))
    rank = {layer: i for i, layer in enumerate(df["layer"].unique())}
    table = pd.DataFrame(out)
    return table.sort_values(
        keys, key=lambda c: c.map(rank) if c.name == "layer" else c, ignore_index=True
    )


def plot_coord_check(df: pd.DataFrame, path: str | Path) -> Path:
    r"""Saves mup-style coordinate-check plots to ``path`` (PNG, written atomically).

    One panel per (optimizer, parametrization) row and step column; in each, the activation
    size (:math:`\ell_1` for the MLP's table, RMS for the GPT's) against width (log-log, seeds
    averaged), one line per layer in the table's order. Rows share their y axis, so a flat line
    is width-independent and the panels of a row show the growth over steps. Zeros (the
    zero-init readout at step 0) are not drawn. Uses matplotlib's object API (no pyplot, no
    global backend change).
    """
    from matplotlib.figure import Figure

    value = _value_column(df)
    order = {p: i for i, p in enumerate(PARAMETRIZATIONS)}
    keys = sorted(
        df.groupby(["optimizer", "parametrization"]).groups, key=lambda k: (k[0], order[k[1]])
    )
    steps = sorted(df["step"].unique())
    layers = list(df["layer"].unique())
    mlp = value == "l1"
    fig = Figure(figsize=(2.6 * len(steps), 2.3 * len(keys) + (0 if mlp else 0.9)))
    axes = fig.subplots(len(keys), len(steps), squeeze=False, sharex=True, sharey="row")
    for r, (opt, par) in enumerate(keys):
        g = df[(df["optimizer"] == opt) & (df["parametrization"] == par)]
        mean = g.groupby(["layer", "step", "width"], as_index=False)[value].mean()
        for c, t in enumerate(steps):
            ax = axes[r, c]
            at_t = mean[mean["step"] == t]
            for li, layer in enumerate(layers):
                lg = at_t[at_t["layer"] == layer].sort_values("width")
                if mlp:
                    role = "logits" if li == len(layers) - 1 else f"hidden {li + 1}"
                    label = f"{layer} ({role})"
                else:
                    label = layer
                ax.plot(lg["width"], lg[value].where(lg[value] > 0), marker="o", ms=3,
                        label=label, color=f"C{li % 10}",
                        linestyle="-" if li < 10 else "--")  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{par.upper()} {opt}, step {t}", fontsize=8)
            ax.tick_params(which="both", labelsize=7)
            if c == 0:
                ax.set_ylabel("mean |layer output|" if mlp else "RMS of activation", fontsize=8)
            if r == len(keys) - 1:
                ax.set_xlabel("width", fontsize=8)
    if mlp:
        axes[0, -1].legend(fontsize=6)
        fig.tight_layout()
    else:  # many activations: one legend under the panels
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(layers), 5), fontsize=6)
        fig.tight_layout(rect=(0, 0.9 / fig.get_figheight(), 1, 1))
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    return Path(path)


# --------------------------------------------------------------------------------------------
# The committed experiment: SP and muP, Adam and SGD, on a fixed digits batch.
# --------------------------------------------------------------------------------------------


def digits_batch(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` training examples of ``load_dataset("digits")``, normalized as a sweep
    normalizes them (:meth:`jaxlr.data.Dataset.normalize`: one scalar mean/std of the training
    split), as float32 inputs and int32 labels."""
    ds = load_dataset("digits")
    if not 1 <= n <= ds.n_train:
        raise ValueError(f"batch {n}: digits has {ds.n_train} training examples; pick 1..that")
    return ds.normalize(ds.x_train[:n], np.float32), np.asarray(ds.y_train[:n], np.int32)


def run_coord_check(cfg: CoordCheckConfig) -> pd.DataFrame:
    """:func:`coord_check` for each of ``cfg``'s optimizers and parametrizations (by default SP
    and muP, Adam and SGD), on :func:`digits_batch` ``(cfg.batch)``."""
    data = digits_batch(cfg.batch)
    frames = [
        measure(
            cfg.widths,
            parametrization=par,
            optimizer=opt,
            lr=cfg.adam_lr if opt == "adam" else cfg.sgd_lr,
            steps=cfg.steps,
            base_width=cfg.base_width,
            seeds=cfg.seeds,
            data=data,
            depth=cfg.depth,
            num_classes=10,
        )
        for opt in cfg.optimizers
        for par in cfg.parametrizations
    ]
    return pd.concat(frames, ignore_index=True)
