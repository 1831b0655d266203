"""The sweep's optimizers and schedules as PyTorch reference programs.

Each example is one lane of a sweep (:class:`SweepSetting`: optimizer, lr, weight decay and the
:class:`jaxlr.config.SweepConfig` options), trained full batch on the width examples' kind of
random data (:func:`torch_parity.data.random_classification`) by an ``in-w-w-out`` MLP (Muon:
``in-48-24-out``, one wide and one tall hidden matrix). The JAX side is the sweep's own update
built from the same setting (:func:`torch_parity.jax_runs.sweep_update`); the reference is

* PyTorch's optimizer where PyTorch has it: ``torch.optim.SGD`` (momentum, Nesterov, L2
  ``weight_decay``), ``torch.optim.AdamW``, ``torch.optim.Muon`` beside ``AdamW``;
* a numpy formula (:mod:`torch_parity.numpy_reference`) where it has not (Lion, AdamW with
  decay independent of the lr) and for Muon's exact check (``torch.optim.Muon`` runs its
  Newton-Schulz iteration in bfloat16), applied to the gradients of torch's autograd;
* for the schedules, torch's own schedulers chained by ``SequentialLR``
  (:func:`torch_scheduler`: ``LinearLR`` warmup, then ``CosineAnnealingLR``, ``LinearLR`` or
  ``LambdaLR(1)`` + ``LinearLR`` for wsd), not a closed form.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from torch_parity import numpy_reference as ref
from torch_parity.data import ParityData
from torch_parity.examples import (
    ComplexNetwork,
    OnStep,
    TorchRun,
    build,
    train_full_batch,
    width_experiment_mlp,
)


@dataclasses.dataclass(frozen=True)
class SweepSetting:
    """One lane of a sweep, as both sides of an example see it."""

    optimizer: str  # the sweep's --optimizer
    lr: float  # the lane's (base) learning rate
    hidden: tuple[int, ...]  # the hidden widths
    weight_decay: float = 0.0  # the lane's weight decay (--weight-decays)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # SweepConfig fields

    def option(self, name: str, default: Any = None) -> Any:
        """``options[name]``, or ``default`` where the setting leaves it at the sweep's."""
        return self.options.get(name, default)


SETTINGS: dict[str, SweepSetting] = {
    "sgd-momentum": SweepSetting(
        "sgd",
        0.05,
        (32, 32),
        options={
            "momentum": 0.9,
            "schedule": "warmup-cosine",
            "warmup": 5,
            "final_lr_fraction": 0.1,
        },
    ),
    "sgd-nesterov": SweepSetting(
        "sgd", 0.05, (32, 32), weight_decay=0.01, options={"momentum": 0.9, "nesterov": True}
    ),
    "adamw": SweepSetting(
        "adamw",
        3e-3,
        (32, 32),
        weight_decay=0.1,
        options={"schedule": "wsd", "warmup": 3, "decay_fraction": 0.3, "final_lr_fraction": 0.05},
    ),
    "adamw-independent": SweepSetting(
        "adamw",
        3e-3,
        (32, 32),
        weight_decay=2e-3,
        options={
            "weight_decay_mode": "independent",
            "weight_decay_scaling": "width",
            "base_width": 16,
            "schedule": "warmup-linear",
            "warmup": 4,
            "final_lr_fraction": 0.0,
        },
    ),
    "lion": SweepSetting("lion", 1e-3, (32, 32), weight_decay=0.1, options={"betas": (0.9, 0.99)}),
    "muon": SweepSetting(
        "muon",
        3e-3,
        (48, 24),
        weight_decay=0.1,
        options={"muon_scaling": "rms", "muon_momentum": 0.95},
    ),
    "muon-torch": SweepSetting(
        "muon",
        5e-3,
        (48, 24),
        weight_decay=0.1,
        options={"muon_scaling": "spectral", "muon_momentum": 0.95},
    ),
}
"""Each example's lane; its torch program and the JAX side read the same entry."""


