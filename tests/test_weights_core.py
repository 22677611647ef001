"""The shared checkpoint store and the converter's key/layout mapping."""

import numpy as np
import pytest
from flax import nnx

from convert_weights.core import abstract_shapes, map_onto
from m3cvc_jax.errors import WeightsError
from m3cvc_jax.weights import assign_params, flat_params, load_checkpoint, save_checkpoint


class Tiny(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(3, 5, rngs=rngs)
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.norm = nnx.LayerNorm(5, rngs=rngs)
        self.emb = nnx.Embed(6, 6, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs)])


def torch_like_state(rng):
    return {
        "proj.weight": rng.normal(size=(5, 3)),
        "proj.bias": rng.normal(size=(5,)),
        "conv.weight": rng.normal(size=(4, 2, 3, 3)),
        "conv.bias": rng.normal(size=(4,)),
        "norm.weight": rng.normal(size=(5,)),
        "norm.bias": rng.normal(size=(5,)),
        "emb.weight": rng.normal(size=(6, 6)),
        "blocks.0.weight": rng.normal(size=(4, 4)),
        "blocks.0.bias": rng.normal(size=(4,)),
    }


def test_map_onto_transposes_kernels_only():
    sd = torch_like_state(np.random.default_rng(0))
    out = map_onto(abstract_shapes(lambda: Tiny(nnx.Rngs(0))), sd)
    np.testing.assert_array_equal(out["proj.kernel"], sd["proj.weight"].T)
    np.testing.assert_array_equal(out["conv.kernel"], sd["conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(out["norm.scale"], sd["norm.weight"])
    # Square embeddings must not be transposed (only kernels change layout).
    np.testing.assert_array_equal(out["emb.embedding"], sd["emb.weight"])
    np.testing.assert_array_equal(out["blocks.0.kernel"], sd["blocks.0.weight"].T)


def test_map_onto_lists_every_problem():
    sd = torch_like_state(np.random.default_rng(0))
    del sd["proj.bias"]
    sd["extra.weight"] = np.zeros(3)
    sd["norm.weight"] = np.zeros(7)
    with pytest.raises(WeightsError) as e:
        map_onto(abstract_shapes(lambda: Tiny(nnx.Rngs(0))), sd)
    msg = str(e.value)
    assert "proj.bias" in msg and "extra.weight" in msg and "norm.weight" in msg
    assert "\n" not in msg


def test_checkpoint_round_trip(tmp_path):
    model = Tiny(nnx.Rngs(1))
    params = flat_params(model)
    fp = save_checkpoint(str(tmp_path / "ck"), family="tiny", config={"width": 3}, params=params)
    meta, loaded = load_checkpoint(str(tmp_path / "ck"), family="tiny")
    assert meta["fingerprint"] == fp and meta["config"] == {"width": 3}
    other = Tiny(nnx.Rngs(2))
    assign_params(other, loaded)
    for k, v in flat_params(other).items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(params[k]))
    with pytest.raises(WeightsError, match="expected 'vae'"):
        load_checkpoint(str(tmp_path / "ck"), family="vae")
    with pytest.raises(WeightsError, match="missing"):
        assign_params(other, {k: v for k, v in loaded.items() if k != "proj.bias"})
