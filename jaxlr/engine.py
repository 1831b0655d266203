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
* **Step blocks.** A long epoch runs as several device calls of ``steps_per_call`` steps
  each (:func:`jaxlr.blocks.step_blocks`), so that the host can stop, checkpoint and report
  progress within seconds at any width. The steps, their batches and the per-step losses are
  those of the one-call epoch; the epoch's metrics are computed from them in a last call
  (tested equal).
* **Metrics.** Per epoch: the mean batch loss of the epoch (``train_loss``), and the loss and
  accuracy on the full test set, evaluated in chunks of ``EVAL_CHUNK`` examples.

The learning rate is a per-lane array argument, never a Python constant: one compilation serves
every lr, and a chunk with the same shapes reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlr import data as data_lib
from jaxlr import families, registry
from jaxlr.compilation import CheapProgram, compiler_options, with_precision
from jaxlr.config import Optimizer, Parametrization, TrainOptions, sgd_folds, weight_decays_of
from jaxlr.data import DeviceData
from jaxlr.dynamics import DYNAMICS, PROBE, layer_dynamics
from jaxlr.optimizers import make_optimizer, rate_quantiles


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
    decays: bool = False  # the lanes take a weight decay (Hypers.weight_decay)
    n_windows: int = 0  # gpt: training windows (random starts 0 .. n_windows - 1)
    total_steps: int = 0  # the run's steps, for a schedule that depends on them (else 0)

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
        shared.update(_unused_options(shared, optimizer))
        if parametrization == "sp":  # what only mup / lr-exp read: one SP program for all sweeps
            shared.update(lr_exponents=None)
            if shared["weight_decay_scaling"] != "width":
                shared.update(base_width=None)
        elif parametrization == "mup":
            shared.update(lr_exponents=None)
        entry = registry.optimizer(optimizer)
        decays = entry.decay != "none" and any(weight_decays_of(options))
        if not (sgd_folds(optimizer, options.lr_rule, parametrization, shared) and not decays):
            shared.update(sgd_update="generic")  # only plain SGD folds: one program for the rest
        steps = dataset.n_train // options.batch_size
        horizon = registry.schedule(options.schedule).horizon
        return cls(
            **shared,
            decays=decays,
            total_steps=steps * options.epochs if horizon else 0,
            in_features=dataset.in_features,
            hidden=tuple(hidden),
            num_classes=dataset.num_classes,
            optimizer=optimizer,
            parametrization=parametrization,
            steps_per_epoch=steps,
            n_windows=getattr(dataset, "n_windows", 0),
            n_train=dataset.n_train,
            n_test=dataset.n_test,
            data_mean=float(dataset.mean),
            data_std=float(dataset.std),
        )

    def schedule_multiplier(self, step: jax.Array) -> jax.Array | float:
        """The schedule's :math:`s_t` at (global, 0-based) ``step`` (:mod:`jaxlr.registry`)."""
        entry = registry.schedule(self.schedule)
        if entry.multiplier is None:
            return 1.0
        total = self.total_steps or self.steps_per_epoch
        warmup = registry.warmup_steps(self.warmup, total)
        return entry.multiplier(step, total, warmup, self)

    @property
    def base_hidden(self) -> tuple[int, ...]:
        """The muP base architecture: every hidden width set to ``base_width``."""
        assert self.base_width is not None
        return (self.base_width,) * len(self.hidden)

    def gpt(self) -> Any:
        """The :class:`jaxlr.gpt.GPT` of a ``gpt`` program."""
        return families.gpt_model(self)

    def model(self) -> tuple[Any, Callable[[jax.Array], Any]]:
        """The model and a pure ``init(key) -> params`` (:attr:`jaxlr.families.Family.build`
        of the program's family: muP's init under ``mup``)."""
        return families.family_of(self).build(self)


