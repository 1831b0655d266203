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

Usage::

    python benchmarks/rules_overhead.py  # widths 64,256,1024: ~30 s on 2 idle CPU cores
    python benchmarks/rules_overhead.py --widths 256 --steps 100 --repeats 7 --mode step
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from jaxlr import transforms
from jaxlr.models import apply_mlp, init_mlp


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
    args = parser.parse_args(argv)
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
