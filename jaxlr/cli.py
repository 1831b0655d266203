"""``python -m jaxlr.sweep``: argv -> :class:`SweepConfig` -> :func:`run` -> summary.

The flags are generated from :class:`SweepConfig`'s fields (one per field, with its help text and
default); the few flags that are not config fields (``--lr-grid``, ``--first-seed``,
``--preset``, ``--resume``, ``--yes``, ...) are declared in :func:`build_parser`. Invalid
arguments exit with status 2 and one line on stderr; nothing is trained.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import signal
import sys
import threading
import types
import typing
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from jaxlr.config import (
    GROUPS,
    ConfigError,
    SweepConfig,
    check_applies,
    flag_of,
)
from jaxlr.entry import Once

FASHION_WIDTH_LRS = (1.0, 0.5, 0.1, 0.01, 0.001, 0.0001, 0.00001)

_FASHION_WIDTH_SGD: dict[str, Any] = dict(
    dataset="fashion_mnist",
    widths=(64, 256, 1024),
    depth=2,
    lrs=FASHION_WIDTH_LRS,
    optimizers=("sgd",),
    batch_size=64,
    epochs=50,
    init="torch",
    seeds=(0, 1, 2),
)

PRESETS: dict[str, dict[str, Any]] = {
    # the Fashion-MNIST width experiment: 784-w-w-10, plain SGD, batch 64, 50 epochs, torch init
    "fashion-width-sgd": _FASHION_WIDTH_SGD,
    # the same grid on the embedded digits data (no download)
    "digits-width-sgd": {**_FASHION_WIDTH_SGD, "dataset": "digits"},
    # the width examples: 10-w-2 on 100 Gaussian points with random labels, full batch, Adam
    "random-labels-adam": dict(
        dataset="synthetic",
        n_train=100,
        n_test=100,
        features=10,
        num_classes=2,
        widths=(32, 256),
        depth=1,
        lrs=tuple(2.0**k for k in range(-12, 1)),
        optimizers=("adam",),
        batch_size=100,
        epochs=10,
        init="torch",
        seeds=(0, 1, 2),
    ),
    # a seconds-long smoke run
    "quick": dict(
        dataset="digits",
        widths=(16, 64),
        depth=2,
        lrs=(0.01, 0.1, 1.0),
        optimizers=("sgd",),
        epochs=2,
        seeds=(0,),
    ),
}

LONG_SWEEP_S = 3600.0  # a sweep estimated to take longer than this needs --yes

_EPILOG = """\
other commands:
  {prog} merge DIR... [--out OUT]   merge the output directories of grid shards (--shard i/n)

