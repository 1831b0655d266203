"""The source documents' PyTorch examples as runnable, deterministic reference programs.

The sources are "the width examples" (random-data Adam nets, one with ``ReduceLROnPlateau``),
"the Fashion-MNIST width experiment" (``784-w-w-10`` MLPs, plain SGD) and "the per-neuron
learning-rate examples" (Adam per layer, per-neuron rates from weight norms and AdaGrad); see
:mod:`torch_parity.catalog`. Each program follows its source's code (same classes, optimizers,
loss and loop) and returns the loss at every step plus the weights before and after training.
Departures from the source's text are marked ``# departs from the source:`` with the reason.
Common to all of them:

* The data are numpy arrays from :mod:`torch_parity.data` instead of fresh ``torch.randn`` /
  ``torch.randint`` draws, so that the JAX side gets the same arrays.
* The initial weights are ``nn.Linear``'s default init drawn from ``torch.manual_seed(seed)``
  inside ``torch.random.fork_rng`` (the global generator is left as it was), in float32, then
  cast to the run's dtype with ``net.to(dtype)``.
* "Epoch" in the width and per-neuron examples means one full-batch optimizer step; ``steps``
  counts them.
* The loss is recorded with ``loss.item()`` at each step instead of printed.

The per-neuron learning-rate examples 2 and 3 crash on current PyTorch as written: assigning
new dicts to ``optimizer.param_groups`` drops Adam's ``betas`` / ``eps`` (``KeyError:
'betas'``), Adam only takes a scalar ``lr``, and a per-neuron rate vector ``[out]`` does not
broadcast over a weight ``[out, in]``. Here :class:`TensorLRAdam` is Adam with a tensor
learning rate per parameter group (one parameter per group), and the examples' rate functions
return ``[out, 1]`` rates for weights and ``[out]`` for biases, written into the existing
groups' ``"lr"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from torch_parity.data import ParityData


@dataclasses.dataclass(frozen=True)
class TorchRun:
    """What a reference program did: its weights before and after, and its loss per step."""

    init_state: dict[str, np.ndarray]  # state_dict before the first step, in the run's dtype
    final_state: dict[str, np.ndarray]  # state_dict after the last step
    losses: np.ndarray  # float64 [steps]: the loss of step t (computed before update t)
    lrs: np.ndarray | None = None  # float64 [steps]: scheduler lr used by step t, if any


OnStep = Callable[[int], None]  # on_step(t): called after optimizer step t (1-based)


class TorchProgram(Protocol):
    """A reference program: data, steps, dtype and batch indices ``[steps, batch]`` (or None for
    full batch) -> :class:`TorchRun`; ``on_step(t)`` after each step ``t``, if given."""

    def __call__(
        self,
        data: ParityData,
        steps: int,
        dtype: torch.dtype,
        batches: np.ndarray | None = None,
        *,
        on_step: OnStep | None = None,
    ) -> TorchRun: ...


# --------------------------------------------------------------------------- the width examples
class NarrowNetwork(nn.Module):
    """The width examples, network 1: ``input -> hidden -> output`` with a ReLU."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.relu(x)
        x = self.fc2(x)
        return x


class WideNetwork(NarrowNetwork):
    """The width examples, network 2: the source repeats NarrowNetwork's code under this name."""


class ComplexNetwork(nn.Module):
    """The width examples, network 3: ``input -> h1 -> h2 -> output`` with ReLUs."""

    def __init__(self, input_size: int, hidden_size1: int, hidden_size2: int, output_size: int):
        super().__init__()
        self.fc1 = nn.Linear(input_size, hidden_size1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden_size1, hidden_size2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden_size2, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.relu1(x)
        x = self.fc2(x)
        x = self.relu2(x)
        x = self.fc3(x)
        return x


# --------------------------------------------------------------- the per-neuron lr examples
class SimpleNet(nn.Module):
    """The per-neuron learning-rate examples' network: 10-20-10-2 with ReLUs."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 20)
        self.fc2 = nn.Linear(20, 10)
        self.fc3 = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x)
        return x


# ------------------------------------------------------- the Fashion-MNIST width experiment
def width_experiment_mlp(in_features: int, width: int, num_classes: int) -> nn.Sequential:
    """The Fashion-MNIST width experiment's ``in-w-w-10`` MLP (the source gives no code; a plain
    ``nn.Sequential``)."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )


