"""width_exponent: the seeds' question as a number, lr* ∝ width^α per parametrization, optimizer.

For SGD and Adam, under three parametrizations in one sweep each (``--parametrization
sp,mup,lr-exp``):

- ``sp``: torch init, one global rate;
- ``mup``: muP (base width ``BASE``): muP init, output multiplier and per-layer rates;
- ``lr-exp``: SP's init with muP's per-layer rate exponents only, lr_l = lr (w/BASE)^(-e_l):
  Adam (0, 1, 1), SGD (-1, 0, 1) (Yang et al. 2022, Table 3) — how much of muP's transfer the
  rates alone give.

Each sweep starts from a grid spaced by 2 octaves and adds two ``--refine`` rounds around every
optimum (half the spacing each round). The best lr is chosen by final **train** loss, as
muP-style studies do. :func:`jaxlr.exponent.width_exponent` then fits α (least squares of
log2 lr* on log2 width, each seed's lr* by the ``local-quadratic`` estimator) with a 95%
paired-bootstrap-t interval over seeds, and the same for the divergence threshold;
:func:`jaxlr.exponent.transfer_table` gives the regret of transferring width 32's lr*.

Scales (``--scale``):

- ``cpu`` (default, about 25 min on a shared 2-core CPU): digits, widths 32..256, 8 seeds,
  10 epochs.
- ``gpu`` (the real answer; for one GPU): Fashion-MNIST (60,000 images), widths 64..8192,
  8 seeds, 20 epochs (``--data-dir`` or jaxlr's default data places).

    python experiments/width_exponent.py [--scale cpu|gpu] [--data-dir DIR] [--quick]

Writes into ``experiments/results/width_exponent[_gpu]/``: ``final.csv`` (the last epoch of
every run; ``--analyze`` recomputes the rest from it), ``width_exponent.csv``,
``transfer.csv``, ``width_exponent.png`` and ``anchors.csv`` (α beside published values).
"""

from __future__ import annotations

import sys

import common
import numpy as np
import pandas as pd

from jaxlr import exponent, stats
from jaxlr.data import load_dataset
from jaxlr.sweep import SweepConfig

SCALES = {
    "cpu": dict(
        dataset="digits", widths=(32, 64, 128, 256), seeds=tuple(range(8)), epochs=10, base=32
    ),
    "gpu": dict(
        dataset="fashion_mnist",
        widths=(64, 128, 256, 512, 1024, 2048, 4096, 8192),
        seeds=tuple(range(8)),
        epochs=20,
        base=64,
    ),
}
GRIDS = {"sgd": (-10, 4), "adam": (-16, -2)}  # log2 lr range, every second octave
LR_EXPONENTS = {"adam": (0.0, 1.0, 1.0), "sgd": (-1.0, 0.0, 1.0)}
SELECT = "train_loss"
# Published values of alpha (lr* ∝ width^alpha) to compare with; see experiments/README.md.
ANCHORS = {
    ("adam", "sp"): (-1.0, "SP Adam: the optimum halves per width doubling (transformer sweeps)"),
    ("adam", "mup"): (0.0, "muP: width-independent optimum (Yang et al. 2022)"),
    ("sgd", "mup"): (0.0, "muP: width-independent optimum (Yang et al. 2022)"),
}


def configs(scale: str, quick: bool, data_dir: str | None) -> list[SweepConfig]:
    """One sweep per optimizer, every parametrization in it."""
    s = SCALES[scale]
    cfgs = []
    for opt, (lo, hi) in GRIDS.items():
        cfg = SweepConfig(
            dataset=s["dataset"], data_dir=data_dir, widths=s["widths"], depth=2,
            lrs=common.log2_grid(lo, hi, 2), seeds=s["seeds"], optimizers=(opt,),
            epochs=s["epochs"], batch_size=64, parametrizations=("sp", "mup", "lr-exp"),
            base_width=s["base"], lr_exponents=LR_EXPONENTS[opt], refine=2, select=SELECT,
        )  # fmt: skip
        if quick:
            cfg = cfg.replace(widths=s["widths"][:3], seeds=(0, 1), epochs=2, refine=1)
        cfgs.append(cfg)
    return cfgs


def anchors(table: pd.DataFrame) -> pd.DataFrame:
    """The fitted α beside the published value, where there is one."""
    rows = []
    for _, r in table.iterrows():
        value, source = ANCHORS.get((r["optimizer"], r["parametrization"]), (np.nan, ""))
        inside = bool(r["alpha_lo"] <= value <= r["alpha_hi"]) if np.isfinite(value) else None
        rows.append(
            dict(
                optimizer=r["optimizer"], parametrization=r["parametrization"],
                alpha=r["alpha"], alpha_lo=r["alpha_lo"], alpha_hi=r["alpha_hi"],
                published=value, published_inside_interval=inside, source=source,
            )
        )  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST files (gpu scale)")
    args = p.parse_args()
    out = common.out_dir("width_exponent", args)
    data_dir = args.data_dir if SCALES[args.scale]["dataset"] != "digits" else None
    cfgs = configs(args.scale, args.quick, data_dir)
    data = load_dataset(cfgs[0].dataset, data_dir=data_dir)
    df = common.final_table(out, cfgs, data, args.analyze)
    kw = dict(chance_loss=common.CHANCE, estimator=common.ESTIMATOR)
    table = exponent.width_exponent(df, SELECT, **kw)
    common.write_csv(table, out / "width_exponent.csv")
    common.write_csv(anchors(table), out / "anchors.csv")
    transfer = exponent.transfer_table(df, SELECT, **kw)
    common.write_csv(transfer, out / "transfer.csv")
    exponent.plot_width_exponent(df, out / "width_exponent.png", select=SELECT, **kw)
    print(exponent.format_exponent(table), file=sys.stderr)
    print(stats.format_transfer(transfer), file=sys.stderr)


if __name__ == "__main__":
    main()
