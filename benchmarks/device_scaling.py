"""How a sweep chunk's speed scales with the number of devices its lanes are sharded over.

Each measurement runs in a fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(N virtual CPU devices; on a GPU host, pass ``--platform gpu`` to use the real devices instead),
trains the same lanes (784-w-w-10, 8 learning rates x 2 seeds, batch 64, synthetic data) with
``--devices d`` and reports runs·steps/s after compilation.

    python benchmarks/device_scaling.py                 # 1, 2, 4 virtual CPU devices
    python benchmarks/device_scaling.py --platform gpu  # the GPUs of this host
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxlr.data import load_dataset
    from jaxlr.data import device_data
    from jaxlr.engine import RunSpec, cached_trainer
    width, devices, steps, n_lrs, n_seeds = map(int, sys.argv[1:6])
    ds = load_dataset("synthetic", n_train=steps * 64, n_test=2000)
    mesh = Mesh(np.array(jax.devices()[:devices]), ("lanes",))
    data = device_data(ds, sharding=NamedSharding(mesh, P()))
    spec = RunSpec(
        in_features=784,
        hidden=(width, width),
        num_classes=10,
        optimizer="sgd",
        batch_size=64,
        steps_per_epoch=steps,
        n_train=ds.n_train,
        n_test=ds.n_test,
    )
    tr = cached_trainer(spec)
    seeds = jnp.arange(n_seeds, dtype=jnp.int32)
    lrs = jax.device_put(jnp.geomspace(1e-3, 0.5, n_lrs).astype(jnp.float32),
                         NamedSharding(mesh, P("lanes")))
    lane = NamedSharding(mesh, P(None, "lanes"))
    state = jax.tree.map(lambda a: jax.device_put(a, lane), tr.init(seeds, lrs))
    state, m = tr.epoch(state, seeds, lrs, jnp.int32(0), data)  # compile
    jax.block_until_ready(m)
    t = time.perf_counter()
    reps = 3
    for e in range(reps):
        state, m = tr.epoch(state, seeds, lrs, jnp.int32(e + 1), data)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t) / reps
    shards = len(state.params["Dense_0"]["kernel"].sharding.device_set)
    print(json.dumps(dict(width=width, devices=devices, shards=shards,
                          run_steps_per_s=n_lrs * n_seeds * steps / dt, epoch_s=dt)))
    """
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="64,256")
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lrs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--out", default=None, help="write the table (markdown) here")
    args = p.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",")]
    rows = []
    for w in map(int, args.widths.split(",")):
        for d in counts:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            if args.platform == "cpu":
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={max(counts)}"
                env["JAX_PLATFORMS"] = "cpu"
            cmd = [
                sys.executable,
                "-c",
                CHILD,
                str(w),
                str(d),
                str(args.steps),
                str(args.lrs),
                str(args.seeds),
            ]
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if r.returncode:
                print(r.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    lines = [
        f"platform {args.platform}, {os.cpu_count()} host cores; 784-w-w-10, "
        f"{args.lrs} lrs x {args.seeds} seeds, batch 64, {args.steps} steps per call",
        "",
        "| width | devices | shards | runs·steps/s | speed-up vs 1 device |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        base = next(x for x in rows if x["width"] == r["width"] and x["devices"] == counts[0])
        lines.append(
            f"| {r['width']} | {r['devices']} | {r['shards']} | {r['run_steps_per_s']:.0f} | "
            f"{r['run_steps_per_s'] / base['run_steps_per_s']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