# --------------------------------------------------------------------------- optimizer
class TensorLRAdam(optim.Optimizer):
    """Adam whose per-group learning rate may be a tensor broadcastable to the parameter.

    For a parameter ``p`` with gradient ``g`` at its ``t``-th step (torch.optim.Adam without
    weight decay or amsgrad, written out the way torch computes it)::

        m <- b1 m + (1 - b1) g,        v <- b2 v + (1 - b2) g^2
        p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    ``lr`` is the group's ``"lr"``: a float (then this is ``torch.optim.Adam`` exactly) or a
    tensor such as per-neuron rates ``[out, 1]`` for a weight ``[out, in]`` and ``[out]`` for its
    bias. Put one parameter in each group to give every parameter its own rate tensor.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        """Performs one Adam step with each group's (scalar or tensor) learning rate."""
        if closure is not None:
            raise ValueError("TensorLRAdam does not take a closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(p.grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                bias_correction1 = 1 - beta1**t
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
                if isinstance(lr, torch.Tensor):
                    p.sub_((lr / bias_correction1) * exp_avg / denom)
                else:
                    p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def one_group_per_parameter(model: nn.Module, lr: float) -> TensorLRAdam:
    """A :class:`TensorLRAdam` over ``model.parameters()``, each parameter in its own group."""
    return TensorLRAdam([{"params": [p]} for p in model.parameters()], lr=lr)


def set_group_lrs(optimizer: optim.Optimizer, lrs: list[torch.Tensor]) -> None:
    """Writes one rate per group into the existing ``param_groups`` (keeping betas and eps)."""
    # departs from the source: it assigns `optimizer.param_groups = lrs`, new dicts without
    # 'betas'/'eps' (KeyError in Adam.step); updating each group's 'lr' keeps the rest.
    if len(lrs) != len(optimizer.param_groups):
        raise ValueError(f"{len(lrs)} rates for {len(optimizer.param_groups)} param groups")
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


# ------------------------------------------------------- the per-neuron examples' rate rules
def calculate_neuron_lrs(
    model: nn.Module, base_lr: float, scaling_factor: float = 0.01
) -> list[torch.Tensor]:
    """Per-neuron example 2: ``lr_i = base_lr (1 + scaling_factor ||w_i||)`` per output neuron.

    ``w_i`` is row ``i`` of each ``nn.Linear`` weight (the neuron's input weights); the rate
    applies to that row and to bias ``i``. Returns rates in ``model.parameters()`` order.
    """
    lrs = []
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                weight_norm = torch.norm(module.weight, dim=1)
                per_neuron_lrs = base_lr * (1 + scaling_factor * weight_norm)
                # departs from the source: it puts one [out] vector on weight and bias
                # together; the weight needs [out, 1] to scale its rows.
                lrs += [per_neuron_lrs[:, None], per_neuron_lrs]
    return lrs


def calculate_and_update_neuron_lrs(
    model: nn.Module, base_lr: float, grad_squared_sums: dict[str, torch.Tensor], epsilon: float
) -> list[torch.Tensor]:
    """Per-neuron example 3 (AdaGrad per parameter): ``G <- G + g^2``, ``lr = base/(sqrt(G)+eps)``.

    ``grad_squared_sums`` is updated in place (the source rebinds its entries the same way).
    """
    lrs = []
    for name, param in model.named_parameters():
        grad = param.grad.detach()
        grad_squared_sums[name] = grad_squared_sums[name] + grad**2
        lrs.append(base_lr / (torch.sqrt(grad_squared_sums[name]) + epsilon))
    return lrs


def calculate_and_update_row_lrs(
    model: nn.Module, base_lr: float, grad_squared_sums: dict[str, torch.Tensor], epsilon: float
) -> list[torch.Tensor]:
    """Row-wise AdaGrad: ``G_i <- G_i + mean_k g_W[i, k]^2``, ``lr_i = base / (sqrt(G_i) + eps)``.

    One accumulator per output neuron ``i`` of each ``nn.Linear`` (keyed by module name), fed by
    the mean squared gradient of the neuron's input weights (row ``i`` of the weight); the rate
    ``lr_i`` is shared by that row (as ``[out, 1]``) and by bias ``i``. Not in the source's text:
    it is the per-neuron reading of its example 3 that ``jaxlr.adagrad_lr(granularity="neuron")``
    implements.
    """
    lrs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            grad = module.weight.grad.detach()
            grad_squared_sums[name] = grad_squared_sums[name] + (grad**2).mean(dim=1)
            per_neuron_lrs = base_lr / (torch.sqrt(grad_squared_sums[name]) + epsilon)
            lrs += [per_neuron_lrs[:, None], per_neuron_lrs]
    return lrs


# --------------------------------------------------------------------------- training loops
def _state(model: nn.Module) -> dict[str, np.ndarray]:
    """A numpy copy of ``model.state_dict()``."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)``, restoring the previous count after.

    These networks are tiny: one thread is fastest (intra-op threads only add synchronization,
    which costs 10-100x on a loaded machine) and makes torch's reductions independent of the
    machine's core count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build(make_model: Callable[[], nn.Module], seed: int, dtype: torch.dtype) -> nn.Module:
    """``make_model()`` with default init drawn from ``torch.manual_seed(seed)``, cast to dtype."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    return model.to(dtype)


def train_full_batch(
    net: nn.Module,
    optimizer: optim.Optimizer | Sequence[optim.Optimizer],
    data: ParityData,
    steps: int,
    *,
    before_step: Callable[[], None] | None = None,
    scheduler: ReduceLROnPlateau | LRScheduler | None = None,
    on_step: OnStep | None = None,
) -> TorchRun:
    """The width and per-neuron examples' loop: ``steps`` full-batch steps, CrossEntropyLoss.

    ``optimizer`` may be several optimizers over disjoint parameters (``torch.optim.Muon`` for
    the hidden matrices beside ``AdamW`` for the rest), each zeroed and stepped in turn.
    ``before_step`` runs between ``loss.backward()`` and ``optimizer.step()`` (the per-neuron
    examples compute their rates there); after ``optimizer.step()``, ``scheduler.step(loss)``
    for a ``ReduceLROnPlateau`` (the width examples') or ``scheduler.step()`` for an epoch
    scheduler (``LambdaLR``, ``SequentialLR``, ...); the lr of the first group of the first
    optimizer at each step is recorded when there is a scheduler. ``on_step(t)`` runs after step
    ``t``.
    """
    optimizers = [optimizer] if isinstance(optimizer, optim.Optimizer) else list(optimizer)
    dtype = next(net.parameters()).dtype
    init_state = _state(net)
    input_data = torch.from_numpy(data.x).to(dtype)
    target_data = torch.from_numpy(data.y)
    criterion = nn.CrossEntropyLoss()
    losses, lrs = [], []
    for _epoch in range(steps):
        for opt in optimizers:
            opt.zero_grad()
        outputs = net(input_data)
        loss = criterion(outputs, target_data)
        loss.backward()
        if before_step is not None:
            before_step()
        if scheduler is not None:
            lrs.append(float(optimizers[0].param_groups[0]["lr"]))
        for opt in optimizers:
            opt.step()
        if isinstance(scheduler, ReduceLROnPlateau):
            with warnings.catch_warnings():
                # The source passes the loss tensor itself, which torch converts with float() and
                # a warning about requires_grad; the value is the same as loss.item().
                warnings.filterwarnings("ignore", "Converting a tensor with requires_grad")
                scheduler.step(loss)
        elif scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(len(losses))
    return TorchRun(
        init_state,
        _state(net),
        np.asarray(losses, np.float64),
        np.asarray(lrs, np.float64) if scheduler is not None else None,
    )


# --------------------------------------------------------------- the width examples' programs
def narrow(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
) -> TorchRun:
    """The width examples, 1: 10-32-2, Adam(lr=1e-3)."""
    net = build(lambda: NarrowNetwork(data.features, 32, data.num_classes), seed, dtype)
    optimizer = optim.Adam(net.parameters(), lr=0.001)
    return train_full_batch(net, optimizer, data, steps, on_step=on_step)


def wide(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
) -> TorchRun:
    """The width examples, 2: 10-256-2, Adam(lr=1e-2)."""
    net = build(lambda: WideNetwork(data.features, 256, data.num_classes), seed, dtype)
    optimizer = optim.Adam(net.parameters(), lr=0.01)
    return train_full_batch(net, optimizer, data, steps, on_step=on_step)


def mixed(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
    **plateau: Any,
) -> TorchRun:
    """The width examples, 3: 10-64-16-2, Adam(lr=5e-3), ``ReduceLROnPlateau(optimizer, 'min')``.

    ``plateau`` passes extra keyword arguments to the scheduler (the source uses its defaults).
    """
    net = build(lambda: ComplexNetwork(data.features, 64, 16, data.num_classes), seed, dtype)
    optimizer = optim.Adam(net.parameters(), lr=0.005)
    scheduler = ReduceLROnPlateau(optimizer, "min", **plateau)
    return train_full_batch(net, optimizer, data, steps, scheduler=scheduler, on_step=on_step)


def mixed_plateau(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
) -> TorchRun:
    """``mixed`` with ``ReduceLROnPlateau(optimizer, 'min', patience=2, threshold=0.02,
    threshold_mode='abs')``: over 100 steps the lr drops at steps 53, 57, 60, 63, 66, 69 (to
    5e-9, where torch's ``eps=1e-8`` rule stops further reductions)."""
    # departs from the source: with the defaults (patience 10, threshold 1e-4 relative) the lr
    # never drops within its 20 epochs, so the plateau logic would go untested.
    return mixed(
        data, steps, dtype, batches, seed, on_step=on_step,
        patience=2, threshold=0.02, threshold_mode="abs",
    )  # fmt: skip


# ----------------------------------------------------- the per-neuron examples' programs
# departs from the source: it trains on one sample (torch.randn(1, 10)) for one step; these run
# many full-batch steps on the width examples' kind of data (100 x 10, 2 classes), which the
# source does not specify.
def per_layer(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
) -> TorchRun:
    """Per-neuron example 1: Adam parameter groups with lr 1e-3, 5e-4, 2e-4 for fc1, fc2, fc3."""
    model = build(SimpleNet, seed, dtype)
    optimizer = optim.Adam(
        [
            {"params": model.fc1.parameters(), "lr": 0.001},
            {"params": model.fc2.parameters(), "lr": 0.0005},
            {"params": model.fc3.parameters(), "lr": 0.0002},
        ]
    )
    return train_full_batch(model, optimizer, data, steps, on_step=on_step)


def weight_norm(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    on_step: OnStep | None = None,
) -> TorchRun:
    """Per-neuron example 2: ``lr_i = 1e-3 (1 + 0.01 ||w_i||)`` per neuron, recomputed each step."""
    model = build(SimpleNet, seed, dtype)
    base_lr = 0.001
    # departs from the source: TensorLRAdam with one group per parameter instead of optim.Adam,
    # which takes only a scalar lr.
    optimizer = one_group_per_parameter(model, base_lr)

    def apply_neuron_lrs() -> None:
        set_group_lrs(optimizer, calculate_neuron_lrs(model, base_lr))

    return train_full_batch(
        model, optimizer, data, steps, before_step=apply_neuron_lrs, on_step=on_step
    )


# departs from the source: its base_lr = 1e-2 is far too large once the rates go through
# Adam. Adam's first direction is m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps) ~ sign(g) and the
# first rate is base_lr / (|g| + eps), so step 1 moves every weight by about base_lr / |g|: with
# 1e-2 the loss jumps from 0.70 to 6.2e7 (per parameter) or 3.1e4 (per neuron) at step 2 and
# never recovers. These programs default to base_lr = 1e-5, which trains (0.70 -> 0.62
# per parameter, 0.70 -> 0.60 per neuron in 200 steps); pass base_lr=0.01 for the source's.
ADAGRAD_BASE_LR = 1e-5


def adagrad_param(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    base_lr: float = ADAGRAD_BASE_LR,
    on_step: OnStep | None = None,
) -> TorchRun:
    """Per-neuron example 3: ``lr = base_lr / (sqrt(sum_t g_t^2) + 1e-8)`` elementwise, via Adam."""
    model = build(SimpleNet, seed, dtype)
    optimizer = one_group_per_parameter(model, base_lr)  # departs from the source, as above
    grad_squared_sums = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    epsilon = 1e-8

    def apply_adagrad_lrs() -> None:
        lrs = calculate_and_update_neuron_lrs(model, base_lr, grad_squared_sums, epsilon)
        set_group_lrs(optimizer, lrs)

    return train_full_batch(
        model, optimizer, data, steps, before_step=apply_adagrad_lrs, on_step=on_step
    )


def adagrad_neuron(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    base_lr: float = ADAGRAD_BASE_LR,
    on_step: OnStep | None = None,
) -> TorchRun:
    """Row-wise AdaGrad rates (one accumulator per neuron), eps 1e-8, via Adam."""
    model = build(SimpleNet, seed, dtype)
    optimizer = one_group_per_parameter(model, base_lr)
    grad_squared_sums = {
        name: torch.zeros(m.out_features, dtype=dtype)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    }
    epsilon = 1e-8

    def apply_row_lrs() -> None:
        lrs = calculate_and_update_row_lrs(model, base_lr, grad_squared_sums, epsilon)
        set_group_lrs(optimizer, lrs)

    return train_full_batch(
        model, optimizer, data, steps, before_step=apply_row_lrs, on_step=on_step
    )


# ------------------------------------------------ the Fashion-MNIST width experiment's program
def sgd_minibatch(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    width: int = 64,
    lr: float = 0.1,
    on_step: OnStep | None = None,
) -> TorchRun:
    """The Fashion-MNIST width experiment: ``in-w-w-10`` MLP, plain SGD, CrossEntropyLoss,
    batches of 64, no scheduler.

    ``batches[t]`` are the sample indices of step ``t`` (shuffled epochs from
    :func:`torch_parity.data.batch_indices`).
    """
    if batches is None or len(batches) != steps:
        raise ValueError("sgd_minibatch needs batch indices of shape [steps, batch_size]")
    model = build(lambda: width_experiment_mlp(data.features, width, data.num_classes), seed, dtype)
    init_state = _state(model)
    optimizer = optim.SGD(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    dataset = TensorDataset(torch.from_numpy(data.x).to(dtype), torch.from_numpy(data.y))
    # departs from the source: DataLoader(shuffle=True) would draw its own permutation; the batch
    # order comes from numpy instead, identical on the JAX side. A "run" is `steps` steps (the
    # source runs 50 epochs of 937 batches).
    loader = DataLoader(dataset, batch_sampler=batches.tolist())
    losses = []
    for inputs, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(len(losses))
    return TorchRun(init_state, _state(model), np.asarray(losses, np.float64))
