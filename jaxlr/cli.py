"""``python -m jaxlr.sweep``: argv -> :class:`SweepConfig` -> :func:`run_sweep` -> summary.

Invalid arguments exit with status 2 and one line on stderr; nothing is trained.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from jaxlr.config import (
    DATASETS,
    INITS,
    LR_RULES,
    OPTIMIZERS,
    PARAMETRIZATIONS,
    PRECISIONS,
    ConfigError,
    SweepConfig,
)

SEED_001_LRS = (1.0, 0.5, 0.1, 0.01, 0.001, 0.0001, 0.00001)

_SEED_001: dict[str, Any] = dict(
    dataset="fashion_mnist",
    widths=(64, 256, 1024),
    depth=2,
    lrs=SEED_001_LRS,
    optimizers=("sgd",),
    batch_size=64,
    epochs=50,
    init="torch",
    seeds=(0, 1, 2),
)

PRESETS: dict[str, dict[str, Any]] = {
    # seed 001: 784-w-w-10 on Fashion-MNIST, plain SGD, batch 64, 50 epochs, torch init
    "seed-001": _SEED_001,
    # the same grid on the embedded digits data (no download)
    "seed-001-digits": {**_SEED_001, "dataset": "digits"},
    # seed 000: 10-w-2 on 100 Gaussian points with random labels, full batch, Adam
    "seed-000": dict(
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _ints(name: str):
    def parse(s: str) -> tuple[int, ...]:
        try:
            vals = tuple(int(v) for v in s.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be comma-separated integers, e.g. 64,256"
            ) from None
        return vals

    return parse


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(",") if v.strip())
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
        raise argparse.ArgumentTypeError(
            f"--lr-grid must be lo:hi:n, e.g. 1e-4:1:13; got {s!r}"
        ) from None
    if not (lo_f > 0 and hi_f > 0 and n_i >= 1):
        raise argparse.ArgumentTypeError(f"--lr-grid needs lo, hi > 0 and n >= 1; got {s!r}")
    if n_i == 1:
        return (lo_f,)
    a, b = math.log(lo_f), math.log(hi_f)
    return tuple(float(f"{math.exp(a + (b - a) * k / (n_i - 1)):.6g}") for k in range(n_i))


def _hidden(s: str) -> tuple[tuple[int, ...], ...]:
    try:
        return tuple(tuple(int(w) for w in arch.split("-")) for arch in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--hidden must be '-'-joined widths, comma-separated, e.g. 64-16,128-32; got {s!r}"
        ) from None


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = s.split("/")
        return int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be i/n, e.g. 0/4; got {s!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxlr.sweep`` argument parser."""
    p = _Parser(
        prog="python -m jaxlr.sweep",
        description=(
            "Train MLPs over a grid of widths x learning rates x seeds (x optimizers) at once "
            "and report how width changes the best learning rate. With no arguments: a "
            "default sweep on the embedded digits dataset."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = SweepConfig()
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=None, help=f"default {d.dataset}")
    g.add_argument("--data-dir", default=None, help="where dataset files live")
    g.add_argument(
        "--data-source",
        choices=("idx", "tfds"),
        default=None,
        help="reader for fashion_mnist/mnist (default idx)",
    )
    g.add_argument("--n-train", type=int, default=None, help="synthetic size / subsample")
    g.add_argument("--n-test", type=int, default=None, help="synthetic size / subsample")
    g.add_argument("--features", type=int, default=None, help="synthetic input dimension")
    g.add_argument("--num-classes", type=int, default=None, help="synthetic number of classes")
    g.add_argument("--data-seed", type=int, default=None, help="synthetic data seed (0)")
    g = p.add_argument_group("grid")
    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from a named configuration; other flags override it",
    )
    g.add_argument(
        "--widths",
        type=_ints("--widths"),
        default=None,
        help=f"hidden widths, e.g. 64,256,1024 (default {','.join(map(str, d.widths))})",
    )
    g.add_argument("--depth", type=int, default=None, help=f"hidden layers (default {d.depth})")
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=None,
        help="explicit architectures instead of --widths/--depth, e.g. 64-16,128-32",
    )
    g.add_argument("--lrs", type=_floats, default=None, help="learning rates, e.g. 1,0.1,0.01")
    g.add_argument(
        "--lr-grid",
        type=_lr_grid,
        default=None,
        help="log-spaced lrs lo:hi:n, e.g. 1e-4:1:13 (combined with --lrs)",
    )
    g.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    g.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+N-1")
    g.add_argument(
        "--optimizer",
        type=lambda s: tuple(s.split(",")),
        default=None,
        help=f"one or more of {','.join(OPTIMIZERS)}, comma-separated (default sgd)",
    )
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    g.add_argument("--init", choices=INITS, default=None, help="default torch")
    g.add_argument(
        "--lr-rule",
        choices=LR_RULES,
        default=None,
        help="per-layer / per-neuron rate rule; the swept lr is its base lr",
    )
    g.add_argument(
        "--layer-lr-mults",
        type=_floats,
        default=None,
        help="per-layer: one multiplier per layer, e.g. 1,0.5,0.2",
    )
    g.add_argument(
        "--weight-norm-factor",
        type=float,
        default=None,
        help="weight-norm: lr_j = lr (1 + factor ||w_j||) (default 0.01)",
    )
    g.add_argument("--adagrad-eps", type=float, default=None, help="adagrad-*: eps (1e-8)")
    g.add_argument(
        "--parametrization",
        choices=PARAMETRIZATIONS,
        default=None,
        help="sp (standard) or mup (needs --base-width)",
    )
    g.add_argument("--base-width", type=int, default=None, help="muP base width")
    g.add_argument(
        "--divergence-loss",
        type=float,
        default=None,
        help="a run whose batch loss is non-finite or >= this is frozen (100)",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="jax.default_matmul_precision (highest = full float32)",
    )
    g = p.add_argument_group("execution and output")
    g.add_argument(
        "--max-lanes",
        type=int,
        default=None,
        help="runs per compiled chunk (default: from a device-memory estimate)",
    )
    g.add_argument("--devices", type=int, default=None, help="local devices to shard runs on")
    g.add_argument("--shard", type=_shard, default=None, help="run grid shard i of n, e.g. 0/4")
    g.add_argument("--checkpoint-every", type=int, default=None, help="epochs per checkpoint")
    g.add_argument("--out", default=None, help="output directory (default runs/<timestamp>)")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in --out from its last checkpoint (with no other "
        "flags, the config is read from --out/config.json)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# flags that set the config field of the same name (``--optimizer`` sets ``optimizers``)
_FIELDS = (
    "dataset",
    "data_dir",
    "data_source",
    "n_train",
    "n_test",
    "features",
    "num_classes",
    "data_seed",
    "widths",
    "depth",
    "hidden",
    "epochs",
    "batch_size",
    "init",
    "lr_rule",
    "layer_lr_mults",
    "weight_norm_factor",
    "adagrad_eps",
    "parametrization",
    "base_width",
    "divergence_loss",
    "precision",
    "max_lanes",
    "devices",
    "shard",
    "checkpoint_every",
    "out",
)


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """Preset, then explicit flags, then validation."""
    fields: dict[str, Any] = {}
    if args.preset:
        fields.update(PRESETS[args.preset])
        fields["preset"] = args.preset
    for name in _FIELDS:
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.optimizer is not None:
        fields["optimizers"] = args.optimizer
    if args.lrs is not None or args.lr_grid is not None:
        lrs = set(args.lrs or ()) | set(args.lr_grid or ())
        fields["lrs"] = tuple(sorted(lrs))
    if args.seeds is not None:
        if args.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
        fields["seeds"] = tuple(range(args.first_seed, args.first_seed + args.seeds))
    elif args.first_seed:
        n = len(fields.get("seeds", SweepConfig().seeds))
        fields["seeds"] = tuple(range(args.first_seed, args.first_seed + n))
    if args.hidden is not None:
        fields.pop("widths", None)
    if fields.get("out") is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        fields["out"] = f"runs/{stamp}"
    return SweepConfig(**fields)


def _kept(cfg: SweepConfig) -> str:
    return (
        f"Finished chunks are in {cfg.out}/results.csv; continue with "
        f"`python -m jaxlr.sweep --resume --out {cfg.out}`."
    )


def merge_main(argv: Sequence[str]) -> int:
    """``python -m jaxlr.sweep merge DIR... [--out OUT]``."""
    p = _Parser(
        prog="python -m jaxlr.sweep merge",
        description="Merge the output directories of grid shards (--shard i/n).",
    )
    p.add_argument("dirs", nargs="+", help="shard output directories")
    p.add_argument("--out", default=None, help="merged output directory (default runs/merged-*)")
    args = p.parse_args(argv)
    out = args.out or f"runs/merged-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    from jaxlr.results import format_summary, summarize
    from jaxlr.runner import merge_runs

    try:
        df = merge_runs(args.dirs, out)
    except ConfigError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summarize(df)))
    print(f"\nmerged {len(args.dirs)} shard(s) into {out}/")
    return 0


