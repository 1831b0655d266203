"""What a sweep leaves in its output directory, and the record of how it was made.

``config.json`` (:func:`config_record`) holds the config, its hash, where the data came from, the
plan, the library versions and the devices; the tables (``results.csv``, ``summary.csv``, and
``width_exponent.csv`` and ``transfer.csv`` for sweeps of 3 widths or more) and plots are
written by :func:`write_outputs` when a sweep (or a merge) finishes. Every file is written
atomically, and a plot that fails never costs the tables, which are written first.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from jaxlr import families
from jaxlr import results as res
from jaxlr.config import SweepConfig
from jaxlr.outdir import RESULT_ENTRIES as RESULT_ENTRIES  # re-exported
from jaxlr.outdir import check_resumable as check_resumable
from jaxlr.outdir import check_writable as check_writable
from jaxlr.outdir import load_config as load_config
from jaxlr.outdir import probe_write as probe_write
from jaxlr.outdir import removed_if_refused as removed_if_refused
from jaxlr.plan import Chunk
from jaxlr.results import describe_shift, format_summary


@dataclasses.dataclass
class SweepOutcome:
    """A finished sweep: its results table, its summary, its width exponents and transfer
    regret (empty with fewer than 3 widths) and the files written."""

    results: pd.DataFrame
    summary: pd.DataFrame
    files: list[str] = dataclasses.field(default_factory=list)
    exponent_text: str = ""
    exponents: pd.DataFrame | None = None
    rates: pd.DataFrame | None = None  # rates.csv: per-layer spread of per-neuron/-parameter rates
    transfer: pd.DataFrame | None = None  # transfer.csv: the regret of transferring lr*
    dynamics: pd.DataFrame | None = None  # dynamics.csv: update sizes and output scales
    depth_exponents: pd.DataFrame | None = None  # depth_exponent.csv: lr* against --depths


def outcome_of(
    df: pd.DataFrame, cfg: SweepConfig, rates: pd.DataFrame | None = None
) -> SweepOutcome:
    """The summary and the width exponents of a results table (nothing written); with
    ``cfg.horizons``, of each horizon's epochs, in tables with a leading ``horizon`` column."""
    if cfg.horizons and not df.empty:
        return _per_horizon(df, cfg, rates)
    from jaxlr import exponent, stats

    summary = res.summarize(df, select=cfg.select)
    if df.empty:
        return SweepOutcome(df, summary, rates=rates)
    kw = dict(estimator=cfg.lr_star, chance_loss=chance_of(cfg))
    table = exponent.width_exponent(df, select=cfg.select, **kw)
    text = exponent.format_exponent(table)
    transfer = None
    if not table.empty:  # the transfer line ("muP: ... costs 0.4% [0.1, 0.9]") under α's
        transfer = exponent.transfer_table(df, cfg.select, **kw)
        text += "\n" + stats.format_transfer(transfer)
    depths = None
    if df["depth"].nunique() >= exponent.MIN_WIDTHS:  # --depths with 3 depths or more
        depths = exponent.depth_exponent(df, select=cfg.select, **kw)
        text = "\n".join(t for t in (text, exponent.format_depth_exponent(depths)) if t)
    outcome = SweepOutcome(df, summary, [], text, table, rates, transfer)
    outcome.depth_exponents = depths
    return outcome


def _per_horizon(df: pd.DataFrame, cfg: SweepConfig, rates: pd.DataFrame | None) -> SweepOutcome:
    """:func:`outcome_of` of the epochs up to each horizon (a constant schedule's runs are the
    same runs, read earlier), stacked with a leading ``horizon`` column."""
    parts = []
    for h in cfg.horizons:
        one = outcome_of(df[df["epoch"] <= h], dataclasses.replace(cfg, horizons=()), rates)
        parts.append((h, one))

    def stack(name: str) -> pd.DataFrame | None:
        tables = [getattr(o, name) for _, o in parts]
        if all(t is None for t in tables):
            return None
        return pd.concat(
            [
                t.assign(horizon=h)[["horizon", *t.columns]]
                for (h, _), t in zip(parts, tables, strict=True)
                if t is not None
            ],
            ignore_index=True,
        )

    text = "\n".join(
        f"After {h} epoch{'s' if h > 1 else ''}:\n{o.exponent_text}"
        for h, o in parts
        if o.exponent_text.strip()
    )
    exponents = stack("exponents")
    outcome = SweepOutcome(df, stack("summary"), [], text, exponents, rates, stack("transfer"))
    outcome.depth_exponents = stack("depth_exponents")
    return outcome


