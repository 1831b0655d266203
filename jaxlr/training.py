"""The host loop: trains a program's lanes epoch by epoch (or step block by step block).

:func:`train_lanes` trains one bucket's lanes, :func:`train_group` several buckets in one
program (:func:`jaxlr.engine.group_epoch`); both fetch the metrics from the device once per
epoch and call back after each epoch (and, for epochs in :func:`jaxlr.engine.step_blocks`,
after each device call), which is where the sweep reports progress, checkpoints and stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlr.blocks import EpochProgress, StepBlocks, step_blocks
from jaxlr.data import DeviceData
from jaxlr.engine import (
    EpochMetrics,
    LaneState,
    RunSpec,
    cached_trainer,
    group_epoch,
    lane_hypers,
)


def to_host(x: Any) -> np.ndarray:
    """``x`` as a numpy array, gathered from every process when it spans several."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def train_lanes(
    spec: RunSpec,
    data: DeviceData,
    seeds: Any,
    lrs: Any,
    epochs: int,
    *,
    on_epoch: Callable[[int, LaneState, EpochMetrics], None] | None = None,
    state: LaneState | None = None,
    start_epoch: int = 0,
    epoch_fn: Callable[..., tuple[LaneState, EpochMetrics]] | None = None,
    on_block: Callable[[int, int, EpochProgress], None] | None = None,
    progress: EpochProgress | None = None,
    start_step: int = 0,
) -> tuple[LaneState, dict[str, np.ndarray]]:
    """Trains the lanes ``seeds x lrs`` for ``epochs`` epochs; returns the final state and
    metrics stacked as numpy arrays of shape ``(epochs - start_epoch, S, L)``.

    ``on_epoch(epoch, state, metrics)`` is called after each epoch (progress, checkpoints).
    ``epoch_fn`` replaces the jitted epoch, e.g. by a program from :func:`compile_epoch`.
    With ``spec.steps_per_call > 0`` each epoch runs in :func:`step_blocks`:
    ``on_block(epoch, steps_done, progress)`` is called after each call, and training may
    start mid-epoch from ``progress`` (after ``start_step`` steps of epoch ``start_epoch``).
    """
    trainer = cached_trainer(spec)
    seeds = jnp.asarray(seeds, jnp.int32)
    lrs = lane_hypers(spec, lrs)  # with spec.decays: an engine.Hypers of lrs and weight decays
    if state is None and progress is None:
        state = trainer.init(seeds, lrs)
    if spec.steps_per_call <= 0:
        states, history = _epochs(
            epoch_fn or trainer.epoch, state, seeds, lrs, data, start_epoch, epochs, on_epoch
        )
        return states, _stack_metrics(history)
    blocks = step_blocks((spec,))
    states, history = _epochs_in_blocks(
        blocks,
        (state,),
        (seeds,),
        (lrs,),
        data,
        start_epoch,
        epochs,
        (lambda e, st, m: on_epoch(e, st[0], m[0])) if on_epoch else None,
        (lambda e, n, p: on_block(e, n, p[0])) if on_block else None,
        None if progress is None else (progress,),
        start_step,
    )
    return states[0], _stack_metrics([h[0] for h in history])


def train_group(
    specs: tuple[RunSpec, ...],
    data: DeviceData,
    seeds: tuple[Any, ...],
    lrs: tuple[Any, ...],
    epochs: int,
    *,
    on_epoch: Callable[[int, tuple, tuple], None] | None = None,
    states: tuple[LaneState, ...] | None = None,
    start_epoch: int = 0,
    epoch_fn: Callable[..., Any] | None = None,
    on_block: Callable[[int, int, tuple], None] | None = None,
    progress: tuple[EpochProgress, ...] | None = None,
    start_step: int = 0,
) -> tuple[tuple[LaneState, ...], list[dict[str, np.ndarray]]]:
    """:func:`train_lanes` for several buckets in one program (:func:`group_epoch`): member
    ``i`` trains lanes ``seeds[i] x lrs[i]`` of ``specs[i]``. Returns the final states and one
    metrics dict per member; each member's numbers are those of :func:`train_lanes` alone."""
    seeds = tuple(jnp.asarray(s, jnp.int32) for s in seeds)
    lrs = tuple(lane_hypers(spec, lr) for spec, lr in zip(specs, lrs, strict=True))
    if states is None and progress is None:
        states = tuple(
            cached_trainer(spec).init(s, lr) for spec, s, lr in zip(specs, seeds, lrs, strict=True)
        )
    if specs[0].steps_per_call > 0:
        states, history = _epochs_in_blocks(
            step_blocks(tuple(specs)),
            states,
            seeds,
            lrs,
            data,
            start_epoch,
            epochs,
            on_epoch,
            on_block,
            progress,
            start_step,
        )
    else:
        run_epoch = epoch_fn or group_epoch(tuple(specs))
        states, history = _epochs(
            run_epoch, tuple(states), seeds, lrs, data, start_epoch, epochs, on_epoch
        )
    return states, [_stack_metrics([h[i] for h in history]) for i in range(len(specs))]


def _epochs(run_epoch, state, seeds, lrs, data, start, epochs, on_epoch) -> tuple[Any, list]:
    """Epochs ``start..epochs-1`` of ``run_epoch``; the metrics of each, on the host."""
    history = []
    for e in range(start, epochs):
        state, metrics = run_epoch(state, seeds, lrs, jnp.int32(e), data)
        wait_ready(metrics)
        metrics = jax.tree.map(to_host, metrics)  # one host sync per epoch
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(e, state, metrics)
    return state, history


def _epochs_in_blocks(
    blocks: StepBlocks,
    states: Any,
    seeds: tuple,
    lrs: tuple,
    data: DeviceData,
    start: int,
    epochs: int,
    on_epoch: Callable[..., None] | None,
    on_block: Callable[..., None] | None,
    progress: tuple | None,
    start_step: int,
) -> tuple[Any, list]:
    """:func:`_epochs` in :class:`StepBlocks`, waiting for each call before the next (so that a
    stop request is honoured after the call in flight), from step ``start_step`` of epoch
    ``start`` (``progress`` is the lanes' state there, if ``start_step > 0``)."""
    history = []
    for e in range(start, epochs):
        epoch = jnp.int32(e)
        resumed = e == start and progress is not None
        p = progress if resumed else blocks.begin(tuple(states))
        for first in blocks.starts(start_step if resumed else 0):
            p = blocks.block(p, seeds, lrs, epoch, jnp.int32(first), data)
            wait_ready(p)
            if on_block is not None:
                on_block(e, min(first + blocks.size, blocks.steps), p)
        losses = tuple(x.losses for x in p)  # not donated: the epoch's end does not reuse it
        states, metrics = blocks.finish(
            tuple(x._replace(losses=None) for x in p), losses, epoch, data
        )
        metrics = jax.tree.map(to_host, metrics)
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(e, states, metrics)
    return states, history


def wait_ready(tree: Any, poll_s: float = 0.02) -> None:
    """Waits until every array of ``tree`` is computed, polling, so that the waiting thread
    runs Python signal handlers (a Ctrl-C is seen at once, not when the device call ends)."""
    leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    while not all(x.is_ready() for x in leaves):
        time.sleep(poll_s)


def _stack_metrics(history: list[EpochMetrics]) -> dict[str, np.ndarray]:
    """Per-epoch metrics stacked along a leading epoch axis."""
    return {
        k: np.stack([getattr(m, k) for m in history]) if history else np.zeros((0,))
        for k in EpochMetrics._fields
    }
