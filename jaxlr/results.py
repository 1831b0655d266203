"""Results: the long-format table, the per-width summary, and atomic files on disk.

``results.csv`` has one row per run x epoch:

=================  =====================================================================
column             meaning
=================  =====================================================================
width              first hidden width (the swept width for uniform MLPs)
depth              number of hidden layers
hidden             all hidden widths, ``-``-joined (``64-16``)
optimizer          a name of :data:`jaxlr.registry.OPTIMIZERS` (``sgd``, ``adam``, ...)
lr_rule            ``none``, ``per-layer``, ``weight-norm``, ``adagrad-param``, ``adagrad-neuron``
parametrization    ``sp``, ``mup`` or ``lr-exp``
weight_decay       the run's weight decay (``--weight-decay``; 0 for optimizers without one)
lr                 the swept (base) learning rate
seed               init and batch-order seed
round              0 for the grid's lrs, k for lrs added by refinement round k (``--refine``)
epoch              1-based epoch
train_loss         mean batch loss over the epoch (NaN once diverged)
test_loss          cross-entropy on the full test set (NaN once diverged)
test_accuracy      accuracy on the full test set (NaN once diverged)
diverged           ``True`` from the epoch the run diverged in onwards
diverged_epoch     1-based epoch the run diverged in (empty if it never did)
=================  =====================================================================

``summary.csv`` has one row per (architecture, optimizer): the best lr by final test loss
(mean over seeds; an lr is eligible only if no seed diverged), that loss's mean and std over
seeds, the test accuracy there, and the lowest lr at which any seed diverged.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

GROUP_KEYS = [
    "width",
    "depth",
    "hidden",
    "optimizer",
    "lr_rule",
    "parametrization",
    "weight_decay",
]
RUN_KEYS = [*GROUP_KEYS, "lr", "seed"]
COLUMNS = [
    *RUN_KEYS,
    "round",
    "epoch",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "diverged",
    "diverged_epoch",
]


def _run_columns(
    hidden: Sequence[int],
    optimizer: str,
    lr_rule: str,
    parametrization: str,
    weight_decay: float,
    seeds: Sequence[int],
    lrs: Sequence[float],
    s: np.ndarray,
    lr_i: np.ndarray,
    e: np.ndarray,
    start_epoch: int,
    round_: int,
) -> dict[str, Any]:
    """The :data:`RUN_KEYS`, ``round`` and ``epoch`` columns of long-format rows whose seed,
    lr and epoch indices are ``s``, ``lr_i`` and ``e`` (flat)."""
    return {
        "width": hidden[0],
        "depth": len(hidden),
        "hidden": "-".join(map(str, hidden)),
        "optimizer": optimizer,
        "lr_rule": lr_rule,
        "parametrization": parametrization,
        "weight_decay": float(weight_decay),
        "lr": np.asarray(lrs, np.float64)[lr_i],
        "seed": np.asarray(seeds, np.int64)[s],
        "round": round_,
        "epoch": e + start_epoch + 1,
    }


def chunk_frame(
    hidden: Sequence[int],
    optimizer: str,
    lr_rule: str,
    parametrization: str,
    seeds: Sequence[int],
    lrs: Sequence[float],
    metrics: dict[str, np.ndarray],
    diverged_epoch: np.ndarray,
    start_epoch: int = 0,
    round_: int = 0,
    weight_decay: float = 0.0,
) -> pd.DataFrame:
    """Long-format rows of one chunk; ``metrics[k]`` has shape ``(epochs, S, L)``.

    ``diverged_epoch`` is ``(S, L)``, 0-based, -1 for runs that never diverged.
    """
    n_e, n_s, n_l = metrics["train_loss"].shape
    e, s, lr_i = np.meshgrid(np.arange(n_e), np.arange(n_s), np.arange(n_l), indexing="ij")
    e, s, lr_i = e.ravel(), s.ravel(), lr_i.ravel()
    epoch = e + start_epoch + 1
    div = np.asarray(diverged_epoch)[s, lr_i]
    div_1 = np.where(div >= 0, div + 1, 0)
    keys = (hidden, optimizer, lr_rule, parametrization, weight_decay, seeds, lrs)
    frame = pd.DataFrame(
        {
            **_run_columns(*keys, s, lr_i, e, start_epoch, round_),
            "train_loss": metrics["train_loss"].ravel().astype(np.float32),
            "test_loss": metrics["test_loss"].ravel().astype(np.float32),
            "test_accuracy": metrics["test_accuracy"].ravel().astype(np.float32),
            "diverged": (div >= 0) & (epoch >= div_1),
            "diverged_epoch": pd.array(np.where(div >= 0, div_1, None), dtype="Int64"),
        }
    )
    return frame[COLUMNS]


RATE_STATS = ("min", "p05", "median", "p95", "max")
"""The columns of ``rates.csv``: quantiles 0, 0.05, 0.5, 0.95 and 1 of a layer's rates."""
RATE_COLUMNS = [*RUN_KEYS, "round", "epoch", "layer", *RATE_STATS]

