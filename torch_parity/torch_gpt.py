"""The PyTorch twin of :class:`jaxlr.gpt.GPT`, and weight conversion both ways.

Used by the GPT parity examples (:mod:`torch_parity.gpt_examples`), the GPT tests
(``tests/test_gpt.py``, through the re-export ``tests/torch_gpt.py``) and the GPT benchmark.

Written from the torch side: ``nn.Embedding``, ``nn.LayerNorm``, ``nn.Linear``, ``nn.GELU()``
and ``F.scaled_dot_product_attention(is_causal=True, scale=...)``; for muP the readout is
``mup.MuReadout`` (untied) or ``mup.MuSharedReadout`` (tied), the base shapes come from
``mup.set_base_shapes(model, base_model)`` and the weights from ``mup.init.normal_`` after it,
as microsoft/mup's README prescribes. Only the sizes and options are taken from a ``GPT``
(``TorchGPT.like(model)``); every derived number (attention scale, readout multiplier, residual
multiplier, init scales) is computed here or by mup.

Parameter names: ``wte.weight``, ``wpe.weight``, ``blocks.{i}.ln_1.{weight,bias}``,
``blocks.{i}.attn.{query,key,value,out}.{weight,bias}``, ``blocks.{i}.ln_2...``,
``blocks.{i}.mlp.{fc,proj}.{weight,bias}``, ``ln_f.{weight,bias}``, ``lm_head.weight``
(untied). :func:`to_flax` and :func:`load_flax` map them to the Flax tree (``kernel`` =
``weight.T``, LayerNorm ``scale`` = ``weight``, ``embedding`` = ``weight``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class TwinConfig:
    """The twin's sizes and options (the fields of ``jaxlr.gpt.GPT`` it reads)."""

    width: int
    depth: int
    context: int
    head_dim: int
    vocab: int = 256
    tied: bool = True
    parametrization: str = "sp"
    base_width: int | None = None
    attn_mult: float = 1.0
    output_mult: float = 1.0
    depth_exponent: float = 0.0
    base_depth: int = 1
    zero_readout: bool = False
    zero_query: bool = False
    init_std: float = 0.02


class Attention(nn.Module):
    """Causal self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, width: int, head_dim: int, scale: float):
        super().__init__()
        self.heads, self.head_dim, self.scale = width // head_dim, head_dim, scale
        self.query, self.key, self.value, self.out = (nn.Linear(width, width) for _ in range(4))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(h)), heads(self.key(h)), heads(self.value(h))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.out(y.transpose(1, 2).reshape(b, t, w))


class MLP(nn.Module):
    """``proj(GELU(fc(h)))`` with the exact GELU."""

    def __init__(self, width: int):
        super().__init__()
        self.fc, self.act = nn.Linear(width, 4 * width), nn.GELU()
        self.proj = nn.Linear(4 * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(h)))


class Block(nn.Module):
    """Pre-LN block with residual multiplier ``r``."""

    def __init__(self, width: int, head_dim: int, scale: float, r: float):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp, self.r = Attention(width, head_dim, scale), MLP(width), r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.r * self.attn(self.ln_1(x))
        return x + self.r * self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    """The twin. ``TorchGPT(cfg, seed)`` builds and initializes it (muP: with base shapes set)."""

    def __init__(self, cfg: TwinConfig, seed: int = 0, *, _base: bool = False):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # no global RNG state touched
            torch.manual_seed(seed)
            self._build(cfg)
            if _base:
                return
            if cfg.parametrization != "mup":
                self._init(nn.init.normal_)
                return
            import mup  # microsoft/mup: only the muP twin needs it

            base = TorchGPT(dataclasses.replace(cfg, width=cfg.base_width), _base=True)
            mup.set_base_shapes(self, base)
            self._init(mup.init.normal_)

    def _build(self, cfg: TwinConfig) -> None:
        """The modules (torch's default init, overwritten by :meth:`_init`)."""
        w, is_mup = cfg.width, cfg.parametrization == "mup"
        scale = cfg.attn_mult / (cfg.head_dim if is_mup else math.sqrt(cfg.head_dim))
        r = (cfg.depth / cfg.base_depth) ** (-cfg.depth_exponent)
        self.wte, self.wpe = nn.Embedding(cfg.vocab, w), nn.Embedding(cfg.context, w)
        self.blocks = nn.ModuleList(Block(w, cfg.head_dim, scale, r) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(w)
        self.lm_head: nn.Module | None = None
        if is_mup:
            import mup

            self.lm_head = (
                mup.MuSharedReadout(self.wte.weight, bias=False, output_mult=cfg.output_mult)
                if cfg.tied
                else mup.MuReadout(w, cfg.vocab, bias=False, output_mult=cfg.output_mult)
            )
        elif not cfg.tied:
            self.lm_head = nn.Linear(w, cfg.vocab, bias=False)

    @torch.no_grad()
    def _init(self, normal: Any) -> None:
        """nanoGPT's init through ``normal`` (torch's, or ``mup.init.normal_`` for muP)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            else:
                normal(p, std=self.cfg.init_std)
        for block in self.blocks:
            if self.cfg.zero_query:
                nn.init.zeros_(block.attn.query.weight)
        if self.cfg.zero_readout:
            assert not self.cfg.tied
            nn.init.zeros_(self.lm_head.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[-1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        h = self.ln_f(x)
        if self.lm_head is not None:
            return self.lm_head(h)
        return self.cfg.output_mult * F.linear(h, self.wte.weight)


def twin_config(model: Any) -> TwinConfig:
    """The :class:`TwinConfig` of a ``jaxlr.gpt.GPT``."""
    return TwinConfig(**{f.name: getattr(model, f.name) for f in dataclasses.fields(TwinConfig)})


def _flax_path(name: str) -> tuple[tuple[str, ...], bool]:
    """Torch parameter name -> (Flax key path, transpose?)."""
    parts = name.split(".")
    if parts[0] == "blocks":
        parts = [f"block_{parts[1]}", *parts[2:]]
    leaf = parts[-1]
    if parts[0] in ("wte", "wpe"):
        return (parts[0], "embedding"), False
    if parts[-2].startswith("ln_"):
        return (*parts[:-1], "scale" if leaf == "weight" else "bias"), False
    return (*parts[:-1], "kernel" if leaf == "weight" else "bias"), leaf == "weight"


def to_flax(model: TorchGPT) -> dict:
    """The twin's weights as a Flax params tree of float64 numpy arrays (a tied matrix once),
    copies: training the twin afterwards does not change them."""
    tree: dict = {}
    for name, p in model.named_parameters():
        path, transpose = _flax_path(name)
        a = p.detach().double().numpy()
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = np.array(a.T if transpose else a, order="C")  # a copy
    return tree


@torch.no_grad()
def load_flax(model: TorchGPT, params: Any) -> TorchGPT:
    """Copies a Flax params tree into the twin (in place; returns it)."""
    seen = set()
    for name, p in model.named_parameters():
        path, transpose = _flax_path(name)
        node = params
        for k in path:
            node = node[k]
        a = np.asarray(node, dtype=np.float64)
        p.copy_(torch.from_numpy(np.array(a.T if transpose else a)))
        seen.add(path)
    n_flax = len(_leaves(params))
    assert len(seen) == n_flax, f"{n_flax} Flax params, {len(seen)} torch params"
    return model


def _leaves(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Key paths of a nested dict's leaves."""
    if not isinstance(tree, dict):
        return [prefix]
    return [p for k, v in tree.items() for p in _leaves(v, (*prefix, k))]
