"""muP for the registry's optimizers with weight decay and momentum, against microsoft/mup.

The sweep's own update (``jaxlr.optimizers.make_optimizer`` of a ``mup`` program) trained for
three full-batch steps in float64 from the weights of a PyTorch twin, against ``mup.MuAdamW``
and ``mup.MuSGD`` (momentum, Nesterov, weight decay) on that twin after
``mup.set_base_shapes``: every parameter agrees to 1e-9.
"""

from __future__ import annotations

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_mup import IN, OUT, _batch, _to_flax, _torch_mup_mlp, _train

from jaxlr.config import SweepConfig
from jaxlr.engine import RunSpec
from jaxlr.models import MLP
from jaxlr.mup import mup_readout_mult
from jaxlr.optimizers import make_optimizer

BASE, HIDDEN = 64, (256, 256)
CASES = {
    "MuAdamW": dict(optimizer="adamw", lr=1e-2, wd=0.1, kw={}),
    "MuSGD momentum + decay": dict(optimizer="sgd", lr=0.05, wd=0.01, kw=dict(momentum=0.9)),
    "MuSGD Nesterov + decay": dict(
        optimizer="sgd", lr=0.05, wd=0.01, kw=dict(momentum=0.9, nesterov=True)
    ),
}


def _spec(case: dict) -> RunSpec:
    cfg = SweepConfig(
        widths=(HIDDEN[0],),
        optimizers=(case["optimizer"],),
        parametrizations=("mup",),
        base_width=BASE,
        weight_decays=(case["wd"],),
        **case["kw"],
    )
    data = types.SimpleNamespace(
        in_features=IN, num_classes=OUT, n_train=64, n_test=8, mean=0.0, std=1.0
    )
    return RunSpec.create(cfg, data, HIDDEN, case["optimizer"], "mup")


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_update_matches_microsoft_mup(name):
    torch = pytest.importorskip("torch")
    mup = pytest.importorskip("mup")
    case = CASES[name]
    spec = _spec(case)
    assert spec.decays
    model, _ = _torch_mup_mlp(HIDDEN, (BASE, BASE), None, readout_zero_init=False, seed=5)
    model = model.double()
    lr, wd = case["lr"], case["wd"]
    if case["optimizer"] == "adamw":
        opt = mup.MuAdamW(model.parameters(), lr=lr, weight_decay=wd)
    else:
        opt = mup.MuSGD(model.parameters(), lr=lr, weight_decay=wd, **case["kw"])
    x, y = _batch(64, seed=2)
    x = x.astype(np.float64)
    with jax.enable_x64(True):
        params = _to_flax(model)
        mult = mup_readout_mult(HIDDEN[-1], BASE)
        jax_model = MLP(HIDDEN, OUT, readout_mult=mult, dtype=jnp.float64)
        tx = make_optimizer(spec, lr, wd)
        got = jax.block_until_ready(_train(jax_model, tx, params, x, y, steps=3))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    chex.assert_trees_all_close(got, _to_flax(model), rtol=1e-9, atol=1e-12)
