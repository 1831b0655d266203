"""An epoch as several device calls of ``steps_per_call`` steps (``StepBlocks``).

A long epoch runs in blocks so that the host can stop, checkpoint and report progress within
seconds at any width. The steps, their batches and the per-step losses are those of the one-call
epoch (:func:`jaxlr.engine.group_epoch`); the epoch's metrics are computed from them in a last
call (tested equal).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlr.compilation import compiler_options, with_precision
from jaxlr.engine import LaneState, RunSpec, _Lanes, _make_lanes


class EpochProgress(NamedTuple):
    """One bucket's lanes part-way through an epoch (:func:`step_blocks`): the carry of the
    steps so far, what the epoch's end needs of its start, and the per-step losses."""

    params: Any
    opt_state: Any
    alive: jax.Array  # bool (S, L): alive after the steps so far
    alive_at_start: jax.Array  # bool (S, L): alive when the epoch began
    diverged_epoch: jax.Array  # int32 (S, L)
    losses: jax.Array  # float32 (blocks * steps_per_call, S, L): batch losses, 0 where dead
    start_params: Any = None  # the parameters at the epoch's start (with spec.dynamics)


class StepBlocks(NamedTuple):
    """An epoch of several buckets as device calls of ``size`` steps (the last may be shorter):

    ``progress = begin(states)``; for ``start`` in ``0, size, 2 size, ...`` below ``steps``:
    ``progress = block(progress, seeds, lrs, epoch, start, data)``; then
    ``states, metrics = finish(progress, losses, epoch, data)`` (``progress`` without its
    ``losses``, passed apart). Tuples with one entry per bucket, as in
    :func:`group_epoch`."""

    begin: Callable[..., tuple]
    block: Callable[..., tuple]
    finish: Callable[..., tuple]
    size: int
    steps: int

    def starts(self, first: int = 0) -> range:
        """The first step of each call of an epoch, from step ``first`` on."""
        return range(first, self.steps, self.size)


def _group_blocks(members: tuple[_Lanes, ...], steps: int, size: int):
    """The three functions of :class:`StepBlocks` for ``members`` (see :func:`_group_epoch`).

    A call runs steps ``start .. start + size - 1`` of the epoch's batch order; steps past the
    epoch's end (in its last call) are skipped by a ``lax.cond`` on the step number, which is
    the same for every lane, so nothing is computed for them.
    """
    n_blocks = -(-steps // size)

    def begin(states: tuple) -> tuple:
        return tuple(
            EpochProgress(
                s.params,
                s.opt_state,
                s.alive,
                s.alive,
                s.diverged_epoch,
                jnp.zeros((n_blocks * size, *s.alive.shape), jnp.float32),
                s.params if m.dynamics else None,
            )
            for m, s in zip(members, states, strict=True)
        )

    def block(progress: tuple, seeds: tuple, lrs: tuple, epoch: jax.Array, start: jax.Array, data):
        def steps_of(m: _Lanes, s: jax.Array) -> jax.Array:
            idx = m.batches(s, epoch)  # (steps, S, B): the whole epoch's order
            pad = jnp.zeros((n_blocks * size - steps, *idx.shape[1:]), idx.dtype)
            return jax.lax.dynamic_slice_in_dim(jnp.concatenate([idx, pad]), start, size)

        idx = tuple(steps_of(m, s) for m, s in zip(members, seeds, strict=True))

        def body(carries, xs):
            t, idx_t = xs

            def run(cs):
                out = [
                    m.step(c, lr, i, data, epoch, start + t)
                    for m, c, lr, i in zip(members, cs, lrs, idx_t, strict=True)
                ]
                return tuple(o[0] for o in out), tuple(o[1] for o in out)

            def skip(cs):
                return cs, tuple(jnp.zeros(p.alive.shape, jnp.float32) for p in progress)

            return jax.lax.cond(start + t < steps, run, skip, carries)

        carries = tuple((p.params, p.opt_state, p.alive) for p in progress)
        carries, losses = jax.lax.scan(body, carries, (jnp.arange(size), idx))
        return tuple(
            p._replace(
                params=c[0],
                opt_state=c[1],
                alive=c[2],
                losses=jax.lax.dynamic_update_slice_in_dim(p.losses, loss, start, 0),
            )
            for p, c, loss in zip(progress, carries, losses, strict=True)
        )

    def finish(progress: tuple, losses: tuple, epoch: jax.Array, data):
        done = [
            m.finish(
                LaneState(p.start_params, None, p.alive_at_start, p.diverged_epoch),
                (p.params, p.opt_state, p.alive),
                loss[:steps],
                epoch,
                data,
            )
            for m, p, loss in zip(members, progress, losses, strict=True)
        ]
        return tuple(d[0] for d in done), tuple(d[1] for d in done)

    return begin, block, finish


@functools.lru_cache(maxsize=16)
def step_blocks(specs: tuple[RunSpec, ...]) -> StepBlocks:
    """The jitted :class:`StepBlocks` of buckets ``specs`` trained by one program, in calls of
    ``specs[0].steps_per_call`` steps (compiled on first use)."""
    size, steps = specs[0].steps_per_call, specs[0].steps_per_epoch
    if size <= 0 or any((s.steps_per_call, s.steps_per_epoch) != (size, steps) for s in specs):
        raise ValueError(f"step blocks need one positive steps_per_call, got {specs}")
    begin, block, finish = _group_blocks(
        tuple(_make_lanes(s)[0] for s in specs), steps, min(size, steps)
    )
    merged = dataclasses.replace(
        specs[0],
        autotune=any(s.autotune for s in specs),
        deterministic=all(s.deterministic for s in specs),
    )
    options = compiler_options(merged)

    def jit(fn: Callable[..., Any], donate: bool = True) -> Callable[..., Any]:
        fn = with_precision(fn, specs[0].precision)
        return jax.jit(fn, donate_argnums=(0,) if donate else (), compiler_options=options)

    # with dynamics, begin keeps the epoch's starting parameters beside the running ones: two
    # outputs of one input, so donating it would save nothing
    keep = any(s.dynamics for s in specs)
    blocks = jit(begin, not keep), jit(block), jit(finish, not keep)
    return StepBlocks(*blocks, min(size, steps), steps)