# ------------------------------------------------------------------------------ pieces
def mlp(data: ParityData, hidden: tuple[int, ...]) -> nn.Module:
    """``in-w-w-out`` (the Fashion-MNIST width experiment's ``nn.Sequential``) for equal widths,
    the width examples' ``ComplexNetwork`` for two different ones."""
    if len(hidden) == 2 and hidden[0] == hidden[1]:
        return width_experiment_mlp(data.features, hidden[0], data.num_classes)
    if len(hidden) == 2:
        return ComplexNetwork(data.features, hidden[0], hidden[1], data.num_classes)
    raise ValueError(f"the optimizer examples have two hidden layers, got {hidden}")


def hidden_matrices(net: nn.Module) -> list[bool]:
    """Per parameter of ``net.parameters()``: whether it is the weight of an ``nn.Linear``
    other than the last (the matrices Muon trains; the readout and the biases are not)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    hidden = {id(m.weight) for m in linears[:-1]}
    return [id(p) in hidden for p in net.parameters()]


def warmup_steps(warmup: float, total: int) -> int:
    """``--warmup`` in steps: a value below 1 is a fraction of the ``total`` steps."""
    return round(warmup * total) if warmup < 1 else int(warmup)


def torch_scheduler(
    optimizer: optim.Optimizer, setting: SweepSetting, total: int
) -> LRScheduler | None:
    r"""The setting's schedule over ``total`` steps from torch's schedulers (``None``: constant).

    Warmup :math:`W \ge 2` steps is ``LinearLR(1/W, 1, total_iters=W-1)`` (multiplier
    :math:`(t+1)/W`), then, at milestone :math:`W`:

    * ``warmup-cosine``: ``CosineAnnealingLR(T_max=T-W, eta_min=f lr)``;
    * ``warmup-linear``: ``LinearLR(1, f, total_iters=T-W)``;
    * ``wsd``: ``LambdaLR(1)`` until :math:`T_d = T - \mathrm{round}(\phi T)`, then
      ``LinearLR(1, f, total_iters=T-T_d)``.
    """
    name = setting.option("schedule", "constant")
    if name == "constant":
        return None
    warm = warmup_steps(setting.option("warmup", 0.0), total)
    final = setting.option("final_lr_fraction", 0.0)
    if warm == 1:
        raise ValueError("torch_scheduler's LinearLR warmup needs at least 2 steps")
    parts: list[LRScheduler] = []
    milestones: list[int] = []
    if warm:
        parts.append(LinearLR(optimizer, 1 / warm, 1.0, total_iters=warm - 1))
        milestones.append(warm)
    if name == "warmup-cosine":
        # the setting's lr: the group's "lr" is already LinearLR's first, lr / W
        eta_min = final * setting.lr
        parts.append(CosineAnnealingLR(optimizer, T_max=total - warm, eta_min=eta_min))
    elif name == "warmup-linear":
        parts.append(LinearLR(optimizer, 1.0, final, total_iters=total - warm))
    elif name == "wsd":
        start = total - round(setting.option("decay_fraction", 0.2) * total)
        parts.append(LambdaLR(optimizer, lambda _: 1.0))
        parts.append(LinearLR(optimizer, 1.0, final, total_iters=total - start))
        milestones.append(start)
    else:
        raise ValueError(f"no torch scheduler for schedule {name!r}")
    if len(parts) == 1:
        return parts[0]
    return SequentialLR(optimizer, parts, milestones)


class NumpyOptimizer(optim.Optimizer):
    """A torch optimizer whose step is a numpy reference (:mod:`torch_parity.numpy_reference`):
    the parameters and their gradients go to ``reference.update`` as numpy arrays of their
    dtype and the results are copied back."""

    def __init__(self, params: Any, make_reference: Callable[[list[np.ndarray]], ref.Reference]):
        params = list(params)
        super().__init__(params, {})
        self.reference = make_reference([p.detach().numpy() for p in params])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:
        """One step of the reference on every parameter."""
        if closure is not None:
            raise ValueError("NumpyOptimizer does not take a closure")
        params = self.param_groups[0]["params"]
        new = self.reference.update(
            [p.detach().numpy().copy() for p in params], [p.grad.numpy() for p in params]
        )
        for p, value in zip(params, new, strict=True):
            p.copy_(torch.from_numpy(np.asarray(value, p.detach().numpy().dtype)))


def numpy_schedule(setting: SweepSetting, total: int) -> ref.Schedule:
    """The setting's schedule in closed form (:func:`numpy_reference.schedule_multiplier`)."""
    name = setting.option("schedule", "constant")
    warm = warmup_steps(setting.option("warmup", 0.0), total)
    kw = {
        "decay_fraction": setting.option("decay_fraction", 0.2),
        "final_lr_fraction": setting.option("final_lr_fraction", 0.0),
    }
    return lambda t: ref.schedule_multiplier(name, t, total, warm, **kw)


