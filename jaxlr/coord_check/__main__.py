"""``python -m jaxlr.coord_check --out DIR`` (or ``jaxlr-coord-check``): SP vs muP coordinate check.

Runs :func:`jaxlr.coord_check.run_coord_check` and writes ``coord_check.csv`` (one row per
width, layer, step and seed), ``coord_check_summary.csv`` (:func:`coord_check_summary`) and
``coord_check.png`` (:func:`plot_coord_check`) to ``DIR``; prints the ratio
``l1(widest) / l1(narrowest)`` per layer after each step. The committed run is
``python -m jaxlr.coord_check --out experiments/results/coord_check``.

Lists are comma-separated, as in ``python -m jaxlr.sweep`` (``--widths 64,128,256``); an empty
item or a flag given twice is refused. Bad input (flags, values, an ``--out`` that cannot be a
directory) exits 2 with one line on stderr before JAX is imported; Ctrl-C exits 130 with one
line, at any moment (a Ctrl-C while the results are being written lets the writes finish).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jaxlr.coord_check.config import CoordCheckConfig
from jaxlr.entry import INTERRUPTED, CtrlC, Once


def prog_name() -> str:
    """How the user invoked the check: ``jaxlr-coord-check`` or ``python -m jaxlr.coord_check``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return (
        "jaxlr-coord-check"
        if name.startswith("jaxlr-coord-check")
        else "python -m jaxlr.coord_check"
    )


def int_list(s: str) -> tuple[int, ...]:
    """A comma list of integers, parsed as the sweep parses one (:func:`jaxlr.cli.parse_ints`:
    ``"64,128"`` -> ``(64, 128)``; an empty item is refused). jaxlr.cli is imported only when a
    list flag is given, which keeps ``--help`` fast."""
    from jaxlr.cli import parse_ints

    return parse_ints(s)


LIST_FLAGS = ("--widths", "--seeds")  # the flags that take a comma list of integers


class _Parser(argparse.ArgumentParser):
    """One-line errors; separate list values (``--widths 64 128``, this CLI's old form) are
    refused with the comma form to use."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._argv: list[str] = []

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = _spaced_list(self._argv) or message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _spaced_list(argv: Sequence[str]) -> str | None:
    """The fix for a list flag followed by separate values, if ``argv`` has one."""
    for i, token in enumerate(argv):
        if token in LIST_FLAGS:
            values = list(itertools.takewhile(lambda t: not t.startswith("--"), argv[i + 1 :]))
            if len(values) > 1:
                return f"{token} takes one comma list: {token} {','.join(values)}"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The argument table; defaults are :class:`CoordCheckConfig`'s. Each flag may be given
    once; flags left out are ``None`` in the namespace."""
    d = CoordCheckConfig()
    p = _Parser(
        prog=prog_name(),
        description="mup's coordinate check (SP vs muP, Adam and SGD) on a fixed digits batch.",
    )

    def flag(name: str, kind: Callable[[str], object], default: object, help: str) -> None:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        metavar = "N,N,..." if kind is int_list else None
        p.add_argument(
            name, type=kind, action=Once, metavar=metavar, help=f"{help} (default: {shown})"
        )

    p.add_argument("--out", type=Path, action=Once, required=True, help="output directory")
    flag("--widths", int_list, d.widths, "hidden widths, a comma list, increasing")
    flag("--base-width", int, d.base_width, "muP base width")
    flag("--depth", int, d.depth, "hidden layers")
    flag("--steps", int, d.steps, "optimizer steps")
    flag("--seeds", int_list, d.seeds, "init seeds, a comma list")
    flag("--batch", int, d.batch, "digits examples in the batch")
    flag("--adam-lr", float, d.adam_lr, "base lr for Adam")
    flag("--sgd-lr", float, d.sgd_lr, "base lr for SGD")
    return p


def config_from_args(args: argparse.Namespace) -> CoordCheckConfig:
    """The :class:`CoordCheckConfig` of the flags given (the others at their defaults); raises
    ``ValueError`` on bad values."""
    names = ("widths", "base_width", "depth", "steps", "seeds", "batch", "adam_lr", "sgd_lr")
    return CoordCheckConfig(**{k: getattr(args, k) for k in names if getattr(args, k) is not None})


def check_out(out: Path) -> str | None:
    """Makes ``out`` (and its parents) if needed; returns what is wrong with it as an output
    directory (a file, not creatable, not writable), or ``None``."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a directory; give a directory"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        return f"--out {out}: cannot create or write this directory ({reason}); give another"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv``, runs the check, writes the three files and prints the final ratios.

    Returns 0, 2 on bad input (one line on stderr), 130 on Ctrl-C. Called as the program
    (``argv`` None), a Ctrl-C at any moment ends the process at once with status 130 and one
    line (:class:`~jaxlr.entry.CtrlC`); with ``argv``, an interrupt returns 130.
    """
    prog = prog_name()
    message = f"{prog}: interrupted (Ctrl-C); nothing written"
    ctrl_c = CtrlC(message).install() if argv is None else None
    try:
        args = build_parser().parse_args(argv)
        try:
            cfg = config_from_args(args)
        except ValueError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        error = check_out(args.out)  # a bad --out fails before JAX is imported
        if error is not None:
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        return _run(cfg, args.out, prog, ctrl_c)
    except KeyboardInterrupt:
        print(message, file=sys.stderr)
        return INTERRUPTED


def _run(cfg: CoordCheckConfig, out: Path, prog: str, ctrl_c: CtrlC | None) -> int:
    """:func:`main` after the checks: imports JAX, runs, writes, prints."""
    from jaxlr.coord_check.check import coord_check_summary, plot_coord_check, run_coord_check
    from jaxlr.results import write_csv

    try:
        df = run_coord_check(cfg)
    except ValueError as e:  # a value only the data can check (e.g. --batch above its size)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    summary = coord_check_summary(df)
    with ctrl_c.deferred() if ctrl_c is not None else contextlib.nullcontext():
        if ctrl_c is not None:  # a Ctrl-C from here on is held until the three files are whole
            ctrl_c.message = f"{prog}: interrupted (Ctrl-C) after writing the results to {out}"
        write_csv(out / "coord_check.csv", df)
        write_csv(out / "coord_check_summary.csv", summary)
        plot_coord_check(df, out / "coord_check.png")
    trained = summary[summary["step"] >= 1]
    table = trained.pivot_table(
        index=["optimizer", "parametrization", "layer"], columns="step", values="ratio"
    )
    print(f"l1(width {max(cfg.widths)}) / l1(width {min(cfg.widths)}) after each step (1: flat):")
    print(table.round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