def chance_of(cfg: SweepConfig) -> float:
    """The loss of a uniform prediction, above which a run has learned nothing: ln(classes), or
    ln 256 for gpt's bytes."""
    from jaxlr import stats

    text = families.family_of(cfg).data == "text"
    return stats.chance_level(256 if text else cfg.num_classes)


def dataset_record(dataset: Any, batch_size: int) -> dict[str, Any]:
    """What ``config.json`` says about the data (sizes, normalization, where it came from)."""
    return {
        "name": dataset.name,
        "origin": getattr(dataset, "origin", None),
        "n_train": dataset.n_train,
        "n_test": dataset.n_test,
        "in_features": dataset.in_features,
        "num_classes": dataset.num_classes,
        "normalization": {"mean": float(dataset.mean), "std": float(dataset.std)},
        "steps_per_epoch": dataset.n_train // batch_size,
        "dropped_per_epoch": dataset.n_train % batch_size,
        **({"corpus": dataset.record} if hasattr(dataset, "record") else {}),
    }


def plan_record(
    chunks: list[Chunk], programs: list[tuple[int, ...]] | None = None
) -> list[dict[str, Any]]:
    """The chunks of the plan, in order, as JSON, each with the index of its program."""
    program_of = {i: k for k, members in enumerate(programs or []) for i in members}
    return [
        {
            "hidden": list(c.bucket.hidden),
            "optimizer": c.bucket.optimizer,
            "parametrization": c.bucket.parametrization,
            "seeds": list(c.seeds),
            "lrs": list(c.lrs),
            "round": c.round,
            "autotune": c.autotune,
            "program": program_of.get(i, i),
        }
        for i, c in enumerate(chunks)
    ]


def programs_record(chunks: list[Chunk], programs: list[tuple[int, ...]]) -> list[dict[str, Any]]:
    """The compiled programs, in run order: the chunks each trains (indices into the plan), with
    their hidden widths, optimizers (and parametrization, when not SP) and lane counts."""
    out = []
    for members in programs:
        cs = [chunks[i] for i in members]
        out.append(
            {
                "chunks": list(members),
                "architectures": [
                    "-".join(map(str, c.bucket.hidden))
                    + f" {c.bucket.optimizer}"
                    + ("" if c.bucket.parametrization == "sp" else f" {c.bucket.parametrization}")
                    for c in cs
                ],
                "lanes": [c.n_lanes for c in cs],
                "round": cs[0].round,
                "autotune": cs[0].autotune,
            }
        )
    return out