@contextlib.contextmanager
def newton_schulz_in_param_dtype() -> Iterator[None]:
    """Inside the block, ``torch.optim.Muon`` runs its Newton-Schulz iteration in the
    parameter's dtype instead of bfloat16 (its ``_zeropower_via_newtonschulz`` with the
    ``.bfloat16()`` cast removed, line for line otherwise); everything else is torch's code."""
    import torch.optim._muon as muon_module

    def zeropower(grad: torch.Tensor, ns_coefficients, ns_steps: int, eps: float) -> torch.Tensor:
        a, b, c = ns_coefficients
        ortho_grad = grad.clone()  # torch: grad.bfloat16()
        if grad.size(0) > grad.size(1):
            ortho_grad = ortho_grad.T
        ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
        for _ in range(ns_steps):
            gram_matrix = ortho_grad @ ortho_grad.T
            gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
            ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
        if grad.size(0) > grad.size(1):
            ortho_grad = ortho_grad.T
        return ortho_grad

    original = muon_module._zeropower_via_newtonschulz
    muon_module._zeropower_via_newtonschulz = zeropower
    try:
        yield
    finally:
        muon_module._zeropower_via_newtonschulz = original


# ------------------------------------------------------------------------------ programs
def _start(setting: SweepSetting, data: ParityData, seed: int, dtype: torch.dtype) -> nn.Module:
    return build(lambda: mlp(data, setting.hidden), seed, dtype)


def sgd(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["sgd-momentum"],
    on_step: OnStep | None = None,
) -> TorchRun:
    """``torch.optim.SGD(lr, momentum, nesterov=, weight_decay=)`` (dampening 0; the decay is
    PyTorch's L2 term added to the gradient), with the setting's schedule."""
    net = _start(setting, data, seed, dtype)
    optimizer = optim.SGD(
        net.parameters(),
        lr=setting.lr,
        momentum=setting.option("momentum", 0.0),
        nesterov=setting.option("nesterov", False),
        weight_decay=setting.weight_decay,
    )
    scheduler = torch_scheduler(optimizer, setting, steps)
    return train_full_batch(net, optimizer, data, steps, scheduler=scheduler, on_step=on_step)


def adamw(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["adamw"],
    on_step: OnStep | None = None,
) -> TorchRun:
    """``torch.optim.AdamW(lr, betas, eps=1e-8, weight_decay)`` (coupled decay: the parameters
    are multiplied by ``1 - lr_t wd`` before Adam's step), with the setting's schedule."""
    net = _start(setting, data, seed, dtype)
    optimizer = optim.AdamW(
        net.parameters(),
        lr=setting.lr,
        betas=setting.option("betas", (0.9, 0.999)),
        eps=1e-8,
        weight_decay=setting.weight_decay,
    )
    scheduler = torch_scheduler(optimizer, setting, steps)
    return train_full_batch(net, optimizer, data, steps, scheduler=scheduler, on_step=on_step)