def _unused_options(shared: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """The defaults of the options that only other optimizers read, so that ``optimizer``'s
    program is the same whatever else the sweep trains."""
    own = set(registry.optimizer(optimizer).options)
    others = {o for e in registry.OPTIMIZERS.values() for o in e.options} - own
    if registry.optimizer(optimizer).decay == "none" or optimizer != "adamw":
        others |= {"weight_decay_mode", "weight_decay_scaling"}
    if optimizer == "sgd":
        others.add("betas")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    return {k: defaults[k] for k in others if k in shared}


class Hypers(NamedTuple):
    """Per-lane hyperparameters ``(L,)`` of a program whose lanes take a weight decay
    (``spec.decays``); the others take the lrs ``(L,)`` alone."""

    lr: jax.Array
    weight_decay: jax.Array


def lane_hypers(spec: RunSpec, lrs: Any, weight_decay: float = 0.0) -> Any:
    """What a program of ``spec`` takes for its lanes: the lrs as float32 ``(L,)``, or, when
    ``spec.decays``, :class:`Hypers` with ``weight_decay`` for every lane (a tree of them is
    passed through as float32)."""
    if isinstance(lrs, Hypers):
        return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), lrs)
    lr = jnp.asarray(lrs, jnp.float32)
    if not spec.decays:
        return lr
    return Hypers(lr, jnp.full(lr.shape, weight_decay, jnp.float32))


def _split_hypers(h: Any) -> tuple[Any, Any]:
    return (h.lr, h.weight_decay) if isinstance(h, Hypers) else (h, 0.0)


def _n_lanes(h: Any) -> int:
    return _split_hypers(h)[0].shape[0]


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
    dynamics: jax.Array  # float32 (S, L, layers, 2): the epoch's ||dW||_F / ||W||_F and the
    # layer's output RMS on the probe batch (layers is 0 without spec.dynamics); see layer_dynamics


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, ``torch.nn.CrossEntropyLoss``'s default."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def per_example_loss(spec: RunSpec) -> Callable[[jax.Array, jax.Array], jax.Array]:
    r"""The family's per-example loss (:attr:`jaxlr.families.Family.loss`); by default softmax
    cross-entropy :math:`\ell_i = -\log \operatorname{softmax}(z_i)_{y_i}`, whose batch mean is
    :func:`cross_entropy`."""
    return families.family_of(spec).loss or optax.softmax_cross_entropy_with_integer_labels


class Trainer(NamedTuple):
    """The compiled program of one bucket chunk."""

    spec: RunSpec
    init: CheapProgram  # (seeds (S,), lrs (L,)) -> state
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


def window_starts(seed: jax.Array, epoch: jax.Array, n: int, batch: int, steps: int) -> jax.Array:
    """gpt: the window starts of each step of an evaluation interval, ``(steps, batch)`` int32,
    uniform over ``0 .. n - 1`` from ``fold_in(data_key, epoch)`` (common random numbers: every
    lr of a seed sees the same windows)."""
    _, data_key = seed_keys(seed)
    key = jax.random.fold_in(data_key, epoch)
    return jax.random.randint(key, (steps, batch), 0, n, jnp.int32)


def _make_init(spec: RunSpec, init_params: Callable[[jax.Array], Any]) -> Callable[..., LaneState]:
    """``init(seeds (S,), lrs (L,))``: per seed one set of parameters, shared by its lrs."""

    def init(seeds: jax.Array, lrs: jax.Array) -> LaneState:
        n_s, n_l = seeds.shape[0], _n_lanes(lrs)
        init_keys = jax.vmap(lambda s: seed_keys(s)[0])(seeds)
        params = jax.vmap(init_params)(init_keys)  # one per seed
        params = jax.tree.map(
            lambda p: jnp.broadcast_to(p[:, None], (n_s, n_l, *p.shape[1:])), params
        )
        opt_init = lambda p, h: make_optimizer(spec, *_split_hypers(h)).init(p)
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

    per_example = per_example_loss(spec)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return per_example(model.apply({"params": params}, x), y).mean()

    def folded_step(params, opt_state, alive, lr, x, y, s_t):
        loss, backward = jax.vjp(lambda p: loss_fn(p, x, y), params)
        ok = alive & jnp.isfinite(loss) & (loss < spec.divergence_loss)
        eta = lr if spec.schedule == "constant" else lr * s_t
        # the cotangent -lr (0 for a dead lane) scales every delta of the backward pass
        (updates,) = backward(jnp.where(ok, -eta, 0.0).astype(loss.dtype))
        new_params = jax.tree.map(jnp.add, params, updates)
        return new_params, opt_state, ok, jnp.where(ok, loss, 0.0)

    def lane_step(params, opt_state, alive, hypers, x, y, s_t):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        lr, wd = _split_hypers(hypers)
        updates, new_opt = make_optimizer(spec, lr, wd, s_t).update(grads, opt_state, params)
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
        assert sgd_folds(spec.optimizer, spec.lr_rule, spec.parametrization, spec)
        lane_step = folded_step
    # inner vmap over lrs shares the batch; outer vmap over seeds has its own batch; the
    # schedule's multiplier s_t is the same for every lane
    return jax.vmap(
        jax.vmap(lane_step, in_axes=(0, 0, 0, 0, None, None, None)),
        in_axes=(0, 0, 0, None, 0, 0, None),
    )


