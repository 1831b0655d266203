"""optimizers_schedules: how the optimizer and the lr schedule move lr* ∝ width^α, SP vs muP.

Four optimizers, each under a constant lr and under warmup-cosine (10% linear warmup, then a
cosine to 0), in SP and in muP (base width ``BASE``; Muon in SP only, the registry refuses
muP for it), on 64-w-w-10 MLPs:

- ``sgd-momentum``: SGD with PyTorch's momentum 0.9 (dampening 0), no weight decay;
- ``adamw-coupled``: AdamW, PyTorch's coupled decay (the decay is multiplied by the lr),
  λ = 0.5;
- ``adamw-independent``: AdamW with decay independent of the lr,
  θ ← θ − s_t λ′ θ, λ′ = 2⁻⁷ ≈ 0.0078 (not scaled with width);
- ``muon-rms``: Muon for the hidden matrices (Newton-Schulz, Moonshot's RMS scaling
  0.2·sqrt(max(fan_in, fan_out))), Adam for the rest.

**Why these decays.** A decay matters when its total shrink over training, Σ_t η s_t λ
(coupled) or Σ_t s_t λ′ (independent), is of order 1. At the cpu scale a run is 110 steps
(5 epochs of 22) and the Adam optimum at the base width is about η* = 2⁻⁶, so coupled
λ = 0.5 gives Σ η* λ ≈ 0.86 under a constant lr (PyTorch's default 0.01 would give 0.02:
no effect), and λ′ = 2⁻⁷ = η* λ makes the two decays the same at the base width's optimum.
They then differ only in how the decay moves with the lr, and so, under SP, with width:
coupled decay shrinks with the optimum, independent decay does not.

Each (optimizer, schedule) is one sweep with both parametrizations; the lr grid is whole
octaves, 9 lrs, placed around the optima found in a 2-seed probe (warmup-cosine's optimum
lies about an octave above the constant lr's). lr* is read from the final **train** loss
(each seed's by the library's ``local-quadratic`` estimator); α is
:func:`jaxlr.exponent.width_exponent`'s least-squares slope with its paired-bootstrap-t
interval over seeds, and :func:`jaxlr.exponent.transfer_table` the regret of training every
width at the narrowest width's lr*.

Scales (``--scale``):

- ``cpu`` (19.8 min from a cold compilation cache on the shared 2-core CPU at load average
  ~10, of which compilation is more than half; ``--estimate`` measures it on the machine at
  hand): digits, widths 32..256, 8 seeds, 5 epochs. The reduced Fashion-MNIST does not fit
  this budget (12,800 images are 200 steps per epoch against digits' 22, through a 784-wide
  input layer) and is left to the gpu scale.
- ``gpu`` (for one GPU; not run): Fashion-MNIST (60,000 images), widths 64..2048, 8 seeds,
  10 epochs, base width 64 (Muon's Newton-Schulz costs ~30 w³ FLOPs per hidden matrix and
  step, which is what stops the widths at 2048).

    python experiments/optimizers_schedules.py [--scale cpu|gpu] [--quick] [--analyze]
    python experiments/optimizers_schedules.py --estimate   # time a 1-epoch version, extrapolate

Writes into ``experiments/results/optimizers_schedules[_gpu]/``: ``final.csv`` (the last epoch
of every run, with ``variant`` and ``schedule`` columns; ``--analyze`` recomputes the rest from
it), ``width_exponent.csv``, ``transfer.csv``, ``optimum.csv`` (log2 lr* per width, mean and
std over seeds) and ``lr_star.png``; and the generated block of its section in
``experiments/README.md``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import common
import headline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr import exponent
from jaxlr import results as res
from jaxlr.data import load_dataset
from jaxlr.sweep import SweepConfig

NAME = "optimizers_schedules"
SELECT = "train_loss"
TAGS = ("variant", "schedule")
README = Path(__file__).resolve().parent / "README.md"
BLOCK = "optimizers-schedules"
SCALES = {
    "cpu": dict(dataset="digits", widths=(32, 64, 128, 256), seeds=8, epochs=5, base=32),
    "gpu": dict(
        dataset="fashion_mnist", widths=(64, 128, 256, 512, 1024, 2048), seeds=8, epochs=10,
        base=64,
    ),
}  # fmt: skip
COUPLED_DECAY = 0.5
INDEPENDENT_DECAY = 2.0**-7
SCHEDULES: dict[str, dict[str, Any]] = {
    "constant": {},
    "warmup-cosine": dict(warmup=0.1, final_lr_fraction=0.0),
}
N_LRS = 9  # whole octaves per sweep


@dataclasses.dataclass(frozen=True)
class Variant:
    """One optimizer row: its :class:`SweepConfig` options and where its lr grid starts."""

    name: str
    options: Mapping[str, Any]  # SweepConfig fields (optimizers, momentum, weight decay, ...)
    log2_lr_low: Mapping[str, int]  # per schedule: the grid is 2**low ... 2**(low + N_LRS - 1)
    parametrizations: tuple[str, ...] = ("sp", "mup")


VARIANTS = (
    Variant(
        "sgd-momentum", dict(optimizers=("sgd",), momentum=0.9),
        {"constant": -8, "warmup-cosine": -8},
    ),
    Variant(
        "adamw-coupled",
        dict(optimizers=("adamw",), weight_decays=(COUPLED_DECAY,), weight_decay_mode="coupled"),
        {"constant": -11, "warmup-cosine": -10},
    ),
    Variant(
        "adamw-independent",
        dict(
            optimizers=("adamw",), weight_decays=(INDEPENDENT_DECAY,),
            weight_decay_mode="independent",
        ),
        {"constant": -11, "warmup-cosine": -10},
    ),
    Variant(
        "muon-rms", dict(optimizers=("muon",), muon_scaling="rms"),
        {"constant": -11, "warmup-cosine": -10}, parametrizations=("sp",),
    ),
)  # fmt: skip


def configs(
    scale: str, quick: bool = False, data_dir: str | None = None, epochs: int | None = None
) -> list[tuple[dict[str, str], SweepConfig]]:
    """``(tags, config)`` of every sweep: one per variant and schedule."""
    s = SCALES[scale]
    out = []
    for v in VARIANTS:
        for sched, sched_opts in SCHEDULES.items():
            low = v.log2_lr_low[sched]
            cfg = SweepConfig(
                dataset=s["dataset"], data_dir=data_dir, widths=s["widths"], depth=2,
                lrs=common.log2_grid(low, low + N_LRS - 1), seeds=tuple(range(s["seeds"])),
                epochs=epochs or s["epochs"], batch_size=64, parametrizations=v.parametrizations,
                base_width=s["base"] if "mup" in v.parametrizations else None,
                schedule=sched, select=SELECT, **sched_opts, **v.options,
            )  # fmt: skip
            if quick:
                cfg = cfg.replace(widths=(32, 64, 128), seeds=(0, 1, 2), lrs=cfg.lrs[::2], epochs=1)
            out.append((dict(variant=v.name, schedule=sched), cfg))
    return out


def read_final(path: Path) -> pd.DataFrame:
    """``final.csv`` with the results dtypes (:func:`jaxlr.results.read_results`) and its tags."""
    tags = pd.read_csv(path, usecols=list(TAGS), dtype=str)
    df = res.read_results(path).copy()
    for t in TAGS:
        df[t] = tags[t].to_numpy()
    return df


def final_table(out: Path, cfgs: list, data: Any, analyze: bool) -> pd.DataFrame:
    """The last epoch of every run, trained and written to ``out/final.csv``, or read back."""
    path = out / "final.csv"
    if analyze:
        return read_final(path)
    frames = [common.final_rows(common.run(cfg, data, **tags)) for tags, cfg in cfgs]
    final = pd.concat(frames, ignore_index=True)
    order = [*TAGS, "parametrization", "width", "lr", "seed"]
    final = final.sort_values(order, kind="stable").reset_index(drop=True)
    res.write_csv(path, final[[*TAGS, *res.COLUMNS]])
    print(f"wrote {path}", file=sys.stderr)
    return read_final(path)


def sweeps_table(cfgs: list, final: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep: the settings that differ between the rows (``sweeps.csv``), checked
    against the lrs, widths, seeds and epochs that ``final`` holds."""
    rows = []
    for tags, c in cfgs:
        runs = final[
            (final["variant"] == tags["variant"]) & (final["schedule"] == tags["schedule"])
        ]
        held = (
            sorted(runs["lr"].unique()), sorted(runs["width"].unique()),
            runs["seed"].nunique(), int(runs["epoch"].max()),
        )  # fmt: skip
        planned = (sorted(c.lrs), sorted(c.widths), len(c.seeds), c.epochs)
        if not np.allclose(held[0], planned[0]) or held[1:] != planned[1:]:
            raise SystemExit(
                f"{NAME}: final.csv's {tags} sweep is not this script's (lrs, widths, seeds, "
                "epochs differ); rerun it without --analyze"
            )
        rows.append(
            dict(
                **tags, dataset=c.dataset, optimizer=c.optimizers[0], momentum=c.momentum,
                weight_decay=c.weight_decays[0], weight_decay_mode=c.weight_decay_mode,
                muon_scaling=c.muon_scaling if c.optimizers[0] == "muon" else "",
                warmup=c.warmup, final_lr_fraction=c.final_lr_fraction,
                parametrizations=",".join(c.parametrizations), base_width=c.base_width,
                log2_lr_min=math.log2(min(c.lrs)), log2_lr_max=math.log2(max(c.lrs)),
                n_lrs=len(c.lrs), widths=",".join(map(str, c.widths)), seeds=len(c.seeds),
                epochs=c.epochs, batch_size=c.batch_size,
            )
        )  # fmt: skip
    return pd.DataFrame(rows)