def adamw_independent(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["adamw-independent"],
    on_step: OnStep | None = None,
) -> TorchRun:
    r"""AdamW with decay independent of the lr, numpy: :math:`\theta \leftarrow \theta - \eta
    s_t\,\mathrm{adam}(g) - s_t\lambda'\theta`, :math:`\lambda' = \lambda n_0 / n` with
    ``weight_decay_scaling="width"`` (:math:`n` the first hidden width, :math:`n_0`
    ``base_width``)."""
    net = _start(setting, data, seed, dtype)
    wd = setting.weight_decay
    if setting.option("weight_decay_scaling", "none") == "width":
        wd = wd * setting.option("base_width") / setting.hidden[0]
    schedule = numpy_schedule(setting, steps)
    betas = setting.option("betas", (0.9, 0.999))
    optimizer = NumpyOptimizer(
        net.parameters(),
        lambda ps: ref.AdamWIndependent(ps, setting.lr, wd, schedule, betas=betas),
    )
    return train_full_batch(net, optimizer, data, steps, on_step=on_step)


def lion(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["lion"],
    on_step: OnStep | None = None,
) -> TorchRun:
    """Lion with coupled decay, numpy (:class:`torch_parity.numpy_reference.Lion`)."""
    net = _start(setting, data, seed, dtype)
    schedule = numpy_schedule(setting, steps)
    betas = setting.option("betas", (0.9, 0.99))
    optimizer = NumpyOptimizer(
        net.parameters(),
        lambda ps: ref.Lion(ps, setting.lr, setting.weight_decay, schedule, betas=betas),
    )
    return train_full_batch(net, optimizer, data, steps, on_step=on_step)


def muon_numpy(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["muon"],
    on_step: OnStep | None = None,
) -> TorchRun:
    """Muon for the hidden matrices and Adam for the rest, numpy, Newton-Schulz in the
    parameters' dtype (:class:`torch_parity.numpy_reference.Muon`)."""
    net = _start(setting, data, seed, dtype)
    mask = hidden_matrices(net)
    schedule = numpy_schedule(setting, steps)
    optimizer = NumpyOptimizer(
        net.parameters(),
        lambda ps: ref.Muon(
            ps,
            setting.lr,
            mask,
            weight_decay=setting.weight_decay,
            schedule=schedule,
            momentum=setting.option("muon_momentum", 0.95),
            scaling=setting.option("muon_scaling", "rms"),
            adam_betas=setting.option("betas", (0.9, 0.999)),
        ),
    )
    return train_full_batch(net, optimizer, data, steps, on_step=on_step)


MUON_ADJUST_LR = {"spectral": "original", "rms": "match_rms_adamw"}
"""``--muon-scaling`` -> ``torch.optim.Muon``'s ``adjust_lr_fn``."""


def muon_torch(
    data: ParityData,
    steps: int,
    dtype: torch.dtype,
    batches: np.ndarray | None = None,
    seed: int = 0,
    *,
    setting: SweepSetting = SETTINGS["muon-torch"],
    newton_schulz: Literal["bfloat16", "param"] = "bfloat16",
    on_step: OnStep | None = None,
) -> TorchRun:
    """``torch.optim.Muon`` (Nesterov, the setting's ``adjust_lr_fn``) for the hidden matrices
    beside ``torch.optim.AdamW`` for the biases and the readout, one lr and weight decay.

    ``newton_schulz="param"`` runs Muon's iteration in the parameters' dtype
    (:func:`newton_schulz_in_param_dtype`) instead of torch's bfloat16.
    """
    if setting.option("schedule", "constant") != "constant":
        raise ValueError("muon_torch takes no schedule")
    net = _start(setting, data, seed, dtype)
    mask = hidden_matrices(net)
    params = list(net.parameters())
    muon = optim.Muon(
        [p for p, m in zip(params, mask, strict=True) if m],
        lr=setting.lr,
        weight_decay=setting.weight_decay,
        momentum=setting.option("muon_momentum", 0.95),
        nesterov=True,
        adjust_lr_fn=MUON_ADJUST_LR[setting.option("muon_scaling", "rms")],
    )
    rest = optim.AdamW(
        [p for p, m in zip(params, mask, strict=True) if not m],
        lr=setting.lr,
        betas=setting.option("betas", (0.9, 0.999)),
        eps=1e-8,
        weight_decay=setting.weight_decay,
    )
    in_param_dtype = newton_schulz == "param"
    with newton_schulz_in_param_dtype() if in_param_dtype else contextlib.nullcontext():
        return train_full_batch(net, [muon, rest], data, steps, on_step=on_step)
