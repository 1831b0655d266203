"""The training engine: one jitted, vmapped program per bucket chunk.

``make_trainer(spec)`` returns a :class:`Trainer` whose ``init`` and ``epoch`` are pure jitted
functions over a :class:`LaneState` with leading lane axes ``(seeds, lrs)``:

* **Common random numbers.** Lane ``(s, lr)`` initializes from ``fold_in(PRNGKey(s), 0)`` and
  orders batches with ``fold_in(PRNGKey(s), 1)``, so lanes of one seed that differ only in lr
  start from the same weights and see the same batches. The inner vmap (over lrs) therefore
  takes the batch unbatched, and XLA runs the first layer as one matmul for all lrs.
* **Steps in ``lax.scan``, epochs on the host.** One call per epoch; the state buffers are
  donated. Each epoch draws ``perm = permutation(fold_in(data_key, epoch), n_train)`` on the
  device and gathers the batches inside the scan; the last ``n_train mod batch_size`` examples
  of the permutation are dropped (a different remainder each epoch).
* **Divergence.** A sticky per-lane ``alive`` flag:
  ``alive &= isfinite(loss) & (loss < divergence_loss)``, checked on every batch loss. A dead
  lane keeps its last parameters (``where(alive, new, old)``) and the epoch it died in is
  recorded (plain SGD's folded step guards the backward pass instead; see
  :func:`_make_step`). Lanes never interact, so a NaN lane cannot change any other lane.
* **Step blocks.** A long epoch runs as several device calls of ``steps_per_call`` steps each
  (:func:`step_blocks`), so that the host can stop, checkpoint and report progress within
  seconds at any width. The steps, their batches and the per-step losses are those of the
  one-call epoch; the epoch's metrics are computed from them in a last call (tested equal).
* **Metrics.** Per epoch: the mean batch loss of the epoch (``train_loss``), and the loss and
  accuracy on the full test set, evaluated in chunks of ``EVAL_CHUNK`` examples.

The learning rate is a per-lane array argument, never a Python constant: one compilation serves
every lr, and a chunk with the same shapes reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlr import data as data_lib
from jaxlr.config import Optimizer, Parametrization, TrainOptions, sgd_folds
from jaxlr.data import DeviceData
from jaxlr.models import MLP


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec(TrainOptions):
    """Static (hashable) description of one bucket's program: the shapes, plus every
    :class:`jaxlr.config.TrainOptions` field (inherited, so a new option reaches the program
    without being copied here)."""

    in_features: int
    hidden: tuple[int, ...]
    num_classes: int
    optimizer: Optimizer
    parametrization: Parametrization = "sp"
    steps_per_epoch: int
    n_train: int
    n_test: int
    data_mean: float = 0.0
    data_std: float = 1.0
    autotune: bool = True  # GPU: let XLA autotune the kernels (the plan decides per program)
    steps_per_call: int = 0  # > 0: an epoch runs as device calls of this many steps (StepBlocks)

    @classmethod
    def create(
        cls,
        options: TrainOptions,
        dataset: Any,
        hidden: tuple[int, ...],
        optimizer: str,
        parametrization: str = "sp",
    ) -> RunSpec:
        """The program of architecture ``hidden``, ``optimizer`` and ``parametrization`` on
        ``dataset`` (a :class:`jaxlr.data.Dataset`) under ``options`` (a :class:`SweepConfig`
        is one)."""
        shared = {f.name: getattr(options, f.name) for f in dataclasses.fields(TrainOptions)}
        if parametrization == "sp":  # what only mup / lr-exp read: one SP program for all sweeps
            shared.update(base_width=None, lr_exponents=None)
        elif parametrization == "mup":
            shared.update(lr_exponents=None)
        if not sgd_folds(optimizer, options.lr_rule, parametrization):
            shared.update(sgd_update="generic")  # only plain SGD folds: one program for the rest
        return cls(
            **shared,
            in_features=dataset.in_features,
            hidden=tuple(hidden),
            num_classes=dataset.num_classes,
            optimizer=optimizer,
            parametrization=parametrization,
            steps_per_epoch=dataset.n_train // options.batch_size,
            n_train=dataset.n_train,
            n_test=dataset.n_test,
            data_mean=float(dataset.mean),
            data_std=float(dataset.std),
        )

    @property
    def base_hidden(self) -> tuple[int, ...]:
        """The muP base architecture: every hidden width set to ``base_width``."""
        assert self.base_width is not None
        return (self.base_width,) * len(self.hidden)

    def model(self) -> tuple[MLP, Callable[[jax.Array], Any]]:
        """The model and a pure ``init(key) -> params`` (muP's init under ``mup``)."""
        if self.parametrization == "mup":
            from jaxlr import mup

            # mup.MuReadout's default: a torch-initialized readout (readout_zero_init=False),
            # so that at the base width muP is exactly SP
            return mup.mup_mlp(
                self.in_features,
                self.hidden,
                self.num_classes,
                base_hidden=self.base_hidden,
                readout_zero_init=False,
            )
        model = MLP(self.hidden, self.num_classes, init_scheme=self.init)
        x0 = jnp.zeros((1, self.in_features))
        return model, lambda key: model.init(key, x0)["params"]


class LaneState(NamedTuple):
    """Per-lane training state; every leaf has leading axes ``(seeds, lrs)``."""

    params: Any
    opt_state: Any
    alive: jax.Array  # bool, shape (S, L)
    diverged_epoch: jax.Array  # int32, shape (S, L); -1 while alive


class EpochMetrics(NamedTuple):
    """Per-lane metrics of one epoch, with leading axes ``(S, L)``."""

    train_loss: jax.Array  # float32: mean batch loss; NaN if the lane died by this epoch
    test_loss: jax.Array  # float32: mean cross-entropy on the test set
    test_accuracy: jax.Array  # float32
    rates: jax.Array  # float32 (S, L, layers, 5): RATE_QUANTILES of each layer's rates; layers
    # is 0 for the rules whose rate is one number per layer (none, per-layer)


RATE_RULES = ("weight-norm", "adagrad-param", "adagrad-neuron")
"""The rules whose rates vary within a layer (recorded in ``rates.csv``)."""
RATE_QUANTILES = (0.0, 0.05, 0.5, 0.95, 1.0)


RATE_SAMPLE = 16384
"""Above this many rates, the inner quantiles come from an even stride through them."""


def _quantiles(r: jax.Array, q: jax.Array) -> jax.Array:
    """``quantile(r, q)``; with more than :data:`RATE_SAMPLE` entries, the inner quantiles from
    every ``ceil(n / RATE_SAMPLE)``-th entry (a sort of the full kernel would cost as much as an
    epoch of training on a small dataset), min and max exact."""
    stride = -(-r.size // RATE_SAMPLE)
    inner = jnp.quantile(r[::stride], q)
    return inner.at[0].set(r.min()).at[-1].set(r.max())


def rate_quantiles(spec: RunSpec, params: Any, opt_state: Any, alive: jax.Array) -> jax.Array:
    r"""Quantiles :data:`RATE_QUANTILES` of each layer's effective learning rates, per lane.

    Shape ``(S, L, layers, 5)``, NaN for a diverged lane; ``(S, L, 0, 5)`` for a rule without
    per-neuron or per-parameter rates. The quantiles are over the layer's neurons
    (``weight-norm``, ``adagrad-neuron``) or over its kernel entries (``adagrad-param``; past
    :data:`RATE_SAMPLE` entries the 5/50/95% quantiles come from an even sample of them, min
    and max stay exact). A rate is the rule's own (:func:`jaxlr.learning_rates`: for
    ``weight-norm`` the rate of the next update, for the AdaGrad rules the rate before the next
    gradient) times the parametrization's per-layer multiplier (muP, ``lr-exp``); an inner
    Adam's preconditioning is not part of it.
    """
    n_s, n_l = alive.shape
    if spec.lr_rule not in RATE_RULES:
        return jnp.zeros((n_s, n_l, 0, len(RATE_QUANTILES)), jnp.float32)
    from jaxlr import transforms

    scales = {"mup": mup_scales, "lr-exp": lr_exp_scales}.get(spec.parametrization)
    scales = scales(spec) if scales is not None else None
    q = jnp.asarray(RATE_QUANTILES, jnp.float32)

    # per-neuron rules: a neuron's rate is its bias entry's, so the quantiles are over the
    # neurons (exact, and far cheaper than over the broadcast kernel); per parameter: the kernel
    leaf = "kernel" if spec.lr_rule == "adagrad-param" else "bias"

    def lane(p: Any, s: Any) -> jax.Array:
        rates = transforms.learning_rates(s, p)
        out = []
        for i in range(len(spec.hidden) + 1):
            r = rates[f"Dense_{i}"][leaf].astype(jnp.float32)
            if scales is not None:
                r = r * scales[f"Dense_{i}"][leaf]
            out.append(_quantiles(r.ravel(), q))
        return jnp.stack(out)

    stats = jax.vmap(jax.vmap(lane))(params, opt_state)
    return jnp.where(alive[..., None, None], stats, jnp.nan)


def make_optimizer(spec: RunSpec, lr: jax.Array | float) -> optax.GradientTransformation:
    """The update rule of ``spec`` with (base) learning rate ``lr`` (may be traced).

    SGD is ``-lr * g``; Adam is ``-lr * adam(g)`` (torch defaults b1=0.9, b2=0.999, eps=1e-8).
    ``lr_rule`` replaces the scalar rate by a per-layer / per-neuron / per-parameter rate from
    :mod:`jaxlr.transforms`, with Adam's direction as ``inner`` when the optimizer is Adam.
    Under muP the updates are then multiplied by :func:`jaxlr.mup.mup_lr_scales`.
    """
    inner = optax.scale_by_adam() if spec.optimizer == "adam" else None
    rule = spec.lr_rule
    if rule == "none":
        base = optax.chain(inner or optax.identity(), optax.scale(-1.0 * lr))
    else:
        from jaxlr import transforms

        if rule == "per-layer":
            assert spec.layer_lr_mults is not None
            lrs = {f"Dense_{i}": lr * m for i, m in enumerate(spec.layer_lr_mults)}
            base = transforms.per_layer_lr(lrs, inner=inner)
        elif rule == "weight-norm":
            base = transforms.weight_norm_lr(
                lr, scaling_factor=spec.weight_norm_factor, inner=inner
            )
        elif rule in ("adagrad-param", "adagrad-neuron"):
            gran = "parameter" if rule == "adagrad-param" else "neuron"
            base = transforms.adagrad_lr(lr, eps=spec.adagrad_eps, granularity=gran, inner=inner)
        else:
            raise ValueError(f"unknown lr rule {rule!r}")
    if spec.parametrization == "sp":
        return base
    from jaxlr import mup

    scales = mup_scales(spec) if spec.parametrization == "mup" else lr_exp_scales(spec)
    return optax.chain(base, mup.scale_by_tree(scales))


@functools.cache
def lr_exp_scales(spec: RunSpec) -> dict[str, dict[str, float]]:
    r"""Per-layer lr multipliers of the ``lr-exp`` parametrization (a tree of floats).

    Layer :math:`l` (``Dense_l``: the hidden layers, then the readout) trains at

    .. math:: \eta_l = \eta \, (n / n_0)^{-e_l},

    with :math:`n` the first hidden width (the ``width`` column), :math:`n_0` ``base_width`` and
    :math:`e_l` ``lr_exponents[l]`` — the per-layer learning-rate exponents of the
    abc-parametrization view (Everett et al., 2024), on SP's init and forward pass. At
    :math:`n = n_0` it is SP.
    """
    assert spec.lr_exponents is not None and spec.base_width is not None
    ratio = spec.hidden[0] / spec.base_width
    return {
        f"Dense_{i}": {"kernel": ratio ** (-e), "bias": ratio ** (-e)}
        for i, e in enumerate(spec.lr_exponents)
    }


@functools.cache
def mup_scales(spec: RunSpec) -> Any:
    """muP per-parameter lr multipliers for ``spec`` (a tree of floats)."""
    from jaxlr import mup

    shapes = mup.mlp_shapes(spec.in_features, spec.hidden, spec.num_classes)
    base_shapes = mup.mlp_shapes(spec.in_features, spec.base_hidden, spec.num_classes)
    return mup.mup_lr_scales(shapes, base_shapes, optimizer=spec.optimizer)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, ``torch.nn.CrossEntropyLoss``'s default."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class Trainer(NamedTuple):
    """The compiled program of one bucket chunk."""

    spec: RunSpec
    init: _CheapProgram  # (seeds (S,), lrs (L,)) -> state
    epoch: Callable[..., tuple[LaneState, EpochMetrics]]  # (state, seeds, lrs, epoch, data)
    abstract_init: Callable[[Any, Any], LaneState]  # init's output shapes, nothing computed


def seed_keys(seed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(init_key, data_key)`` of a seed; they depend on the seed only (common random numbers)."""
    key = jax.random.PRNGKey(seed)
    return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def epoch_batches(seed: jax.Array, epoch: jax.Array, n: int, batch: int, steps: int) -> jax.Array:
    """Example indices of each step of an epoch: ``(steps, batch)`` int32."""
    _, data_key = seed_keys(seed)
    perm = jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
    return perm[: steps * batch].reshape(steps, batch)


def _make_init(spec: RunSpec, init_params: Callable[[jax.Array], Any]) -> Callable[..., LaneState]:
    """``init(seeds (S,), lrs (L,))``: per seed one set of parameters, shared by its lrs."""

    def init(seeds: jax.Array, lrs: jax.Array) -> LaneState:
        n_s, n_l = seeds.shape[0], lrs.shape[0]
        init_keys = jax.vmap(lambda s: seed_keys(s)[0])(seeds)
        params = jax.vmap(init_params)(init_keys)  # one per seed
        params = jax.tree.map(
            lambda p: jnp.broadcast_to(p[:, None], (n_s, n_l, *p.shape[1:])), params
        )
        opt_init = lambda p, lr: make_optimizer(spec, lr).init(p)
        opt_state = jax.vmap(jax.vmap(opt_init), in_axes=(0, None))(params, lrs)
        shape = (n_s, n_l)
        return LaneState(params, opt_state, jnp.ones(shape, bool), jnp.full(shape, -1, jnp.int32))

    return init


def _make_step(spec: RunSpec, model: Any) -> Callable[..., Any]:
    r"""One optimizer step of every lane, ``(seeds, lrs)``-vmapped, with the divergence guard.

    **Generic** (every rule): :math:`g = \nabla\ell(\theta)`,
    :math:`(u, s') = \mathrm{rule}(g, s, \theta)`, :math:`\theta' = \theta + u`; a lane whose
    batch loss is non-finite or :math:`\ge` ``divergence_loss`` keeps :math:`(\theta, s)`
    (``where(ok, new, old)`` on every leaf).

    **Folded** (``sgd_update="folded"``; plain SGD in SP): the backward pass is seeded with the
    cotangent :math:`c = -\eta` (0 for a lane that is or goes dead) instead of 1, so it returns
    :math:`c\,\nabla\ell(\theta)` and :math:`\theta' = \theta + c\,\nabla\ell(\theta)`.
    For a dense layer :math:`z = xW + b` with :math:`\delta = \partial\ell/\partial z`,

    .. math:: W' = W + x^\top (c\,\delta), \qquad b' = b + \textstyle\sum_{\text{batch}} c\,\delta,

    a product with an addend, which a GPU GEMM computes in place (:math:`C \leftarrow AB + C`)
    where the generic step writes :math:`g`, then reads :math:`g` and :math:`W` and writes
    :math:`W`; the divergence guard is on the :math:`\delta` s (through :math:`c`), not a select
    between whole parameter copies. Equal to :math:`\theta - \eta g` in exact arithmetic; in
    float32 :math:`\eta` scales the :math:`\delta` s before the products instead of the
    gradient after them, so the two differ by rounding. A dead lane's parameters are
    :math:`\theta + 0\cdot\nabla\ell`: unchanged while its backward pass is finite, NaN once
    its activations overflow (its metrics are NaN from the epoch it died either way).

    Adam cannot fold: its direction :math:`\hat m / (\sqrt{\hat v} + \epsilon)` is not linear
    in :math:`g`, so :math:`g` is written and read and :math:`\theta, m, v` are each read and
    written (8 words per parameter and step); the guard's select reads only what the update
    reads anyway. XLA's CPU back end computes :math:`\theta`, :math:`m` and :math:`v` in three
    loops that each read :math:`g` (12 words).
    """

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return cross_entropy(model.apply({"params": params}, x), y)

    def folded_step(params, opt_state, alive, lr, x, y):
        loss, backward = jax.vjp(lambda p: loss_fn(p, x, y), params)
        ok = alive & jnp.isfinite(loss) & (loss < spec.divergence_loss)
        # the cotangent -lr (0 for a dead lane) scales every delta of the backward pass
        (updates,) = backward(jnp.where(ok, -lr, 0.0).astype(loss.dtype))
        new_params = jax.tree.map(jnp.add, params, updates)
        return new_params, opt_state, ok, jnp.where(ok, loss, 0.0)

    def lane_step(params, opt_state, alive, lr, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, new_opt = make_optimizer(spec, lr).update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = alive & jnp.isfinite(loss) & (loss < spec.divergence_loss)
        keep = lambda new, old: jnp.where(ok, new, old)
        return (
            jax.tree.map(keep, new_params, params),
            jax.tree.map(keep, new_opt, opt_state),
            ok,
            jnp.where(ok, loss, 0.0),
        )

    if spec.sgd_update == "folded":
        assert sgd_folds(spec.optimizer, spec.lr_rule, spec.parametrization)
        lane_step = folded_step
    # inner vmap over lrs shares the batch; outer vmap over seeds has its own batch
    return jax.vmap(
        jax.vmap(lane_step, in_axes=(0, 0, 0, 0, None, None)),
        in_axes=(0, 0, 0, None, 0, 0),
    )


def _make_evaluate(
    spec: RunSpec, model: Any, normalize: Callable[[jax.Array], jax.Array]
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Test loss and accuracy of every lane, over the test set in chunks of ``EVAL_CHUNK``."""

    def lane_eval(params: Any, x: jax.Array, y: jax.Array, m: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        return jnp.stack([jnp.sum(ce * m), jnp.sum(correct * m)])

    def evaluate(params: Any, data: DeviceData) -> tuple[jax.Array, jax.Array]:
        def chunk(c):
            x, y, m = c
            return jax.vmap(jax.vmap(lane_eval, (0, None, None, None)), (0, None, None, None))(
                params, normalize(x), y, m
            )

        sums = jax.lax.map(chunk, (data.x_test, data.y_test, data.test_mask)).sum(0)
        return sums[..., 0] / spec.n_test, sums[..., 1] / spec.n_test

    return evaluate


class _Lanes(NamedTuple):
    """The traced pieces of one bucket's epoch, so that several buckets can share a program."""

    batches: Callable[[jax.Array, jax.Array], jax.Array]  # (seeds, epoch) -> (steps, S, B)
    step: Callable[..., tuple[Any, jax.Array]]  # (carry, lrs, idx_t, data) -> (carry, loss)
    finish: Callable[..., tuple[LaneState, EpochMetrics]]  # (state, carry, losses, epoch, data)


def _make_lanes(spec: RunSpec) -> tuple[_Lanes, Callable[..., LaneState]]:
    """The epoch pieces and the ``init`` of ``spec``'s lanes."""
    model, init_params = spec.model()
    mean, std = spec.data_mean, spec.data_std

    def normalize(raw: jax.Array) -> jax.Array:
        return data_lib.normalize(raw, mean, std)

    step = _make_step(spec, model)
    evaluate = _make_evaluate(spec, model, normalize)

    def batches(seeds: jax.Array, epoch: jax.Array) -> jax.Array:
        idx = jax.vmap(
            lambda s: epoch_batches(s, epoch, spec.n_train, spec.batch_size, spec.steps_per_epoch)
        )(seeds)
        return jnp.swapaxes(idx, 0, 1)  # (steps, S, B)

    def lane_step(carry: Any, lrs: jax.Array, idx_t: jax.Array, data: Any) -> Any:
        params, opt_state, alive = carry
        x = normalize(data.x_train[idx_t])
        y = data.y_train[idx_t]
        params, opt_state, alive, loss = step(params, opt_state, alive, lrs, x, y)
        return (params, opt_state, alive), loss

    def finish(state: LaneState, carry: Any, losses: jax.Array, epoch: jax.Array, data: Any):
        params, opt_state, alive = carry
        train_loss = losses.sum(0) / spec.steps_per_epoch
        train_loss = jnp.where(alive, train_loss, jnp.nan)
        test_loss, test_acc = evaluate(params, data)
        dead = ~alive
        metrics = EpochMetrics(
            train_loss,
            jnp.where(dead, jnp.nan, test_loss),
            jnp.where(dead, jnp.nan, test_acc),
            rate_quantiles(spec, params, opt_state, alive),
        )
        died_now = state.alive & ~alive
        div_epoch = jnp.where(died_now, epoch.astype(jnp.int32), state.diverged_epoch)
        return LaneState(params, opt_state, alive, div_epoch), metrics

    return _Lanes(batches, lane_step, finish), _make_init(spec, init_params)


def _group_epoch(members: tuple[_Lanes, ...]) -> Callable[..., Any]:
    """One epoch of several buckets in one program: every ``lax.scan`` step runs one optimizer
    step of each member, so narrow buckets ride along with the widest instead of paying their
    own per-step latency. Members never interact; each keeps its own batches and state.

    ``epoch(states, seeds, lrs, epoch, data) -> (states, metrics)``, tuples with one entry per
    member.
    """

    def epoch(states: tuple, seeds: tuple, lrs: tuple, epoch: jax.Array, data: Any):
        idx = tuple(m.batches(s, epoch) for m, s in zip(members, seeds, strict=True))

        def body(carries, idx_t):
            out = [
                m.step(c, lr, i, data)
                for m, c, lr, i in zip(members, carries, lrs, idx_t, strict=True)
            ]
            return tuple(o[0] for o in out), tuple(o[1] for o in out)

        carries = tuple((s.params, s.opt_state, s.alive) for s in states)
        carries, losses = jax.lax.scan(body, carries, idx)
        done = [
            m.finish(s, c, loss, epoch, data)
            for m, s, c, loss in zip(members, states, carries, losses, strict=True)
        ]
        return tuple(d[0] for d in done), tuple(d[1] for d in done)

    return epoch


def make_trainer(spec: RunSpec) -> Trainer:
    """Builds the jitted ``init`` and ``epoch`` functions of a bucket (see the module doc)."""
    lanes, init = _make_lanes(spec)
    group = _group_epoch((lanes,))

    def epoch(state: LaneState, seeds: jax.Array, lrs: jax.Array, epoch: jax.Array, data):
        (state,), (metrics,) = group((state,), (seeds,), (lrs,), epoch, data)
        return state, metrics

    init, epoch = _with_precision(init, spec.precision), _with_precision(epoch, spec.precision)
    options = compiler_options(spec)
    init_jit = jax.jit(init)
    return Trainer(
        spec,
        _CheapProgram(init_jit, options),
        jax.jit(epoch, donate_argnums=(0,), compiler_options=options),
        lambda seeds, lrs: jax.eval_shape(init_jit, seeds, lrs),
    )


@functools.lru_cache(maxsize=16)
def group_epoch(specs: tuple[RunSpec, ...]) -> Callable[..., Any]:
    """The jitted epoch of several buckets trained by one program (see :func:`_group_epoch`):
    ``(states, seeds, lrs, epoch, data) -> (states, metrics)``, tuples over ``specs``.

    Every spec must share the precision and the data. XLA options: autotuned when any member
    is, deterministic when every member is.
    """
    precisions = {s.precision for s in specs}
    if len(precisions) != 1:
        raise ValueError(f"the buckets of one program must share a precision, got {precisions}")
    epoch = _group_epoch(tuple(_make_lanes(s)[0] for s in specs))
    merged = dataclasses.replace(
        specs[0],
        autotune=any(s.autotune for s in specs),
        deterministic=all(s.deterministic for s in specs),
    )
    return jax.jit(
        _with_precision(epoch, specs[0].precision),
        donate_argnums=(0,),
        compiler_options=compiler_options(merged),
    )


class EpochProgress(NamedTuple):
    """One bucket's lanes part-way through an epoch (:func:`step_blocks`): the carry of the
    steps so far, what the epoch's end needs of its start, and the per-step losses."""

    params: Any
    opt_state: Any
    alive: jax.Array  # bool (S, L): alive after the steps so far
    alive_at_start: jax.Array  # bool (S, L): alive when the epoch began
    diverged_epoch: jax.Array  # int32 (S, L)
    losses: jax.Array  # float32 (blocks * steps_per_call, S, L): batch losses, 0 where dead


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
            )
            for s in states
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
                    m.step(c, lr, i, data)
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
                LaneState(None, None, p.alive_at_start, p.diverged_epoch),
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

    def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = _with_precision(fn, specs[0].precision)
        return jax.jit(fn, donate_argnums=(0,), compiler_options=options)

    return StepBlocks(jit(begin), jit(block), jit(finish), min(size, steps), steps)


def compile_group(
    specs: tuple[RunSpec, ...], shapes: tuple[tuple[int, int], ...], data: DeviceData
) -> Callable[..., Any]:
    """:func:`group_epoch` compiled ahead of time for lanes ``shapes[i] = (n_seeds, n_lrs)``
    of ``specs[i]`` (thread-safe, like :func:`compile_epoch`)."""
    states, seeds, lrs = [], [], []
    for spec, (n_s, n_l) in zip(specs, shapes, strict=True):
        s = jax.ShapeDtypeStruct((n_s,), jnp.int32)
        lr = jax.ShapeDtypeStruct((n_l,), jnp.float32)
        trainer = cached_trainer(spec)
        trainer.init.prepare(s, lr)  # the init program too, off the critical path
        states.append(trainer.abstract_init(s, lr))
        seeds.append(s)
        lrs.append(lr)
    epoch = jax.ShapeDtypeStruct((), jnp.int32)
    fn = group_epoch(specs)
    return fn.lower(tuple(states), tuple(seeds), tuple(lrs), epoch, data).compile()


def compile_epoch(spec: RunSpec, n_seeds: int, n_lrs: int, data: DeviceData) -> Callable[..., Any]:
    """The epoch program of ``spec`` for ``n_seeds x n_lrs`` lanes, compiled ahead of time.

    Safe to call from several threads at once: XLA compiles without holding the GIL, so the
    programs of a plan can compile in parallel while earlier ones train. The result is called
    like :attr:`Trainer.epoch` (single-device arrays).
    """
    trainer = cached_trainer(spec)
    seeds = jax.ShapeDtypeStruct((n_seeds,), jnp.int32)
    lrs = jax.ShapeDtypeStruct((n_lrs,), jnp.float32)
    state = trainer.abstract_init(seeds, lrs)
    epoch = jax.ShapeDtypeStruct((), jnp.int32)
    trainer.init.prepare(seeds, lrs)  # the init program too, off the critical path
    return trainer.epoch.lower(state, seeds, lrs, epoch, data).compile()


def compiler_options(spec: RunSpec) -> dict[str, Any]:
    """Per-program XLA options: deterministic GPU reductions unless ``spec.deterministic`` is off,
    no autotuning where the plan says it does not pay (the CPU ignores both)."""
    options: dict[str, Any] = {}
    if spec.deterministic:
        options["xla_gpu_deterministic_ops"] = True
    if not spec.autotune:
        options["xla_gpu_autotune_level"] = 0
    return options


def _with_precision(fn: Callable[..., Any], precision: str) -> Callable[..., Any]:
    """``fn`` traced under ``jax.default_matmul_precision(precision)``: the precision is part
    of the program, whatever the caller's context."""

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        with jax.default_matmul_precision(precision):
            return fn(*args)

    return wrapped


class _CheapProgram:
    """A jitted run-once function (initialization: mostly threefry PRNG code) compiled at XLA
    backend optimization level 0, once per input shape: several-fold less compile time on the
    CPU, and its run time is negligible either way. Thread-safe; :meth:`prepare` compiles ahead
    of time (e.g. in a background thread) for abstract arguments."""

    def __init__(self, fn: Any, options: dict[str, Any]):
        self.fn, self.options = fn, options
        self.compiled: dict[Any, Any] = {}
        self.locks: dict[Any, threading.Lock] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _key(args: tuple) -> tuple:
        def sharding(a: Any) -> Any:
            s = getattr(a, "sharding", None)
            return None if s is None or isinstance(s, jax.sharding.SingleDeviceSharding) else s

        return tuple((a.shape, a.dtype, sharding(a)) for a in args)

    def prepare(self, *args: Any) -> Any:
        """The executable for arguments shaped like ``args`` (arrays or ShapeDtypeStructs)."""
        key = self._key(args)
        with self.lock:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:  # a second caller waits for the first one's compilation
            if key not in self.compiled:
                lowered = self.fn.lower(*args)
                try:
                    options = {**self.options, "xla_backend_optimization_level": 0}
                    self.compiled[key] = lowered.compile(options)
                except Exception:  # a backend that rejects the option
                    self.compiled[key] = lowered.compile(self.options)
        return self.compiled[key]

    def __call__(self, *args: Any) -> Any:
        return self.prepare(*args)(*args)


_TRAINERS_LOCK = threading.Lock()


def cached_trainer(spec: RunSpec) -> Trainer:
    """:func:`make_trainer`, memoized so that chunks of one bucket share the compiled program.

    Thread-safe and single-flight: threads that ask for the same spec at once (a background
    compilation and a program starting to train) get the same trainer, so nothing compiles
    twice.
    """
    with _TRAINERS_LOCK:  # make_trainer only builds jit wrappers: cheap to hold the lock
        return _cached_trainer(spec)


@functools.lru_cache(maxsize=64)
def _cached_trainer(spec: RunSpec) -> Trainer:
    return make_trainer(spec)


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
    lrs = jnp.asarray(lrs, jnp.float32)
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
    lrs = tuple(jnp.asarray(lr, jnp.float32) for lr in lrs)
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
