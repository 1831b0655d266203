r"""A decoder-only, pre-LayerNorm GPT for width x learning-rate sweeps (Flax linen).

The model maps int32 byte tokens ``(B, T)`` (``T <= context``) to logits ``(B, T, vocab)``:

.. math::

   x_0 &= W_{te}[s] + W_{pe}[0{:}T], \\
   x_{l+\frac12} &= x_l + r\, \mathrm{Attn}_l(\mathrm{LN}(x_l)), \qquad
   x_{l+1} = x_{l+\frac12} + r\, \mathrm{MLP}_l(\mathrm{LN}(x_{l+\frac12})), \\
   \mathrm{logits} &= W_{\mathrm{out}}^\top \big(\rho\, \mathrm{LN}_f(x_L)\big), \qquad
   W_{\mathrm{out}} = W_{te}^\top \text{ (tied) or its own matrix (untied, no bias)},

with causal multi-head attention of ``heads = width / head_dim`` heads,

.. math::

   \mathrm{Attn}(h) = \Big[\mathrm{softmax}\big(\tau\, q_i k_j^\top + \text{mask}_{j > i}\big)
   v\Big] W_o + b_o, \qquad q, k, v = h W_{q,k,v} + b_{q,k,v},

an MLP ``GELU(h W_fc + b_fc) W_proj + b_proj`` of hidden size ``4 width`` (the exact erf GELU,
as ``torch.nn.GELU()``), and LayerNorms with :math:`\epsilon = 10^{-5}` (``torch.nn.LayerNorm``).
The PyTorch twin ``torch_parity/torch_gpt.py`` is the same network; weights convert both ways.

**Parametrizations** (``parametrization=``), with :math:`m = \mathrm{width} /
\mathrm{base\_width}` and :math:`\sigma` = ``init_std`` (0.02, nanoGPT's):

* attention logit scale :math:`\tau`: ``attn_mult / sqrt(head_dim)`` (SP) vs
  ``attn_mult / head_dim`` (muP);
* readout multiplier :math:`\rho`: ``output_mult`` (SP) vs ``output_mult / m`` (muP,
  ``MuReadout`` / ``MuSharedReadout``);
* hidden matrices' init: :math:`N(0, \sigma^2)` (SP) vs :math:`N(0, \sigma^2 / m)` (muP,
  ``mup.init.normal_``); embeddings and the untied readout :math:`N(0, \sigma^2)` in both;
  biases 0, LayerNorm scale 1 and bias 0 in both;
* Adam learning rates: :math:`\eta` (SP) vs :math:`\eta / m` on the hidden matrices and
  :math:`\eta` elsewhere (muP, ``MuAdam``; SGD: see :func:`jaxlr.mup.mup_lr_scales`).

The *hidden matrices* are the attention's :math:`W_{q,k,v,o}` and the MLP's two matrices (both
dims scale with width); the rest is vector-like. The per-parameter rates come from
:func:`jaxlr.mup.mup_lr_scales` on :func:`gpt_shapes` (see :func:`gpt_mup_lr_scales`). Options for
both: ``zero_readout`` (untied only: :math:`W_{\mathrm{out}} = 0`, Tensor Programs V D.2) and
``zero_query`` (:math:`W_q = 0`, uniform attention at init, ibid.). At the base width muP is SP
up to :math:`\tau` (equal with ``attn_mult = sqrt(head_dim)``). Since the head size is fixed
and the number of heads grows with width, :math:`1/d_{\mathrm{head}}` vs
:math:`1/\sqrt{d_{\mathrm{head}}}` is a constant factor here, not a width-dependent one.

**Depth.** Each residual branch is multiplied by
:math:`r = (\mathrm{depth}/\mathrm{base\_depth})^{-a}` (``depth_exponent`` :math:`a`): 0 for SP,
1/2 for depth-muP (Yang et al. 2023, Bordelon et al. 2023), 1 for CompleteP (Dey et al. 2025).
Only the branch multiplier is here; those papers also scale the hidden learning rates with depth
(not done).

Example:
  >>> import jax, jax.numpy as jnp
  >>> model = GPT(width=64, depth=2, context=16, head_dim=16)
  >>> params = init_gpt(model, jax.random.key(0))
  >>> logits = model.apply({"params": params}, jnp.zeros((2, 16), jnp.int32))
  >>> logits.shape, param_count(64, 2, 16), model.heads
  ((2, 16, 256), 117504, 4)

References:
  A. Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2), 2019;
  A. Karpathy, nanoGPT, https://github.com/karpathy/nanoGPT (``model.py``).
  G. Yang et al., "Tensor Programs V", 2022 (arXiv:2203.03466), Table 3, Appendix D;
  microsoft/mup (``MuReadout``, ``MuSharedReadout``, ``mup.init``, ``MuAdam``).
  G. Yang, D. Yu, C. Zhu, S. Hayou, "Tensor Programs VI: Feature Learning in Infinite-Depth
  Neural Networks", 2023 (arXiv:2310.02244); B. Bordelon et al., "Depthwise Hyperparameter
  Transfer in Residual Networks", 2023 (arXiv:2309.16620); N. Dey et al., "Don't be lazy:
  CompleteP enables compute-efficient deep transformers", 2025 (arXiv:2505.01618).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxlr.text import VOCAB

Parametrization = Literal["sp", "mup"]
PARAMETRIZATIONS: tuple[str, ...] = ("sp", "mup")
INIT_STD = 0.02
"""nanoGPT's init standard deviation :math:`\\sigma`."""
LN_EPS = 1e-5
"""LayerNorm epsilon, ``torch.nn.LayerNorm``'s default."""
MLP_RATIO = 4
"""MLP hidden size / width."""

