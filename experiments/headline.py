"""headline: the README tables, regenerated from the committed CSVs.

Each table lives between two markers, ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; this
script replaces what is between them (nothing else) and fails if a marker is missing:

- ``README.md``, ``headline``: α for SP / muP / ``lr-exp`` under Adam and SGD, with the transfer
  regret (``width_exponent/width_exponent.csv``, ``width_exponent/transfer.csv``);
- ``experiments/README.md``: ``exponent`` (every row of ``width_exponent.csv``), ``transfer``
  (the regret at every width, from ``width_exponent`` and ``mup_transfer``), ``dense-check``
  (``adam_dense_check/check.csv``), ``calibration`` (``simulator/calibration.csv``),
  ``neuron-rules`` (``neuron_rules/width_exponent.csv``), ``mup-optimum``
  (``mup_transfer/optimum.csv``), and the blocks that experiments render from their own results,
  ``transformer-width`` among them (``experiments/transformer_width.py`` from
  ``transformer_width/``).

    python experiments/headline.py [--check]

``--check`` writes nothing and exits 1 if a file would change (for CI).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
NAMES = {"sp": "SP", "mup": "muP", "lr-exp": "SP + muP's rate exponents only (`lr-exp`)"}


def num(v: float, digits: int = 2) -> str:
    """A signed number with a real minus sign; ``n/a`` for NaN."""
    if not math.isfinite(v):
        return "n/a" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    return f"{v:.{digits}f}".replace("-", "−")


def interval(r: pd.Series, col: str = "alpha") -> str:
    """``−0.61 [−0.72, −0.50]``."""
    return f"{num(r[col])} [{num(r[col + '_lo'])}, {num(r[col + '_hi'])}]"


def par(r: pd.Series) -> str:
    """The parametrization's name in the tables."""
    return NAMES.get(r["parametrization"], r["parametrization"])


def pct(v: float) -> str:
    """A regret in %: two significant digits below 10, whole numbers above."""
    if not math.isfinite(v):
        return num(v)
    return f"{v:.2g}" if abs(v) < 10 else f"{v:.0f}"


def regret(r: pd.Series) -> str:
    """``18% [12, 25]``."""
    head = pct(r["regret_pct"]) + ("%" if math.isfinite(r["regret_pct"]) else "")
    return f"{head} [{pct(r['regret_lo'])}, {pct(r['regret_hi'])}]"


