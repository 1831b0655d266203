"""Per-step cost of jaxlr's learning-rate rules against plain optax SGD and Adam.

Trains the MLP ``784-w-w-10`` of the Fashion-MNIST width experiment (batch 64, cross-entropy)
with a jitted train step and times, in the same process, plain ``optax.sgd`` / ``optax.adam``
and each rule of :mod:`jaxlr.transforms` with the matching direction (``inner=None`` for SGD,
``inner=optax.scale_by_adam()`` for Adam). The ratio column is rule time / plain time; the
target is at most 1.5x.

Two timing modes: ``scan`` (default) runs ``--steps`` train steps inside one jitted ``lax.scan``,
as jaxlr's training programs do, so the time is compute only; ``step`` calls a jitted single step
from Python ``--steps`` times, which adds the per-call dispatch cost to every configuration.
Repeats are interleaved across configurations and the minimum is kept, to damp machine noise.

``--schedules`` times the learning-rate schedules instead, through the sweep's real program:
for each schedule of :data:`jaxlr.registry.SCHEDULES` (warmup 10% where it takes one), the
:class:`jaxlr.engine.RunSpec` of a sweep that differs only in ``--schedule``, its
:func:`jaxlr.engine.make_trainer` epoch (``lax.scan`` over the steps, the divergence guard,
the test-set evaluation), the same lanes (seeds x lrs) and data, timed over whole epochs, the
schedules in a shuffled order each round. The ratio is the median over rounds of schedule
time / constant time in the same round (paired, so that a slow spell of a shared machine
cancels), in wall time and in this process's CPU time; the target is at most 1.03. A
schedule computes :math:`s_t` once per step (a few scalar operations, the same for every
lane) and multiplies each lane's lr by it; constant skips both. The last column counts the
equations of the scan body's jaxpr (one step).

Usage::

    python benchmarks/rules_overhead.py  # widths 64,256,1024: ~30 s on 2 idle CPU cores
    python benchmarks/rules_overhead.py --widths 256 --steps 100 --repeats 7 --mode step
    python benchmarks/rules_overhead.py --schedules  # digits, widths 32,128: ~3 min idle
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlr import engine, registry, transforms
from jaxlr.data import device_data, load_dataset
from jaxlr.models import apply_mlp, init_mlp
from jaxlr.sweep import SweepConfig


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to time."""

    widths: tuple[int, ...] = (64, 256, 1024)  # hidden widths w of 784-w-w-10
    steps: int = 20  # train steps per timed call
    repeats: int = 5  # timed calls per configuration (minimum kept)
    batch: int = 64  # examples per step
    lr: float = 0.01  # base learning rate of every optimizer
    mode: Literal["scan", "step"] = "scan"  # steps in one lax.scan, or one jit call per step


def optimizers(
    lr: float, layers: Sequence[str]
) -> dict[tuple[str, str], optax.GradientTransformation]:
    """``{(direction, rule): transform}``: direction sgd/adam, rule "plain" or a jaxlr rule."""
    out = {}
    for direction, plain, inner in (
        ("sgd", optax.sgd(lr), None),
        ("adam", optax.adam(lr), optax.scale_by_adam()),
    ):
        mults = [1.0, 0.5, 0.2, 0.1][: len(layers)] + [0.1] * max(0, len(layers) - 4)
        out[direction, "plain"] = plain
        out[direction, "per-layer"] = transforms.per_layer_lr(
            {name: lr * m for name, m in zip(layers, mults, strict=True)}, inner=inner
        )
        out[direction, "weight-norm"] = transforms.weight_norm_lr(lr, inner=inner)
        out[direction, "adagrad-param"] = transforms.adagrad_lr(lr, inner=inner)
        out[direction, "adagrad-neuron"] = transforms.adagrad_lr(
            lr, granularity="neuron", inner=inner
        )
    return out