Shapes = dict[str, Any]


def check_gpt(
    width: int,
    depth: int,
    context: int,
    head_dim: int,
    *,
    parametrization: str = "sp",
    base_width: int | None = None,
    base_depth: int = 1,
    tied: bool = True,
    zero_readout: bool = False,
) -> None:
    """Raises ValueError (one line, saying how to fix it) for a GPT that cannot be built."""
    for name, v in (("width", width), ("depth", depth), ("context", context)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim must be a positive integer, got {head_dim!r}")
    if width % head_dim:
        raise ValueError(
            f"width {width} is not divisible by the head size {head_dim}: choose widths that are "
            f"multiples of {head_dim}, or a head size that divides {width} (--head-dim)"
        )
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}"
        )
    if parametrization == "mup":
        if base_width is None:
            raise ValueError("muP needs base_width (the width whose tuned rates transfer)")
        if not isinstance(base_width, int) or base_width < 1 or base_width % head_dim:
            raise ValueError(
                f"base width {base_width!r} must be a positive multiple of the head size {head_dim}"
            )
    elif base_width is not None:
        raise ValueError("base_width applies to muP only; drop it or use parametrization='mup'")
    if not isinstance(base_depth, int) or base_depth < 1:
        raise ValueError(f"base_depth must be a positive integer, got {base_depth!r}")
    if tied and zero_readout:
        raise ValueError(
            "zero_readout needs an untied readout (the tied readout is the token embedding); "
            "use tied=False"
        )


class _Attention(nn.Module):
    """Causal multi-head self-attention with separate query/key/value/out Dense layers."""

    width: int
    head_dim: int
    scale: float
    hidden_std: float
    zero_query: bool
    dtype: Any

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        b, t, _ = h.shape
        heads = self.width // self.head_dim

        def dense(name: str, zero: bool = False) -> nn.Dense:
            init = nn.initializers.zeros_init() if zero else nn.initializers.normal(self.hidden_std)
            return nn.Dense(
                self.width, kernel_init=init, dtype=self.dtype, param_dtype=self.dtype, name=name
            )

        q, k, v = (
            dense(n, n == "query" and self.zero_query)(h).reshape(b, t, heads, self.head_dim)
            for n in ("query", "key", "value")
        )
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(self.scale, h.dtype)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        logits = jnp.where(causal, logits, -jnp.inf)
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, self.width)
        return dense("out")(out)


