"""How a config's fields are checked: coercion to their declared types, and validation.

:class:`jaxlr.config.SweepConfig` (and :class:`jaxlr.config.TrainOptions`) call these on
construction: every field is first converted to its declared type (lists -> tuples, ints ->
floats; :func:`coerce`), then the values are checked together. Every problem raises
:class:`jaxlr.config.ConfigError` with one line saying what was wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from jaxlr import registry
from jaxlr.config import (
    ConfigError,
    SweepConfig,
    TrainOptions,
    _hints,
    check_applies,
    flag_of,
    optimizers_of,
    parametrizations_of,
)


def coerce_fields(c: Any) -> None:
    """Converts each field of ``c`` to its declared type in place (:func:`coerce`)."""
    _coerce_fields(c)


def validate_train(c: TrainOptions) -> None:
    """Checks of the program options that need no grid."""
    _validate_train(c)


def validate(c: SweepConfig) -> None:
    """Checks of a whole sweep config."""
    _validate(c)


def derive_gpt_epochs(c: SweepConfig) -> None:
    """A gpt sweep's "epochs" are its evaluations: ``steps / eval_every`` of them."""
    if c.family != "gpt":
        return
    if c.steps < 1 or c.eval_every < 1 or c.steps % c.eval_every:
        _fail(f"--steps ({c.steps}) must be a positive multiple of --eval-every ({c.eval_every})")
    n = c.steps // c.eval_every
    if c.epochs not in (n, SweepConfig.epochs):
        _fail("--epochs does not apply to --model gpt: its budget is --steps and --eval-every")
    object.__setattr__(c, "epochs", n)


# ---------------------------------------------------------------------------------- coercion
def _coerce_fields(c: Any) -> None:
    """Converts each field to its declared type in place (lists -> tuples, ints -> floats)."""
    hints = _hints(type(c))
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        try:
            object.__setattr__(c, f.name, coerce(hints[f.name], value))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(
                f"{flag_of(f)}: expected {_type_name(hints[f.name])}, got {value!r}"
            ) from None
        choices = f.metadata.get("choices")
        if choices is not None:
            _check_choice(flag_of(f), getattr(c, f.name), tuple(choices()))


def _check_choice(flag: str, value: Any, names: tuple[str, ...]) -> None:
    """Refuses a value (or a tuple item) of a registry-backed field that is not registered."""
    for v in value if isinstance(value, tuple) else (value,):
        if v not in names:
            raise ConfigError(f"{flag}: unknown value {v!r}; choose from {', '.join(names)}")


