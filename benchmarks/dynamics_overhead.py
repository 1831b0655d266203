"""What ``--dynamics`` costs: the sweep's compiled epoch with and without it, same lanes.

For each dataset and width it compiles the epoch program of the MLP ``in-w-w-10`` (SGD, batch
64, 3 seeds x 8 lrs) twice, with ``dynamics`` off and on, and times whole epochs, repeats
interleaved (off, on, off, on, ...), keeping the minimum of each. With dynamics an epoch also
keeps its starting parameters and, at its end, takes the kernels' update norms and one forward
pass of the probe batch (256 examples) per lane: a cost per epoch, not per step, so its share is
largest on a small dataset with few steps per epoch (digits: 22 steps).

Usage::

    python benchmarks/dynamics_overhead.py             # ~1 min on 2 idle CPU cores
    python benchmarks/dynamics_overhead.py --widths 256 --repeats 9
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from jaxlr.config import SweepConfig
from jaxlr.data import device_data, load_dataset
from jaxlr.engine import RunSpec, cached_trainer, lane_hypers, train_lanes


def time_epochs(spec: RunSpec, data, seeds, lrs, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` epochs (after one warm-up epoch that compiles)."""
    trainer = cached_trainer(spec)
    state, _ = train_lanes(spec, data, seeds, lrs, epochs=1)
    hypers = lane_hypers(spec, lrs)
    seeds_a = jax.numpy.asarray(seeds, jax.numpy.int32)
    times = []
    for e in range(1, repeats + 1):
        t0 = time.perf_counter()
        state, metrics = trainer.epoch(state, seeds_a, hypers, jax.numpy.int32(e), data)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default="64,256,1024")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    seeds, lrs = [0, 1, 2], list(np.geomspace(1e-3, 1.0, 8))
    datasets = {
        "digits (22 steps/epoch)": load_dataset("digits"),
        "synthetic 784-d (100 steps/epoch)": load_dataset(
            "synthetic", n_train=6400, n_test=1000, features=784, num_classes=10
        ),
    }
    print(f"load average: {os.getloadavg()[0]:.1f}; min over {args.repeats} epochs, interleaved")
    print(f"{'dataset':36s} {'width':>6s} {'off (ms)':>9s} {'on (ms)':>9s} {'on/off':>7s}")
    for name, ds in datasets.items():
        data = device_data(ds)
        for w in widths:
            cfg = SweepConfig(widths=(w,), epochs=2, batch_size=64)
            off = RunSpec.create(cfg, ds, (w, w), "sgd")
            on = dataclasses.replace(off, dynamics=True)
            t_off, t_on = [], []
            for _ in range(2):  # interleave two blocks of repeats
                t_off += time_epochs(off, data, seeds, lrs, args.repeats)
                t_on += time_epochs(on, data, seeds, lrs, args.repeats)
            a, b = min(t_off) * 1e3, min(t_on) * 1e3
            print(f"{name:36s} {w:6d} {a:9.1f} {b:9.1f} {b / a:7.3f}")


if __name__ == "__main__":
    main()