DYNAMICS_COLUMNS = [*RUN_KEYS, "round", "epoch", "layer", "quantity", "value"]
"""The columns of ``dynamics.csv`` (tidy; ``quantity`` is ``update_ratio`` or ``output_rms``)."""

RUN_TABLES = ("results.csv", "rates.csv", "dynamics.csv")
"""The per-run, per-epoch tables of a sweep directory: concatenated by ``merge``, rebuilt from
finished chunks and checkpoints by ``--resume``."""
METRIC_TABLES = {
    "train_loss": "results.csv",
    "test_loss": "results.csv",
    "test_accuracy": "results.csv",
    "rates": "rates.csv",
    "dynamics": "dynamics.csv",
}
"""The table of :data:`RUN_TABLES` each per-epoch metric (a field of
:class:`jaxlr.engine.EpochMetrics`) is written to; a test checks that every field has one."""


def rates_frame(
    hidden: Sequence[int],
    optimizer: str,
    lr_rule: str,
    parametrization: str,
    seeds: Sequence[int],
    lrs: Sequence[float],
    rates: np.ndarray,
    start_epoch: int = 0,
    round_: int = 0,
    weight_decay: float = 0.0,
) -> pd.DataFrame:
    """Long-format ``rates.csv`` rows of one chunk: ``rates`` has shape ``(E, S, L, layers, 5)``
    (the :data:`RATE_STATS` of each layer's effective rates; NaN once a run diverged)."""
    rates = np.asarray(rates)
    n_e, n_s, n_l, n_layers, _ = rates.shape
    e, s, lr_i, layer = np.meshgrid(
        np.arange(n_e), np.arange(n_s), np.arange(n_l), np.arange(n_layers), indexing="ij"
    )
    keys = (hidden, optimizer, lr_rule, parametrization, weight_decay, seeds, lrs)
    idx = (s.ravel(), lr_i.ravel(), e.ravel())
    frame = pd.DataFrame(
        {
            **_run_columns(*keys, *idx, start_epoch, round_),
            "layer": [f"Dense_{k}" for k in layer.ravel()],
            **{k: rates[..., j].ravel().astype(np.float32) for j, k in enumerate(RATE_STATS)},
        }
    )
    return frame[RATE_COLUMNS]