class _MLP(nn.Module):
    """``GELU(h W_fc + b_fc) W_proj + b_proj`` (exact erf GELU)."""

    width: int
    hidden_std: float
    dtype: Any

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        init = nn.initializers.normal(self.hidden_std)
        kw = dict(kernel_init=init, dtype=self.dtype, param_dtype=self.dtype)
        h = nn.Dense(MLP_RATIO * self.width, name="fc", **kw)(h)
        h = nn.gelu(h, approximate=False)
        return nn.Dense(self.width, name="proj", **kw)(h)


def _layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
    """``torch.nn.LayerNorm`` (eps 1e-5, two-pass variance)."""
    return nn.LayerNorm(
        epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, param_dtype=dtype, name=name
    )


class _Block(nn.Module):
    """``x + r attn(LN(x))``, then ``x + r mlp(LN(x))``."""

    width: int
    head_dim: int
    attn_scale: float
    hidden_std: float
    zero_query: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, r: jax.Array) -> jax.Array:
        attn = _Attention(
            self.width,
            self.head_dim,
            self.attn_scale,
            self.hidden_std,
            self.zero_query,
            self.dtype,
            name="attn",
        )
        x = x + r * attn(_layer_norm("ln_1", self.dtype)(x))
        mlp = _MLP(self.width, self.hidden_std, self.dtype, name="mlp")
        return x + r * mlp(_layer_norm("ln_2", self.dtype)(x))