def numerics_record(n_devices: int) -> dict[str, Any]:
    """What, besides the config, decides a sweep's float32 results bit for bit: the software,
    the device kind, how many devices share each chunk's lanes, and the XLA flags."""
    import jax

    versions = res.library_versions()
    return {
        "jax": versions["jax"],
        "jaxlib": versions["jaxlib"],
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "devices_per_chunk": n_devices,
        "processes": jax.process_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def config_record(
    cfg: SweepConfig,
    dataset: Any,
    chunks: list[Chunk],
    n_devices: int = 1,
    programs: list[tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` record of a sweep (``elapsed_s`` is added when it finishes)."""
    import jax

    if programs is None:
        programs = [(i,) for i in range(len(chunks))]
    return {
        "config": cfg.to_dict(),
        "grid_hash": cfg.grid_hash(),
        "dataset": dataset_record(dataset, cfg.batch_size),
        "plan": plan_record(chunks, programs),
        "programs": programs_record(chunks, programs),
        "numerics": numerics_record(n_devices),
        "versions": res.library_versions(),
        "devices": [str(d) for d in jax.devices()],
    }


def title_of(cfg: SweepConfig, dataset_name: str) -> str:
    """The plots' title."""
    return f"{dataset_name}: {', '.join(cfg.optimizers)}, batch {cfg.batch_size}"


def _dynamics_plot(dynamics: pd.DataFrame, summary: pd.DataFrame) -> Any:
    """``dynamics.png`` with the plot functions' signature."""
    from jaxlr import plots

    return lambda df, path, title="", select="": plots.plot_dynamics(
        dynamics, summary, path, title=title
    )


def _rates_plot(rates: pd.DataFrame, summary: pd.DataFrame) -> Any:
    """``rates.png`` with the plot functions' signature."""
    from jaxlr import plots

    return lambda df, path, title="", select="": plots.plot_rates(rates, summary, path, title=title)


def write_outputs(
    out: Path,
    df: pd.DataFrame,
    cfg: SweepConfig,
    record: dict[str, Any],
    rates: pd.DataFrame | None = None,
    dynamics: pd.DataFrame | None = None,
) -> SweepOutcome:
    """Writes the tables, the record and the plots of a finished sweep into ``out``."""
    outcome = outcome_of(df, cfg, rates)
    outcome.dynamics = dynamics
    res.write_csv(out / "results.csv", df)
    res.write_csv(out / "summary.csv", outcome.summary)
    res.write_json(out / "config.json", record)
    files = outcome.files = ["results.csv", "summary.csv", "config.json"]
    if rates is not None and len(rates):
        res.write_csv(out / "rates.csv", rates)
        files.append("rates.csv")
    if dynamics is not None and len(dynamics):
        res.write_csv(out / "dynamics.csv", dynamics)
        files.append("dynamics.csv")
    if df.empty:
        return outcome
    from jaxlr import exponent, plots

    title = title_of(cfg, record["dataset"]["name"])
    kw = dict(estimator=cfg.lr_star, chance_loss=chance_of(cfg))
    exponents = outcome.exponents
    if not exponents.empty:  # a sweep of at least 3 widths
        res.write_csv(out / "width_exponent.csv", exponents)
        res.write_csv(out / "transfer.csv", outcome.transfer)
        files += ["width_exponent.csv", "transfer.csv"]
    if outcome.depth_exponents is not None and not outcome.depth_exponents.empty:
        res.write_csv(out / "depth_exponent.csv", outcome.depth_exponents)
        files.append("depth_exponent.csv")
    for name, plot in (
        ("loss_curves", plots.plot_loss_curves),
        ("lr_sensitivity", plots.plot_lr_sensitivity),
        *(
            [("width_exponent", lambda d, p, **a: exponent.plot_width_exponent(d, p, **a, **kw))]
            if len(exponents)
            else []
        ),
        *(
            [("rates", _rates_plot(rates, outcome.summary))]
            if rates is not None and len(rates)
            else []
        ),
        *(
            [("dynamics", _dynamics_plot(dynamics, outcome.summary))]
            if dynamics is not None and len(dynamics)
            else []
        ),
    ):
        try:
            plot(df, out / f"{name}.png", title=title, select=cfg.select)
            files.append(f"{name}.png")
        except Exception as e:  # a plot must never cost the results, which are on disk
            warnings.warn(f"could not draw {name}.png: {e}", stacklevel=2)
    return outcome


def _budget(cfg: SweepConfig) -> str:
    """``digits, 20 epochs`` or, for gpt, ``text, 200 steps of 16 x 64 bytes``."""
    if cfg.family == "gpt":
        return f"gpt on text, {cfg.steps} steps of {cfg.batch_size} x {cfg.context} bytes"
    return f"{cfg.dataset}, {cfg.epochs} epochs"


def _select_name(cfg: SweepConfig) -> str:
    """The selecting loss, as the report names it (gpt: the validation loss, in nats/byte)."""
    if cfg.family == "gpt" and cfg.select == "test_loss":
        return "validation loss (nats per byte; /ln 2 for bits per byte)"
    return cfg.select.replace("_", " ")


def report(cfg: SweepConfig, outcome: Any) -> str:
    """The terminal report of a finished sweep: summary, width shift, exponent, files."""
    extra = "".join(
        f", {k} {v}"
        for k, v in (("rule", cfg.lr_rule), ("parametrization", ",".join(cfg.parametrizations)))
        if v not in ("none", "sp")
    )
    lines = [
        f"\nBest learning rate per width ({_budget(cfg)}, "
        f"{len(cfg.seeds)} seed(s){extra}; final {_select_name(cfg)}, "
        "mean ± std over seeds):",
        format_summary(outcome.summary),
    ]
    shift = describe_shift(outcome.summary)
    if shift:
        lines += ["", "How width moves the best learning rate:", shift]
    if getattr(outcome, "exponent_text", ""):
        lines += ["", outcome.exponent_text]
    if cfg.out:
        lines += ["", f"wrote {cfg.out}/: {' '.join(outcome.files)}"]
    return "\n".join(lines)