def dynamics_frame(
    hidden: Sequence[int],
    optimizer: str,
    lr_rule: str,
    parametrization: str,
    seeds: Sequence[int],
    lrs: Sequence[float],
    dynamics: np.ndarray,
    layers: Sequence[str],
    start_epoch: int = 0,
    round_: int = 0,
    weight_decay: float = 0.0,
) -> pd.DataFrame:
    """Tidy ``dynamics.csv`` rows of one chunk: ``dynamics`` has shape ``(E, S, L, layers, 2)``
    (:func:`jaxlr.dynamics.layer_dynamics`; NaN once a run diverged), ``layers`` its names."""
    from jaxlr.dynamics import DYNAMICS

    d = np.asarray(dynamics)
    n_e, n_s, n_l, n_layers, n_q = d.shape
    e, s, lr_i, layer, q = np.meshgrid(
        np.arange(n_e), np.arange(n_s), np.arange(n_l), np.arange(n_layers), np.arange(n_q),
        indexing="ij",
    )  # fmt: skip
    keys = (hidden, optimizer, lr_rule, parametrization, weight_decay, seeds, lrs)
    idx = (s.ravel(), lr_i.ravel(), e.ravel())
    frame = pd.DataFrame(
        {
            **_run_columns(*keys, *idx, start_epoch, round_),
            "layer": np.asarray(layers)[layer.ravel()],
            "quantity": np.asarray(DYNAMICS)[q.ravel()],
            "value": d.ravel().astype(np.float32),
        }
    )
    return frame[DYNAMICS_COLUMNS]


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Reads a ``results.csv`` back with the dtypes :func:`chunk_frame` produces."""
    f32 = {k: np.float32 for k in ("train_loss", "test_loss", "test_accuracy")}
    dtypes = {"hidden": str, "diverged_epoch": "Int64", "weight_decay": np.float64, **f32}
    df = pd.read_csv(path, dtype=dtypes)
    df["diverged"] = df["diverged"].astype(bool)
    if "round" not in df:  # written before refinement rounds existed
        df["round"] = 0
    if "weight_decay" not in df:  # written before weight decay was an axis
        df["weight_decay"] = 0.0
    return df[COLUMNS]


def sort_results(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical row order (independent of chunking and sharding)."""
    keys = [*GROUP_KEYS[1:], "lr", "seed", "epoch"]
    df = df.copy()
    df["_w"] = df["hidden"].map(lambda h: tuple(int(x) for x in str(h).split("-")))
    df = df.sort_values(["_w", *keys], kind="stable").drop(columns="_w")
    return df.reset_index(drop=True)


def final_epoch(df: pd.DataFrame) -> pd.DataFrame:
    """The last epoch's row of every run."""
    return df[df["epoch"] == df["epoch"].max()]