def per_group(fn: Any, final: pd.DataFrame) -> pd.DataFrame:
    """``fn(runs)`` (a table with the results' keys) for each variant and schedule, tagged."""
    kw = dict(chance_loss=common.CHANCE, estimator=common.ESTIMATOR)
    parts = []
    for (variant, sched), g in final.groupby(list(TAGS), sort=False):
        t = fn(g.drop(columns=list(TAGS)), SELECT, **kw)
        parts.append(t.assign(variant=variant, schedule=sched)[[*TAGS, *t.columns]])
    return pd.concat(parts, ignore_index=True)


def plot_lr_star(opt: pd.DataFrame, sweeps: pd.DataFrame, path: Path) -> None:
    """log2 lr* (mean ± std over seeds) against log2 width: one panel per optimizer, one line
    per schedule and parametrization."""
    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(4.0 * len(VARIANTS), 3.6), sharey=False)
    styles = {"sp": "-", "mup": "--"}
    colors = {"constant": "tab:blue", "warmup-cosine": "tab:orange"}
    for ax, v in zip(axes, VARIANTS, strict=True):
        rows = opt[opt["variant"] == v.name]
        for (sched, par), q in rows.groupby(["schedule", "parametrization"]):
            ax.errorbar(
                np.log2(q["width"]), q["log2_lr_star_mean"], yerr=q["log2_lr_star_std"],
                marker="o", capsize=3, ls=styles[par], color=colors[sched],
                label=f"{sched}, {'SP' if par == 'sp' else 'muP'}",
            )  # fmt: skip
        ax.set_title(label(sweeps, v.name), fontsize=10)
        ax.set_xlabel("log2 width")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("log2 lr* (final train loss; mean ± std over seeds)")
    common.save(fig, path)


