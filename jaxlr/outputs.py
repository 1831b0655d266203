"""What a sweep leaves in its output directory, and the record of how it was made.

``config.json`` (:func:`config_record`) holds the config, its hash, where the data came from, the
plan, the library versions and the devices; the tables (``results.csv``, ``summary.csv``, and
``width_exponent.csv`` and ``transfer.csv`` for sweeps of 3 widths or more) and plots are
written by :func:`write_outputs` when a sweep (or a merge) finishes. Every file is written
atomically, and a plot that fails never costs the tables, which are written first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig, config_diff
from jaxlr.plan import Chunk


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


def outcome_of(
    df: pd.DataFrame, cfg: SweepConfig, rates: pd.DataFrame | None = None
) -> SweepOutcome:
    """The summary and the width exponents of a results table (nothing written)."""
    from jaxlr import exponent, stats

    summary = res.summarize(df, select=cfg.select)
    if df.empty:
        return SweepOutcome(df, summary, rates=rates)
    kw = dict(estimator=cfg.lr_star, chance_loss=stats.chance_level(cfg.num_classes))
    table = exponent.width_exponent(df, select=cfg.select, **kw)
    text = exponent.format_exponent(table)
    transfer = None
    if not table.empty:  # the transfer line ("muP: ... costs 0.4% [0.1, 0.9]") under α's
        transfer = exponent.transfer_table(df, cfg.select, **kw)
        text += "\n" + stats.format_transfer(transfer)
    return SweepOutcome(df, summary, [], text, table, rates, transfer)


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
) -> SweepOutcome:
    """Writes the tables, the record and the plots of a finished sweep into ``out``."""
    outcome = outcome_of(df, cfg, rates)
    res.write_csv(out / "results.csv", df)
    res.write_csv(out / "summary.csv", outcome.summary)
    res.write_json(out / "config.json", record)
    files = outcome.files = ["results.csv", "summary.csv", "config.json"]
    if rates is not None and len(rates):
        res.write_csv(out / "rates.csv", rates)
        files.append("rates.csv")
    if df.empty:
        return outcome
    from jaxlr import exponent, plots, stats

    title = title_of(cfg, record["dataset"]["name"])
    kw = dict(estimator=cfg.lr_star, chance_loss=stats.chance_level(cfg.num_classes))
    exponents = outcome.exponents
    if not exponents.empty:  # a sweep of at least 3 widths
        res.write_csv(out / "width_exponent.csv", exponents)
        res.write_csv(out / "transfer.csv", outcome.transfer)
        files += ["width_exponent.csv", "transfer.csv"]
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
    ):
        try:
            plot(df, out / f"{name}.png", title=title, select=cfg.select)
            files.append(f"{name}.png")
        except Exception as e:  # a plot must never cost the results, which are on disk
            warnings.warn(f"could not draw {name}.png: {e}", stacklevel=2)
    return outcome


# ---------------------------------------------------------------------- the output directory
RESULT_ENTRIES = ("results.csv", "chunks", "checkpoints")
"""What in a sweep directory holds computed results (a rerun from scratch would replace them)."""


def load_config(out: str | os.PathLike) -> SweepConfig:
    """The config recorded in a sweep directory's ``config.json``."""
    record = Path(out) / "config.json"
    try:
        return SweepConfig.from_dict(json.loads(record.read_text())["config"])
    except FileNotFoundError:
        raise ConfigError(f"{record} not found; is {out} a sweep directory?") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the sweep config {record}: {e}") from None


def _recorded(out: Path, flag: str) -> SweepConfig | None:
    """The config recorded in ``out``, ``None`` if it holds none; refuses a foreign record."""
    record = out / "config.json"
    if not record.exists():
        return None
    try:
        return SweepConfig.from_dict(json.loads(record.read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{flag} {out} holds a config.json that is not a jaxlr sweep record; choose a new "
            f"{flag}"
        ) from None


def _has_results(out: Path) -> bool:
    return any((out / name).exists() and _entries(out / name) for name in RESULT_ENTRIES)


def _entries(path: Path) -> list[str]:
    """The entries of a directory (a file counts as one), ignoring write probes."""
    if not path.is_dir():
        return [path.name]
    return [p.name for p in path.iterdir() if not p.name.startswith(".write-test-")]


def check_writable(cfg: SweepConfig) -> None:
    """Refuses an output path that cannot be written, is a file, holds files that are not a
    sweep's, or holds the results of another sweep or of another shard of this one (writing
    there would replace them), or this sweep's own results (``--resume`` continues them).
    Creates the directory."""
    if cfg.out is None:
        return
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out")
    old = _recorded(out, "--out") if out.exists() else None
    if old is None and out.exists() and (entries := _entries(out)):
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise ConfigError(
            f"--out {out} is a directory holding other files ({shown}) and no sweep; choose a "
            "new or empty --out"
        )
    if old is not None:
        if old.grid_hash() != cfg.grid_hash():
            diff = "; ".join(config_diff(old, cfg))
            raise ConfigError(
                f"--out {out} already holds the results of a different sweep ({diff}); choose "
                "a new --out, or add --resume with that sweep's flags to continue it"
            )
        if old.shard != cfg.shard:
            raise ConfigError(
                f"--out {out} holds shard {_shard(old)} of this sweep, not {_shard(cfg)}; give "
                "each shard its own --out (merge them with `merge`)"
            )
        if _has_results(out):
            raise ConfigError(
                f"--out {out} already holds results of this sweep; add --resume to continue "
                "it (finished chunks are kept), or choose a new --out"
            )
    probe_write(out, "--out")


def _shard(c: SweepConfig) -> str:
    return f"{c.shard[0]}/{c.shard[1]}"


def probe_write(out: Path, flag: str) -> None:
    """Creates ``out`` (and its parents) and checks a file can be written there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(
            f"{flag} {out} is not writable ({reason}); choose another {flag}"
        ) from None


def check_resumable(cfg: SweepConfig) -> None:
    """Refuses to resume into a directory that holds a different sweep, another shard of this
    one, or none, naming the options that differ."""
    if cfg.out is None:
        raise ConfigError("--resume needs --out DIR, the directory of the sweep to continue")
    out = Path(cfg.out)
    if not (out / "config.json").exists():
        raise ConfigError(f"--resume: {out / 'config.json'} not found; is {out} a sweep directory?")
    try:
        old = _recorded(out, "--out")
    except ConfigError:
        raise ConfigError(f"--resume: {out / 'config.json'} is not a jaxlr sweep record") from None
    assert old is not None
    diff = config_diff(old, cfg)
    if old.shard != cfg.shard:
        diff.append(f"--shard {_shard(old)} vs {_shard(cfg)}")
    if diff:
        raise ConfigError(
            f"--resume: {out} holds a sweep with other settings (there vs here: "
            f"{'; '.join(diff)}); rerun with that sweep's flags, or `--resume --out {out}` alone"
        )
    probe_write(out, "--out")


@contextlib.contextmanager
def removed_if_refused(out: Path | None) -> Iterator[None]:
    """Removes the output directories that the checks created when the sweep is refused before
    anything is written (a bad flag leaves no empty directory behind)."""
    created = []
    if out is not None:
        for d in (out, *out.parents):
            if d.exists():
                break
            created.append(d)
    try:
        yield
    except BaseException:
        for d in created:  # deepest first; only while empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