class GPT(nn.Module):
    """Decoder-only pre-LayerNorm transformer on byte tokens (see the module docstring).

    Attributes:
      width: ``d_model``.
      depth: number of blocks.
      context: maximum sequence length (size of the learned positional embedding).
      head_dim: size of one attention head; ``heads = width // head_dim``.
      vocab: vocabulary size (256 for bytes).
      tied: readout shares the token embedding (``logits = rho h W_te^T``), else its own matrix.
      parametrization: ``"sp"`` or ``"mup"``.
      base_width: muP's base width (muP only).
      attn_mult: multiplier of the attention logits' scale.
      output_mult: muP's output multiplier :math:`\\alpha_{out}` (also applies in SP).
      depth_exponent: residual branches scaled by ``(depth / base_depth) ** -depth_exponent``.
      base_depth: depth at which the residual multiplier is 1.
      zero_readout: zero-initialize the untied readout.
      zero_query: zero-initialize the query matrices.
      init_std: :math:`\\sigma` of the normal init.
      dtype: parameter and computation dtype.
    """

    width: int
    depth: int
    context: int
    head_dim: int = 64
    vocab: int = VOCAB
    tied: bool = True
    parametrization: Parametrization = "sp"
    base_width: int | None = None
    attn_mult: float = 1.0
    output_mult: float = 1.0
    depth_exponent: float = 0.0
    base_depth: int = 1
    zero_readout: bool = False
    zero_query: bool = False
    init_std: float = INIT_STD
    dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        check_gpt(
            self.width,
            self.depth,
            self.context,
            self.head_dim,
            parametrization=self.parametrization,
            base_width=self.base_width,
            base_depth=self.base_depth,
            tied=self.tied,
            zero_readout=self.zero_readout,
        )
        super().__post_init__()

    @property
    def heads(self) -> int:
        """Number of attention heads, ``width // head_dim``."""
        return self.width // self.head_dim

    @property
    def width_mult(self) -> float:
        """muP's :math:`m = \\mathrm{width} / \\mathrm{base\\_width}` (1 in SP)."""
        return 1.0 if self.base_width is None else self.width / self.base_width

    @property
    def attn_scale(self) -> float:
        """:math:`\\tau`: ``attn_mult / sqrt(head_dim)`` (SP) or ``attn_mult / head_dim`` (muP)."""
        d = self.head_dim if self.parametrization == "mup" else math.sqrt(self.head_dim)
        return self.attn_mult / d

    @property
    def readout_mult(self) -> float:
        """:math:`\\rho`: ``output_mult`` (SP) or ``output_mult / width_mult`` (muP)."""
        return self.output_mult / self.width_mult

    @property
    def residual_scale(self) -> float:
        """:math:`r = (\\mathrm{depth} / \\mathrm{base\\_depth})^{-a}`."""
        return (self.depth / self.base_depth) ** (-self.depth_exponent)

    @property
    def hidden_std(self) -> float:
        """Init std of the hidden matrices: :math:`\\sigma` (SP), :math:`\\sigma/\\sqrt{m}`
        (muP)."""
        return self.init_std / math.sqrt(self.width_mult)

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits ``(B, T, vocab)`` of int tokens ``(B, T)``, ``T <= context``."""
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        embed = nn.initializers.normal(self.init_std)
        kw = dict(embedding_init=embed, dtype=self.dtype, param_dtype=self.dtype)
        wte = nn.Embed(self.vocab, self.width, name="wte", **kw)
        wpe = nn.Embed(self.context, self.width, name="wpe", **kw)
        x = wte(tokens) + wpe(jnp.arange(t))
        r = jnp.asarray(self.residual_scale, self.dtype)
        for i in range(self.depth):
            block = _Block(
                self.width,
                self.head_dim,
                self.attn_scale,
                self.hidden_std,
                self.zero_query,
                self.dtype,
                name=f"block_{i}",
            )
            x = block(x, r)
        h = _layer_norm("ln_f", self.dtype)(x)
        if self.readout_mult != 1.0:
            h = h * jnp.asarray(self.readout_mult, h.dtype)
        if self.tied:
            return wte.attend(h)
        init = nn.initializers.zeros_init() if self.zero_readout else embed
        return nn.Dense(
            self.vocab,
            use_bias=False,
            kernel_init=init,
            dtype=self.dtype,
            param_dtype=self.dtype,
            name="lm_head",
        )(h)


def init_gpt(model: GPT, key: jax.Array) -> dict:
    """Params of ``model`` from ``key`` (without the ``"params"`` wrapper); traceable, so
    ``jax.vmap(lambda k: init_gpt(model, k))(keys)`` inits a batch of seeds."""
    return model.init(key, jnp.zeros((1, model.context), jnp.int32))["params"]


def next_token_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Mean next-token cross-entropy in nats,
    :math:`-\frac{1}{BT}\sum_{b,t} \log \mathrm{softmax}(z_{bt})_{y_{bt}}`."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def gpt_shapes(
    width: int, depth: int, context: int, *, vocab: int = VOCAB, tied: bool = True
) -> Shapes:
    """The params tree of ``GPT(width, depth, context, vocab=vocab, tied=tied)`` with shape
    tuples as leaves (Flax layout: Dense kernels ``(fan_in, fan_out)``); the base-model tree for
    :func:`jaxlr.mup.mup_lr_scales`.

    Example:
      >>> s = gpt_shapes(64, 1, 16)
      >>> s["wte"], s["block_0"]["mlp"]["fc"]["kernel"], "lm_head" in s
      ({'embedding': (256, 64)}, (64, 256), False)
    """
    w, f = width, MLP_RATIO * width

    def dense(a: int, b: int) -> dict:
        return {"kernel": (a, b), "bias": (b,)}

    ln = {"scale": (w,), "bias": (w,)}
    block = {
        "ln_1": dict(ln),
        "attn": {n: dense(w, w) for n in ("query", "key", "value", "out")},
        "ln_2": dict(ln),
        "mlp": {"fc": dense(w, f), "proj": dense(f, w)},
    }
    tree: Shapes = {"wte": {"embedding": (vocab, w)}, "wpe": {"embedding": (context, w)}}
    for i in range(depth):
        tree[f"block_{i}"] = jax.tree.map(lambda s: s, block, is_leaf=_is_shape)
    tree["ln_f"] = dict(ln)
    if not tied:
        tree["lm_head"] = {"kernel": (w, vocab)}
    return tree


def param_count(
    width: int, depth: int, context: int, *, vocab: int = VOCAB, tied: bool = True
) -> int:
    r"""Number of parameters: :math:`(V + T) w + L (12 w^2 + 13 w) + 2 w` (+ :math:`V w`
    untied), equal to PyTorch's count for the twin (a tied matrix counted once)."""
    n = (vocab + context) * width + depth * (12 * width**2 + 13 * width) + 2 * width
    return n + (0 if tied else vocab * width)


