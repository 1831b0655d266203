"""Buckets, grid shards and chunking."""

from __future__ import annotations

from jaxlr.config import SweepConfig
from jaxlr.plan import lane_bytes, make_buckets, make_plan, split_bucket


def _lanes(chunks):
    return sorted(
        (c.bucket.hidden, c.bucket.optimizer, s, lr)
        for c in chunks
        for s in c.seeds
        for lr in c.lrs
    )


def test_buckets_group_by_shape_and_optimizer():
    cfg = SweepConfig(
        widths=(8, 16), lrs=(0.1, 0.01, 0.001), seeds=(0, 1), optimizers=("sgd", "adam")
    )
    b = make_buckets(cfg)
    assert [(x.hidden, x.optimizer) for x in b] == [
        ((8, 8), "sgd"),
        ((8, 8), "adam"),
        ((16, 16), "sgd"),
        ((16, 16), "adam"),
    ]
    assert all(x.n_lanes == 6 for x in b)


def test_chunks_cover_every_lane_once_and_fit():
    cfg = SweepConfig(widths=(8,), lrs=tuple(10.0**-k for k in range(7)), seeds=(0, 1, 2))
    (bucket,) = make_buckets(cfg)
    full = [(s, lr) for s in bucket.seeds for lr in bucket.lrs]
    for max_lanes in (1, 2, 3, 4, 7, 21, 100):
        chunks = split_bucket(bucket, max_lanes)
        lanes = sorted((s, lr) for c in chunks for s in c.seeds for lr in c.lrs)
        assert lanes == sorted(full)
        assert all(c.n_lanes <= max_lanes for c in chunks)
    # device multiple: lr counts per chunk are multiples of 4 when they can be
    chunks = split_bucket(bucket, 24, multiple=4)
    assert all(len(c.lrs) % 4 == 0 or c is chunks[-1] for c in chunks)


def test_grid_shards_partition_the_sweep():
    cfg = SweepConfig(widths=(8, 16, 32), lrs=(1.0, 0.1, 0.01, 0.001), seeds=(0, 1))
    whole = _lanes(make_plan(cfg, 64, 10, memory_bytes=1 << 40))
    parts = []
    for i in range(3):
        parts += _lanes(make_plan(cfg.replace(shard=(i, 3)), 64, 10, memory_bytes=1 << 40))
    assert sorted(parts) == whole and len(parts) == len(set(parts))


def test_memory_limit_splits_buckets():
    cfg = SweepConfig(widths=(1024,), lrs=tuple(10.0**-k for k in range(8)), seeds=(0, 1, 2))
    per_lane = lane_bytes(784, (1024, 1024), 10, batch_size=64, slots=0)
    assert 4 * 1_863_690 * 4 < per_lane < 4 * 1_863_690 * 8
    chunks = make_plan(cfg, 784, 10, memory_bytes=per_lane * 5)
    assert all(c.n_lanes <= 5 for c in chunks) and sum(c.n_lanes for c in chunks) == 24
    assert len(make_plan(cfg, 784, 10, memory_bytes=per_lane * 100)) == 1


def test_autotune_policy_follows_the_predicted_run_time():
    from jaxlr.engine import RunSpec, compiler_options
    from jaxlr.plan import AUTOTUNE_MIN_S, autotune_chunks, estimate_seconds

    cfg = SweepConfig(widths=(64, 1024), lrs=tuple(10.0**-k for k in range(8)), epochs=50)
    chunks = make_plan(cfg, 784, 10, memory_bytes=1 << 40)

    def seconds(c):  # the fashion-width-sgd grid's shapes on a GPU, compile excluded
        kw = dict(steps_per_epoch=937, n_test=10_000, backend="gpu", compile=False)
        return estimate_seconds([c], cfg, 784, 10, **kw)

    small, big = sorted(chunks, key=seconds)
    assert seconds(small) < AUTOTUNE_MIN_S <= seconds(big)
    decided = {c.bucket.hidden: c.autotune for c in autotune_chunks(chunks, "auto", seconds)}
    assert decided == {(64, 64): False, (1024, 1024): True}
    assert all(c.autotune for c in autotune_chunks(chunks, "on", seconds))
    assert not any(c.autotune for c in autotune_chunks(chunks, "off", seconds))
    spec = RunSpec(in_features=784, hidden=(64,), num_classes=10, optimizer="sgd",
                   steps_per_epoch=1, n_train=64, n_test=10, autotune=False)  # fmt: skip
    assert compiler_options(spec) == {
        "xla_gpu_deterministic_ops": True,
        "xla_gpu_autotune_level": 0,
    }


def test_fusion_groups_a_round_within_memory():
    import dataclasses

    from jaxlr.plan import MAX_FUSED, autotune_chunks, chunk_bytes, fuse_chunks

    cfg = SweepConfig(
        widths=(16, 64, 256), lrs=(0.1, 0.01), seeds=(0, 1), optimizers=("sgd", "adam")
    )
    chunks = make_plan(cfg, 784, 10, memory_bytes=1 << 40)
    nbytes = lambda c: chunk_bytes(c, cfg, 784, 10)
    assert fuse_chunks(chunks, False, 1 << 40, nbytes) == [(i,) for i in range(6)]
    assert fuse_chunks(chunks, True, 1 << 40, nbytes) == [tuple(range(6))]
    # the two widest chunks do not fit together: each opens a program, the rest fill them
    sizes = sorted(map(nbytes, chunks))
    budget = sizes[-1] + sizes[0] + sizes[1]
    programs = fuse_chunks(chunks, True, budget, nbytes)
    assert sorted(i for p in programs for i in p) == list(range(6))  # every chunk once
    assert all(sum(nbytes(chunks[i]) for i in p) <= budget for p in programs)
    assert len(programs) == 3
    # refinement rounds never share a program with the grid; at most MAX_FUSED chunks each
    more = chunks + [dataclasses.replace(c, round=1) for c in chunks]
    programs = fuse_chunks(more, True, 1 << 40, nbytes)
    assert programs == [tuple(range(6)), tuple(range(6, 12))]
    many = [dataclasses.replace(chunks[0], lrs=(lr,)) for lr in range(2 * MAX_FUSED + 1)]
    assert [len(p) for p in fuse_chunks(many, True, 1 << 40, nbytes)] == [8, 8, 1]
    # autotuning is decided per program, from the summed predicted time of its chunks
    seconds = lambda c: 15.0 if c.bucket.hidden == (256, 256) else 1.0
    tuned = autotune_chunks(chunks, "auto", seconds, [tuple(range(6))])
    assert all(c.autotune for c in tuned)
    assert not any(c.autotune for c in autotune_chunks(chunks, "auto", seconds))