# ------------------------------------------------------------------------ the README block
def label(sweeps: pd.DataFrame, variant: str) -> str:
    """The optimizer of ``variant`` with its settings, as ``sweeps.csv`` records them."""
    r = sweeps[sweeps["variant"] == variant].iloc[0]
    if r["optimizer"] == "sgd":
        return f"SGD, momentum {r['momentum']:g}"
    if r["optimizer"] == "adamw":
        lam = "λ" if r["weight_decay_mode"] == "coupled" else "λ′"
        return f"AdamW, {r['weight_decay_mode']} {lam} = {r['weight_decay']:.3g}"
    if r["optimizer"] == "muon":
        return f"Muon ({r['muon_scaling']} scaling)"
    return str(r["optimizer"])


def schedule_text(r: pd.Series) -> str:
    """``warmup-cosine (warmup 0.1 of the steps, to 0 × lr)``."""
    if r["schedule"] == "constant":
        return "constant"
    return (
        f"{r['schedule']} (linear warmup over {r['warmup']:g} of the steps, then to "
        f"{r['final_lr_fraction']:g} × lr)"
    )


def readme_block(out: Path) -> str:
    """The generated part of this experiment's README section, from the committed CSVs."""
    t = pd.read_csv(out / "width_exponent.csv")
    tr = pd.read_csv(out / "transfer.csv")
    opt = pd.read_csv(out / "optimum.csv")
    final = read_final(out / "final.csv")
    sweeps = pd.read_csv(out / "sweeps.csv", keep_default_na=False)
    widths = sorted(final["width"].unique())
    lo, hi = widths[0], widths[-1]
    rel = Path(os.path.relpath(out, README.parent)).as_posix()
    first = sweeps.iloc[0]
    lines = [
        f"The sweeps ([sweeps.csv]({rel}/sweeps.csv)): {first['dataset']}, 64-w-w-10, widths "
        f"{', '.join(map(str, widths))}, {int(first['seeds'])} seeds, {int(first['epochs'])} "
        f"epochs, batch {int(first['batch_size'])}, muP's base width {lo}; {len(final)} runs.",
        "",
        "| optimizer | schedule | lr grid (whole octaves) | parametrizations |",
        "|---|---|---|---|",
    ]
    for _, r in sweeps.iterrows():
        grid = (
            f"2^{headline.num(r['log2_lr_min'], 0)} … 2^{headline.num(r['log2_lr_max'], 0)} "
            f"({int(r['n_lrs'])})"
        )
        pars = ", ".join("SP" if p == "sp" else "muP" for p in r["parametrizations"].split(","))
        lines.append(f"| {label(sweeps, r['variant'])} | {schedule_text(r)} | {grid} | {pars} |")
    lines += [
        "",
        f"lr\\* of each seed by final train loss ({t['estimator'].iloc[0]}), α with 95% "
        f"{t['ci_method'].iloc[0]} intervals over seeds; regret: the final train loss at width "
        f"{hi} when trained at width {lo}'s lr\\*, against the best lr tested at {hi} "
        f"([width_exponent.csv]({rel}/width_exponent.csv), [transfer.csv]({rel}/transfer.csv), "
        f"[optimum.csv]({rel}/optimum.csv)):",
        "",
        f"| optimizer | schedule | parametrization | α (lr\\* ∝ width^α) [95%] | log2 lr\\* at "
        f"{lo} / {hi} | regret {lo} → {hi} [95%] | widths with lr\\* at a grid edge |",
        "|---|---|---|---|---|---|---:|",
    ]
    for v in VARIANTS:
        for sched in SCHEDULES:
            for par in v.parametrizations:
                key = dict(variant=v.name, schedule=sched, parametrization=par)
                r = _row(t, key)
                o = _row(opt, {**key, "width": lo}), _row(opt, {**key, "width": hi})
                w = _row(tr, {**key, "width": hi})
                stars = " / ".join(
                    f"{headline.num(x['log2_lr_star_mean'])} ± {x['log2_lr_star_std']:.2f}"
                    for x in o
                )
                name = label(sweeps, v.name)
                lines.append(
                    f"| {name} | {sched} | {headline.par(r)} | {headline.interval(r)} "
                    f"| {stars} | {headline.regret(w)} | {int(r['n_widths_edge'])} |"
                )
    lines += ["", *findings(t, tr, opt, sweeps, lo, hi)]
    return "\n".join(lines)