examples:
  {prog}                                   the default sweep on the embedded digits data
  {prog} --preset fashion-width-sgd --epochs 10   the Fashion-MNIST width grid
  {prog} --optimizer sgd,adam --lr-grid 1e-4:1:13 --select train_loss
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def prog_name() -> str:
    """How the user invoked the sweep: ``jaxlr-sweep`` or ``python -m jaxlr.sweep``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "jaxlr-sweep" if name.startswith("jaxlr-sweep") else "python -m jaxlr.sweep"


# -------------------------------------------------------------------- text -> value parsers
def _split(s: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; an empty item (``"16,,64"``, a trailing comma) is a typo."""
    items = [v.strip() for v in s.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty item in the list {s!r}; remove the extra comma")
    return items


def _parse_value(tp: Any, s: str) -> Any:
    """Parses one command-line string as a value of field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_value(inner, s)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return tuple(_parse_value(args[0], v) for v in _split(s))
    if origin is tuple:  # a fixed-length tuple, e.g. --betas B1,B2
        items = _split(s)
        if len(items) != len(args):
            raise argparse.ArgumentTypeError(
                f"expected {len(args)} comma-separated values, got {s!r}"
            )
        return tuple(_parse_value(a, v) for a, v in zip(args, items, strict=True))
    if origin is Literal:
        if s not in args:
            raise argparse.ArgumentTypeError(f"unknown value {s!r}; choose from {', '.join(args)}")
        return s
    try:
        return {int: int, float: float, str: str}[tp](s)
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"expected {_example(tp)}, got {s!r}") from None


def _example(tp: Any) -> str:
    return {int: "an integer", float: "a number"}.get(tp, "a value")


def parse_ints(s: str) -> tuple[int, ...]:
    """``"64,256"`` -> ``(64, 256)`` (an ``argparse`` type)."""
    return _parse_value(tuple[int, ...], s)


def _field_parser(f: dataclasses.Field, tp: Any) -> Any:
    special = {"hidden": _hidden, "shard": _shard, "seeds": _seeds, "epochs": _epochs}
    if f.name in special:
        return special[f.name]
    if f.name in ("lrs", "layer_lr_mults"):
        return parse_floats
    return lambda s: _parse_value(tp, s)


GPT_DEFAULTS: dict[str, Any] = dict(
    widths=(32, 64, 128),
    lrs=tuple(2.0**k for k in range(-11, -4)),
    seeds=(0, 1, 2),
    optimizers=("adamw",),
    batch_size=16,
    context=32,
    steps=150,
    clip_norm=1.0,
)
"""What ``--model gpt`` uses where a flag is not given (minutes on a 2-core CPU): widths 32-128
at head size 16, 2 blocks, context 32, AdamW at 7 lrs 2^-11..2^-5, 3 seeds, 16 sequences a
step, 150 steps evaluated every 50, gradients clipped to norm 1."""


def _epochs(s: str) -> int | tuple[int, ...]:
    """``--epochs``: ``20``, or horizons ``10,20,40`` (a tuple)."""
    values = _parse_value(tuple[int, ...], s)
    return values[0] if len(values) == 1 else values


def parse_floats(s: str) -> tuple[float, ...]:
    """``"1,0.1"`` -> ``(1.0, 0.1)`` (an ``argparse`` type)."""
    try:
        return tuple(float(v) for v in _split(s))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 1,0.1,0.01; got {s!r}"
        ) from None


def _lr_grid(s: str) -> tuple[float, ...]:
    """``lo:hi:n`` -> n log-spaced values from lo to hi inclusive."""
    try:
        lo, hi, n = s.split(":")
        lo_f, hi_f, n_i = float(lo), float(hi), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lo:hi:n, e.g. 1e-4:1:13; got {s!r}") from None
    if not (lo_f > 0 and hi_f > 0 and n_i >= 1):
        raise argparse.ArgumentTypeError(f"needs lo, hi > 0 and n >= 1; got {s!r}")
    if n_i == 1:
        return (lo_f,)
    a, b = math.log(lo_f), math.log(hi_f)
    return tuple(float(f"{math.exp(a + (b - a) * k / (n_i - 1)):.6g}") for k in range(n_i))


def _hidden(s: str) -> tuple[tuple[int, ...], ...]:
    try:
        return tuple(tuple(int(w) for w in arch.split("-")) for arch in _split(s))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected '-'-joined widths, comma-separated, e.g. 64-16,128-32; got {s!r}"
        ) from None


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = s.split("/")
        return int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n, e.g. 0/4; got {s!r}") from None


def _seeds(s: str) -> int | tuple[int, ...]:
    """``N`` (a count) or ``a,b,c`` (explicit seeds)."""
    try:
        vals = tuple(int(v) for v in _split(s))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count N or comma-separated seeds, e.g. 3 or 0,5,7; got {s!r}"
        ) from None
    return vals[0] if len(vals) == 1 and "," not in s else vals


def _show_default(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, tuple):
        if v and isinstance(v[0], tuple):
            return ",".join("-".join(map(str, h)) for h in v)
        return ", ".join(_show_default(x) for x in v)
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ------------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The ``jaxlr.sweep`` argument parser: one flag per :class:`SweepConfig` field."""
    prog = prog_name()
    p = _Parser(
        prog=prog,
        description=(
            "Train MLPs over a grid of widths x learning rates x seeds (x optimizers) at once "
            "and report how width changes the best learning rate. With no arguments: a "
            "default sweep on the embedded digits dataset."
        ),
        epilog=_EPILOG.format(prog=prog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"jaxlr {_version()}")
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    groups["grid"].add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from a named configuration; other flags override it",
    )
    add_option_flags(groups, SweepConfig)
    g = groups["grid"]
    g.add_argument(
        "--lr-grid",
        type=_lr_grid,
        default=None,
        metavar="LO:HI:N",
        help="N log-spaced lrs from LO to HI, e.g. 1e-4:1:13 (joined with --lrs)",
    )
    g.add_argument(
        "--first-seed",
        type=int,
        default=None,
        action=Once,
        help="first seed of --seeds N (default: 0); not with a seed list",
    )
    g = groups["execution"]
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out from its last checkpoint (with no other "
        "flags, the config is read from --out/config.json)",
    )
    g.add_argument(
        "--yes",
        action="store_true",
        help=f"start a sweep estimated to take over {LONG_SWEEP_S / 3600:g} h without asking",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_option_flags(
    groups: dict[str, Any] | argparse.ArgumentParser,
    cls: type = SweepConfig,
    *,
    only: Collection[str] | None = None,
) -> list[str]:
    """Adds one flag per option field of ``cls`` (:class:`SweepConfig`, :class:`TrainOptions` or
    a subclass), with its help text, default and parser, exactly as the sweep declares them.

    Every flag defaults to ``None`` ("not given"), so :func:`given_options` can tell what was set.

    Args:
      groups: a parser, or a map from option group (:data:`jaxlr.config.GROUPS`) to argument group.
      cls: the dataclass whose fields become flags.
      only: the field names to add (default: every field with a flag).

    Returns:
      The names of the fields added, in order.
    """
    hints = typing.get_type_hints(cls)
    added = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or (only is not None and f.name not in only):
            continue
        tp = hints[f.name]
        choices = _choices(tp) or tuple(
            f.metadata["choices"]() if f.metadata.get("choices") else ()
        )
        metavar = f.metadata.get("metavar") or ("{" + ",".join(choices) + "}" if choices else None)
        shown = f.metadata.get("shown_default") or _show_default(f.default)
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if tp is bool
            else {"type": _field_parser(f, tp), "metavar": metavar}
        )
        if _is_list(tp):
            kind["action"] = Once
        target = (
            groups if isinstance(groups, argparse.ArgumentParser) else groups[f.metadata["group"]]
        )
        target.add_argument(
            flag_of(f),
            *f.metadata.get("aliases", ()),
            dest=f.name,
            default=None,
            help=f"{f.metadata['help']}{_listed(f, choices)} (default: {shown})",
            **kind,
        )
        added.append(f.name)
    return added


def _listed(f: dataclasses.Field, choices: tuple[str, ...]) -> str:
    """The choices of a field whose metavar hides them (``--optimizer OPT[,OPT]``)."""
    return f": {', '.join(choices)}" if choices and f.metadata.get("metavar") else ""


def given_options(args: argparse.Namespace, names: Collection[str]) -> dict[str, Any]:
    """The option fields among ``names`` that were set explicitly on the command line."""
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _is_list(tp: Any) -> bool:
    """Whether a field type is a tuple (a comma-separated list on the command line)."""
    return any(typing.get_origin(t) is tuple for t in (tp, *typing.get_args(tp)))


def _choices(tp: Any) -> tuple[str, ...]:
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is Literal:
            return typing.get_args(t)
    return ()


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("jaxlr")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------ argv -> config
_NOT_FIELDS = {"preset", "lr_grid", "first_seed", "resume", "yes", "no_progress"}


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set explicitly on the command line."""
    return {k: v for k, v in vars(args).items() if k not in _NOT_FIELDS and v is not None}


def config_from_args(args: argparse.Namespace, base: SweepConfig | None = None) -> SweepConfig:
    """Preset, then explicit flags, then validation; on top of ``base`` (a recorded sweep's
    config, for ``--resume``) instead of the defaults when given."""
    fields: dict[str, Any] = base.to_dict() if base is not None else {}
    if args.preset:
        fields.update(PRESETS[args.preset])
        fields["preset"] = args.preset
    given = _given(args)
    if "depth" in given and "depths" in given:
        raise ConfigError("give either --depth or --depths (a list of depths), not both")
    if "hidden" in given:
        fields.pop("widths", None)
        fields.pop("depth", None)
    if "depths" in given:
        fields.pop("depth", None)
    fields.update(given)
    if args.lrs is not None or args.lr_grid is not None:
        fields["lrs"] = tuple(sorted(set(args.lrs or ()) | set(args.lr_grid or ())))
    seeds = fields.get("seeds", SweepConfig.seeds)
    first = args.first_seed
    if first is not None and first < 0:
        raise ConfigError(f"--first-seed must be >= 0, got {first}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        fields["seeds"] = tuple(range(first or 0, (first or 0) + seeds))
    elif first is not None:
        if "seeds" in given:
            raise ConfigError(
                f"--seeds {','.join(map(str, seeds))} lists the seeds and --first-seed {first} "
                "would shift them; give a count (--seeds N --first-seed S) or the list alone"
            )
        fields["seeds"] = tuple(range(first, first + len(seeds)))
    if isinstance(fields.get("epochs"), tuple):  # --epochs 10,20,40: train 40, report each
        horizons = fields["epochs"]
        if len(set(horizons)) != len(horizons) or min(horizons) < 1:
            raise ConfigError(f"--epochs must be distinct positive integers, got {horizons}")
        fields["horizons"], fields["epochs"] = tuple(sorted(horizons)), max(horizons)
    elif "epochs" in given:
        fields["horizons"] = ()
    if fields.get("family") == "gpt":  # the transformer's own defaults, under any given flag
        if "epochs" in given:
            raise ConfigError(
                "--epochs does not apply to --model gpt: its budget is --steps and --eval-every"
            )
        # not its default widths beside a given --hidden, which its validation then names
        skip = set(given) | ({"widths"} if "hidden" in given else set())
        fields = {**{k: v for k, v in GPT_DEFAULTS.items() if k not in skip}, **fields}
    if fields.get("out") is None:
        fields["out"] = f"runs/{datetime.datetime.now():%Y%m%d-%H%M%S}"
    cfg = SweepConfig(**fields)
    check_applies(cfg, given)  # an explicit flag must apply, even set to its default
    return cfg


def _error(prog: str, msg: str, code: int = 2) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return code


def merge_main(argv: Sequence[str]) -> int:
    """``python -m jaxlr.sweep merge DIR... [--out OUT]``."""
    p = _Parser(
        prog=f"{prog_name()} merge",
        description="Merge the output directories of grid shards (--shard i/n).",
    )
    p.add_argument("dirs", nargs="+", help="shard output directories")
    p.add_argument("--out", default=None, help="merged output directory (default runs/merged-*)")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="merge even if some shards of the sweep are missing (a partial table)",
    )
    args = p.parse_args(argv)
    out = args.out or f"runs/merged-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    from jaxlr.merge import merge_runs
    from jaxlr.results import format_summary

    try:
        outcome = merge_runs(
            args.dirs,
            out,
            allow_missing=args.allow_missing,
            warn=lambda m: print(f"{p.prog}: warning: {m}", file=sys.stderr),
        )
    except ConfigError as e:
        return _error(p.prog, str(e))
    print(format_summary(outcome.summary))
    if outcome.exponent_text:
        print(f"\n{outcome.exponent_text}")
    print(f"\nmerged {len(args.dirs)} shard(s) into {out}/")
    return 0


def _config(args: argparse.Namespace, prog: str) -> SweepConfig:
    """The config of the command line; for ``--resume``, the one recorded in ``--out`` with the
    flags given on top (execution flags may change; others must match the record, which
    :func:`jaxlr.outdir.check_resumable` checks, naming what differs)."""
    if not args.resume:
        return config_from_args(args)
    if not args.out:
        raise ConfigError("--resume needs --out DIR, the sweep directory to continue")
    from jaxlr.outdir import load_config

    return config_from_args(args, base=load_config(args.out)).replace(out=args.out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m jaxlr.sweep``; returns the exit status (2: bad input, 130:
    interrupted, 1: a failure while training; finished results are kept in every case)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["merge"]:
            return merge_main(argv[1:])
        return _main(argv)
    except KeyboardInterrupt:  # outside training (e.g. while importing JAX): nothing to keep
        print(f"\n{prog_name()}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Holds a Ctrl-C (SIGINT) that arrives inside the block until it ends, then raises
    :class:`KeyboardInterrupt`: importing JAX's C extensions must not be cut in the middle (it
    turns into an ``ImportError`` with a traceback). Outside the main thread: no effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: received.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    try:
        cfg = _config(args, prog)  # no JAX yet: a refused flag answers at once
    except ConfigError as e:
        return _error(prog, str(e))
    with interrupts_deferred():  # a Ctrl-C inside a C extension's import would corrupt it
        from jaxlr.data import DataError
        from jaxlr.runner import SweepTooLong, run

    try:
        outcome = run(
            cfg,
            progress=not args.no_progress,
            resume=args.resume,
            confirm_long=None if args.yes else LONG_SWEEP_S,
            log=lambda s: print(s, file=sys.stderr),
        )
    except SweepTooLong as e:
        return _error(prog, f"{e}; add --yes to start it, or shrink the grid")
    except (ConfigError, DataError) as e:
        return _error(prog, str(e))
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted. {_kept(cfg)}", file=sys.stderr)
        return 130
    except Exception as e:  # a failure while training: say so in one line, keep the results
        return _error(prog, f"while training: {type(e).__name__}: {e}. {_kept(cfg)}", 1)
    if outcome.results.empty:
        i, n = cfg.shard
        print(f"shard {i}/{n} has no runs (the grid has fewer units than shards); nothing to do")
        return 0
    from jaxlr.outputs import report

    print(report(cfg, outcome))
    return 0


def _kept(cfg: SweepConfig) -> str:
    """Where finished work is, if any was saved."""
    if cfg.out and (Path(cfg.out) / "results.csv").exists():
        return (
            f"Finished chunks are in {cfg.out}/results.csv; continue with "
            f"`{prog_name()} --resume --out {cfg.out}`."
        )
    if cfg.out and (Path(cfg.out) / "config.json").exists():
        return f"No chunk had finished; `{prog_name()} --resume --out {cfg.out}` starts it again."
    return "Nothing was written."


if __name__ == "__main__":
    sys.exit(main())
