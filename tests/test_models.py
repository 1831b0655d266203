"""The MLP against PyTorch: parameter counts, layouts and init distributions."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxlr.models import MLP, init_mlp, param_count


@pytest.mark.parametrize(
    ("hidden", "n_in", "n_out", "expected"),
    [((64, 64), 784, 10, 55_050), ((1024, 1024), 784, 10, 1_863_690), ((32,), 10, 2, 418)],
)
def test_param_counts_match_torch(hidden, n_in, n_out, expected):
    torch = pytest.importorskip("torch")
    sizes = [n_in, *hidden, n_out]
    layers = [torch.nn.Linear(a, b) for a, b in itertools.pairwise(sizes)]
    torch_count = sum(p.numel() for layer in layers for p in layer.parameters())
    _, params = init_mlp(jax.random.PRNGKey(0), n_in, hidden, n_out)
    assert torch_count == expected == param_count(n_in, hidden, n_out)
    assert sum(x.size for x in jax.tree.leaves(params)) == expected


def test_torch_init_distribution_matches_torch():
    """Kernel and bias ~ U(±1/sqrt(fan_in)); KS two-sample test against torch's own init."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.Linear(300, 200)
    _, params = init_mlp(jax.random.PRNGKey(1), 300, (200,), 10)
    k = np.asarray(params["Dense_0"]["kernel"])
    b = np.asarray(params["Dense_0"]["bias"])
    assert k.shape == tuple(ref.weight.shape[::-1]) and b.shape == tuple(ref.bias.shape)
    bound = 1 / np.sqrt(300)
    assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
    w_ref = ref.weight.detach().numpy().ravel()
    assert stats.ks_2samp(k.ravel(), w_ref).pvalue > 1e-3
    assert stats.kstest(k.ravel(), stats.uniform(-bound, 2 * bound).cdf).pvalue > 1e-3
    assert stats.ks_2samp(b, ref.bias.detach().numpy()).pvalue > 1e-3


def test_flax_init_is_lecun_normal_zero_bias():
    _, params = init_mlp(jax.random.PRNGKey(0), 400, (300,), 10, init="flax")
    k = np.asarray(params["Dense_0"]["kernel"])
    # truncated normal with variance 1/fan_in (flax rescales the truncation to keep the variance)
    assert abs(k.var() * 400 - 1) < 0.03
    np.testing.assert_array_equal(params["Dense_0"]["bias"], 0)


def test_forward_matches_torch_and_readout_mult():
    torch = pytest.importorskip("torch")
    model = MLP((20, 10), 2, readout_mult=0.25)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 7)))["params"]
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    lin = []
    for i in range(3):
        layer = torch.nn.Linear(*params[f"Dense_{i}"]["kernel"].shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.array(params[f"Dense_{i}"]["kernel"]).T))
            layer.bias.copy_(torch.from_numpy(np.array(params[f"Dense_{i}"]["bias"])))
        lin.append(layer)
    h = torch.relu(lin[1](torch.relu(lin[0](torch.from_numpy(x)))))
    ref = lin[2](0.25 * h).detach().numpy()
    with jax.default_matmul_precision("highest"):
        out = model.apply({"params": params}, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_mup_init_zeroes_readout_only():
    _, params = init_mlp(jax.random.PRNGKey(0), 8, (16, 16), 3, init="mup")
    np.testing.assert_array_equal(params["Dense_2"]["kernel"], 0)
    assert np.abs(np.asarray(params["Dense_1"]["kernel"])).max() > 0
