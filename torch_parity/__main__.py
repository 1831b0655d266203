"""``python -m torch_parity``: rerun the source documents' PyTorch examples and their jaxlr twins,
compare.

Prints one row per example (or a JSON list with ``--json``) and exits 1 if any example fails,
2 on a usage error (one line on stderr: an unknown ``--example``, a flag that does not apply),
130 on Ctrl-C (at any moment, with one line on stderr). The flags are checked before torch and
JAX are imported, so ``--help`` and flag errors return at once. A run that lasts more than a few
seconds says on stderr how far it is, every :data:`PROGRESS_EVERY_S` seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from jaxlr.entry import INTERRUPTED, CtrlC, Once
from torch_parity.catalog import (
    CATALOG,
    EXAMPLE_NAMES,
    FASHION_WIDTH_EXPERIMENT,
    GROUPS,
    MAX_STEPS,
    group_examples,
    info,
    selected_examples,
)

PROG = "torch_parity"
INTERRUPTED_MESSAGE = f"{PROG}: interrupted (Ctrl-C); no results"
PROGRESS_EVERY_S = 5.0  # a long run prints how far it is at most this often (stderr)
IMAGE_EXAMPLES = tuple(e.name for e in CATALOG if e.on_images)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see --help)\n")


def _steps(s: str) -> int:
    """``--steps``: an integer in ``1..MAX_STEPS``."""
    try:
        steps = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if not 1 <= steps <= MAX_STEPS:
        raise argparse.ArgumentTypeError(
            f"must be in 1..{MAX_STEPS:,}, got {s} ({FASHION_WIDTH_EXPERIMENT}'s own 50 epochs "
            "are 46,850 steps)"
        )
    return steps


def build_parser() -> argparse.ArgumentParser:
    """The command line. Flags other than ``--example`` may be given once; every default is
    ``None`` ("not given") so that a flag that does not apply can be refused."""
    p = _Parser(
        prog="python -m torch_parity",
        description="Run each source document's PyTorch example and the matching jaxlr run from "
        "the same initial weights and data, and compare losses and final params. A run that "
        f"lasts more than {PROGRESS_EVERY_S:.0f} s says how far it is on stderr.",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        action=Once,
        help="the dtype of both sides (default: float64)",
    )
    p.add_argument(
        "--steps",
        type=_steps,
        action=Once,
        help=f"optimizer steps for every example, 1..{MAX_STEPS:,} (default: each example's own)",
    )
    p.add_argument(
        "--example",
        action="append",
        default=None,
        metavar="NAME",
        help=f"run only these (repeatable or comma list): {', '.join(EXAMPLE_NAMES)}",
    )
    p.add_argument(
        "--group",
        action="append",
        default=None,
        metavar="KEY",
        help="run (or --list) only the examples of these sources (repeatable or comma list): "
        + ", ".join(f"{k} ({v})" for k, v in GROUPS.items()),
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead")
    p.add_argument("--list", action="store_true", help="list the examples and exit")
    p.add_argument(
        "--trace",
        action="store_true",
        help="also print max |Δloss| up to steps 1, 2, 5, 10, ... and, for float32, the same "
        "for torch's own float32 run against its float64 run (to stderr with --json)",
    )
    p.add_argument(
        "--dataset",
        choices=("auto", "fashion_mnist", "mnist", "digits"),
        action=Once,
        help=f"the data of the image examples ({', '.join(IMAGE_EXAMPLES)}). auto (default): "
        "Fashion-MNIST if its files are found in jaxlr.data's default places, else digits; "
        "with --data-dir, Fashion-MNIST from there or an error",
    )
    p.add_argument(
        "--data-dir",
        action=Once,
        help="where the Fashion-MNIST / MNIST IDX files are (not for --dataset digits)",
    )
    p.add_argument("--tolerance", type=float, action=Once, help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line (exits 2 with one line on a malformed flag)."""
    return build_parser().parse_args(argv)


