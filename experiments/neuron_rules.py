"""neuron_rules: how sensitive to the base lr is each per-layer / per-neuron rate rule?

64-w-w-10 MLPs on digits (widths 32, 64 and 128; 8 seeds), batch 64, with SGD and with Adam,
under each of jaxlr's rate rules (see :mod:`jaxlr.transforms`), the swept lr being the rule's
base rate:

- ``none``: one global rate;
- ``per-layer``: rates lr x (1, 0.5, 0.2) for the three layers (the per-neuron lr examples'
  1e-3, 5e-4, 2e-4);
- ``weight-norm``: per neuron, lr (1 + 0.01 ||w_j||) (the per-neuron lr examples' factor);
- ``adagrad-param``: per parameter, lr / (sqrt(sum of squared grads) + 1e-8);
- ``adagrad-neuron``: the same with the squared gradients summed over each neuron's input row.

Under Adam the rule's rate multiplies Adam's direction (about sign(g)), so the AdaGrad rules need
far smaller base rates there: each (rule, optimizer) has its own log2 grid (``GRIDS``), wide
enough to reach divergence or a flat plateau on both sides of its optimum.

Sensitivity of a rule = the width (in octaves, i.e. grid points spaced x2) of the set of lrs whose
seed-mean final test loss is within 25% (and within 100%) of the rule's best. The width
exponent of each rule (:func:`jaxlr.exponent.width_exponent`: lr* ∝ width^α with a 95%
paired-bootstrap-t interval over seeds) answers whether a per-neuron rule makes the optimum
width-independent, as muP does (α ≈ 0).

    python experiments/neuron_rules.py [--scale cpu|gpu] [--quick]

``--scale gpu``: Fashion-MNIST (784-w-w-10), widths 64..4096, 5 seeds, 20 epochs (into
``neuron_rules_gpu/``). Writes into ``experiments/results/neuron_rules/``: ``final.csv``,
``per_lr.csv``, ``optimum.csv``, ``sensitivity.csv``, ``width_exponent.csv``,
``transfer.csv`` and ``neuron_rules.png`` (``--analyze``: from the committed ``final.csv``).
"""

from __future__ import annotations

import common
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr import exponent, stats
from jaxlr.data import load_dataset
from jaxlr.sweep import SweepConfig

WIDTHS = (32, 64, 128)
GPU = dict(dataset="fashion_mnist", widths=(64, 256, 1024, 4096), seeds=(0, 1, 2, 3, 4), epochs=20)
SEEDS = tuple(range(8))
EPOCHS = 10
RULES = ("none", "per-layer", "weight-norm", "adagrad-param", "adagrad-neuron")
GRIDS = {
    ("sgd", "none"): (-8, 2),
    ("sgd", "per-layer"): (-8, 2),
    ("sgd", "weight-norm"): (-8, 2),
    ("sgd", "adagrad-param"): (-12, 3),
    ("sgd", "adagrad-neuron"): (-12, 3),
    ("adam", "none"): (-14, -2),
    ("adam", "per-layer"): (-14, -2),
    ("adam", "weight-norm"): (-14, -2),
    ("adam", "adagrad-param"): (-24, -4),
    ("adam", "adagrad-neuron"): (-24, -4),
}
KEYS = ["optimizer", "lr_rule", "width"]
LOSS = "test_loss"
TOLERANCES = (0.25, 1.0)


def configs(quick: bool, scale: str = "cpu") -> list[SweepConfig]:
    """One sweep per (optimizer, rule)."""
    cfgs = []
    for (opt, rule), (lo, hi) in GRIDS.items():
        cfg = SweepConfig(
            dataset="digits", widths=WIDTHS, depth=2, lrs=common.log2_grid(lo, hi),
            seeds=SEEDS, optimizers=(opt,), epochs=EPOCHS, batch_size=64, lr_rule=rule,
            layer_lr_mults=(1.0, 0.5, 0.2) if rule == "per-layer" else None,
            weight_norm_factor=0.01, adagrad_eps=1e-8,
        )  # fmt: skip
        if scale == "gpu":
            cfg = cfg.replace(**GPU)
        if quick:
            cfg = cfg.replace(widths=(16,), seeds=(0,), lrs=common.log2_grid(lo, hi, 4), epochs=1)
        cfgs.append(cfg)
    return cfgs


def sensitivity(agg: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, rule, width): best mean loss and lr, and the lr window within each
    tolerance of the best (octaves; lrs where any seed diverged never count)."""
    rows = []
    for key, g in agg.groupby(KEYS, sort=True):
        ok = g[np.isfinite(g[LOSS])]
        best = ok.loc[ok[LOSS].idxmin()]
        row = dict(zip(KEYS, key, strict=True))
        row.update(best_log2_lr=best["log2_lr"], best_loss=best[LOSS])
        row["best_accuracy"] = best["test_accuracy"]
        for tol in TOLERANCES:
            inside = ok[ok[LOSS] <= (1 + tol) * best[LOSS]]["log2_lr"]
            row[f"window_{int(tol * 100)}pct_octaves"] = len(inside)
            row[f"window_{int(tol * 100)}pct_range"] = f"[{inside.min():g}, {inside.max():g}]"
        row["grid"] = f"[{g['log2_lr'].min():g}, {g['log2_lr'].max():g}]"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's IDX files (gpu scale)")
    args = p.parse_args()
    out = common.out_dir("neuron_rules", args)
    cfgs = configs(args.quick, args.scale)
    data = load_dataset(cfgs[0].dataset, data_dir=args.data_dir if args.scale == "gpu" else None)
    final = common.final_table(out, cfgs, data, args.analyze)
    agg = common.per_lr(final, KEYS)
    common.write_csv(agg, out / "per_lr.csv")
    opt = common.optimal_lr(final, KEYS, LOSS)
    common.write_csv(opt, out / "optimum.csv")
    sens = sensitivity(agg)
    common.write_csv(sens, out / "sensitivity.csv")
    kw = dict(chance_loss=common.CHANCE, estimator=common.ESTIMATOR)
    alpha = exponent.width_exponent(final, LOSS, **kw)
    common.write_csv(alpha, out / "width_exponent.csv")
    transfer = exponent.transfer_table(final, LOSS, **kw)
    common.write_csv(transfer, out / "transfer.csv")

    fig, axes = plt.subplots(2, len(RULES), figsize=(3.6 * len(RULES), 7.0), squeeze=False)
    for i, o in enumerate(("sgd", "adam")):
        for j, rule in enumerate(RULES):
            runs = final[(final["optimizer"] == o) & (final["lr_rule"] == rule)]
            title = f"{o.upper()} + {rule}"
            common.lr_panel(axes[i, j], runs, LOSS, title=title, log_y=True, ylim=(0.05, 3))
    fig.suptitle(
        f"digits, 64-w-w-10, {final['epoch'].max()} epochs, {final['seed'].nunique()} seeds: "
        "final test loss against the rule's base lr",
        fontsize=11,
    )
    common.save(fig, out / "neuron_rules.png")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(sens.to_string(index=False))
    print(exponent.format_exponent(alpha))
    print(stats.format_transfer(transfer))


if __name__ == "__main__":
    main()
