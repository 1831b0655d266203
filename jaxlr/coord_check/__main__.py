"""``python -m jaxlr.coord_check --out DIR`` (or ``jaxlr-coord-check``): SP vs muP coordinate check.

Runs :func:`jaxlr.coord_check.run_coord_check` and writes ``coord_check.csv`` (one row per
width, layer, step and seed), ``coord_check_summary.csv`` (:func:`coord_check_summary`) and
``coord_check.png`` (:func:`plot_coord_check`) to ``DIR``; prints the ratio
``l1(widest) / l1(narrowest)`` per layer after each step. The committed run is
``python -m jaxlr.coord_check --out experiments/results/coord_check``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxlr.coord_check import (
    CoordCheckConfig,
    coord_check_summary,
    plot_coord_check,
    run_coord_check,
)
from jaxlr.results import write_csv


def build_parser() -> argparse.ArgumentParser:
    """The argument table; defaults are :class:`CoordCheckConfig`'s."""
    d = CoordCheckConfig()
    p = argparse.ArgumentParser(
        prog="python -m jaxlr.coord_check",
        description="mup's coordinate check (SP vs muP, Adam and SGD) on a fixed digits batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--widths", type=int, nargs="+", default=list(d.widths), help="hidden widths")
    p.add_argument("--base-width", type=int, default=d.base_width, help="muP base width")
    p.add_argument("--depth", type=int, default=d.depth, help="hidden layers")
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds), help="init seeds")
    p.add_argument("--batch", type=int, default=d.batch, help="digits examples in the batch")
    p.add_argument("--adam-lr", type=float, default=d.adam_lr, help="base lr for Adam")
    p.add_argument("--sgd-lr", type=float, default=d.sgd_lr, help="base lr for SGD")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv``, runs the check, writes the three files and prints the final ratios."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = CoordCheckConfig(
            widths=tuple(args.widths),
            base_width=args.base_width,
            depth=args.depth,
            steps=args.steps,
            seeds=tuple(args.seeds),
            batch=args.batch,
            adam_lr=args.adam_lr,
            sgd_lr=args.sgd_lr,
        )
    except ValueError as e:
        parser.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)  # fail on a bad --out before training
    df = run_coord_check(cfg)
    summary = coord_check_summary(df)
    write_csv(args.out / "coord_check.csv", df)
    write_csv(args.out / "coord_check_summary.csv", summary)
    plot_coord_check(df, args.out / "coord_check.png")
    trained = summary[summary["step"] >= 1]
    table = trained.pivot_table(
        index=["optimizer", "parametrization", "layer"], columns="step", values="ratio"
    )
    print(f"l1(width {max(cfg.widths)}) / l1(width {min(cfg.widths)}) after each step (1: flat):")
    print(table.round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
