"""The JAX side of a parity run: jaxlr's MLP (or, for the GPT examples, the sweep's GPT on
given token windows, :func:`train_batches`) trained with an Optax transform in ``lax.scan``.

A run starts from given params (the torch init, converted), trains on numpy data and returns
the loss of every step and the final params as numpy. The transform is either one
``optax.GradientTransformation`` for every step or, for the sweep's optimizers
(:func:`sweep_update`), the sweep's own: ``jaxlr.optimizers.make_optimizer`` rebuilt at each
step ``t`` with that step's schedule multiplier, as the sweep's training step does. The JAX
configuration it needs is scoped to the run by :func:`jax_precision`: ``jax.enable_x64`` for
float64 and ``jax.default_matmul_precision("highest")`` (full-precision float32 matmuls; on
recent GPUs JAX would otherwise use TF32, which PyTorch does not), so nothing leaks into the
caller's process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlr.models import MLP

DType = Literal["float64", "float32"]

StepTransform = Callable[[jax.Array], optax.GradientTransformation]
"""``tx_at(t)``: the transform of the 0-based step ``t`` (a traced int32 scalar)."""

Optimizer = optax.GradientTransformation | StepTransform
"""What a run trains with: one transform for every step, or one per step."""


@dataclasses.dataclass(frozen=True)
class JaxRun:
    """What the JAX side did: the loss of every step and the params after the last one."""

    losses: np.ndarray  # float64 [steps]: loss of step t, computed before update t
    final_params: dict[str, Any]  # MLP: {"Dense_i": {"kernel", "bias"}}; GPT: its Flax tree


class TrainState(NamedTuple):
    """The scan carry: params, optimizer state and the number of steps taken."""

    params: Any
    opt_state: optax.OptState
    step: jax.Array  # int32, shape (): the 0-based index of the next step


@contextlib.contextmanager
def jax_precision(dtype: DType) -> Iterator[None]:
    """x64 on for float64 (off for float32) and highest matmul precision, inside the block."""
    with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision("highest"):
        yield


def model_for(params: Mapping[str, Any], dtype: DType) -> MLP:
    """The :class:`jaxlr.models.MLP` whose layers have the shapes of ``params``."""
    kernels = [params[f"Dense_{i}"]["kernel"] for i in range(len(params))]
    hidden = tuple(int(k.shape[1]) for k in kernels[:-1])
    return MLP(hidden, int(kernels[-1].shape[1]), dtype=jnp.dtype(dtype))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``torch.nn.CrossEntropyLoss()``: mean over the batch of ``-log softmax(logits)[label]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


TrainStep = Callable[[TrainState, tuple[jax.Array, jax.Array]], tuple[TrainState, jax.Array]]


def per_step(tx: Optimizer) -> StepTransform:
    """``tx`` as a transform per step (the same one at every step if it is one transform)."""
    if isinstance(tx, optax.GradientTransformation):
        return lambda t: tx
    return tx


Loss = Callable[[jax.Array, jax.Array], jax.Array]
"""``loss(logits, labels)``: the scalar a step differentiates."""


def make_train_step(model: Any, tx: Optimizer, loss: Loss = cross_entropy) -> TrainStep:
    """``train_step(state, (x, y)) -> (state, loss)``: one optimizer step on one batch.

    ``loss(model.apply(params, x), y)`` is differentiated (default :func:`cross_entropy`; the
    GPT examples pass :func:`jaxlr.gpt.next_token_loss`). Its value is passed to ``tx.update``
    as ``value=`` (used by ``reduce_lr_on_plateau``); with a transform per step, step
    ``state.step`` updates with ``tx(state.step)``.
    """
    tx_at = per_step(tx)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return loss(model.apply({"params": params}, x), y)

    def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array]):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, *batch)
        step_tx = optax.with_extra_args_support(tx_at(state.step))
        updates, opt_state = step_tx.update(grads, state.opt_state, state.params, value=loss)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), loss

    return train_step


def _initial_state(params: Mapping[str, Any], tx: Optimizer, dtype: DType):
    """Params as device arrays of ``dtype``, the optimizer state built from them (by the
    transform of step 0), and the step count 0."""
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), dict(params))
    return TrainState(params, per_step(tx)(jnp.int32(0)).init(params), jnp.int32(0))


def _result(losses: list[Any], state: TrainState) -> JaxRun:
    """Fetches the per-step losses and the final params to numpy (once, at the end)."""
    return JaxRun(
        np.concatenate([np.asarray(x, np.float64) for x in losses]),
        jax.tree.map(np.asarray, state.params),
    )


def train_full_batch(
    params: Mapping[str, Any],
    tx: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    dtype: DType = "float64",
    *,
    on_step: Callable[[int], None] | None = None,
) -> JaxRun:
    """``steps`` full-batch steps (the width and per-neuron examples) in one jitted ``lax.scan``.

    Args:
      params: initial ``{"Dense_i": {"kernel", "bias"}}`` params (e.g. the converted torch init).
      tx: the optimizer, or one per step (``tx(t)``); its ``update`` gets ``params`` and
        ``value=loss``.
      x, y: the whole training set (``x`` is cast to ``dtype``).
      steps: number of optimizer steps.
      dtype: ``"float64"`` (x64 inside this call) or ``"float32"``.
      on_step: called with 0 before the (single) device call and with ``steps`` after it.
    """
    with jax_precision(dtype):
        model = model_for(params, dtype)
        train_step = make_train_step(model, tx)

        @functools.partial(jax.jit, donate_argnums=0)
        def train(state: TrainState, x: jax.Array, y: jax.Array):
            return jax.lax.scan(lambda s, _: train_step(s, (x, y)), state, None, length=steps)

        if on_step is not None:
            on_step(0)
        state, losses = train(
            _initial_state(params, tx, dtype), jnp.asarray(x, dtype), jnp.asarray(y, jnp.int32)
        )
        if on_step is not None:
            on_step(jax.block_until_ready(losses).shape[0])
        return _result([losses], state)


def make_train_epoch(model: MLP, tx: Optimizer) -> Callable[..., tuple[TrainState, jax.Array]]:
    """``train_epoch(state, x, y, batch_idx) -> (state, losses)``, jitted, state donated.

    Scans over the rows of ``batch_idx`` (``[batches, batch_size]`` sample indices), gathering
    each batch from the device-resident ``x``/``y`` inside the scan.
    """
    train_step = make_train_step(model, tx)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state: TrainState, x: jax.Array, y: jax.Array, batch_idx: jax.Array):
        return jax.lax.scan(lambda s, idx: train_step(s, (x[idx], y[idx])), state, batch_idx)

    return train_epoch


def train_minibatch(
    params: Mapping[str, Any],
    tx: Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    batches: np.ndarray,
    batches_per_epoch: int,
    dtype: DType = "float64",
    *,
    on_step: Callable[[int], None] | None = None,
) -> JaxRun:
    """Minibatch training (the Fashion-MNIST width experiment): one jitted scan per epoch.

    Args:
      params: initial params.
      tx: the optimizer, or one per step (``tx(t)``, ``t`` the global 0-based step).
      x, y: the training set, put on the device once.
      batches: ``[steps, batch_size]`` sample indices, row ``t`` for step ``t``.
      batches_per_epoch: rows per host call (the last epoch may be shorter).
      dtype: ``"float64"`` or ``"float32"``.
      on_step: called with the steps done after each epoch's scan has finished (waiting for
        it, so the count is true; without ``on_step`` the epochs are queued without waiting).
    """
    with jax_precision(dtype):
        train_epoch = make_train_epoch(model_for(params, dtype), tx)
        state = _initial_state(params, tx, dtype)
        xd, yd = jnp.asarray(x, dtype), jnp.asarray(y, jnp.int32)
        losses = []
        for start in range(0, len(batches), batches_per_epoch):
            idx = jnp.asarray(batches[start : start + batches_per_epoch], jnp.int32)
            state, epoch_losses = train_epoch(state, xd, yd, idx)
            losses.append(epoch_losses)
            if on_step is not None:
                on_step(start + jax.block_until_ready(epoch_losses).shape[0])
        return _result(losses, state)


def train_batches(
    model: Any,
    params: Mapping[str, Any],
    tx: Optimizer,
    xs: np.ndarray,
    ys: np.ndarray,
    dtype: DType = "float64",
    *,
    loss: Loss = cross_entropy,
    on_step: Callable[[int], None] | None = None,
) -> JaxRun:
    """One step per given batch, ``(xs[t], ys[t])`` at step ``t``, in one jitted ``lax.scan``
    (the GPT examples: ``xs``, ``ys`` are int token windows ``[steps, batch, context]``).

    Args:
      model: a Flax module of ``dtype`` (its ``apply`` gives the logits).
      params: its initial params (e.g. the converted torch init), cast to ``dtype``.
      tx: the optimizer, or one per step (``tx(t)``).
      xs, ys: the inputs and labels of every step, kept as int32 (token ids and targets).
      dtype: ``"float64"`` (x64 inside this call) or ``"float32"``.
      loss: ``loss(logits, labels)``.
      on_step: called with 0 before the (single) device call and with the steps after it.
    """
    with jax_precision(dtype):
        train_step = make_train_step(model, tx, loss)

        @functools.partial(jax.jit, donate_argnums=0)
        def train(state: TrainState, xs: jax.Array, ys: jax.Array):
            return jax.lax.scan(train_step, state, (xs, ys))

        if on_step is not None:
            on_step(0)
        state, losses = train(
            _initial_state(params, tx, dtype),
            jnp.asarray(xs, jnp.int32),
            jnp.asarray(ys, jnp.int32),
        )
        if on_step is not None:
            on_step(jax.block_until_ready(losses).shape[0])
        return _result([losses], state)


@dataclasses.dataclass(frozen=True)
class DataShape:
    """The attributes of a dataset that ``jaxlr.engine.RunSpec.create`` reads."""

    in_features: int
    num_classes: int
    n_train: int
    n_test: int = 0
    mean: float = 0.0
    std: float = 1.0


def sweep_update(
    optimizer: str,
    hidden: tuple[int, ...],
    data: DataShape,
    steps: int,
    lr: float,
    weight_decay: float = 0.0,
    **options: Any,
) -> StepTransform:
    r"""The sweep's update of one lane, per step:
    ``t -> make_optimizer(spec, lr, weight_decay, spec.schedule_multiplier(t))``.

    ``spec`` is the :class:`jaxlr.engine.RunSpec` that the sweep builds for ``optimizer`` and
    architecture ``hidden`` from a :class:`jaxlr.config.SweepConfig` with ``options`` (its
    fields: ``momentum``, ``schedule``, ``warmup``, ...), weight decay ``weight_decay`` and
    full-batch epochs (``batch_size = data.n_train``, ``epochs = steps``), so that a
    horizon-dependent schedule spans the run's ``steps`` steps. The config is validated as the
    command line's is. Nothing here re-implements the update: this is what
    ``jaxlr.engine``'s training step calls at every step.
    """
    from jaxlr.config import SweepConfig
    from jaxlr.engine import RunSpec
    from jaxlr.optimizers import make_optimizer

    cfg = SweepConfig(
        optimizers=(optimizer,),
        hidden=(tuple(hidden),),
        weight_decays=(weight_decay,),
        epochs=steps,
        batch_size=data.n_train,
        **options,
    )
    spec = RunSpec.create(cfg, data, tuple(hidden), optimizer)
    if spec.total_steps not in (0, steps):
        raise AssertionError(f"the spec spans {spec.total_steps} steps, not {steps}")
    return lambda t: make_optimizer(spec, lr, weight_decay, spec.schedule_multiplier(t))
