"""transformer_width: lr* ∝ width^α for a GPT under AdamW + warmup-cosine, SP against muP.

A decoder-only pre-LayerNorm GPT (:mod:`jaxlr.gpt`: learned positions, a GELU MLP of 4 × width,
tied embeddings, ``width / head_dim`` heads) on byte-level text, the library's default corpus
(the Python standard library's own source and text, the first 8 MiB; no network), trained
with the nanoGPT-style recipe of :data:`RECIPE`:

- AdamW, β = (0.9, 0.95), ε = 1e-8, PyTorch's coupled weight decay λ = 0.1 (the step is
  θ ← θ − s_t η (m̂/(√v̂ + ε) + λ θ)), gradients clipped to global L2 norm 1;
- schedule s_t: linear warmup over the first 10% of the steps, then a cosine to 0;
- SP: every parameter at lr η; muP (base width ``base``, m = width / base): the hidden matrices
  (attention W_q,k,v,o and the MLP's two) at η / m, initialized N(0, σ²/m), the readout
  multiplied by 1/m and the attention logits scaled by 1/d_head (microsoft/mup's ``MuAdamW``;
  the decay follows each group's rate, as ``MuAdamW`` does).

Each parametrization is one sweep (all widths, seeds and its lrs in one call of
:func:`jaxlr.sweep.run_sweep`). lr* of each seed is read from the final **train** loss (the mean
batch loss over the last ``eval_every`` steps; a window is never seen twice in a run this short,
so it estimates the held-out loss) by the library's ``local-quadratic`` estimator, censoring
diverged runs and runs no better than chance (ln 256 nats per byte). α is
:func:`jaxlr.exponent.width_exponent`'s least-squares slope of the seed-mean log2 lr* on log2
width, with its paired-bootstrap-t 95% interval over seeds, and the transfer regret
(:func:`jaxlr.exponent.transfer_table`) the final train loss at each width when trained at the
narrowest width's lr*, against the best lr tested there:

    regret(w) = exp(m_w(x*_base) − min_x m_w(x)) − 1,   m_w = seed mean of log loss.

The lr grids are whole octaves, fixed before the run: SP's spans 9 octaves, from below the
widest width's optimum (a 40-step timing run at width 256 had its best loss at 2⁻⁹, the lowest
lr it tried) to above the narrowest width's, so that the regret of the narrowest width's lr* can
be read off at every width; muP's 7 octaves around the base width's. ``n_widths_edge`` in
``width_exponent.csv`` counts the widths whose optimum lies on a grid edge (a bound, not an
estimate).

Scales (``--scale``):

- ``cpu``: widths 32, 64, 128, 256, 2 blocks, context 64, head size 16, batch 4 sequences,
  200 steps, 4 seeds, base width 32: 39.7 min on the shared 2-core CPU at load 5-15,
  25.1 CPU-minutes (:data:`CPU_TIME`);
- ``gpu`` (for one GPU; scripted, not run): widths 128 … 2048, 2 blocks, context 256, head size
  64, batch 32, 1,000 steps, 5 seeds, base width 128, into ``transformer_width_gpu/``. About
  6·10¹⁷ FLOPs in all, three quarters of them at width 2048 (6 × 100 M parameters × 8.2 M
  tokens per run × 90 runs): a few hours in float32 on one H100-class GPU (an estimate from
  the FLOPs, not measured);
- ``tiny``: 2 widths × 3 lrs × 2 seeds × 20 steps, 1 block: the test's check that the script
  runs and writes its tables (too few widths for α: those tables come out empty).

    python experiments/transformer_width.py [--scale cpu|gpu|tiny] [--out DIR] [--analyze]

Writes into ``experiments/results/transformer_width[_gpu]/``: ``final.csv`` (the last
evaluation of every run; ``--analyze`` recomputes everything else from it), ``sweeps.csv``,
``summary.csv`` (best tested lr per width), ``width_exponent.csv``, ``transfer.csv``,
``optimum.csv`` (log2 lr* per width over seeds) and ``lr_curves.png``; at the cpu scale also
the generated block of its section in ``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import common
import headline
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlr import exponent, plots, stats
from jaxlr import results as res
from jaxlr.sweep import SweepConfig, run_sweep
from jaxlr.text import VOCAB

NAME = "transformer_width"
SELECT = "train_loss"
ESTIMATOR = stats.DEFAULT_ESTIMATOR
CHANCE = stats.chance_level(VOCAB)
"""ln 256: a byte-level model that has learnt nothing."""
README = Path(__file__).resolve().parent / "README.md"
BLOCK = "transformer-width"
CPU_TIME = (
    "39.7 min wall on the shared 2-core CPU at load average 5-15 (other agents' jobs), "
    "25.1 CPU-minutes: about 13 min on 2 quiet cores"
)
"""The cpu scale's measured time (2026-12-02, from a cold compilation cache)."""
PARS = ("sp", "mup")

