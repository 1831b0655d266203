"""``python -m jaxlr.sweep merge``: one sweep from the output directories of its grid shards.

Each shard (``--shard i/n``) writes its own directory; merging checks that they are shards of one
sweep (same config hash, each shard once, no run twice), concatenates their results in the
canonical order and writes the merged tables, record and plots.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

from jaxlr import results as res
from jaxlr.config import ConfigError, SweepConfig, config_diff
from jaxlr.outputs import SweepOutcome, write_outputs


def _read_shard(d: Path) -> tuple[dict, pd.DataFrame]:
    try:
        record = json.loads((d / "config.json").read_text())
        return record, res.read_results(d / "results.csv")
    except FileNotFoundError as e:
        raise ConfigError(f"merge: {d} is not a finished sweep ({e.filename} missing)") from None
    except ValueError as e:
        raise ConfigError(f"merge: {d} holds an unreadable record ({e})") from None


def _check_same_sweep(dirs: list[Path], records: list[dict]) -> None:
    configs = [SweepConfig.from_dict(r["config"]) for r in records]
    for d, c in zip(dirs[1:], configs[1:], strict=True):
        if c.grid_hash() != configs[0].grid_hash():
            diff = "; ".join(config_diff(configs[0], c))
            raise ConfigError(
                f"merge: {d} is a shard of a different sweep than {dirs[0]} ({diff}); "
                "only --shard may differ"
            )
    for d, r in zip(dirs[1:], records[1:], strict=True):
        ours, theirs = records[0].get("numerics", {}), r.get("numerics", {})
        diff = [
            f"{k} {ours.get(k)!r} vs {theirs.get(k)!r}" for k in ours if ours[k] != theirs.get(k)
        ]
        if diff:
            raise ConfigError(
                f"merge: {d} was computed differently from {dirs[0]} ({'; '.join(diff)}); "
                "its float32 results would not match: rerun it where the others ran"
            )
    shards = [c.shard for c in configs]
    if len(set(shards)) != len(shards):
        raise ConfigError(f"merge: the same shard appears twice among {list(map(str, dirs))}")
    n = shards[0][1]
    missing = sorted(set(range(n)) - {i for i, _ in shards})
    if missing:
        print(
            f"jaxlr.sweep: merge: shards {missing} of {n} are missing; the merged table is partial",
            file=sys.stderr,
        )


def merge_runs(dirs: list[str | os.PathLike], out: str | os.PathLike) -> SweepOutcome:
    """Merges the output directories of grid shards (``--shard i/n``) into ``out``.

    Refuses directories from different configs (other than ``--shard``/``--out``), two copies of
    one shard, and overlapping runs; warns when shards are missing.
    """
    if not dirs:
        raise ConfigError("merge needs at least one sweep directory")
    paths = [Path(d) for d in dirs]
    records, frames = zip(*(_read_shard(d) for d in paths), strict=True)
    _check_same_sweep(paths, list(records))
    df = res.sort_results(pd.concat(frames))
    if df.duplicated([*res.RUN_KEYS, "epoch"]).any():
        raise ConfigError("merge: the directories hold overlapping runs")
    cfg = SweepConfig.from_dict(records[0]["config"]).replace(shard=(0, 1), out=str(out))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    rate_files = [d / "rates.csv" for d in paths if (d / "rates.csv").exists()]
    rates = (
        res.sort_results(pd.concat(pd.read_csv(f, dtype={"hidden": str}) for f in rate_files))
        if rate_files
        else None
    )
    return write_outputs(out, df, cfg, record, rates)
