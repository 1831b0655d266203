r"""The sweep's optimizers and schedules as numpy formulas, for the updates PyTorch does not ship.

PyTorch has no Lion, no AdamW whose decay is independent of the learning rate, and only a
bfloat16 Muon; the parity examples of those (:mod:`torch_parity.optimizer_examples`) take their
gradients from torch's autograd and their update from here. Each formula is written from its
paper or from PyTorch's documentation, not from jaxlr's code, and computes in the dtype of the
arrays it is given (float64 in a float64 run). Parameters are in torch's layout (a weight is
``[out, in]``).

With learning rate :math:`\eta`, schedule multiplier :math:`s_t` of the 0-based step
:math:`t` (:func:`schedule_multiplier`) and weight decay :math:`\lambda`:

* **AdamW, independent decay**: :math:`\theta \leftarrow \theta - \eta s_t \hat m/(\sqrt{\hat v}
  + \epsilon) - s_t \lambda' \theta`, :math:`\lambda' = \lambda` or :math:`\lambda n_0/n`;
* **Lion** (Chen et al., 2023): :math:`d = \mathrm{sign}(\beta_1 m + (1-\beta_1) g)`,
  :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`, :math:`\theta \leftarrow \theta - \eta s_t (d
  + \lambda\theta)`;
* **Muon** (``torch.optim.Muon``'s formula with the Newton-Schulz iteration in the arrays'
  dtype): for a hidden matrix :math:`B \leftarrow \mu B + (1-\mu) G`, :math:`G' = (1-\mu) G +
  \mu B`, :math:`\theta \leftarrow \theta - \eta s_t(\kappa\,\mathrm{NS}_5(G') + \lambda\theta)`;
  every other parameter Adam with the same :math:`\eta` and coupled decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

Schedule = Callable[[int], float]  # s(t): the multiplier of the 0-based step t

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic (a, b, c)
NS_EPS = 1e-7


def schedule_multiplier(
    name: str,
    t: int,
    total: int,
    warmup: int = 0,
    *,
    decay_fraction: float = 0.2,
    final_lr_fraction: float = 0.0,
) -> float:
    r"""The multiplier :math:`s_t` of the 0-based step ``t`` of a ``total``-step run.

    Warmup: :math:`s_t = \min(1, (t+1)/W)` for :math:`t < W`. Then, with :math:`f`
    ``final_lr_fraction`` and :math:`p = (t - W)/(T - W)`:

    * ``constant``: 1;
    * ``warmup-cosine``: :math:`f + (1 - f)(1 + \cos \pi p)/2`;
    * ``warmup-linear``: :math:`1 - (1 - f) p`;
    * ``wsd``: 1 until :math:`T_d = T - \mathrm{round}(\phi T)` (:math:`\phi`
      ``decay_fraction``), then :math:`1 - (1 - f)(t - T_d)/(T - T_d)`.
    """
    if name == "constant":
        return 1.0
    if t < warmup:
        return min(1.0, (t + 1) / warmup)
    f = final_lr_fraction
    if name == "warmup-cosine":
        return f + (1 - f) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2
    if name == "warmup-linear":
        return 1 - (1 - f) * (t - warmup) / (total - warmup)
    if name == "wsd":
        start = total - round(decay_fraction * total)
        return 1.0 if t < start else 1 - (1 - f) * (t - start) / (total - start)
    raise ValueError(f"unknown schedule {name!r}")


def constant(t: int) -> float:
    """The constant schedule, :math:`s_t = 1`."""
    return 1.0


class AdamMoments:
    r"""Adam's moments of one parameter: :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
    :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`, direction
    :math:`\hat m / (\sqrt{\hat v} + \epsilon)` with :math:`\hat m = m / (1 - \beta_1^k)`,
    :math:`\hat v = v / (1 - \beta_2^k)` at its :math:`k`-th step."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, betas=(0.9, 0.999), eps=1e-8):
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(shape, dtype)
        self.k = 0

    def direction(self, g: np.ndarray) -> np.ndarray:
        """Updates the moments with ``g`` and returns Adam's direction."""
        self.k += 1
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1**self.k)
        v_hat = self.v / (1 - self.b2**self.k)
        return m_hat / (np.sqrt(v_hat) + self.eps)


class Reference:
    """A numpy optimizer: :meth:`update` maps the parameters and their gradients of step ``t``
    (counted from 0 on each call) to the new parameters."""

    def __init__(self, params: Sequence[np.ndarray], lr: float, schedule: Schedule = constant):
        self.lr = lr
        self.schedule = schedule
        self.t = 0
        self.setup(params)

    def setup(self, params: Sequence[np.ndarray]) -> None:
        """Creates the state of each parameter."""

    def step(self, i: int, p: np.ndarray, g: np.ndarray, s: float) -> np.ndarray:
        """The new value of parameter ``i`` (``p``, gradient ``g``) with multiplier ``s``."""
        raise NotImplementedError

    def update(self, params: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The parameters after one step from ``params`` with gradients ``grads``."""
        s = self.schedule(self.t)
        self.t += 1
        return [self.step(i, p, g, s) for i, (p, g) in enumerate(zip(params, grads, strict=True))]


class AdamWIndependent(Reference):
    r"""AdamW with decay independent of the lr: :math:`\theta - \eta s_t\,\mathrm{adam}(g) - s_t
    \lambda'\theta` (``weight_decay`` is :math:`\lambda'`, already scaled by width if wanted)."""

    def __init__(self, params, lr, weight_decay, schedule=constant, betas=(0.9, 0.999), eps=1e-8):
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        super().__init__(params, lr, schedule)

    def setup(self, params):
        self.adam = [AdamMoments(p.shape, p.dtype, self.betas, self.eps) for p in params]

    def step(self, i, p, g, s):
        return p - self.lr * s * self.adam[i].direction(g) - s * self.weight_decay * p


class Lion(Reference):
    r"""Lion: :math:`\theta - \eta s_t(\mathrm{sign}(\beta_1 m + (1-\beta_1) g) + \lambda\theta)`,
    then :math:`m \leftarrow \beta_2 m + (1-\beta_2) g`."""

    def __init__(self, params, lr, weight_decay=0.0, schedule=constant, betas=(0.9, 0.99)):
        self.weight_decay, self.betas = weight_decay, betas
        super().__init__(params, lr, schedule)

    def setup(self, params):
        self.m = [np.zeros_like(p) for p in params]

    def step(self, i, p, g, s):
        b1, b2 = self.betas
        d = np.sign(b1 * self.m[i] + (1 - b1) * g)
        self.m[i] = b2 * self.m[i] + (1 - b2) * g
        return p - self.lr * s * (d + self.weight_decay * p)


def newton_schulz5(g: np.ndarray, coefficients=NS_COEFFICIENTS, eps: float = NS_EPS) -> np.ndarray:
    r"""Five quintic Newton-Schulz steps :math:`X \leftarrow aX + (bA + cA^2)X`,
    :math:`A = XX^\top`, from :math:`X = G/\max(\lVert G\rVert_F, \epsilon)`, on the orientation
    with no more rows than columns (as Keller Jordan's and torch's code)."""
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / max(float(np.sqrt(np.sum(x * x))), eps)
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def muon_shape_factor(out: int, fan_in: int, scaling: Literal["spectral", "rms"]) -> float:
    r""":math:`\kappa` of an ``[out, in]`` weight:
    :math:`\sqrt{\max(1, n_\mathrm{out}/n_\mathrm{in})}` (``spectral``, torch's
    ``adjust_lr_fn="original"``) or :math:`0.2\sqrt{\max(n_\mathrm{out}, n_\mathrm{in})}`
    (``rms``, ``"match_rms_adamw"``)."""
    if scaling == "spectral":
        return math.sqrt(max(1.0, out / fan_in))
    return 0.2 * math.sqrt(max(out, fan_in))


class Muon(Reference):
    r"""Muon on the parameters ``muon_mask`` marks (hidden ``[out, in]`` weights), Adam on the
    rest, all with the same lr and coupled decay :math:`\theta \leftarrow \theta - \eta s_t
    (\text{direction} + \lambda\theta)`."""

    def __init__(
        self,
        params,
        lr,
        muon_mask: Sequence[bool],
        weight_decay=0.0,
        schedule=constant,
        momentum=0.95,
        scaling: Literal["spectral", "rms"] = "rms",
        adam_betas=(0.9, 0.999),
    ):
        self.muon_mask = list(muon_mask)
        self.weight_decay, self.momentum, self.scaling = weight_decay, momentum, scaling
        self.adam_betas = adam_betas
        super().__init__(params, lr, schedule)

    def setup(self, params):
        if len(self.muon_mask) != len(params):
            raise ValueError(f"{len(self.muon_mask)} mask entries for {len(params)} params")
        pairs = list(zip(params, self.muon_mask, strict=True))
        self.buf = [np.zeros_like(p) if m else None for p, m in pairs]
        self.adam = [
            None if m else AdamMoments(p.shape, p.dtype, self.adam_betas) for p, m in pairs
        ]

    def step(self, i, p, g, s):
        if self.muon_mask[i]:
            mu = self.momentum
            self.buf[i] = mu * self.buf[i] + (1 - mu) * g
            look = (1 - mu) * g + mu * self.buf[i]
            d = muon_shape_factor(p.shape[0], p.shape[1], self.scaling) * newton_schulz5(look)
        else:
            d = self.adam[i].direction(g)
        return p - self.lr * s * (d + self.weight_decay * p)