def headline() -> str:
    """The top-level README's table."""
    t = pd.read_csv(RESULTS / "width_exponent" / "width_exponent.csv")
    tr = pd.read_csv(RESULTS / "width_exponent" / "transfer.csv")
    widths = sorted(tr["width"].unique())
    pars = [p for p in NAMES if p in set(t["parametrization"])]
    n_seeds = int(t["n_seeds"].min())
    lines = [
        f"digits, 64-w-w-10, widths {widths[0]}–{widths[-1]}, {n_seeds} seeds, 10 epochs; lr\\* of "
        f"each seed by final train loss ({t['estimator'].iloc[0]}); 95% {t['ci_method'].iloc[0]} "
        f"intervals over seeds; regret: the final train loss at the widest width when trained at "
        f"width {widths[0]}'s lr\\*, against its best lr "
        "([width_exponent.csv](experiments/results/width_exponent/width_exponent.csv), "
        "[transfer.csv](experiments/results/width_exponent/transfer.csv))",
        "",
        "| | " + " | ".join(NAMES[p] for p in pars) + " |",
        "|---|" + "---|" * len(pars),
    ]
    for opt in ("adam", "sgd"):
        a = t[t["optimizer"] == opt].set_index("parametrization")
        w = tr[(tr["optimizer"] == opt) & (tr["width"] == widths[-1])].set_index("parametrization")
        cells = [f"α = {interval(a.loc[p])}" for p in pars]
        name = {"adam": "Adam", "sgd": "SGD"}[opt]
        lines.append(f"| **{name}**, lr\\* ∝ width^α | " + " | ".join(cells) + " |")
        cells = [regret(w.loc[p]) for p in pars]
        lines.append(f"| {name}, regret {widths[0]} → {widths[-1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def exponent_table(path: Path) -> str:
    """Every row of a ``width_exponent.csv``."""
    t = pd.read_csv(path)
    lines = [
        "| optimizer | rule | parametrization | α (lr\\*) [95%] | n_seeds | α (divergence) [95%] |",
        "|---|---|---|---|---:|---|",
    ]
    for _, r in t.iterrows():
        div = interval(r, "alpha_div") if math.isfinite(r["alpha_div"]) else "none in the grid"
        lines.append(
            f"| {r['optimizer']} | {r['lr_rule']} | {par(r)} | {interval(r)} "
            f"| {int(r['n_seeds'])} | {div} |"
        )
    return "\n".join(lines)


def transfer_table() -> str:
    """The regret at every width, per sweep and parametrization."""
    lines = [
        "| sweep | optimizer | parametrization | width | log2 lr\\* | regret of the base lr\\* "
        "[95%] | basin 1% / 5% (octaves) |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for sweep in ("width_exponent", "mup_transfer"):
        path = RESULTS / sweep / "transfer.csv"
        if not path.exists():
            continue
        for _, r in pd.read_csv(path).iterrows():
            lines.append(
                f"| {sweep} | {r['optimizer']} | {par(r)} | {int(r['width'])} "
                f"| {num(r['log2_lr_star'])} | {regret(r)} "
                f"| {r['basin_1pct_octaves']:.2f} / {r['basin_5pct_octaves']:.2f} |"
            )
    return "\n".join(lines)


def dense_check() -> str:
    """``adam_dense_check/check.csv`` as a table."""
    t = pd.read_csv(RESULTS / "adam_dense_check" / "check.csv")
    lines = ["| check | value | 95% interval |", "|---|---:|---|"]
    for _, r in t.iterrows():
        iv = f"[{num(r['lo'])}, {num(r['hi'])}]" if math.isfinite(r.get("lo", math.nan)) else ""
        name = str(r["check"]).replace("|", "\\|")
        lines.append(f"| {name} | {num(r['value'], 3)} | {iv} |")
    return "\n".join(lines)


def calibration() -> str:
    """``simulator/calibration.csv`` as a table."""
    t = pd.read_csv(RESULTS / "simulator" / "calibration.csv")
    lines = [
        "| seeds | interval | coverage of the true α | bias | SD of α̂ − α | median half-width |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for _, r in t.iterrows():
        lines.append(
            f"| {int(r['n_seeds'])} | {r['interval']} | {r['coverage']:.1%} | {num(r['bias'], 3)} "
            f"| {r['sd']:.3f} | {r['half_width']:.3f} |"
        )
    return "\n".join(lines)


def mup_optimum() -> str:
    """log2 lr* per width from ``mup_transfer/optimum.csv``: mean ± std over seeds."""
    t = pd.read_csv(RESULTS / "mup_transfer" / "optimum.csv")
    cols = [("sp", "adam"), ("mup", "adam"), ("sp", "sgd"), ("mup", "sgd")]
    lines = [
        "| width | SP, Adam | muP, Adam | SP, SGD | muP, SGD |",
        "|---:|---:|---:|---:|---:|",
    ]
    for w, g in t.groupby("width", sort=True):
        g = g.set_index(["parametrization", "optimizer"])
        cells = [
            f"{num(g.loc[c, 'log2_lr_star_mean'])} ± {g.loc[c, 'log2_lr_star_std']:.2f}"
            for c in cols
        ]
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with what lies between ``name``'s markers replaced by ``body``."""
    pattern = re.compile(
        rf"(<!-- {re.escape(name)}:start -->\n).*?(<!-- {re.escape(name)}:end -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"headline: the markers <!-- {name}:start/end --> are missing")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def optimizers_schedules() -> str:
    """The optimizers-and-schedules block, rendered by its own script from its CSVs."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import optimizers_schedules as experiment

    return experiment.readme_block(RESULTS / "optimizers_schedules")


def transformer_width() -> str:
    """The GPT width block (SP vs muP under AdamW + warmup), rendered by its own script."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import transformer_width as experiment

    return experiment.readme_block(RESULTS / "transformer_width")


def blocks() -> dict[Path, dict[str, str]]:
    """What goes where."""
    exp = {
        "exponent": exponent_table(RESULTS / "width_exponent" / "width_exponent.csv"),
        "transfer": transfer_table(),
        "dense-check": dense_check(),
        "calibration": calibration(),
        "neuron-rules": exponent_table(RESULTS / "neuron_rules" / "width_exponent.csv"),
        "mup-optimum": mup_optimum(),
        "optimizers-schedules": optimizers_schedules(),
        "transformer-width": transformer_width(),
    }
    return {ROOT / "README.md": {"headline": headline()}, ROOT / "experiments" / "README.md": exp}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    args = p.parse_args()
    changed = []
    for path, named in blocks().items():
        old = path.read_text()
        new = old
        for name, body in named.items():
            new = replace_block(new, name, body)
        if new != old:
            changed.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    verb = "would change" if args.check else "rewrote"
    print(f"headline: {verb} {', '.join(changed) or 'nothing'}", file=sys.stderr)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
