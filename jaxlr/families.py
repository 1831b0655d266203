r"""Model families: what the engine needs to train a model at one width and depth.

The engine trains lanes ``(seed, lr)`` of one architecture; everything it knows about the model
comes from the architecture's *family*: the Flax module and its init at a width :math:`w` and a
depth :math:`L`, the per-example loss, how batches are drawn (``data``), the muP learning-rate
multipliers, and the planner's size estimate. Lanes, common random numbers, the divergence guard,
fusion, sharding, refinement, resume and the outputs are the engine's and are the same for every
family.

Built in: ``mlp`` (jaxlr's PyTorch-initialized ReLU MLP, on the image datasets) and ``gpt``
(:class:`jaxlr.gpt.GPT`, on byte-level text). Your own Flax model is one :func:`register_family`
call, from :meth:`Family.from_module`::

    import flax.linen as nn
    from jaxlr.families import Family, register_family

    class CNN(nn.Module):
        width: int
        depth: int

        @nn.compact
        def __call__(self, x):                    # x: (batch, 64) normalized digits pixels
            x = x.reshape(-1, 8, 8, 1)
            for _ in range(self.depth):
                x = nn.relu(nn.Conv(self.width, (3, 3))(x))
            return nn.Dense(10)(x.mean((1, 2)))

    register_family(Family.from_module("cnn", lambda width, depth: CNN(width, depth)))
    # SweepConfig(model="cnn", widths=(8, 16, 32), ...) now trains it (Python API)

A user family trains under SP with the global learning rate (``--lr-rule none``) on the
classification datasets (or a :class:`jaxlr.data.Dataset` passed to
:func:`jaxlr.runner.run_sweep`); the loss is the mean over the batch of its per-example loss
(default softmax cross-entropy, :math:`\ell_i = -\log\operatorname{softmax}(z_i)_{y_i}`), the test
metrics are that loss and the accuracy :math:`\operatorname{argmax} z_i = y_i`.

Nothing here imports JAX at import time (the command line reads the names).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Literal

DataKind = Literal["classification", "text"]


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family of the sweep (``--model``; ``SweepConfig(family=...)`` in Python).

    Attributes:
      name: the ``--model`` choice.
      summary: one line for ``--help`` and the documentation.
      build: ``build(spec) -> (module, init)``: the Flax module of the program ``spec`` (a
        :class:`jaxlr.engine.RunSpec`: width ``spec.hidden[0]``, depth ``len(spec.hidden)``,
        every option) and a pure, traceable ``init(key) -> params`` (the ``"params"``
        collection, without the wrapper).
      data: ``"classification"``: batches of ``(x, label)`` examples of a
        :class:`jaxlr.data.Dataset`, ``x`` flat and normalized, ``module.apply`` gives logits
        ``(batch, classes)``; ``"text"``: windows of byte-level text, ``module.apply`` gives
        next-token logits ``(batch, context, 256)``.
      loss: ``loss(logits, targets) -> per-example losses``; ``None``: softmax cross-entropy
        with integer labels (every position of a window for text).
      parametrizations: the parametrizations it takes (the others are refused in one line).
      rules: the lr rules it takes.
      dynamics: whether ``--dynamics`` applies (it reads the Dense layers of an MLP).
      mup_lr_scales: ``mup_lr_scales(spec) -> tree`` of per-parameter lr multipliers under
        ``mup`` (``None`` where the family has no muP).
      footprint: ``footprint(cfg, in_features, hidden, num_classes) -> (parameters,
        activations per example, multiply-adds per example)`` for the memory planner and the
        time estimate; ``None``: from the parameter count (:func:`estimated_footprint`).
      options: the :class:`jaxlr.config.TrainOptions` fields that apply only to it.
      layers: ``layers(spec) -> {layer: [parameter paths]}``: the layers of ``--lr-rule
        per-layer`` in order (``--layer-lr-mults`` has one multiplier each), each a list of
        ``/``-joined key-path prefixes of the parameters it holds.
      n_layers: ``n_layers(hidden) -> int``: how many layers ``layers`` has at architecture
        ``hidden`` (no JAX: the command line checks ``--layer-lr-mults`` with it).
    """

    name: str
    summary: str
    build: Callable[[Any], tuple[Any, Callable[[Any], Any]]]
    data: DataKind = "classification"
    loss: Callable[[Any, Any], Any] | None = None
    parametrizations: tuple[str, ...] = ("sp",)
    rules: tuple[str, ...] = ("none",)
    dynamics: bool = False
    mup_lr_scales: Callable[[Any], Any] | None = None
    footprint: Callable[[Any, int, tuple[int, ...], int], tuple[int, int, int]] | None = None
    options: tuple[str, ...] = ()
    layers: Callable[[Any], dict[str, list[str]]] | None = None
    n_layers: Callable[[tuple[int, ...]], int] | None = None

    @classmethod
    def from_module(
        cls,
        name: str,
        module: Callable[[int, int], Any],
        *,
        loss: Callable[[Any, Any], Any] | None = None,
        input_shape: tuple[int, ...] | None = None,
        summary: str = "",
    ) -> Family:
        """A classification family from ``module(width, depth) -> flax.linen.Module``.

        The module is applied to flat normalized inputs ``(batch, in_features)`` (reshape them
        inside, as the CNN above does) and returns logits ``(batch, classes)``; its parameters
        are ``module.init(key, zeros((1, *input_shape)))["params"]`` (``input_shape``: the
        dataset's ``(in_features,)`` by default).
        """

        def build(spec: Any) -> tuple[Any, Callable[[Any], Any]]:
            import jax.numpy as jnp

            model = module(spec.hidden[0], len(spec.hidden))
            x0 = jnp.zeros((1, *(input_shape or (spec.in_features,))), jnp.float32)
            return model, lambda key: model.init(key, x0)["params"]

        return cls(name, summary or f"a user family ({name})", build, loss=loss)