def _span(values: pd.Series, digits: int = 2) -> str:
    """``−0.64 … 0.17`` (or the one value)."""
    lo, hi = float(values.min()), float(values.max())
    if round(lo, digits) == round(hi, digits):
        return headline.num(lo, digits)
    return f"{headline.num(lo, digits)} … {headline.num(hi, digits)}"


def findings(
    t: pd.DataFrame, tr: pd.DataFrame, opt: pd.DataFrame, sweeps: pd.DataFrame, lo: int, hi: int
) -> list[str]:
    """The section's numbered statements, each computed from the tables."""
    out = []
    for par, name in (("sp", "SP"), ("mup", "muP")):
        a = t[t["parametrization"] == par]
        zero = int(((a["alpha_lo"] <= 0) & (a["alpha_hi"] >= 0)).sum())
        w = tr[(tr["parametrization"] == par) & (tr["width"] == hi)]
        out.append(
            f"- **{name}**: α from {_span(a['alpha'])} over its {len(a)} rows; {zero} of "
            f"{len(a)} intervals contain 0. Regret {lo} → {hi}: "
            f"{_span(w['regret_pct'], 1)}%."
        )
    o = opt[opt["width"] == lo].set_index(["variant", "parametrization", "schedule"])
    shift = (
        o.xs("warmup-cosine", level="schedule")["log2_lr_star_mean"]
        - o.xs("constant", level="schedule")["log2_lr_star_mean"]
    )
    out.append(
        f"- **Schedule**: at width {lo}, warmup-cosine's lr\\* lies {_span(shift)} octaves "
        f"above the constant lr's. α under warmup-cosine minus α under constant, "
        "per row: "
        + "; ".join(
            f"{label(sweeps, v)} {'SP' if p == 'sp' else 'muP'} {headline.num(d)}"
            for (v, p), d in _alpha_change(t).items()
        )
        + "."
    )
    a = t.set_index(["variant", "schedule", "parametrization"])["alpha"]
    gap = lambda s, p: a["adamw-independent", s, p] - a["adamw-coupled", s, p]
    gaps = [
        f"{s}, {'SP' if p == 'sp' else 'muP'} {headline.num(gap(s, p))}"
        for s in SCHEDULES
        for p in ("sp", "mup")
    ]
    out.append(
        "- **Decay**: α with independent decay minus α with coupled decay: " + "; ".join(gaps) + "."
    )
    return out