_ALWAYS_ALLOWED_WITH_RESUME = {"out", "resume", "no_progress", "first_seed"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m jaxlr.sweep``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    from jaxlr.data import DataError
    from jaxlr.runner import load_config, run_sweep

    if args.resume and not args.out:
        print(
            f"{prog}: error: --resume needs --out DIR, the sweep directory to continue",
            file=sys.stderr,
        )
        return 2
    try:
        only_out = all(
            v in (None, False, 0)
            for k, v in vars(args).items()
            if k not in _ALWAYS_ALLOWED_WITH_RESUME
        )
        if args.resume and args.out and only_out:
            cfg = load_config(args.out).replace(out=args.out)
        else:
            cfg = config_from_args(args)
    except (ConfigError, DataError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        df = run_sweep(cfg, progress=not args.no_progress, resume=args.resume)
    except (ConfigError, DataError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted. {_kept(cfg)}", file=sys.stderr)
        return 130
    except Exception as e:  # a failure while training: say so in one line, keep the results
        print(
            f"{prog}: error while training: {type(e).__name__}: {e}. {_kept(cfg)}", file=sys.stderr
        )
        return 1
    from jaxlr.results import describe_shift, format_summary, summarize

    extra = "".join(
        f", {k} {v}"
        for k, v in (("rule", cfg.lr_rule), ("parametrization", cfg.parametrization))
        if v not in ("none", "sp")
    )
    print(
        f"\nBest learning rate per width ({cfg.dataset}, {cfg.epochs} epochs, "
        f"{len(cfg.seeds)} seed(s){extra}; final test loss, mean ± std over seeds):"
    )
    summary = summarize(df)
    print(format_summary(summary))
    shift = describe_shift(summary)
    if shift:
        print("\nHow width moves the best learning rate:\n" + shift)
    print(
        f"\nwrote {cfg.out}/: results.csv summary.csv config.json "
        "loss_curves.png lr_sensitivity.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