def gpt_mup_lr_scales(model: GPT, optimizer: str = "adam") -> Any:
    """``mup.MuAdam`` / ``mup.MuSGD``'s per-parameter learning-rate multipliers of a muP
    ``model`` (a tree of floats shaped like its params): :func:`jaxlr.mup.mup_lr_scales` on
    :func:`gpt_shapes` at ``model.width`` against ``model.base_width``.

    Example:
      >>> s = gpt_mup_lr_scales(GPT(128, 1, 16, head_dim=16, parametrization="mup", base_width=32))
      >>> s["block_0"]["attn"]["query"]["kernel"], s["block_0"]["attn"]["query"]["bias"]
      (0.25, 1.0)
    """
    from jaxlr import mup

    if model.parametrization != "mup" or model.base_width is None:
        raise ValueError("gpt_mup_lr_scales needs a muP model (parametrization='mup', base_width)")
    kw = dict(vocab=model.vocab, tied=model.tied)
    target = gpt_shapes(model.width, model.depth, model.context, **kw)
    base = gpt_shapes(model.base_width, model.depth, model.context, **kw)
    return mup.mup_lr_scales(target, base, optimizer)  # type: ignore[arg-type]


def _is_shape(x: Any) -> bool:
    """A tuple of ints is a shape leaf."""
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def _path_str(path: tuple) -> str:
    """``"block_0/attn/query/kernel"`` from a key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_groups(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """Parameters by layer, as ``/``-joined key paths, for per-layer learning-rate rules:
    ``"embeddings"`` (``wte``, ``wpe``), ``"block_i/attn"`` (``ln_1`` and the attention),
    ``"block_i/mlp"`` (``ln_2`` and the MLP), ``"readout"`` (``ln_f`` and ``lm_head``; a tied
    readout is ``wte``, in ``"embeddings"``). Works on params and on :func:`gpt_shapes` trees.

    Example:
      >>> g = param_groups(gpt_shapes(64, 1, 16, tied=False))
      >>> list(g)
      ['embeddings', 'block_0/attn', 'block_0/mlp', 'readout']
      >>> g["readout"]
      ['lm_head/kernel', 'ln_f/bias', 'ln_f/scale']
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_shape)
    groups: dict[str, list[str]] = {"embeddings": []}
    blocks = sorted(
        {k for k in params if k.startswith("block_")}, key=lambda k: int(k.split("_")[1])
    )
    for b in blocks:
        groups[f"{b}/attn"] = []
        groups[f"{b}/mlp"] = []
    groups["readout"] = []
    for path, _ in leaves:
        p = _path_str(path)
        top, _, rest = p.partition("/")
        if top in ("wte", "wpe"):
            groups["embeddings"].append(p)
        elif top in ("ln_f", "lm_head"):
            groups["readout"].append(p)
        elif top in blocks:
            part = rest.split("/")[0]
            groups[f"{top}/{'attn' if part in ('ln_1', 'attn') else 'mlp'}"].append(p)
        else:
            raise ValueError(f"{p} is not a GPT parameter (expected a params tree of GPT)")
    return groups
