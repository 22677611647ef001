"""RAFT: the JAX port against torchvision's raft_small / raft_large (random weights, two 128x192 frames),
through our converter, from torchvision names and from the original RAFT repository's names."""

import numpy as np
import pytest
from flax import nnx

from convert_weights.raft import convert_state_dict, detect_preset, original_names
from m3cvc_jax.nn.raft import PRESETS, RAFT
from m3cvc_jax.nn.raft_corr import lookup
from m3cvc_jax.weights import assign_params
from tests.randomize import assert_no_init_constants, randomize_all

H, W = 128, 192


def _torchvision(preset: str):
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    torch.manual_seed(0)
    model = (raft_large if preset == "large" else raft_small)(weights=None, progress=False).eval()
    randomize_all(model, seed=0)  # the context encoder's batch norms: scales, biases and statistics
    assert_no_init_constants(model)
    return model


def _frames():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([np.sin(xx / 9.0 + yy / 13.0), np.cos(yy / 7.0), np.sin((xx + yy) / 11.0)], -1)
    frame1 = 0.8 * base + 0.1 * rng.normal(size=base.shape)
    frame2 = np.roll(frame1, (2, 3), axis=(0, 1)) + 0.05 * rng.normal(size=base.shape)
    return frame1[None].astype(np.float32), frame2[None].astype(np.float32)


def to_original(state_dict, config):
    """torchvision names -> original RAFT names (the converter's table inverted; duplicates restored)."""
    inverse = {ours: orig for orig, ours in original_names(config).items() if ours is not None}
    dup_of = {orig: orig.rsplit(".", 1)[0] + ".downsample" for orig, ours in original_names(config).items()
              if ours is None}
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        out["module." + inverse[module] + "." + leaf] = value
    for dup, downsample in dup_of.items():
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            out[f"module.{dup}.{leaf}"] = out[f"module.{downsample}.1.{leaf}"]
    return out


@pytest.mark.parity
@pytest.mark.parametrize("preset", ["small", "large"])
def test_raft_parity(preset):
    import jax
    import torch

    torch.set_num_threads(1)
    ref = _torchvision(preset)
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    assert detect_preset(sd) == preset
    config = PRESETS[preset]
    params = convert_state_dict(sd, config)

    # The original repository's naming must land on exactly the same tensors.
    original = to_original(sd, config)
    assert any(k.startswith("module.update_block.gru.") for k in original)
    assert detect_preset(original) == preset
    from_original = convert_state_dict(original, config)
    assert from_original.keys() == params.keys()
    for k in params:
        np.testing.assert_array_equal(from_original[k], params[k])

    model = nnx.eval_shape(lambda: RAFT(config, rngs=nnx.Rngs(0)))  # no random init: weights come next
    assign_params(model, params)
    f1, f2 = _frames()
    with torch.no_grad():
        want = ref(torch.from_numpy(f1.transpose(0, 3, 1, 2)), torch.from_numpy(f2.transpose(0, 3, 1, 2)),
                   num_flow_updates=12)[-1].numpy().transpose(0, 2, 3, 1)
    got = nnx.jit(lambda m, a, b: m(a, b, num_flow_updates=12))(model, f1, f2)
    got = np.asarray(jax.device_get(got))
    assert got.shape == (1, H, W, 2)
    assert np.abs(want).max() > 0.1  # a non-trivial flow
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)


@pytest.mark.parity
def test_raft_lookup_matches_grid_sample():
    """The windowed lookup against torchvision's CorrBlock on random volumes, coordinates partly outside."""
    import torch
    from torchvision.models.optical_flow.raft import CorrBlock

    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(2, 1, 16, 24, 8)).astype(np.float32)
    coords = np.stack(np.meshgrid(np.arange(24.0), np.arange(16.0)), -1)[None]
    coords = (coords + rng.uniform(-6, 6, size=coords.shape)).astype(np.float32)
    # Windows far outside (zeros) and straddling each border at the coarsest level too.
    coords[0, 0, :6] = [[-40.0, 5.0], [200.0, -300.0], [-9.5, 3.2], [27.7, 17.9], [3.3, -9.1], [26.2, 20.6]]
    block = CorrBlock(num_levels=3, radius=2)
    block.build_pyramid(torch.from_numpy(f1.transpose(0, 3, 1, 2)), torch.from_numpy(f2.transpose(0, 3, 1, 2)))
    want = block.index_pyramid(torch.from_numpy(coords.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    from m3cvc_jax.nn.raft_corr import correlation_pyramid

    got = lookup(correlation_pyramid(f1, f2, 3, 2), coords, 2)
    # Correlations reach ~4 here; 64 float32 ulps of the largest (measured on an AMD EPYC: ~10).
    np.testing.assert_allclose(np.asarray(got), want, atol=64 * np.finfo(np.float32).eps * np.abs(want).max())


def test_raft_convert_command_original_checkpoint(tmp_path):
    """`python -m convert_weights raft raft-small.pth DST`: original naming, size detected."""
    import torch

    from convert_weights.__main__ import main
    from m3cvc_jax.weights import load_checkpoint

    ref = _torchvision("small")
    original = {k: torch.as_tensor(np.asarray(v)) for k, v in
                to_original({k: v.numpy() for k, v in ref.state_dict().items()}, PRESETS["small"]).items()}
    torch.save(original, tmp_path / "raft-small.pth")
    assert main(["raft", str(tmp_path / "raft-small.pth"), str(tmp_path / "ours")]) == 0
    meta, params = load_checkpoint(str(tmp_path / "ours"), family="raft")
    assert meta["config"]["preset"] == "small"
    want = convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}, PRESETS["small"])
    assert params.keys() == want.keys()
    np.testing.assert_array_equal(params["update_block.recurrent_block.convgru1.convz.kernel"],
                                  want["update_block.recurrent_block.convgru1.convz.kernel"])
    # A missing tensor is reported by name.
    del original["module.update_block.flow_head.conv2.bias"]
    torch.save(original, tmp_path / "broken.pth")
    assert main(["raft", str(tmp_path / "broken.pth"), str(tmp_path / "x")]) == 2