def coerce(tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (a field's annotation); raises TypeError/ValueError if it is not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(inner, value)
    if origin is Literal:
        if value not in args:
            raise ValueError(value)
        return value
    if origin is tuple:
        if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
            raise TypeError(value)
        items = list(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v) for v in items)
        if len(items) != len(args):
            raise ValueError(value)
        return tuple(coerce(a, v) for a, v in zip(args, items, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise TypeError(value)
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    raise TypeError(f"unsupported field type {tp}")


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (or None)"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a sequence of {_type_name(args[0])}"
        return f"a pair ({', '.join(_type_name(a) for a in args)})"
    return getattr(tp, "__name__", str(tp))


# -------------------------------------------------------------------------------- validation
def _fail(msg: str) -> None:
    raise ConfigError(msg)


def _validate_train(c: TrainOptions) -> None:
    """Checks of the program options that need no grid."""
    if c.batch_size < 1:
        _fail(f"--batch-size must be at least 1, got {c.batch_size}")
    if c.lr_rule == "per-layer" and c.layer_lr_mults is None:
        _fail("--lr-rule per-layer needs --layer-lr-mults, e.g. 1,0.5,0.2 (one per layer)")
    if c.layer_lr_mults is not None and any(
        not (math.isfinite(m) and m >= 0) for m in c.layer_lr_mults
    ):
        _fail(f"--layer-lr-mults must be non-negative, got {list(c.layer_lr_mults)}")
    if not (c.adagrad_eps > 0):
        _fail(f"--adagrad-eps must be positive, got {c.adagrad_eps}")
    if not math.isfinite(c.weight_norm_factor):
        _fail(f"--weight-norm-factor must be finite, got {c.weight_norm_factor}")
    for par in {"mup", "lr-exp"} & set(parametrizations_of(c)):
        if c.base_width is None or c.base_width <= 0:
            _fail(f"--parametrization {par} needs a positive --base-width, e.g. --base-width 64")
    if "lr-exp" in parametrizations_of(c):
        if c.lr_exponents is None:
            _fail("--parametrization lr-exp needs --lr-exponents, e.g. 0,1,1 (one per layer)")
        if not all(math.isfinite(e) for e in c.lr_exponents):
            _fail(f"--lr-exponents must be finite, got {list(c.lr_exponents)}")
    if not (c.divergence_loss > 0):
        _fail(f"--divergence-loss must be positive, got {c.divergence_loss}")
    if c.clip_norm is not None and not (math.isfinite(c.clip_norm) and c.clip_norm > 0):
        _fail(f"--clip-norm must be positive, got {c.clip_norm:g}")
    _validate_optimizer_options(c)
    _validate_schedule(c)


def _fraction(flag: str, v: float, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = math.isfinite(v) and (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        _fail(f"{flag} must be in {lo}0, 1{hi}, got {v:g}")


def _validate_optimizer_options(c: TrainOptions) -> None:
    """The optimizer options' ranges, and which rules and parametrizations each composes with."""

    _fraction("--momentum", c.momentum, high_open=True)
    if c.nesterov and c.momentum == 0:
        _fail("--nesterov needs momentum: add --momentum, e.g. --momentum 0.9")
    _fraction("--muon-momentum", c.muon_momentum, high_open=True)
    for b in c.betas or ():
        _fraction("--betas", b, high_open=True)
    if c.weight_decay_scaling == "width" and (c.base_width is None or c.base_width <= 0):
        _fail("--weight-decay-scaling width needs a positive --base-width (wd * base / width)")
    for o in optimizers_of(c):
        entry = registry.optimizer(o)
        if c.lr_rule not in entry.rules:
            _fail(
                f"--lr-rule {c.lr_rule} does not compose with --optimizer {o} "
                f"(it takes {', '.join(entry.rules)})"
            )
        for p in parametrizations_of(c):
            if p not in entry.parametrizations:
                _fail(
                    f"--optimizer {o} does not take --parametrization {p} "
                    f"(it takes {', '.join(entry.parametrizations)})"
                )


def _validate_schedule(c: TrainOptions) -> None:
    """The schedule options' ranges; with a program's step count, the warmup's length."""
    if not (math.isfinite(c.warmup) and c.warmup >= 0) or (
        c.warmup >= 1 and c.warmup != int(c.warmup)
    ):
        _fail(f"--warmup must be a whole number of steps or a fraction below 1, got {c.warmup:g}")
    _fraction("--decay-fraction", c.decay_fraction, low_open=True)
    _fraction("--final-lr-fraction", c.final_lr_fraction)
    total = getattr(c, "total_steps", 0)
    if total:
        check_schedule_steps(c, total)


def check_schedule_steps(c: Any, total: int) -> None:
    """Refuses a warmup longer than training (``total`` steps), or that overlaps wsd's decay."""

    if "warmup" not in registry.schedule(c.schedule).options:
        return
    warmup = registry.warmup_steps(c.warmup, total)
    if warmup > total:
        _fail(
            f"--warmup {c.warmup:g} is {warmup} steps, longer than training ({total} steps); "
            "shorten it or give a fraction, e.g. --warmup 0.1"
        )
    if c.schedule == "wsd" and warmup > registry.decay_start(total, c.decay_fraction):
        _fail(
            f"--warmup ({warmup} steps) overlaps wsd's decay, which starts at step "
            f"{registry.decay_start(total, c.decay_fraction)} of {total}; shorten one of them"
        )


def _validate_grid(c: SweepConfig) -> None:
    if c.hidden is None:
        if not c.widths:
            _fail("the grid is empty: give at least one width, e.g. --widths 64,256")
        if any(w <= 0 for w in c.widths):
            _fail(f"widths must be positive integers, got {list(c.widths)}")
        if c.depth < 1:
            _fail(f"--depth must be at least 1, got {c.depth}")
        if c.depths is not None:
            if c.depth != type(c).depth:
                _fail("give either --depth or --depths (a list of depths), not both")
            if not c.depths or any(d < 1 for d in c.depths) or len(set(c.depths)) < len(c.depths):
                _fail(f"--depths must be distinct positive integers, got {list(c.depths)}")
    else:
        if not c.hidden or any(not h for h in c.hidden):
            _fail("the grid is empty: give at least one architecture, e.g. --hidden 64-16")
        if any(w <= 0 for h in c.hidden for w in h):
            _fail(f"hidden widths must be positive integers, got {c.hidden}")
    if not c.lrs:
        _fail("the grid is empty: give learning rates with --lrs or --lr-grid")
    if any(not (math.isfinite(lr) and lr > 0) for lr in c.lrs):
        _fail(f"learning rates must be positive and finite, got {list(c.lrs)}")
    if len(set(c.lrs)) != len(c.lrs):
        _fail(f"learning rates must be distinct, got {list(c.lrs)}")
    if not c.seeds:
        _fail("the grid is empty: --seeds must be at least 1")
    if any(s < 0 for s in c.seeds) or len(set(c.seeds)) != len(c.seeds):
        _fail(f"seeds must be distinct non-negative integers, got {list(c.seeds)}")
    if c.refine < 0:
        _fail(f"--refine must be >= 0, got {c.refine}")
    if c.refine and c.shard[1] > 1:
        _fail("--refine needs every run of a bucket in one sweep; it cannot be sharded")
    if not c.optimizers:
        _fail("the grid is empty: give at least one optimizer")
    if len(set(c.optimizers)) != len(c.optimizers):
        _fail(f"optimizers must be distinct, got {list(c.optimizers)}")
    _validate_weight_decays(c)
    if not c.parametrizations:
        _fail("the grid is empty: give at least one parametrization")
    if len(set(c.parametrizations)) != len(c.parametrizations):
        _fail(f"parametrizations must be distinct, got {list(c.parametrizations)}")
    for name in ("layer_lr_mults", "lr_exponents"):
        _check_per_layer(c, name)


def _validate_gpt(c: SweepConfig) -> None:
    """What a gpt sweep needs: byte-level text, uniform widths that split into heads."""
    for name in ("dataset", "data_source", "n_train", "n_test"):
        if getattr(c, name) != getattr(SweepConfig, name):
            _fail(
                f"--{name.replace('_', '-')} does not apply to --model gpt: it trains on text "
                "(the standard library's by default, or --data-dir FILE_OR_DIR)"
            )
    if c.hidden is not None:
        _fail("--hidden does not apply to --model gpt: give --widths (d_model) and --depth")
    for w in c.widths:
        if w % c.head_dim:
            _fail(
                f"width {w} is not divisible by --head-dim {c.head_dim}: heads = width / "
                "head-dim; choose widths that are multiples of it"
            )
    if c.context < 1 or c.head_dim < 1:
        _fail(f"--context and --head-dim must be positive, got {c.context} and {c.head_dim}")


def _validate_family(c: SweepConfig) -> None:
    """What the model family takes (:class:`jaxlr.families.Family`): its parametrizations, lr
    rules and ``--dynamics``; a user family takes no MLP ``--init``."""
    from jaxlr import families

    entry = families.family(c.family)
    model = f"--model {c.family}"
    for par in c.parametrizations:
        if par not in entry.parametrizations:
            _fail(
                f"--parametrization {par} does not apply to {model}; it takes "
                f"{', '.join(entry.parametrizations)}"
            )
    if c.lr_rule not in entry.rules:
        _fail(f"--lr-rule {c.lr_rule} does not apply to {model}; it takes {', '.join(entry.rules)}")
    if c.dynamics and not entry.dynamics:
        _fail(f"--dynamics reads an MLP's Dense layers and does not apply to {model}; drop it")
    if c.family != "mlp" and c.init != SweepConfig.init:
        _fail(f"--init is the MLP's initialization and does not apply to {model}; drop it")


def _validate_weight_decays(c: SweepConfig) -> None:

    wds = c.weight_decays
    if not wds:
        _fail("--weight-decay is empty: give at least one value, e.g. 0")
    if any(not (math.isfinite(w) and w >= 0) for w in wds):
        _fail(f"--weight-decay must be non-negative and finite, got {list(wds)}")
    if len(set(wds)) != len(wds):
        _fail(f"--weight-decay values must be distinct, got {list(wds)}")
    if any(wds):
        for o in c.optimizers:
            if registry.optimizer(o).decay == "none":
                _fail(
                    f"--optimizer {o} takes no weight decay"
                    + (": use adamw" if o == "adam" else "; drop --weight-decay")
                )


def _check_per_layer(c: SweepConfig, name: str) -> None:
    """One value per layer (hidden layers + readout) in ``c.<name>``, if it is set."""
    from jaxlr import families

    values = getattr(c, name)
    count = families.family(c.family).n_layers
    if values is not None and count is not None:
        n_layers = {count(h) for h in c.architectures}
        if len(n_layers) != 1 or len(values) not in n_layers:
            what = "hidden + readout" if c.family == "mlp" else "its --lr-rule per-layer groups"
            _fail(
                f"--{name.replace('_', '-')} has {len(values)} values but the model has "
                f"{sorted(n_layers)} layers ({what}); give one value per layer"
            )


def _validate(c: SweepConfig) -> None:
    for name in ("n_train", "n_test", "features", "num_classes"):
        v = getattr(c, name)
        if v is not None and v <= 0:
            _fail(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if c.data_seed < 0:
        _fail(f"--data-seed must be a non-negative integer, got {c.data_seed}")
    if c.num_classes is not None and c.num_classes < 2:
        _fail(f"--num-classes must be at least 2, got {c.num_classes}")
    _validate_grid(c)
    _validate_train(c)
    check_applies(c)
    _validate_family(c)
    if c.family == "gpt":
        _validate_gpt(c)
    if c.epochs < 1:
        _fail(f"--epochs must be at least 1, got {c.epochs}")
    if c.horizons:
        if list(c.horizons) != sorted(set(c.horizons)) or c.horizons[0] < 1:
            _fail(f"--epochs horizons must be distinct and increasing, got {list(c.horizons)}")
        if c.horizons[-1] != c.epochs:
            _fail(f"the longest horizon ({c.horizons[-1]}) must be --epochs ({c.epochs})")
        if registry.schedule(c.schedule).horizon:
            _fail(
                f"--epochs {','.join(map(str, c.horizons))} with --schedule {c.schedule}: the "
                "schedule depends on the run's length, so each horizon is its own sweep; run "
                "--epochs N for each N into its own --out"
            )
    for name in ("max_lanes", "devices", "parallel"):
        v = getattr(c, name)
        if v is not None and v < 1:
            _fail(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    if c.checkpoint_every is not None and c.checkpoint_every < 0:
        _fail(f"--checkpoint-every must be >= 0, got {c.checkpoint_every}")
    given = [c.coordinator_address, c.num_processes, c.process_id]
    if any(v is not None for v in given) and any(v is None for v in given):
        _fail(
            "--coordinator-address, --num-processes and --process-id go together "
            "(or use --distributed for the cluster's auto-detection)"
        )
    if c.num_processes is not None and not (0 <= c.process_id < c.num_processes):
        _fail(f"--process-id must be in 0..{c.num_processes - 1}, got {c.process_id}")
    if c.distributed and c.coordinator_address is not None:
        _fail("--distributed auto-detects the cluster; drop it or --coordinator-address")
    i, n = c.shard
    if not (n >= 1 and 0 <= i < n):
        _fail(f"--shard must be i/n with 0 <= i < n, got {i}/{n}")
