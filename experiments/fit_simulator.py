"""fit_simulator: the calibration simulator's curve families, fitted to committed jaxlr sweeps.

:func:`jaxlr.simulate.fit_family` fits each family (valley shape, floor, jaggedness below and above
lr*, seed shift and its correlation across widths, the stability cliff) to the final-epoch runs
of one optimizer in a committed sweep (``SOURCES``), by the final train loss. The result goes to
``experiments/results/simulator/families.csv``; :data:`jaxlr.simulate.FAMILIES` holds the same
numbers (``tests/test_calibration.py`` checks that they agree), and the calibration test draws
its sweeps from them.

    python experiments/fit_simulator.py
"""

from __future__ import annotations

import dataclasses

import common
import numpy as np
import pandas as pd

from jaxlr import results as res
from jaxlr import simulate, stats

SOURCES = {
    # name: (committed final-epoch runs, optimizer, parametrization)
    "adam-sp": ("adam_dense_check/final.csv", "adam", "sp"),
    "sgd-sp": ("mup_transfer/final.csv", "sgd", "sp"),
}


def families() -> list[simulate.CurveFamily]:
    """Every family of :data:`SOURCES`, fitted."""
    out = []
    for name, (path, opt, par) in SOURCES.items():
        final = res.read_results(common.RESULTS / path)
        g = final[(final["optimizer"] == opt) & (final["parametrization"] == par)]
        out.append(simulate.fit_family(g, "train_loss", name=name))
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
    common.write_csv(calibration(), out / "calibration.csv")


def calibration() -> pd.DataFrame:
    """What ``tests/test_calibration.py`` checks, as numbers: per seed count, the coverage of
    the true α by the 95% interval (and by two narrower ones the library does not use), the
    bias and spread of α̂, and the median half-width."""
    rows = []
    for n in (3, 5, 8):
        runs = simulate.calibration_sweeps(n, 200, rng_seed=n)
        truth = np.array([s.true_alpha for s, _ in runs])
        est = np.array([iv.estimate for _, iv in runs])
        se = np.array([(iv.hi - iv.lo) / 2 for _, iv in runs]) / stats.t_quantile(0.975, n - 1)
        boot = [iv.boot for _, iv in runs]
        kinds = {
            stats.CI_METHOD: [(iv.lo, iv.hi) for _, iv in runs],
            "same SE, normal 1.96 (not used)": list(
                zip(est - 1.959964 * se, est + 1.959964 * se, strict=True)
            ),
            "percentile bootstrap (not used)": [
                (np.nanpercentile(b, 2.5), np.nanpercentile(b, 97.5)) for b in boot
            ],
        }
        for kind, ivs in kinds.items():
            cover = np.mean([lo <= t <= hi for t, (lo, hi) in zip(truth, ivs, strict=True)])
            half = np.median([(hi - lo) / 2 for lo, hi in ivs])
            rows.append(
                dict(n_seeds=n, interval=kind, coverage=cover, bias=np.mean(est - truth),
                     sd=np.std(est - truth), half_width=half)
            )  # fmt: skip
    return pd.DataFrame(rows)


def source(fams: list[simulate.CurveFamily]) -> str:
    """:data:`jaxlr.simulate.FAMILIES` as Python source, the numbers rounded to 4 decimals."""
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
