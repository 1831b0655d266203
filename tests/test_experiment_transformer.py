"""experiments/transformer_width.py: a tiny-scale run writes its tables, and the committed README
block and tables agree with the committed CSVs (numpy references, not the script's own code)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "experiments" / "results" / "transformer_width"
TABLES = (
    "final.csv", "sweeps.csv", "summary.csv", "width_exponent.csv", "transfer.csv",
    "optimum.csv", "lr_curves.png",
)  # fmt: skip


def _load(name: str):
    """Imports ``experiments/name.py`` with its folder on the path (it imports its siblings)."""
    path = ROOT / "experiments"
    sys.path.insert(0, str(path))
    try:
        spec = importlib.util.spec_from_file_location(f"_{name}", path / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up while being built
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path))
    return mod


@pytest.fixture(scope="module")
def exp():
    return _load("transformer_width")


@pytest.fixture(scope="module")
def tiny(exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("transformer_width_tiny")
    exp.main(["--scale", "tiny", "--out", str(out)])
    return out


@pytest.mark.slow  # the experiment at its tiny scale
def test_tiny_scale_writes_its_tables(exp, tiny):
    for name in TABLES:
        assert (tiny / name).stat().st_size > 0, name
    s = exp.SCALES["tiny"]
    final = pd.read_csv(tiny / "final.csv")
    n_lrs = {p: hi - lo + 1 for p, (lo, hi) in s.log2_lrs.items()}
    assert len(final) == len(s.widths) * s.seeds * sum(n_lrs.values())
    assert (final["epoch"] == s.steps // s.eval_every).all()  # the last evaluation of each run
    sweeps = pd.read_csv(tiny / "sweeps.csv").set_index("parametrization")
    for par, (lo, hi) in s.log2_lrs.items():
        assert (sweeps.loc[par, "log2_lr_min"], sweeps.loc[par, "log2_lr_max"]) == (lo, hi)
        assert sweeps.loc[par, "steps"] == s.steps


@pytest.mark.slow  # the experiment at its tiny scale
def test_tiny_summary_is_the_argmin_of_the_seed_mean(tiny):
    """summary.csv's best lr against numpy's argmin of the seed-mean final train loss."""
    final = pd.read_csv(tiny / "final.csv")
    summary = pd.read_csv(tiny / "summary.csv")
    for (par, width), g in final.groupby(["parametrization", "width"]):
        lrs = np.sort(g["lr"].unique())
        mean = np.array([g.loc[g["lr"] == lr, "train_loss"].mean() for lr in lrs])
        row = summary[(summary["parametrization"] == par) & (summary["width"] == width)]
        assert len(row) == 1
        assert row["best_lr"].iloc[0] == pytest.approx(lrs[np.argmin(mean)], rel=1e-6)
        assert row["best_loss"].iloc[0] == pytest.approx(mean.min(), rel=1e-5)


def test_committed_readme_block_matches_the_committed_csvs(exp):
    text = (ROOT / "experiments" / "README.md").read_text()
    m = re.search(
        r"<!-- transformer-width:start -->\n(.*?)\n<!-- transformer-width:end -->", text, re.S
    )
    assert m, "the transformer-width markers are missing from experiments/README.md"
    assert m.group(1) == exp.readme_block(COMMITTED)


def test_committed_alpha_is_the_slope_of_the_committed_optima():
    """α in width_exponent.csv against numpy's least-squares slope of optimum.csv's seed-mean
    log2 lr* on log2 width (every seed has an lr* at every width in the committed runs)."""
    t = pd.read_csv(COMMITTED / "width_exponent.csv").set_index("parametrization")
    opt = pd.read_csv(COMMITTED / "optimum.csv")
    for par, q in opt.groupby("parametrization"):
        assert (q["n_seeds"] == t.loc[par, "n_seeds"]).all()
        slope = np.polyfit(np.log2(q["width"]), q["log2_lr_star_mean"], 1)[0]
        assert t.loc[par, "alpha"] == pytest.approx(slope, abs=1e-4)
        assert t.loc[par, "alpha_lo"] < t.loc[par, "alpha"] < t.loc[par, "alpha_hi"]


def test_committed_regret_is_the_seed_mean_curve_at_the_base_lr_star():
    """transfer.csv's regret at the widest width against numpy: the seed-mean log loss at the
    base width's mean lr* (linear in log2 lr between grid points) minus its minimum."""
    final = pd.read_csv(COMMITTED / "final.csv")
    tr = pd.read_csv(COMMITTED / "transfer.csv")
    for par, g in final.groupby("parametrization"):
        widths = np.sort(g["width"].unique())
        w = g[g["width"] == widths[-1]]
        lrs = np.sort(w["lr"].unique())
        m = np.array([np.log(w.loc[w["lr"] == lr, "train_loss"]).mean() for lr in lrs])
        row = tr[(tr["parametrization"] == par) & (tr["width"] == widths[-1])].iloc[0]
        at = np.interp(row["log2_lr_star_base"], np.log2(lrs), m)
        want = 100 * math.expm1(at - m.min())
        assert row["regret_pct"] == pytest.approx(want, rel=0.02, abs=0.05)