RECIPE: dict[str, Any] = dict(
    family="gpt", optimizers=("adamw",), weight_decays=(0.1,),
    weight_decay_mode="coupled", betas=(0.9, 0.95), clip_norm=1.0, schedule="warmup-cosine",
    warmup=0.1, final_lr_fraction=0.0, select=SELECT, lr_star=ESTIMATOR,
)  # fmt: skip
"""The training recipe shared by every scale (nanoGPT's AdamW settings, warmup-cosine)."""


@dataclasses.dataclass(frozen=True)
class Scale:
    """The sizes of one scale of the experiment."""

    widths: tuple[int, ...]  # d_model of each swept GPT
    depth: int  # transformer blocks
    context: int  # bytes per training sequence
    head_dim: int  # size of one attention head (heads = width / head_dim)
    batch_size: int  # sequences per step
    steps: int  # optimizer steps per run
    eval_every: int  # steps per reported 'epoch' (train_loss is the mean over the last one)
    eval_sequences: int  # validation windows per evaluation
    seeds: int  # seeds 0 .. seeds-1 (init and batch order)
    base_width: int  # muP's base width (muP = SP there, up to the attention scale)
    log2_lrs: Mapping[str, tuple[int, int]]  # per parametrization: lrs 2**lo ... 2**hi


SCALES = {
    "cpu": Scale(
        widths=(32, 64, 128, 256), depth=2, context=64, head_dim=16, batch_size=4, steps=200,
        eval_every=50, eval_sequences=32, seeds=4, base_width=32,
        log2_lrs={"sp": (-12, -4), "mup": (-10, -4)},
    ),
    "gpu": Scale(
        widths=(128, 256, 512, 1024, 2048), depth=2, context=256, head_dim=64, batch_size=32,
        steps=1000, eval_every=100, eval_sequences=256, seeds=5, base_width=128,
        log2_lrs={"sp": (-15, -6), "mup": (-12, -5)},
    ),
    "tiny": Scale(
        widths=(32, 64), depth=1, context=16, head_dim=16, batch_size=4, steps=20, eval_every=10,
        eval_sequences=8, seeds=2, base_width=32, log2_lrs={"sp": (-8, -6), "mup": (-8, -6)},
    ),
}  # fmt: skip


def configs(scale: str) -> list[tuple[str, SweepConfig]]:
    """``(parametrization, config)`` of every sweep: one per parametrization."""
    s = SCALES[scale]
    out = []
    for par in PARS:
        lo, hi = s.log2_lrs[par]
        cfg = SweepConfig(
            **RECIPE, widths=s.widths, depth=s.depth, context=s.context, head_dim=s.head_dim,
            batch_size=s.batch_size, steps=s.steps, eval_every=s.eval_every,
            eval_sequences=s.eval_sequences, seeds=tuple(range(s.seeds)),
            lrs=common.log2_grid(lo, hi), parametrizations=(par,),
            base_width=s.base_width if par == "mup" else None,
        )  # fmt: skip
        out.append((par, cfg))
    return out