def _make_evaluate(
    spec: RunSpec, model: Any, normalize: Callable[[jax.Array], jax.Array]
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """Test loss and accuracy of every lane, over the test set in chunks of ``EVAL_CHUNK``."""

    gpt = families.family_of(spec).data == "text"
    per_example = spec.context if gpt else 1  # text: every position of a window is a target
    example_loss = per_example_loss(spec)

    def lane_eval(params: Any, x: jax.Array, y: jax.Array, m: jax.Array) -> jax.Array:
        if gpt:  # x: validation windows (chunk, T + 1); the targets are the next bytes
            x, y, m = x[:, :-1], x[:, 1:], m[:, None]
        logits = model.apply({"params": params}, x)
        ce = example_loss(logits, y)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
        return jnp.stack([jnp.sum(ce * m), jnp.sum(correct * m)])

    def evaluate(params: Any, data: DeviceData) -> tuple[jax.Array, jax.Array]:
        def chunk(c):
            x, y, m = c
            return jax.vmap(jax.vmap(lane_eval, (0, None, None, None)), (0, None, None, None))(
                params, x.astype(jnp.int32) if gpt else normalize(x), y, m
            )

        sums = jax.lax.map(chunk, (data.x_test, data.y_test, data.test_mask)).sum(0)
        n = spec.n_test * per_example
        return sums[..., 0] / n, sums[..., 1] / n

    return evaluate


class _Lanes(NamedTuple):
    """The traced pieces of one bucket's epoch, so that several buckets can share a program."""

    batches: Callable[[jax.Array, jax.Array], jax.Array]  # (seeds, epoch) -> (steps, S, B)
    step: Callable[..., tuple[Any, jax.Array]]  # (carry, lrs, idx_t, data, epoch, t) -> ...
    dynamics: bool  # finish reads the parameters at the epoch's start (state.params)
    finish: Callable[..., tuple[LaneState, EpochMetrics]]  # (state, carry, losses, epoch, data)


def _make_lanes(spec: RunSpec) -> tuple[_Lanes, Callable[..., LaneState]]:
    """The epoch pieces and the ``init`` of ``spec``'s lanes."""
    model, init_params = spec.model()
    mean, std = spec.data_mean, spec.data_std
    text = families.family_of(spec).data == "text"

    def normalize(raw: jax.Array) -> jax.Array:
        return data_lib.normalize(raw, mean, std)

    step = _make_step(spec, model)
    evaluate = _make_evaluate(spec, model, normalize)

    def one_seed(s: jax.Array, epoch: jax.Array) -> jax.Array:
        if text:
            return window_starts(s, epoch, spec.n_windows, spec.batch_size, spec.steps_per_epoch)
        return epoch_batches(s, epoch, spec.n_train, spec.batch_size, spec.steps_per_epoch)

    def batches(seeds: jax.Array, epoch: jax.Array) -> jax.Array:
        idx = jax.vmap(lambda s: one_seed(s, epoch))(seeds)
        return jnp.swapaxes(idx, 0, 1)  # (steps, S, B)

    def lane_step(
        carry: Any, lrs: Any, idx_t: jax.Array, data: Any, epoch: jax.Array, t: jax.Array
    ) -> Any:
        """One step of every lane: step ``t`` of epoch ``epoch``."""
        params, opt_state, alive = carry
        if text:  # idx_t: window starts in the training bytes
            from jaxlr.text import window_batch

            x, y = window_batch(data.x_train, idx_t, spec.context)
        else:
            x = normalize(data.x_train[idx_t])
            y = data.y_train[idx_t]
        s_t = spec.schedule_multiplier(epoch * spec.steps_per_epoch + t)
        params, opt_state, alive, loss = step(params, opt_state, alive, lrs, x, y, s_t)
        return (params, opt_state, alive), loss

    def finish(state: LaneState, carry: Any, losses: jax.Array, epoch: jax.Array, data: Any):
        params, opt_state, alive = carry
        train_loss = losses.sum(0) / spec.steps_per_epoch
        train_loss = jnp.where(alive, train_loss, jnp.nan)
        test_loss, test_acc = evaluate(params, data)
        dead = ~alive
        if spec.dynamics:
            probe = normalize(data.x_test[0, : min(PROBE, spec.n_test)])
            dynamics = layer_dynamics(model, state.params, params, probe, alive)
        else:
            dynamics = jnp.zeros((*alive.shape, 0, len(DYNAMICS)), jnp.float32)
        metrics = EpochMetrics(
            train_loss,
            jnp.where(dead, jnp.nan, test_loss),
            jnp.where(dead, jnp.nan, test_acc),
            rate_quantiles(spec, params, opt_state, alive),
            dynamics,
        )
        died_now = state.alive & ~alive
        div_epoch = jnp.where(died_now, epoch.astype(jnp.int32), state.diverged_epoch)
        return LaneState(params, opt_state, alive, div_epoch), metrics

    lanes = _Lanes(batches=batches, step=lane_step, dynamics=spec.dynamics, finish=finish)
    return lanes, _make_init(spec, init_params)


def _group_epoch(members: tuple[_Lanes, ...]) -> Callable[..., Any]:
    """One epoch of several buckets in one program: every ``lax.scan`` step runs one optimizer
    step of each member, so narrow buckets ride along with the widest instead of paying their
    own per-step latency. Members never interact; each keeps its own batches and state.

    ``epoch(states, seeds, lrs, epoch, data) -> (states, metrics)``, tuples with one entry per
    member.
    """

    def epoch(states: tuple, seeds: tuple, lrs: tuple, epoch: jax.Array, data: Any):
        idx = tuple(m.batches(s, epoch) for m, s in zip(members, seeds, strict=True))

        def body(carries, xs):
            t, idx_t = xs
            out = [
                m.step(c, lr, i, data, epoch, t)
                for m, c, lr, i in zip(members, carries, lrs, idx_t, strict=True)
            ]
            return tuple(o[0] for o in out), tuple(o[1] for o in out)

        carries = tuple((s.params, s.opt_state, s.alive) for s in states)
        steps = idx[0].shape[0]
        carries, losses = jax.lax.scan(body, carries, (jnp.arange(steps), idx))
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

    init, epoch = with_precision(init, spec.precision), with_precision(epoch, spec.precision)
    options = compiler_options(spec)
    init_jit = jax.jit(init)
    return Trainer(
        spec,
        CheapProgram(init_jit, options),
        jax.jit(epoch, donate_argnums=() if spec.dynamics else (0,), compiler_options=options),
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
        with_precision(epoch, specs[0].precision),
        donate_argnums=() if any(s.dynamics for s in specs) else (0,),
        compiler_options=compiler_options(merged),
    )


def abstract_hypers(spec: RunSpec, n_lrs: int) -> Any:
    """The shapes of what a program of ``spec`` takes for ``n_lrs`` lanes (:func:`lane_hypers`)."""
    lr = jax.ShapeDtypeStruct((n_lrs,), jnp.float32)
    return Hypers(lr, lr) if spec.decays else lr


def compile_group(
    specs: tuple[RunSpec, ...], shapes: tuple[tuple[int, int], ...], data: DeviceData
) -> Callable[..., Any]:
    """:func:`group_epoch` compiled ahead of time for lanes ``shapes[i] = (n_seeds, n_lrs)``
    of ``specs[i]`` (thread-safe, like :func:`compile_epoch`)."""
    states, seeds, lrs = [], [], []
    for spec, (n_s, n_l) in zip(specs, shapes, strict=True):
        s = jax.ShapeDtypeStruct((n_s,), jnp.int32)
        lr = abstract_hypers(spec, n_l)
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
    lrs = abstract_hypers(spec, n_lrs)
    state = trainer.abstract_init(seeds, lrs)
    epoch = jax.ShapeDtypeStruct((), jnp.int32)
    trainer.init.prepare(seeds, lrs)  # the init program too, off the critical path
    return trainer.epoch.lower(state, seeds, lrs, epoch, data).compile()


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


_MOVED = {
    **dict.fromkeys(("to_host", "train_lanes", "train_group", "wait_ready"), "jaxlr.training"),
    **dict.fromkeys(("EpochProgress", "StepBlocks", "step_blocks"), "jaxlr.blocks"),
}


def __getattr__(name: str) -> Any:
    """The host loop's functions (:mod:`jaxlr.training`) and the step blocks
    (:mod:`jaxlr.blocks`), where they were before they had modules of their own."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
