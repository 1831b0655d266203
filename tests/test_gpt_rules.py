"""``--model gpt --lr-rule per-layer``: one lr multiplier per parameter group (embeddings, each
block's attention and MLP, readout); a lane against a plain Optax Adam whose updates are scaled
per leaf by groups written out here by hand, and the count of ``--layer-lr-mults`` checked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlr import text
from jaxlr.config import ConfigError, SweepConfig
from jaxlr.data import device_data, load_text_dataset
from jaxlr.engine import RunSpec, seed_keys, train_lanes, window_starts
from jaxlr.gpt import init_gpt, next_token_loss

SAMPLE = (
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
) * 60
MULTS = (0.5, 1.0, 2.0, 0.25, 1.5, 3.0)  # embeddings, block_0 attn, mlp, block_1 attn, mlp, readout


def _group(path: str) -> int:
    """The index of a leaf's group, from its path alone (the documented grouping)."""
    top = path.split("/")[0]
    if top in ("wte", "wpe"):
        return 0
    if top in ("ln_f", "lm_head"):
        return 5
    block = int(top.split("_")[1])
    part = path.split("/")[1]
    return 1 + 2 * block + (0 if part in ("ln_1", "attn") else 1)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_text(SAMPLE)
    return path


@pytest.mark.slow  # a per-layer GPT lane against a hand-written optax loop
@pytest.mark.parametrize("tied", [True, False])
def test_a_per_layer_gpt_lane_equals_adam_with_hand_written_groups(corpus_file, tied):
    cfg = SweepConfig(
        family="gpt", widths=(32,), depth=2, context=16, head_dim=16, batch_size=4, steps=6,
        eval_every=3, eval_sequences=8, data_dir=str(corpus_file), optimizers=("adam",),
        lr_rule="per-layer", layer_lr_mults=MULTS, tied=tied,
    )  # fmt: skip
    ds = load_text_dataset(cfg)
    spec = RunSpec.create(cfg, ds, (32, 32), "adam")
    lr = 3e-3
    with jax.default_matmul_precision("highest"):
        state, m = train_lanes(spec, device_data(ds), [0], jnp.asarray([lr]), epochs=2)
        model = spec.gpt()
        params = init_gpt(model, seed_keys(jnp.int32(0))[0])
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        mult = {
            "/".join(k.key for k in path): MULTS[_group("/".join(k.key for k in path))]
            for path, _ in flat
        }
        scale = jax.tree_util.tree_map_with_path(
            lambda path, _: -lr * mult["/".join(k.key for k in path)], params
        )
        tx = optax.scale_by_adam()
        opt = tx.init(params)
        train = jnp.asarray(ds.train)

        @jax.jit  # one plain Adam step with hand-written per-group rates
        def step(params, opt, b):
            x, y = text.window_batch(train, b, 16)
            f = lambda q: next_token_loss(model.apply({"params": q}, x), y)
            loss, g = jax.value_and_grad(f)(params)
            u, opt = tx.update(g, opt, params)
            return jax.tree.map(lambda p, d, s: p + s * d, params, u, scale), opt, loss

        losses = []
        for e in range(2):
            starts = window_starts(jnp.int32(0), jnp.int32(e), ds.n_windows, 4, 3)
            ep = []
            for b in np.asarray(starts):
                params, opt, loss = step(params, opt, jnp.asarray(b))
                ep.append(float(loss))
            losses.append(np.mean(ep))
    np.testing.assert_allclose(m["train_loss"][:, 0, 0], losses, rtol=2e-5)
    lane = jax.tree.map(lambda a: a[0, 0], state.params)
    for a, b in zip(jax.tree.leaves(lane), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=3e-5)


def test_layer_lr_mults_count_the_gpt_groups(corpus_file):
    with pytest.raises(ConfigError, match=r"has 3 values but the model has \[6\] layers"):
        SweepConfig(
            family="gpt", widths=(32,), depth=2, lr_rule="per-layer", layer_lr_mults=(1, 1, 1)
        )
    with pytest.raises(ConfigError, match="--lr-rule weight-norm does not apply to --model gpt"):
        SweepConfig(family="gpt", widths=(32,), lr_rule="weight-norm")


def test_the_sweeps_zero_init_options_reach_the_model(corpus_file):
    cfg = SweepConfig(
        family="gpt", widths=(32,), depth=2, context=16, head_dim=16, data_dir=str(corpus_file),
        parametrizations=("mup",), base_width=16, tied=False, zero_readout=True, zero_query=True,
        optimizers=("adamw",),
    )  # fmt: skip
    spec = RunSpec.create(cfg, load_text_dataset(cfg), (32, 32), "adamw", "mup")
    _, init = spec.model()
    params = init(jax.random.PRNGKey(0))
    assert not np.any(params["lm_head"]["kernel"])
    for b in ("block_0", "block_1"):
        assert not np.any(params[b]["attn"]["query"]["kernel"])
        assert np.any(params[b]["attn"]["key"]["kernel"])
    with pytest.raises(ConfigError, match="--zero-readout only applies to --model gpt --no-tied"):
        SweepConfig(family="gpt", widths=(32,), zero_readout=True)