def make_runner(
    tx: optax.GradientTransformation, model, x: jax.Array, y: jax.Array, cfg: BenchConfig
) -> Callable:
    """A function ``(params, opt_state) -> (params, opt_state)`` running ``cfg.steps`` steps."""

    def loss_fn(params):
        logits = apply_mlp(model, params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(params, opt_state):
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    if cfg.mode == "scan":

        def run_scan(params, opt_state):
            body = lambda carry, _: (train_step(*carry), None)
            return jax.lax.scan(body, (params, opt_state), None, length=cfg.steps)[0]

        return jax.jit(run_scan, donate_argnums=(0, 1))

    step = jax.jit(train_step, donate_argnums=(0, 1))

    def run_steps(params, opt_state):
        for _ in range(cfg.steps):
            params, opt_state = step(params, opt_state)
        return params, opt_state

    return run_steps


def bench_width(width: int, cfg: BenchConfig) -> list[dict]:
    """Per-step milliseconds of every optimizer on ``784-width-width-10``."""
    key_init, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    model, params = init_mlp(key_init, 784, (width, width), 10)
    x = jax.random.normal(key_x, (cfg.batch, 784))
    y = jax.random.randint(key_y, (cfg.batch,), 0, 10)
    txs = optimizers(cfg.lr, sorted(params))
    runners, states = {}, {}
    for name, tx in txs.items():
        runners[name] = make_runner(tx, model, x, y, cfg)
        fresh = (jax.tree.map(jnp.copy, params), tx.init(params))
        states[name] = jax.block_until_ready(runners[name](*fresh))  # compile and warm up
    best = dict.fromkeys(txs, float("inf"))
    for _ in range(cfg.repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            states[name] = jax.block_until_ready(run(*states[name]))
            best[name] = min(best[name], (time.perf_counter() - start) / cfg.steps)
    rows = []
    for (direction, rule), seconds in best.items():
        plain = best[direction, "plain"]
        rows.append(
            {
                "width": width,
                "direction": direction,
                "rule": rule,
                "ms_per_step": 1e3 * seconds,
                "ratio": seconds / plain,
            }
        )
    return rows


@dataclasses.dataclass(frozen=True)
class ScheduleBench:
    """What ``--schedules`` times."""

    widths: tuple[int, ...] = (32, 128)  # hidden widths w of in-w-w-10
    dataset: str = "digits"  # digits (64-w-w-10, 22 steps per epoch) or synthetic (784 inputs)
    optimizers: tuple[str, ...] = ("sgd", "adam")
    seeds: int = 8  # lanes: seeds x lrs, as a sweep's program holds them
    lrs: int = 8
    epochs: int = 2  # epochs per timed call (the schedule spans them)
    repeats: int = 15  # timed calls per schedule, in a shuffled order each round


LANE_LRS = {"sgd": -6.0, "adam": -12.0}  # log2 of the lowest lane lr (far from divergence)
SYNTHETIC = dict(features=784, n_train=6400, n_test=640)  # Fashion-MNIST's shape, 100 steps


def _data_options(bench: ScheduleBench) -> dict:
    return SYNTHETIC if bench.dataset == "synthetic" else {}


def schedule_specs(width: int, optimizer: str, dataset, bench: ScheduleBench) -> dict:
    """``{schedule: RunSpec}``: the programs of sweeps that differ only in ``--schedule``."""
    specs = {}
    for name, entry in registry.SCHEDULES.items():
        options = dict(warmup=0.1) if "warmup" in entry.options else {}
        cfg = SweepConfig(
            dataset=bench.dataset, widths=(width,), optimizers=(optimizer,), schedule=name,
            epochs=bench.epochs, **options,
            **_data_options(bench),
        )  # fmt: skip
        specs[name] = engine.RunSpec.create(cfg, dataset, (width, width), optimizer)
    return specs


def _count_equations(jaxpr) -> int:
    """Equations of ``jaxpr``, those of its sub-jaxprs (scan, cond, pjit bodies) included."""
    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    n += _count_equations(inner)
    return n


def step_equations(epoch, *args) -> int:
    """Equations of the body of the epoch's ``lax.scan`` over the steps (one training step of
    every lane, the schedule's multiplier included)."""
    closed = epoch.trace(*args).jaxpr  # the jitted epoch's own jaxpr (nothing compiled)

    def find(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                return eqn.params["jaxpr"].jaxpr
            for v in eqn.params.values():
                inner = getattr(v, "jaxpr", v)
                if hasattr(inner, "eqns") and (body := find(inner)) is not None:
                    return body
        return None

    body = find(closed.jaxpr)
    return _count_equations(body) if body is not None else -1


def bench_schedules(width: int, optimizer: str, bench: ScheduleBench) -> list[dict]:
    """Per-step milliseconds of every schedule's epoch program, and the ratio to constant."""
    dataset = load_dataset(bench.dataset, **_data_options(bench))
    data = device_data(dataset)
    seeds = jnp.arange(bench.seeds, dtype=jnp.int32)
    lrs = 2.0 ** (LANE_LRS[optimizer] + 0.5 * jnp.arange(bench.lrs))
    specs = schedule_specs(width, optimizer, dataset, bench)
    programs, states, eqns = {}, {}, {}
    for name, spec in specs.items():
        trainer = engine.make_trainer(spec)
        hypers = engine.lane_hypers(spec, lrs)
        state = trainer.init(seeds, hypers)
        eqns[name] = step_equations(trainer.epoch, state, seeds, hypers, jnp.int32(0), data)
        state, _ = trainer.epoch(state, seeds, hypers, jnp.int32(0), data)  # compile, warm up
        programs[name], states[name] = (trainer.epoch, hypers), jax.block_until_ready(state)
    times: dict[str, list[float]] = {name: [] for name in specs}
    cpu: dict[str, list[float]] = {name: [] for name in specs}  # this process's CPU seconds
    steps = bench.epochs * specs["constant"].steps_per_epoch
    order = random.Random(0)
    for _ in range(bench.repeats):
        names = list(programs)
        order.shuffle(names)  # no schedule always runs first (or after the slowest)
        for name in names:
            epoch, hypers = programs[name]
            state = states[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for e in range(bench.epochs):
                state, metrics = epoch(state, seeds, hypers, jnp.int32(e), data)
            jax.block_until_ready((state, metrics))
            times[name].append((time.perf_counter() - start) / steps)
            cpu[name].append((time.process_time() - start_cpu) / steps)
            states[name] = state
    base, base_cpu = np.asarray(times["constant"]), np.asarray(cpu["constant"])
    rows = []
    for name, t in times.items():
        ratios = np.asarray(t) / base  # paired: the same repeat, within seconds of each other
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        cpu_ratios = np.asarray(cpu[name]) / base_cpu
        c1, cmed, c3 = np.percentile(cpu_ratios, [25, 50, 75])
        rows.append(
            {
                "width": width,
                "optimizer": optimizer,
                "schedule": name,
                "ms_per_step": 1e3 * float(np.median(t)),
                "ms_per_step_min": 1e3 * float(np.min(t)),
                "ratio": float(med),
                "ratio_iqr": (float(q1), float(q3)),
                "cpu_ms_per_step": 1e3 * float(np.median(cpu[name])),
                "cpu_ratio": float(cmed),
                "cpu_ratio_iqr": (float(c1), float(c3)),
                "step_equations": eqns[name],
            }
        )
    return rows


def format_schedule_table(rows: Sequence[dict]) -> str:
    """A markdown table of the schedule rows: wall time and this process's CPU time (which a
    shared machine's other load inflates far less), each as the median over rounds and the
    median [quartiles] of the paired ratios to constant."""
    lines = [
        "| width | optimizer | schedule | wall ms/step | wall ratio [quartiles] "
        "| CPU ms/step | CPU ratio [quartiles] | jaxpr equations per step |",
        "|---:|---|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} | {r['optimizer']} | {r['schedule']} | {r['ms_per_step']:.3f} "
            f"| {r['ratio']:.3f} [{r['ratio_iqr'][0]:.3f}, {r['ratio_iqr'][1]:.3f}] "
            f"| {r['cpu_ms_per_step']:.3f} | {r['cpu_ratio']:.3f} "
            f"[{r['cpu_ratio_iqr'][0]:.3f}, {r['cpu_ratio_iqr'][1]:.3f}] | {r['step_equations']} |"
        )
    return "\n".join(lines)


def schedules_main(args: argparse.Namespace) -> None:
    """``--schedules``: the table, the worst ratio and the load average."""
    bench = ScheduleBench(
        widths=tuple(int(w) for w in args.widths.split(",")),
        dataset=args.dataset,
        seeds=args.lane_seeds,
        lrs=args.lane_lrs,
        repeats=args.repeats,
    )
    load = os.getloadavg()
    start = time.perf_counter()
    rows = [r for w in bench.widths for o in bench.optimizers for r in bench_schedules(w, o, bench)]
    lanes = bench.seeds * bench.lrs
    print(
        f"backend={jax.default_backend()} dataset={bench.dataset} lanes={lanes} "
        f"({bench.seeds} seeds x {bench.lrs} lrs) epochs/call={bench.epochs} "
        f"repeats={bench.repeats} (shuffled order per round); load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(format_schedule_table(rows))
    for kind, key in (("wall", "ratio"), ("CPU", "cpu_ratio")):
        worst = max((r for r in rows if r["schedule"] != "constant"), key=lambda r: r[key])
        verdict = "within" if worst[key] <= 1.03 else "over"
        print(
            f"worst {kind} ratio {worst[key]:.3f} ({worst['schedule']}, {worst['optimizer']}, "
            f"w={worst['width']}): {verdict} the 3% target"
        )
    print(f"total {time.perf_counter() - start:.0f} s")


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of the rows."""
    lines = [f"{'width':>6} {'dir':>5} {'rule':>15} {'ms/step':>9} {'ratio':>6}"]
    for r in rows:
        lines.append(
            f"{r['width']:>6} {r['direction']:>5} {r['rule']:>15} "
            f"{r['ms_per_step']:>9.3f} {r['ratio']:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parses flags, runs every width, prints the table and the worst ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,256,1024", help="comma-separated hidden widths")
    parser.add_argument("--steps", type=int, default=BenchConfig.steps)
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--batch", type=int, default=BenchConfig.batch)
    parser.add_argument("--mode", choices=("scan", "step"), default=BenchConfig.mode)
    parser.add_argument(
        "--schedules",
        action="store_true",
        help="time each lr schedule against constant through the sweep's epoch program",
    )
    parser.add_argument("--dataset", choices=("digits", "synthetic"), default=None)
    parser.add_argument("--lane-seeds", type=int, default=ScheduleBench.seeds)
    parser.add_argument("--lane-lrs", type=int, default=ScheduleBench.lrs)
    args = parser.parse_args(argv)
    if args.schedules:
        if args.mode != BenchConfig.mode or args.steps != BenchConfig.steps:
            parser.error("--mode and --steps time the rules; --schedules times whole epochs")
        if args.widths == "64,256,1024":
            args.widths = ",".join(map(str, ScheduleBench.widths))
        args.dataset = args.dataset or ScheduleBench.dataset
        if args.repeats == BenchConfig.repeats:
            args.repeats = ScheduleBench.repeats
        schedules_main(args)
        return
    if args.dataset is not None or (args.lane_seeds, args.lane_lrs) != (
        ScheduleBench.seeds,
        ScheduleBench.lrs,
    ):
        parser.error("--dataset, --lane-seeds and --lane-lrs apply only to --schedules")
    cfg = BenchConfig(
        widths=tuple(int(w) for w in args.widths.split(",")),
        steps=args.steps,
        repeats=args.repeats,
        batch=args.batch,
        mode=args.mode,
    )
    start = time.perf_counter()
    rows = [row for width in cfg.widths for row in bench_width(width, cfg)]
    print(f"backend={jax.default_backend()} mode={cfg.mode} steps={cfg.steps} batch={cfg.batch}")
    print(format_table(rows))
    worst = max((r for r in rows if r["rule"] != "plain"), key=lambda r: r["ratio"])
    print(
        f"worst ratio {worst['ratio']:.2f} ({worst['rule']}, {worst['direction']}, "
        f"w={worst['width']}); total {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