FAMILIES: dict[str, Family] = {}
"""The sweep's model families by name."""


def register_family(family: Family) -> Family:
    """Adds ``family`` to :data:`FAMILIES` (replacing one of that name) and returns it; sweeps
    with ``family=family.name`` train it from then on."""
    FAMILIES[family.name] = family
    return family


def family_names() -> tuple[str, ...]:
    """The ``--model`` choices."""
    return tuple(FAMILIES)


def family(name: str) -> Family:
    """The family ``name`` (``KeyError`` if none is registered)."""
    return FAMILIES[name]


def family_of(c: Any) -> Family:
    """The family of a config or a program (``c.family``; ``mlp`` for bare options)."""
    return FAMILIES[getattr(c, "family", "mlp")]


def estimated_footprint(
    cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> tuple[int, int, int]:
    """A user family's size from its parameter count :math:`P` (``jax.eval_shape`` of its init,
    nothing computed): :math:`P` multiply-adds and :math:`P` activations per example, what a
    dense network has to within its widths' sum. Convolutions reuse weights, so their true
    multiply-adds are larger; pass ``footprint=`` to :class:`Family` for a better estimate."""
    p = _param_count(family_of(cfg), cfg, in_features, tuple(hidden), num_classes)
    return p, p, p


@functools.lru_cache(maxsize=64)
def _param_count(
    family: Family, cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> int:
    """Parameters of ``family`` at ``hidden`` (the planner asks once per chunk: traced once)."""
    import jax

    from jaxlr.engine import RunSpec

    spec = RunSpec.create(cfg, _Shapes(in_features, num_classes), hidden, cfg.optimizers[0])
    _, init = family.build(spec)
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    return sum(int(x.size) for x in jax.tree.leaves(shapes))


@dataclasses.dataclass(frozen=True)
class _Shapes:
    """The dataset sizes :meth:`jaxlr.engine.RunSpec.create` reads, for a size estimate."""

    in_features: int
    num_classes: int
    n_train: int = 1
    n_test: int = 1
    mean: float = 0.0
    std: float = 1.0


# ----------------------------------------------------------------------------- built-ins
def _build_mlp(spec: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The MLP of ``spec.hidden``: jaxlr's :class:`jaxlr.models.MLP` (``--init``), or muP's
    (:func:`jaxlr.mup.mup_mlp`, with mup.MuReadout's torch-initialized readout so that at the
    base width muP is exactly SP)."""
    import jax.numpy as jnp

    if spec.parametrization == "mup":
        from jaxlr import mup

        return mup.mup_mlp(
            spec.in_features,
            spec.hidden,
            spec.num_classes,
            base_hidden=spec.base_hidden,
            readout_zero_init=False,
        )
    from jaxlr.models import MLP

    model = MLP(spec.hidden, spec.num_classes, init_scheme=spec.init)
    x0 = jnp.zeros((1, spec.in_features))
    return model, lambda key: model.init(key, x0)["params"]


def _mlp_mup_scales(spec: Any) -> Any:
    """microsoft/mup's per-parameter multipliers of the MLP at ``spec.hidden`` against its base
    (every hidden width ``base_width``)."""
    from jaxlr import mup, registry

    shapes = mup.mlp_shapes(spec.in_features, spec.hidden, spec.num_classes)
    base_shapes = mup.mlp_shapes(spec.in_features, spec.base_hidden, spec.num_classes)
    return mup.mup_lr_scales(
        shapes, base_shapes, optimizer=registry.optimizer(spec.optimizer).mup_kind
    )


def _mlp_footprint(
    cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> tuple[int, int, int]:
    """The MLP's layer sizes :math:`n_0, \\dots, n_{L+1}`: :math:`\\sum n_i` activations and
    :math:`\\sum n_i n_{i+1}` multiply-adds per example."""
    import itertools

    from jaxlr.models import layer_sizes, param_count

    sizes = layer_sizes(in_features, hidden, num_classes)
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    return param_count(in_features, hidden, num_classes), sum(sizes), macs


def _mlp_layers(spec: Any) -> dict[str, list[str]]:
    """The MLP's Dense layers, hidden then readout: ``Dense_i`` holds its kernel and bias."""
    return {f"Dense_{i}": [f"Dense_{i}"] for i in range(len(spec.hidden) + 1)}


def _gpt_layers(spec: Any) -> dict[str, list[str]]:
    """:func:`jaxlr.gpt.param_groups`: ``embeddings`` (``wte``, ``wpe``), each block's ``attn``
    (``ln_1`` and the attention) and ``mlp`` (``ln_2`` and the MLP), ``readout`` (``ln_f`` and
    an untied ``lm_head``; a tied readout is ``wte``, with the embeddings)."""
    from jaxlr.gpt import gpt_shapes, param_groups

    shapes = gpt_shapes(spec.hidden[0], len(spec.hidden), spec.context, tied=spec.tied)
    return param_groups(shapes)


def gpt_model(spec: Any) -> Any:
    """The :class:`jaxlr.gpt.GPT` of a ``gpt`` program: width ``spec.hidden[0]`` (d_model),
    ``len(spec.hidden)`` blocks, and the program's gpt options."""
    from jaxlr.gpt import GPT

    mup = spec.parametrization == "mup"
    return GPT(
        spec.hidden[0],
        len(spec.hidden),
        spec.context,
        head_dim=spec.head_dim,
        tied=spec.tied,
        parametrization="mup" if mup else "sp",
        base_width=spec.base_width if mup else None,
        depth_exponent=spec.depth_exponent,
        base_depth=spec.base_depth,
        zero_readout=spec.zero_readout,
        zero_query=spec.zero_query,
    )


def _build_gpt(spec: Any) -> tuple[Any, Callable[[Any], Any]]:
    from jaxlr.gpt import init_gpt

    model = gpt_model(spec)
    return model, lambda key: init_gpt(model, key)


def _gpt_mup_scales(spec: Any) -> Any:
    from jaxlr import registry
    from jaxlr.gpt import gpt_mup_lr_scales

    return gpt_mup_lr_scales(gpt_model(spec), registry.optimizer(spec.optimizer).mup_kind)


def _gpt_footprint(
    cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> tuple[int, int, int]:
    r"""Width :math:`w`, :math:`L` blocks, context :math:`T`, vocabulary :math:`V`:
    :math:`T(12Lw^2 + Vw) + LT^2w` multiply-adds and :math:`T(16Lw + V) + LT^2 w / 16`
    activations per sequence (an estimate: the attention scores for ``head_dim`` 16)."""
    from jaxlr.gpt import param_count as gpt_param_count

    w, depth, t, v = hidden[0], len(hidden), cfg.context, num_classes
    p = gpt_param_count(w, depth, t, vocab=v, tied=cfg.tied)
    acts = t * (16 * depth * w + v) + depth * t * t * max(w // 16, 1)
    macs = t * (12 * depth * w * w + v * w) + depth * t * t * w
    return p, acts, macs


def footprint_of(
    cfg: Any, in_features: int, hidden: tuple[int, ...], num_classes: int
) -> tuple[int, int, int]:
    """``(parameters, activations per example, multiply-adds per example)`` of ``hidden`` in
    ``cfg``'s family (:attr:`Family.footprint`, else :func:`estimated_footprint`)."""
    entry = family_of(cfg)
    fn = entry.footprint or estimated_footprint
    return fn(cfg, in_features, hidden, num_classes)


MLP_FAMILY = register_family(
    Family(
        "mlp",
        "in-w-...-w-out ReLU MLP on --dataset",
        _build_mlp,
        parametrizations=("sp", "mup", "lr-exp"),
        rules=("none", "per-layer", "weight-norm", "adagrad-param", "adagrad-neuron"),
        dynamics=True,
        mup_lr_scales=_mlp_mup_scales,
        footprint=_mlp_footprint,
        layers=_mlp_layers,
        n_layers=lambda hidden: len(hidden) + 1,
    )
)
GPT_FAMILY = register_family(
    Family(
        "gpt",
        "a decoder-only pre-LayerNorm transformer of width d_model and --depth blocks, on "
        "byte-level text",
        _build_gpt,
        data="text",
        parametrizations=("sp", "mup"),
        rules=("none", "per-layer"),
        mup_lr_scales=_gpt_mup_scales,
        layers=_gpt_layers,
        n_layers=lambda hidden: 2 * len(hidden) + 2,
        footprint=_gpt_footprint,
        options=(
            "context",
            "head_dim",
            "tied",
            "depth_exponent",
            "base_depth",
            "zero_readout",
            "zero_query",
        ),
    )
)