def summarize(df: pd.DataFrame, select: str = "test_loss") -> pd.DataFrame:
    """Per (architecture, optimizer): the best lr by the final ``select`` loss (``test_loss`` or
    ``train_loss``, mean over seeds) and the lowest diverging lr."""
    from jaxlr import stats

    if select not in ("test_loss", "train_loss"):
        raise ValueError(f"select must be test_loss or train_loss, got {select!r}")
    last = final_epoch(df)
    rows = []
    for key, g in last.groupby(GROUP_KEYS, sort=False):
        per_lr = g.groupby("lr").agg(
            loss_mean=(select, "mean"),
            test_mean=("test_loss", "mean"),
            test_std=("test_loss", "std"),
            acc_mean=("test_accuracy", "mean"),
            any_div=("diverged", "any"),
            n_seeds=("seed", "nunique"),
        )
        eligible = ~per_lr["any_div"] & np.isfinite(per_lr["loss_mean"])
        ok = per_lr[eligible]
        div_lrs = per_lr.index[per_lr["any_div"]]
        row = dict(zip(GROUP_KEYS, key, strict=True))
        if len(ok):  # the tested lr of lowest seed-mean loss (stats.argmin, the one definition)
            best = stats.argmin(per_lr.index.to_numpy(), per_lr["loss_mean"], eligible)
            row.update(
                best_lr=float(best),
                select=select,
                best_loss=float(ok.loc[best, "loss_mean"]),
                best_test_loss=float(ok.loc[best, "test_mean"]),
                best_test_loss_std=float(np.nan_to_num(ok.loc[best, "test_std"])),
                best_test_accuracy=float(ok.loc[best, "acc_mean"]),
            )
        else:
            row.update(
                best_lr=np.nan,
                select=select,
                best_loss=np.nan,
                best_test_loss=np.nan,
                best_test_loss_std=np.nan,
                best_test_accuracy=np.nan,
            )
        row.update(
            min_diverged_lr=float(div_lrs.min()) if len(div_lrs) else np.nan,
            n_lrs=len(per_lr),
            n_seeds=int(per_lr["n_seeds"].max()),
            n_diverged_runs=int(g["diverged"].sum()),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Calls ``write(tmp_path)`` then renames onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Atomically writes ``df`` as CSV; 9 significant digits round-trip float32 exactly."""
    atomic_write(path, lambda p: df.to_csv(p, index=False, float_format="%.9g"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes ``obj`` as indented JSON."""
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that affect results."""
    import importlib.metadata as md

    out = {}
    for name in ("jaxlr", "jax", "jaxlib", "flax", "optax", "numpy", "pandas"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a plain-text table for the terminal."""
    if summary.empty:
        return "(no runs)"
    cols = {
        "hidden": "hidden",
        "optimizer": "opt",
        "best_lr": "best lr",
        "best_test_loss": "test loss",
        "best_test_loss_std": "± std",
        "best_test_accuracy": "test acc",
        "min_diverged_lr": "lowest diverged lr",
        "n_seeds": "seeds",
    }
    extra = [
        c
        for c in ("horizon", "lr_rule", "parametrization", "weight_decay")
        if c in summary and summary[c].nunique() > 1
    ]
    if "select" in summary and (summary["select"] == "train_loss").any():
        cols = {
            **dict(list(cols.items())[:3]),
            "best_loss": "train loss",
            **dict(list(cols.items())[3:]),
        }
    t = summary[[*extra, *cols]].rename(columns=cols).copy()
    fmt = {
        "best lr": lambda v: "-" if not np.isfinite(v) else f"{v:.4g}",
        "test loss": lambda v: "-" if not np.isfinite(v) else f"{v:.4f}",
        "train loss": lambda v: "-" if not np.isfinite(v) else f"{v:.4f}",
        "± std": lambda v: "-" if not np.isfinite(v) else f"{v:.4f}",
        "test acc": lambda v: "-" if not np.isfinite(v) else f"{v:.3f}",
        "lowest diverged lr": lambda v: "none" if not np.isfinite(v) else f"{v:.4g}",
    }
    for col, f in fmt.items():
        if col in t:
            t[col] = [f(float(v)) for v in t[col]]
    return t.to_string(index=False)


def describe_shift(summary: pd.DataFrame) -> str:
    """One line per optimizer/rule group: how the best lr moves from the narrowest to the
    widest architecture, as ``log2(lr*_widest / lr*_narrowest)``."""
    lines = []
    if "horizon" in summary:  # --epochs 10,20,40: the shift at the longest horizon
        summary = summary[summary["horizon"] == summary["horizon"].max()]
    keys = [k for k in ("optimizer", "lr_rule", "parametrization", "weight_decay") if k in summary]
    for key, g in summary.groupby(keys, sort=False):
        g = g[np.isfinite(g["best_lr"])].sort_values("width")
        if len(g) < 2:
            continue
        lo, hi = g.iloc[0], g.iloc[-1]
        shift = float(np.log2(hi["best_lr"] / lo["best_lr"]))
        name = " ".join(
            (f"wd {k:g}" if isinstance(k, float) else str(k))
            for k in key
            if k not in ("none", "sp", 0.0) or k is key[0]
        )
        lines.append(
            f"{name}: best lr {lo['best_lr']:.4g} at hidden {lo['hidden']} -> "
            f"{hi['best_lr']:.4g} at hidden {hi['hidden']} (log2 shift {shift:+.1f})"
        )
    return "\n".join(lines)
