"""``python -m torch_parity``: rerun the seeds' PyTorch examples and their jaxlr twins, compare.

Prints one row per example (or a JSON list with ``--json``) and exits 1 if any example fails,
2 on a usage error (such as an unknown ``--example``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from jaxlr.data import DataError
from torch_parity.compare import (
    EXAMPLE_NAMES,
    EXAMPLES,
    float32_drift,
    format_table,
    format_trace,
    run_example,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; ``--example`` may repeat or hold a comma-separated list."""
    parser = argparse.ArgumentParser(
        prog="python -m torch_parity",
        description="Run each seed's PyTorch example and the matching jaxlr run from the same "
        "initial weights and data, and compare losses and final params.",
    )
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps for every example")
    parser.add_argument(
        "--example",
        action="append",
        default=None,
        metavar="NAME",
        help=f"run only these (repeatable or comma list): {', '.join(EXAMPLE_NAMES)}",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also print max |Δloss| up to steps 1, 2, 5, 10, ... and, for float32, the same "
        "for torch's own float32 run against its float64 run (to stderr with --json)",
    )
    parser.add_argument(
        "--dataset",
        default="auto",
        choices=("auto", "fashion_mnist", "mnist", "digits"),
        help="seed 001's data (auto: Fashion-MNIST if its files are found in jaxlr.data's "
        "default places, else digits; with --data-dir, Fashion-MNIST from there or an error)",
    )
    parser.add_argument("--data-dir", default=None, help="where the IDX files are (jaxlr.data)")
    parser.add_argument("--tolerance", type=float, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected_examples(requested: Sequence[str] | None) -> list[str]:
    """The example names to run, in suite order (all when ``requested`` is None); raises
    ``KeyError`` on an unknown name or on an ``--example`` that names none."""
    if requested is None:
        return list(EXAMPLE_NAMES)
    names = [n.strip() for item in requested for n in item.split(",") if n.strip()]
    if not names:
        raise KeyError(
            f"--example {' '.join(map(repr, requested))} names no example; choose from: "
            f"{', '.join(EXAMPLE_NAMES)} (or leave --example out to run them all)"
        )
    unknown = [n for n in names if n not in EXAMPLE_NAMES]
    if unknown:
        raise KeyError(
            f"unknown example {', '.join(unknown)}; choose from: {', '.join(EXAMPLE_NAMES)}"
        )
    return [n for n in EXAMPLE_NAMES if n in names]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the suite; returns 0 if every example passed, 1 if one failed, 2 on bad usage,
    130 on Ctrl-C."""
    try:
        return _main(parse_args(argv))
    except KeyboardInterrupt:
        print("torch_parity: interrupted (Ctrl-C); no results", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    """:func:`main` after argument parsing."""
    if args.list:
        for e in EXAMPLES:
            default = f"{e.steps} steps" if e.batch_size is None else f"{e.epochs} epochs"
            print(f"{e.name:<15} seed {e.seed}  {e.summary} ({default})")
        return 0
    try:
        names = selected_examples(args.example)
    except KeyError as err:
        print(f"torch_parity: {err.args[0]}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"torch_parity: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    try:
        results = [
            run_example(
                name,
                dtype=args.dtype,
                steps=args.steps,
                tolerance=args.tolerance,
                dataset=args.dataset,
                data_dir=args.data_dir,
            )
            for name in names
        ]
    except DataError as err:
        print(f"torch_parity: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(format_table(results))
    if args.trace:
        out = sys.stderr if args.json else sys.stdout
        print("max |Δloss| over steps 1..t, at t = 1, 2, 5, 10, ...:", file=out)
        for r in results:
            print(
                format_trace(
                    np.abs(r.torch_losses - r.jax_losses), f"  {r.example:<15} torch vs JAX    "
                ),
                file=out,
            )
            if args.dtype == "float32":
                drift = float32_drift(
                    r.example, steps=args.steps, dataset=args.dataset, data_dir=args.data_dir
                )
                print(format_trace(drift, f"  {r.example:<15} torch32 vs torch64"), file=out)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