def example_names(args: argparse.Namespace) -> list[str]:
    """The examples a command line selects: ``--group``'s, ``--example``'s, or all (in suite
    order). Raises ``KeyError`` on an unknown name or key."""
    if args.group is not None:
        return group_examples(args.group)
    return selected_examples(args.example)


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with a well-formed command line (a flag that does not apply, an unknown
    example or group), or ``None``. Needs neither torch nor JAX."""
    given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v not in (None, False)]
    if args.group is not None and args.example is not None:
        return "--group and --example both choose the examples; give one of them"
    try:
        names = example_names(args)
    except KeyError as err:
        return err.args[0]
    if args.list:
        others = [g for g in given if g not in ("--list", "--group")]
        return f"--list takes no other flags; remove {' '.join(others)}" if others else None
    on_images = [n for n in names if info(n).on_images]
    for flag in ("--dataset", "--data-dir"):
        if flag in given and not on_images:
            return (
                f"{flag} only applies to the examples on image data ({', '.join(IMAGE_EXAMPLES)}); "
                f"--example {','.join(names)} runs none of them; remove {flag}"
            )
    if args.data_dir is not None and args.dataset == "digits":
        return (
            "--data-dir does not apply to --dataset digits (jaxlr embeds the digits data); "
            "remove --data-dir, or name --dataset fashion_mnist or mnist"
        )
    return None


class ProgressPrinter:
    """Prints how far a long run is, at most every ``every_s`` seconds, nothing for a short one.

    :meth:`for_example` gives the ``progress(side, done, total)`` callback of
    :func:`torch_parity.compare.run_example`; a line reads ``torch_parity: [5/10] weight-norm:
    torch step 12,000 of 100,000 (31 s)``.
    """

    def __init__(
        self,
        n_examples: int,
        *,
        every_s: float = PROGRESS_EVERY_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.n_examples = n_examples
        self.every_s = every_s
        self.stream = stream
        self.clock = clock
        self.start = self._last = clock()

    def for_example(self, index: int, name: str) -> Callable[[str, int, int], None]:
        """The callback for example ``name``, the ``index``-th (1-based) of the run."""

        def progress(side: str, done: int, total: int) -> None:
            now = self.clock()
            if now - self._last < self.every_s:
                return
            self._last = now
            print(
                f"{PROG}: [{index}/{self.n_examples}] {name}: {side} step {done:,} of {total:,} "
                f"({now - self.start:.0f} s)",
                file=self.stream or sys.stderr,
                flush=True,
            )

        return progress


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite; returns 0 if every example passed, 1 if one failed, 2 on bad usage,
    130 on Ctrl-C.

    Called as the program (``argv`` None: ``python -m torch_parity``), a Ctrl-C at any moment
    ends the process at once with status 130 and one line
    (:class:`~jaxlr.entry.CtrlC`); called with ``argv`` (in a test, a notebook), an
    interrupt returns 130.
    """
    if argv is None:
        CtrlC(INTERRUPTED_MESSAGE).install()
    try:
        args = parse_args(argv)
        error = usage_error(args)
        if error is not None:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 2
        if args.list:
            width = max(15, *(len(e.name) for e in CATALOG))
            names = example_names(args)
            for e in CATALOG:
                if e.name in names:
                    print(f"{e.name:<{width}} {e.source}: {e.summary} ({e.default_length})")
            return 0
        return _run(args)
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    """:func:`main` after the checks: imports torch and JAX, runs, prints."""
    import json

    import numpy as np

    from jaxlr.data import DataError
    from torch_parity.compare import float32_drift, format_table, format_trace, run_example
    from torch_parity.data import image_classification

    names = example_names(args)
    dtype = args.dtype or "float64"
    dataset = args.dataset or "auto"
    data_kw: dict[str, Any] = {"dataset": dataset, "data_dir": args.data_dir}
    printer = ProgressPrinter(len(names), every_s=PROGRESS_EVERY_S)
    try:
        if any(info(n).on_images for n in names):
            image_classification(dataset, args.data_dir)  # a bad --data-dir fails before training
        results = [
            run_example(
                name,
                dtype=dtype,
                steps=args.steps,
                tolerance=args.tolerance,
                progress=printer.for_example(i, name),
                **data_kw,
            )
            for i, name in enumerate(names, 1)
        ]
    except DataError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(format_table(results))
    if args.trace:
        out = sys.stderr if args.json else sys.stdout
        print("max |Δloss| over steps 1..t, at t = 1, 2, 5, 10, ...:", file=out)
        width = max(15, *(len(r.example) for r in results))
        for i, r in enumerate(results, 1):
            label = f"  {r.example:<{width}} torch vs JAX    "
            print(format_trace(np.abs(r.torch_losses - r.jax_losses), label), file=out)
            if dtype == "float32":
                drift = float32_drift(
                    r.example, steps=args.steps, progress=printer.for_example(i, r.example),
                    **data_kw,
                )  # fmt: skip
                print(format_trace(drift, f"  {r.example:<{width}} torch32 vs torch64"), file=out)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
