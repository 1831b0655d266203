"""The output directory of a sweep: what may be written where, checked before anything is.

A sweep refuses (:class:`jaxlr.config.ConfigError`, one line) an ``--out`` that is a file,
cannot be written, holds files that are not a sweep's, or holds another sweep's (or another
shard's, or its own finished) results; ``--resume`` refuses a directory whose recorded config
differs from the command line's. Nothing here imports JAX or pandas, so the command line answers
at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jaxlr.config import ConfigError, SweepConfig, config_diff

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