def _alpha_change(t: pd.DataFrame) -> dict[tuple[str, str], float]:
    """α(warmup-cosine) − α(constant) per (variant, parametrization)."""
    a = t.set_index(["variant", "schedule", "parametrization"])["alpha"]
    return {
        (v.name, p): float(a[v.name, "warmup-cosine", p] - a[v.name, "constant", p])
        for v in VARIANTS
        for p in v.parametrizations
    }


def _row(table: pd.DataFrame, key: Mapping[str, Any]) -> pd.Series:
    """The one row of ``table`` matching ``key``."""
    return common.one_row(table, dict(key), NAME)


def write_readme(out: Path) -> None:
    """Replaces this experiment's block in ``experiments/README.md`` (the cpu results)."""
    common.write_readme_block(BLOCK, readme_block(out))


# ------------------------------------------------------------------------------ estimate
def estimate(scale: str, data: Any, data_dir: str | None) -> None:
    """Times every sweep at 1 epoch twice (cold, into an empty compilation cache, then warm)
    and prints ``compile + epochs × one epoch`` for the real scale."""
    os.environ["JAXLR_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="jaxlr-estimate-")
    epochs = SCALES[scale]["epochs"]
    total_cold = total_warm = 0.0
    for tags, cfg in configs(scale, data_dir=data_dir, epochs=1):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            common.run(cfg, data)
            times.append(time.perf_counter() - t0)
        cold, warm = times
        total_cold += cold
        total_warm += warm
        guess = max(cold - warm, 0.0) + epochs * warm
        print(
            f"{tags['variant']:>18} {tags['schedule']:>13}: 1 epoch {warm:6.1f} s, compile "
            f"{max(cold - warm, 0):5.1f} s -> {epochs} epochs ≈ {guess / 60:4.1f} min",
            flush=True,
        )
    guess = max(total_cold - total_warm, 0.0) + epochs * total_warm
    print(
        f"estimate for --scale {scale}: {guess / 60:.1f} min "
        f"(compile {max(total_cold - total_warm, 0) / 60:.1f} min + {epochs} x "
        f"{total_warm / 60:.2f} min per epoch); load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST files (gpu scale)")
    p.add_argument(
        "--estimate", action="store_true", help="time a 1-epoch version and print the estimate"
    )
    args = p.parse_args()
    if args.scale == "cpu" and args.data_dir is not None:
        p.error("--data-dir applies only to --scale gpu (the cpu scale trains on digits)")
    if args.estimate and (args.analyze or args.quick):
        p.error("--estimate runs the real grid for 1 epoch; drop --analyze and --quick")
    data_dir = args.data_dir if args.scale == "gpu" else None
    data = load_dataset(SCALES[args.scale]["dataset"], data_dir=data_dir)
    if args.estimate:
        estimate(args.scale, data, data_dir)
        return
    out = common.out_dir(NAME, args)
    t0 = time.perf_counter()
    cfgs = configs(args.scale, args.quick, data_dir)
    final = final_table(out, cfgs, data, args.analyze)
    if not args.analyze:
        print(f"trained in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr)
    common.write_csv(sweeps_table(cfgs, final), out / "sweeps.csv")
    table = per_group(exponent.width_exponent, final)
    common.write_csv(table, out / "width_exponent.csv")
    transfer = per_group(exponent.transfer_table, final)
    common.write_csv(transfer, out / "transfer.csv")
    keys = [*TAGS, "parametrization", "width"]
    opt = common.optimal_lr(final, keys, SELECT)
    common.write_csv(opt, out / "optimum.csv")
    plot_lr_star(opt, pd.read_csv(out / "sweeps.csv"), out / "lr_star.png")
    if args.scale == "cpu" and not args.quick and not args.out:
        write_readme(out)
    block = readme_block(out)
    print(block)


if __name__ == "__main__":
    main()
