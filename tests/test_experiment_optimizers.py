"""experiments/optimizers_schedules.py's analysis and benchmarks/rules_overhead.py's schedule
programs, without training: loss curves with a known optimum in closed form."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(folder: str, name: str):
    """Imports ``folder/name.py`` with its folder on the path (the scripts import siblings)."""
    path = ROOT / folder
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
    return _load("experiments", "optimizers_schedules")


# (variant, schedule, parametrization) -> (log2 lr* at width 32, alpha)
TRUTH = {
    ("adamw-coupled", "constant", "sp"): (-6.0, -0.5),
    ("adamw-independent", "constant", "sp"): (-6.0, 0.25),  # same optimizer and depth
    ("adamw-coupled", "warmup-cosine", "sp"): (-5.0, -1.0),
    ("adamw-coupled", "constant", "mup"): (-6.0, 0.0),
}


def _final(weight_decay: dict[str, float]) -> pd.DataFrame:
    """Final-epoch rows whose train loss is 0.1 exp((k - k*(w))² / 8) at lr 2**k, with
    k*(w) = k0 + alpha log2(w / 32): a parabola in log loss, whose vertex every estimator finds
    exactly, so the fitted exponent must be alpha."""
    rows = []
    for (variant, sched, par), (k0, alpha) in TRUTH.items():
        for w in (32, 64, 128, 256):
            star = k0 + alpha * np.log2(w / 32)
            for k in range(-12, 0):
                for s in range(3):
                    rows.append(
                        dict(
                            variant=variant, schedule=sched, width=w, depth=2, hidden=f"{w}-{w}",
                            optimizer="adamw", lr_rule="none", parametrization=par,
                            weight_decay=weight_decay[variant], lr=2.0**k, seed=s, round=0,
                            epoch=5, train_loss=0.1 * np.exp((k - star) ** 2 / 8),
                            test_loss=1.0, test_accuracy=0.5, diverged=False,
                            diverged_epoch=pd.NA,
                        )
                    )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("same_decay", [False, True])
def test_alpha_per_variant_and_schedule(exp, same_decay):
    # with equal decays, coupled and independent AdamW share every results key: only the tags
    # keep them apart
    wd = {"adamw-coupled": 0.5, "adamw-independent": 0.5 if same_decay else 2.0**-7}
    table = exp.per_group(exp.exponent.width_exponent, _final(wd))
    assert len(table) == len(TRUTH)
    for (variant, sched, par), (_, alpha) in TRUTH.items():
        r = table[
            (table["variant"] == variant)
            & (table["schedule"] == sched)
            & (table["parametrization"] == par)
        ]
        assert len(r) == 1, (variant, sched, par)
        assert float(r["alpha"].iloc[0]) == pytest.approx(alpha, abs=1e-6)
        assert int(r["n_widths"].iloc[0]) == 4


def test_transfer_regret_matches_the_closed_form(exp):
    wd = {"adamw-coupled": 0.5, "adamw-independent": 2.0**-7}
    tr = exp.per_group(exp.exponent.transfer_table, _final(wd))
    for (variant, sched, par), (k0, alpha) in TRUTH.items():
        r = tr[
            (tr["variant"] == variant)
            & (tr["schedule"] == sched)
            & (tr["parametrization"] == par)
            & (tr["width"] == 256)
        ].iloc[0]
        # trained at width 32's lr* (k0) where the best is k0 + 3 alpha: loss ratio
        # exp((3 alpha)^2 / 8); the best tested lr at 256 sits on the whole-octave grid
        best_k = k0 + 3 * alpha
        on_grid = min(range(-12, 0), key=lambda k: abs(k - best_k))
        expected = np.exp(((k0 - best_k) ** 2 - (on_grid - best_k) ** 2) / 8) - 1
        assert float(r["regret_pct"]) == pytest.approx(100 * expected, rel=1e-4, abs=1e-4)


def test_final_csv_round_trip_keeps_the_tags(exp, tmp_path):
    wd = {"adamw-coupled": 0.5, "adamw-independent": 2.0**-7}
    df = _final(wd)
    from jaxlr import results as res

    res.write_csv(tmp_path / "final.csv", df[[*exp.TAGS, *res.COLUMNS]])
    back = exp.read_final(tmp_path / "final.csv")
    assert list(back["variant"]) == list(df["variant"])
    assert list(back["schedule"]) == list(df["schedule"])
    np.testing.assert_array_equal(back["train_loss"], df["train_loss"].astype(np.float32))


def test_configs_cover_the_rows(exp):
    cfgs = exp.configs("cpu")
    seen = {(t["variant"], t["schedule"]): c for t, c in cfgs}
    assert len(seen) == len(exp.VARIANTS) * len(exp.SCHEDULES) == 8
    assert seen["muon-rms", "constant"].parametrizations == ("sp",)
    for (_, sched), c in seen.items():
        assert c.schedule == sched and len(c.seeds) >= 8 and len(c.widths) >= 4
        assert (c.warmup == 0.1) == (sched == "warmup-cosine")
    assert seen["adamw-independent", "constant"].weight_decay_mode == "independent"
    assert seen["adamw-coupled", "constant"].weight_decays == (0.5,)


def test_schedule_programs_differ_only_in_the_schedule():
    bench = _load("benchmarks", "rules_overhead")
    from jaxlr.data import load_dataset

    data = load_dataset("digits")
    cfg = bench.ScheduleBench()
    specs = bench.schedule_specs(32, "adam", data, cfg)
    assert set(specs) >= {"constant", "warmup-cosine", "warmup-linear", "wsd"}
    base = dataclasses.asdict(specs["constant"])
    for name, spec in specs.items():
        diff = {k for k, v in dataclasses.asdict(spec).items() if base[k] != v}
        assert diff <= {"schedule", "warmup", "total_steps"}, (name, diff)
        assert spec.schedule == name
    steps = specs["constant"].steps_per_epoch
    total = cfg.epochs * steps
    assert specs["warmup-cosine"].total_steps == total
    # the multiplier the timed program applies: warmup to 1, then a cosine to 0 (closed form)
    spec = specs["warmup-cosine"]
    warm = round(0.1 * total)
    t = np.arange(total)
    cos = 0.5 * (1 + np.cos(np.pi * np.clip((t - warm) / (total - warm), 0, 1)))
    expected = np.where(t < warm, np.minimum(1, (t + 1) / warm), cos)
    got = np.array([float(spec.schedule_multiplier(jnp.int32(i))) for i in t])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
