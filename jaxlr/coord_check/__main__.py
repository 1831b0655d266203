"""``python -m jaxlr.coord_check --out DIR`` (or ``jaxlr-coord-check``): SP vs muP coordinate check.

Runs :func:`jaxlr.coord_check.run_coord_check` (the MLP on digits; ``--model gpt``:
:func:`jaxlr.coord_check.run_gpt_coord_check`, the GPT on text) and writes ``coord_check.csv``
(one row per width, layer, step and seed), ``coord_check_summary.csv``
(:func:`coord_check_summary`) and ``coord_check.png`` (:func:`plot_coord_check`) to ``DIR``
(``gpt_coord_check.*`` for the GPT, so both can share a directory); prints the ratio
``l1(widest) / l1(narrowest)`` (GPT: of the RMS) per layer after each step. The committed runs
are ``python -m jaxlr.coord_check --out experiments/results/coord_check`` and the same with
``--model gpt``.

A flag that does not apply to the chosen model (``--head-dim``, ``--context``, ``--data-dir``
without ``--model gpt``), or a learning rate of an optimizer left out of ``--optimizer``, is
refused (exit 2, one line), as the sweep refuses one.

Lists are comma-separated, as in ``python -m jaxlr.sweep`` (``--widths 64,128,256``); an empty
item or a flag given twice is refused. Bad input (flags, values, an ``--out`` that cannot be a
directory) exits 2 with one line on stderr before JAX is imported; Ctrl-C exits 130 with one
line, at any moment (a Ctrl-C while the results are being written lets the writes finish).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from jaxlr.coord_check.config import (
    OPTIMIZER_NAMES,
    PARAMETRIZATIONS,
    CoordCheckConfig,
    GPTCoordCheckConfig,
)
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


def name_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """The ``argparse`` type of a comma list of names among ``choices`` (``"sp,mup"`` ->
    ``("sp", "mup")``); an empty item or an unknown name is refused with the choices."""

    def parse(s: str) -> tuple[str, ...]:
        names = tuple(v.strip() for v in s.split(","))
        if "" in names:
            raise argparse.ArgumentTypeError(f"empty item in {s!r}; e.g. {','.join(choices)}")
        unknown = [v for v in names if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, unknown))}; choose from {','.join(choices)}"
            )
        return names

    return parse


MODELS = ("mlp", "gpt")
LIST_FLAGS = ("--widths", "--seeds", "--optimizer", "--parametrizations")  # comma lists
GPT_ONLY = ("head_dim", "context", "data_dir")  # fields of GPTCoordCheckConfig alone


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
    """The argument table; defaults are :class:`CoordCheckConfig`'s (the MLP's) and
    :class:`GPTCoordCheckConfig`'s (``--model gpt``). Each flag may be given once; flags left
    out are ``None`` in the namespace."""
    mlp, gpt = CoordCheckConfig(), GPTCoordCheckConfig()
    metavars = {"optimizers": "NAME,...", "parametrizations": "NAME,...", "data_dir": "PATH"}
    p = _Parser(
        prog=prog_name(),
        description="mup's coordinate check (SP vs muP, Adam and SGD): the MLP on a fixed digits "
        "batch, or --model gpt on a fixed batch of text.",
    )

    def shown(value: object) -> object:
        return ",".join(map(str, value)) if isinstance(value, tuple) else value

    def flag(name: str, kind: Callable[[str], object], help: str, dest: str | None = None) -> None:
        field = dest or name[2:].replace("-", "_")
        if field in GPT_ONLY:
            value = getattr(gpt, field)
            default = f"gpt: {'the built-in corpus' if value is None else value}"
        elif getattr(mlp, field) == getattr(gpt, field):
            default = str(shown(getattr(mlp, field)))
        else:
            default = f"mlp {shown(getattr(mlp, field))}; gpt {shown(getattr(gpt, field))}"
        metavar = "N,N,..." if kind is int_list else metavars.get(field)
        p.add_argument(
            name, type=kind, action=Once, metavar=metavar, dest=field,
            help=f"{help} (default: {default})",
        )  # fmt: skip

    p.add_argument("--out", type=Path, action=Once, required=True, help="output directory")
    p.add_argument(
        "--model", choices=MODELS, action=Once,
        help="mlp: an in-n-...-n-10 ReLU MLP on digits; gpt: the decoder-only transformer of "
        "jaxlr.gpt on bytes of text (default: mlp)",
    )  # fmt: skip
    flag("--widths", int_list, "widths (gpt: d_model), a comma list, increasing")
    flag("--base-width", int, "muP base width")
    flag("--depth", int, "hidden layers (gpt: transformer blocks)")
    flag("--steps", int, "optimizer steps")
    flag("--seeds", int_list, "init seeds, a comma list")
    flag("--batch", int, "digits examples in the batch (gpt: sequences of --context bytes)")
    flag("--optimizer", name_list(OPTIMIZER_NAMES), "adam, sgd or adam,sgd", dest="optimizers")
    flag("--parametrizations", name_list(PARAMETRIZATIONS), "sp, mup or sp,mup")
    flag("--adam-lr", float, "base lr for Adam")
    flag("--sgd-lr", float, "base lr for SGD")
    flag("--head-dim", int, "gpt: the size of one attention head; heads = width / head-dim")
    flag("--context", int, "gpt: tokens (bytes) per sequence")
    flag("--data-dir", str, "gpt: a text file, or a directory of text files")
    return p


def config_from_args(args: argparse.Namespace) -> CoordCheckConfig | GPTCoordCheckConfig:
    """The config of ``--model`` (:class:`CoordCheckConfig` or :class:`GPTCoordCheckConfig`)
    with the flags given (the others at their defaults); raises ``ValueError`` on bad values
    and on a flag that does not apply (a gpt-only flag for the MLP, a learning rate of an
    optimizer left out)."""
    model = args.model or "mlp"
    cls = GPTCoordCheckConfig if model == "gpt" else CoordCheckConfig
    names = [f.name for f in dataclasses.fields(GPTCoordCheckConfig)]
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    for field in GPT_ONLY:
        if field in given and model != "gpt":
            flag = "--" + field.replace("_", "-")
            raise ValueError(f"{flag} applies to --model gpt only; drop it or add --model gpt")
    optimizers = given.get("optimizers", OPTIMIZER_NAMES)
    for opt in OPTIMIZER_NAMES:
        if f"{opt}_lr" in given and opt not in optimizers:
            raise ValueError(
                f"--{opt}-lr applies only when --optimizer includes {opt} (it is "
                f"{','.join(optimizers)}); drop --{opt}-lr or add {opt} to --optimizer"
            )
    return cls(**given)


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


def _run(
    cfg: CoordCheckConfig | GPTCoordCheckConfig, out: Path, prog: str, ctrl_c: CtrlC | None
) -> int:
    """:func:`main` after the checks: imports JAX, runs, writes, prints."""
    from jaxlr.coord_check.check import coord_check_summary, plot_coord_check, run_coord_check
    from jaxlr.results import write_csv

    gpt = isinstance(cfg, GPTCoordCheckConfig)
    try:
        if gpt:
            from jaxlr.coord_check.gpt_check import run_gpt_coord_check

            df = run_gpt_coord_check(cfg)
        else:
            df = run_coord_check(cfg)
    except ValueError as e:  # a value only the data can check (--batch above its size, a
        print(f"{prog}: error: {e}", file=sys.stderr)  # --data-dir that is not text)
        return 2
    summary = coord_check_summary(df)
    stem = "gpt_coord_check" if gpt else "coord_check"
    with ctrl_c.deferred() if ctrl_c is not None else contextlib.nullcontext():
        if ctrl_c is not None:  # a Ctrl-C from here on is held until the three files are whole
            ctrl_c.message = f"{prog}: interrupted (Ctrl-C) after writing the results to {out}"
        write_csv(out / f"{stem}.csv", df)
        write_csv(out / f"{stem}_summary.csv", summary)
        plot_coord_check(df, out / f"{stem}.png")
    rank = {layer: i for i, layer in enumerate(df["layer"].unique())}
    trained = summary[summary["step"] >= 1].sort_values(
        ["optimizer", "parametrization", "layer"],
        key=lambda c: c.map(rank) if c.name == "layer" else c.map(_ORDER.get),
        kind="stable",
    )
    table = trained.pivot_table(
        index=["optimizer", "parametrization", "layer"], columns="step", values="ratio",
        sort=False,
    )  # fmt: skip
    size = "rms" if gpt else "l1"
    print(
        f"{size}(width {max(cfg.widths)}) / {size}(width {min(cfg.widths)}) after each step "
        "(1: flat):"
    )
    print(table.round(2).to_string())
    return 0


_ORDER = {name: i for i, name in enumerate((*OPTIMIZER_NAMES, *PARAMETRIZATIONS))}


if __name__ == "__main__":
    sys.exit(main())
