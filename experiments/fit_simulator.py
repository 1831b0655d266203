"""fit_simulator: the calibration simulator's curve families, fitted to committed jaxlr sweeps.

:func:`jaxlr.stats.fit_family` fits each family (valley shape, floor, jaggedness below and above
lr*, seed shift and its correlation across widths, the stability cliff) to the final-epoch runs
of one optimizer in a committed sweep (``SOURCES``), by the final train loss. The result goes to
``experiments/results/simulator/families.csv``; :data:`jaxlr.stats.FAMILIES` holds the same
numbers (``tests/test_calibration.py`` checks that they agree), and the calibration test draws
its sweeps from them.

    python experiments/fit_simulator.py
"""

from __future__ import annotations

import dataclasses

import common
import pandas as pd

from jaxlr import results as res
from jaxlr import stats

SOURCES = {
    # name: (committed final-epoch runs, optimizer, parametrization)
    "adam-sp": ("adam_dense_check/final.csv", "adam", "sp"),
    "sgd-sp": ("mup_transfer/final.csv", "sgd", "sp"),
}


def families() -> list[stats.CurveFamily]:
    """Every family of :data:`SOURCES`, fitted."""
    out = []
    for name, (path, opt, par) in SOURCES.items():
        final = res.read_results(common.RESULTS / path)
        g = final[(final["optimizer"] == opt) & (final["parametrization"] == par)]
        out.append(stats.fit_family(g, "train_loss", name=name))
    return out


def main() -> None:
    p = common.parser(__doc__)
    args = p.parse_args()
    out = common.out_dir("simulator", args)
    fams = families()
    table = pd.DataFrame([dataclasses.asdict(f) for f in fams])
    table.insert(1, "source", [SOURCES[f.name][0] for f in fams])
    common.write_csv(table, out / "families.csv")
    print(source(fams))


def source(fams: list[stats.CurveFamily]) -> str:
    """:data:`jaxlr.stats.FAMILIES` as Python source, the numbers rounded to 4 decimals."""
    lines = ["FAMILIES: dict[str, CurveFamily] = {"]
    for f in fams:
        fields = ", ".join(
            f"{k}={v!r}" if isinstance(v, str) else f"{k}={round(v, 4)!r}"
            for k, v in dataclasses.asdict(f).items()
        )
        lines.append(f'    "{f.name}": CurveFamily({fields}),')
    return "\n".join([*lines, "}"])


if __name__ == "__main__":
    main()