def train(cfgs: list[tuple[str, SweepConfig]]) -> pd.DataFrame:
    """The last evaluation of every run of ``cfgs``, sorted (the ``results.csv`` columns)."""
    frames = []
    for par, cfg in cfgs:
        t0 = time.perf_counter()
        df = run_sweep(cfg, progress=False)
        print(
            f"  {par}: {len(df[['width', 'lr', 'seed']].drop_duplicates())} runs, widths "
            f"{list(cfg.widths)}, {cfg.steps} steps: {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        frames.append(common.final_rows(df))
    return res.sort_results(pd.concat(frames, ignore_index=True))


def sweeps_table(cfgs: list[tuple[str, SweepConfig]], final: pd.DataFrame) -> pd.DataFrame:
    """One row per sweep with its settings (``sweeps.csv``), checked against the lrs, widths,
    seeds and steps that ``final`` holds."""
    rows = []
    for par, c in cfgs:
        runs = final[final["parametrization"] == par]
        held = sorted(runs["lr"].unique()), sorted(runs["width"].unique()), runs["seed"].nunique()
        planned = sorted(c.lrs), sorted(c.widths), len(c.seeds)
        if (
            len(held[0]) != len(planned[0])
            or not np.allclose(held[0], planned[0])
            or held[1:] != planned[1:]
        ):
            raise SystemExit(
                f"{NAME}: final.csv's {par} sweep is not this script's (lrs, widths or seeds "
                "differ); rerun it without --analyze"
            )
        rows.append(
            dict(
                parametrization=par, corpus="python-stdlib (default)", depth=c.depth,
                context=c.context, head_dim=c.head_dim, tied=c.tied, batch_size=c.batch_size,
                steps=c.steps, eval_every=c.eval_every, eval_sequences=c.eval_sequences,
                optimizer=c.optimizers[0], beta1=c.betas[0], beta2=c.betas[1],
                weight_decay=c.weight_decays[0], weight_decay_mode=c.weight_decay_mode,
                clip_norm=c.clip_norm, schedule=c.schedule, warmup=c.warmup,
                final_lr_fraction=c.final_lr_fraction, base_width=c.base_width or "",
                log2_lr_min=math.log2(min(c.lrs)), log2_lr_max=math.log2(max(c.lrs)),
                n_lrs=len(c.lrs), widths=",".join(map(str, c.widths)), seeds=len(c.seeds),
            )
        )  # fmt: skip
    return pd.DataFrame(rows)


def optimum_table(final: pd.DataFrame) -> pd.DataFrame:
    """log2 lr* per parametrization and width over seeds (:func:`jaxlr.stats.optimum_table`)."""
    return stats.optimum_table(final, ["parametrization", "width"], SELECT, ESTIMATOR, CHANCE)


def plot_lr_curves(final: pd.DataFrame, opt: pd.DataFrame, fits: pd.DataFrame, path: Path) -> None:
    """Final train loss against log2 lr, one colour per width, SP and muP side by side on one
    y range, and log2 lr* (mean ± std over seeds) against log2 width with the fitted α."""
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 4.2))
    stable = final[~final["diverged"] & (final[SELECT] < CHANCE)][SELECT]
    ylim = (float(stable.min()) - 0.05, float(stable.quantile(0.9)) + 0.1) if len(stable) else None
    for ax, par in zip(axes[:2], PARS, strict=True):
        runs = final[final["parametrization"] == par]
        plots.lr_curve_panel(ax, runs, SELECT, estimator=ESTIMATOR, chance_loss=CHANCE, ylim=ylim)
        name = "SP" if par == "sp" else "muP"
        ax.set_title(f"{name}: final train loss, {runs['seed'].nunique()} seeds", fontsize=10)
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("final train loss (nats per byte)")
        ax.legend(fontsize=7)
    ax = axes[2]
    for par, style in (("sp", "o-"), ("mup", "s--")):
        q = opt[opt["parametrization"] == par]
        a = fits[fits["parametrization"] == par]
        label = "SP" if par == "sp" else "muP"
        if len(a):
            label += f", α = {headline.num(float(a['alpha'].iloc[0]))}"
        ax.errorbar(
            np.log2(q["width"]), q["log2_lr_star_mean"], yerr=q["log2_lr_star_std"],
            fmt=style, capsize=3, label=label,
        )  # fmt: skip
    ax.set_xlabel("log2 width (d_model)")
    ax.set_ylabel("log2 lr* (mean ± std over seeds)")
    ax.set_title("lr* against width", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    common.save(fig, path)


def analyze(out: Path, cfgs: list[tuple[str, SweepConfig]], final: pd.DataFrame) -> None:
    """Writes every table and the figure of ``out`` from ``final``."""
    common.write_csv(sweeps_table(cfgs, final), out / "sweeps.csv")
    common.write_csv(res.summarize(final, SELECT), out / "summary.csv")
    kw = dict(estimator=ESTIMATOR, chance_loss=CHANCE)
    fits = exponent.width_exponent(final, SELECT, **kw)
    common.write_csv(fits, out / "width_exponent.csv")
    common.write_csv(exponent.transfer_table(final, SELECT, **kw), out / "transfer.csv")
    opt = optimum_table(final)
    common.write_csv(opt, out / "optimum.csv")
    plot_lr_curves(final, opt, fits, out / "lr_curves.png")


# ------------------------------------------------------------------------ the README block
def readme_block(out: Path) -> str:
    """The generated part of this experiment's README section, from the committed CSVs."""
    t = pd.read_csv(out / "width_exponent.csv")
    tr = pd.read_csv(out / "transfer.csv")
    opt = pd.read_csv(out / "optimum.csv")
    sw = pd.read_csv(out / "sweeps.csv", keep_default_na=False)
    n_runs = len(pd.read_csv(out / "final.csv", usecols=["width"]))
    rel = Path(os.path.relpath(out, README.parent)).as_posix()
    r0 = sw.iloc[0]
    widths = [int(w) for w in str(r0["widths"]).split(",")]
    lo, hi = widths[0], widths[-1]
    mup = sw[sw["parametrization"] == "mup"].iloc[0]
    tokens = int(r0["steps"]) * int(r0["batch_size"]) * int(r0["context"])
    lines = [
        f"The sweeps ([sweeps.csv]({rel}/sweeps.csv)): GPT, {int(r0['depth'])} blocks, widths "
        f"{', '.join(map(str, widths))}, head size {int(r0['head_dim'])}, context "
        f"{int(r0['context'])} bytes, batch {int(r0['batch_size'])}, {int(r0['steps'])} steps "
        f"({tokens:,} tokens per run), the default corpus; AdamW β = ({r0['beta1']:g}, "
        f"{r0['beta2']:g}), coupled λ = {r0['weight_decay']:g}, clip {r0['clip_norm']:g}, "
        f"warmup over {r0['warmup']:g} of the steps then cosine to {r0['final_lr_fraction']:g}; "
        f"{int(r0['seeds'])} seeds; muP's base width {int(float(mup['base_width']))}; "
        f"{n_runs} runs.",
        "",
        f"lr\\* of each seed by final train loss ({t['estimator'].iloc[0]}), α with 95% "
        f"{t['ci_method'].iloc[0]} intervals over seeds; regret: the final train loss at width "
        f"{hi} when trained at width {lo}'s lr\\*, against the best lr tested at {hi} "
        f"([width_exponent.csv]({rel}/width_exponent.csv), [transfer.csv]({rel}/transfer.csv), "
        f"[optimum.csv]({rel}/optimum.csv)):",
        "",
        f"| parametrization | lr grid (whole octaves) | α (lr\\* ∝ width^α) [95%] | seeds | "
        f"regret {lo} → {hi} [95%] | widths with lr\\* at a grid edge |",
        "|---|---|---|---:|---|---:|",
    ]
    for par in PARS:
        r = _row(t, dict(parametrization=par))
        s = _row(sw, dict(parametrization=par))
        w = _row(tr, dict(parametrization=par, width=hi))
        grid = (
            f"2^{headline.num(s['log2_lr_min'], 0)} … 2^{headline.num(s['log2_lr_max'], 0)} "
            f"({int(s['n_lrs'])})"
        )
        lines.append(
            f"| {headline.par(r)} | {grid} | {headline.interval(r)} | {int(r['n_seeds'])} "
            f"| {headline.regret(w)} | {int(r['n_widths_edge'])} |"
        )
    lines += [
        "",
        "log2 lr\\* per width (mean ± std over seeds) and the regret of the base width's lr\\*:",
        "",
        "| width | SP log2 lr\\* | SP regret [95%] | muP log2 lr\\* | muP regret [95%] |",
        "|---:|---:|---|---:|---|",
    ]
    for width in widths:
        cells = []
        for par in PARS:
            o = _row(opt, dict(parametrization=par, width=width))
            w = _row(tr, dict(parametrization=par, width=width))
            cells += [
                f"{headline.num(o['log2_lr_star_mean'])} ± {o['log2_lr_star_std']:.2f}",
                headline.regret(w),
            ]
        lines.append(f"| {width} | " + " | ".join(cells) + " |")
    sp, mu = _row(t, dict(parametrization="sp")), _row(t, dict(parametrization="mup"))
    lines += [
        "",
        f"- SP: α = {headline.interval(sp)}; the interval {_covers(sp, 0)} 0 and "
        f"{_covers(sp, -1)} −1 (the published α_SP).",
        f"- muP: α = {headline.interval(mu)}; the interval {_covers(mu, 0)} 0.",
    ]
    return "\n".join(lines)


def _covers(r: pd.Series, value: float) -> str:
    """``contains`` if ``value`` lies in the row's α interval, else ``excludes``."""
    return "contains" if r["alpha_lo"] <= value <= r["alpha_hi"] else "excludes"


def _row(table: pd.DataFrame, key: Mapping[str, Any]) -> pd.Series:
    """The one row of ``table`` matching ``key``."""
    return common.one_row(table, dict(key), NAME)


def write_readme(out: Path) -> None:
    """Replaces this experiment's block in ``experiments/README.md`` (the cpu results)."""
    common.write_readme_block(BLOCK, readme_block(out))


def parser() -> argparse.ArgumentParser:
    """The experiment's flags: --scale (with ``tiny``), --out, --analyze."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--scale", choices=tuple(SCALES), default="cpu",
        help="cpu: the committed runs; gpu: widths 128-2048, for one GPU (into <name>_gpu/); "
        "tiny: a few seconds, to check the script",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default experiments/results/NAME)")
    p.add_argument(
        "--analyze", action="store_true",
        help="no training: recompute the tables and the figure from the committed final.csv",
    )  # fmt: skip
    return p


def out_dir(args: argparse.Namespace) -> Path:
    """Where ``args`` writes (created): ``--out``, else ``results/NAME[_gpu]`` (tiny: /tmp)."""
    if args.out:
        path = Path(args.out)
    elif args.scale == "tiny":
        path = Path("/tmp") / "jaxlr-experiments-quick" / NAME
    else:
        path = common.RESULTS / (NAME + ("_gpu" if args.scale == "gpu" else ""))
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    out = out_dir(args)
    cfgs = configs(args.scale)
    path = out / "final.csv"
    if args.analyze:
        final = res.read_results(path)
    else:
        t0 = time.perf_counter()
        final = train(cfgs)
        res.write_csv(path, final)
        print(
            f"trained in {(time.perf_counter() - t0) / 60:.1f} min (load average "
            f"{os.getloadavg()[0]:.1f}); wrote {path}",
            file=sys.stderr,
        )
        final = res.read_results(path)
    analyze(out, cfgs, final)
    if args.scale == "cpu" and not args.out:
        write_readme(out)
        print(readme_block(out))


if __name__ == "__main__":
    main()
