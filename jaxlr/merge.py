"""``python -m jaxlr.sweep merge``: one sweep from the output directories of its grid shards.

Each shard (``--shard i/n``) writes its own directory; merging checks that they are shards of one
sweep (same config hash, each shard once, no run twice), concatenates their results in the
canonical order and writes the merged tables, record and plots.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig, config_diff
from jaxlr.outputs import SweepOutcome, probe_write, write_outputs


def _read_shard(d: Path) -> tuple[dict, pd.DataFrame]:
    try:
        record = json.loads((d / "config.json").read_text())
        return record, res.read_results(d / "results.csv")
    except FileNotFoundError as e:
        raise ConfigError(f"{d} is not a finished sweep ({e.filename} missing)") from None
    except ValueError as e:
        raise ConfigError(f"{d} holds an unreadable record ({e})") from None


def _stderr(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _check_same_sweep(
    dirs: list[Path], records: list[dict], allow_missing: bool, warn: Callable[[str], None]
) -> None:
    configs = [SweepConfig.from_dict(r["config"]) for r in records]
    for d, c in zip(dirs[1:], configs[1:], strict=True):
        if c.grid_hash() != configs[0].grid_hash():
            diff = "; ".join(config_diff(configs[0], c))
            raise ConfigError(
                f"{d} is a shard of a different sweep than {dirs[0]} ({diff}); "
                "only --shard may differ"
            )
    for d, r in zip(dirs[1:], records[1:], strict=True):
        ours, theirs = records[0].get("numerics", {}), r.get("numerics", {})
        diff = [
            f"{k} {ours.get(k)!r} vs {theirs.get(k)!r}" for k in ours if ours[k] != theirs.get(k)
        ]
        if diff:
            raise ConfigError(
                f"{d} was computed differently from {dirs[0]} ({'; '.join(diff)}); "
                "its float32 results would not match: rerun it where the others ran"
            )
    shards = [c.shard for c in configs]
    if len(set(shards)) != len(shards):
        raise ConfigError(f"the same shard appears twice among {list(map(str, dirs))}")
    n = shards[0][1]
    missing = sorted(set(range(n)) - {i for i, _ in shards})
    if missing and not allow_missing:
        raise ConfigError(
            f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} of the sweep are missing; give "
            "every shard's directory, or add --allow-missing for a partial merged table"
        )
    if missing:
        warn(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing; the table is partial")


def _check_out(out: Path, dirs: list[Path], grid_hash: str) -> None:
    """Refuses an ``--out`` that is a file, cannot be written, or holds anything but a merge of
    the same shards (which the new merge replaces with the same tables)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory; choose another --out")
    if out.resolve() in {d.resolve() for d in dirs}:
        raise ConfigError(f"--out {out} is one of the shards being merged; choose a new --out")
    if out.exists() and any(out.iterdir()):
        try:
            record = json.loads((out / "config.json").read_text())
            same = record.get("grid_hash") == grid_hash and sorted(
                record.get("merged_from", [])
            ) == sorted(str(d) for d in dirs)
        except (OSError, ValueError, AttributeError):
            same = False
        if not same:
            raise ConfigError(
                f"--out {out} already holds other files or another sweep; merge into a new or "
                "empty --out"
            )
    probe_write(out, "--out")


def merge_runs(
    dirs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    allow_missing: bool = False,
    warn: Callable[[str], None] | None = None,
) -> SweepOutcome:
    """Merges the output directories of grid shards (``--shard i/n``) into ``out``.

    Refuses (:class:`ConfigError`) directories from different configs (other than
    ``--shard``/``--out``), two copies of one shard, overlapping runs, missing shards (unless
    ``allow_missing``; then ``warn`` is told), and an ``out`` that holds anything but an earlier
    merge of the same shards.
    """
    if not dirs:
        raise ConfigError("merge needs at least one sweep directory")
    paths = [Path(d) for d in dirs]
    records, frames = zip(*(_read_shard(d) for d in paths), strict=True)
    _check_same_sweep(paths, list(records), allow_missing, warn or _stderr)
    df = res.sort_results(pd.concat(frames))
    if df.duplicated([*res.RUN_KEYS, "epoch"]).any():
        raise ConfigError("the directories hold overlapping runs")
    cfg = SweepConfig.from_dict(records[0]["config"]).replace(shard=(0, 1), out=str(out))
    out = Path(out)
    _check_out(out, paths, cfg.grid_hash())
    record = {
        **records[0],
        "config": cfg.to_dict(),
        "grid_hash": cfg.grid_hash(),
        "plan": [p for r in records for p in r.get("plan", [])],
        "shards": [
            {"dir": str(d), "elapsed_s": r.get("elapsed_s")}
            for d, r in zip(dirs, records, strict=True)
        ],
        "merged_from": [str(d) for d in dirs],
        "versions": res.library_versions(),
    }
    record.pop("elapsed_s", None)
    tables = {t: _concat(paths, t) for t in res.RUN_TABLES if t != "results.csv"}
    return write_outputs(out, df, cfg, record, tables["rates.csv"], tables["dynamics.csv"])


def _concat(dirs: list[Path], table: str) -> pd.DataFrame | None:
    """The shards' per-run ``table`` (one of :data:`jaxlr.results.RUN_TABLES`), concatenated in
    the canonical order; ``None`` if no shard has it."""
    files = [d / table for d in dirs if (d / table).exists()]
    if not files:
        return None
    return res.sort_results(pd.concat(pd.read_csv(f, dtype={"hidden": str}) for f in files))
