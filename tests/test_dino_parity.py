"""DINO ViT (nn/vit.py) against transformers' ViTModel, through `python -m convert_weights dino`, from a
transformers folder and from the original DINO (torch.hub) names; and VBench's subject consistency on it."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from convert_weights import dino  # noqa: E402
from convert_weights.core import read_state_dict  # noqa: E402
from m3cvc_jax.eval import vbench  # noqa: E402
from m3cvc_jax.nn.vit import ViTConfig, ViTModel  # noqa: E402
from m3cvc_jax.weights import assign_params, load_checkpoint  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import call  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)
# 64-dim heads, as DINO's: the original layout's config is then inferable from the shapes.
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=32,
            patch_size=8, layer_norm_eps=1e-6)


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    model = transformers.ViTModel(transformers.ViTConfig(**TINY), add_pooling_layer=False)
    randomize_all(model, 0)
    assert_no_init_constants(model)
    return model.eval()


def load(directory):
    meta, params = load_checkpoint(str(directory), family="dino")
    model = nnx.eval_shape(lambda: ViTModel(ViTConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0)))
    assign_params(model, params)
    return model


def original_names(sd):
    """transformers ViT names -> DINO's own (timm-style, fused qkv): the inverse of the converter's map."""
    out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"]}
    for k, v in sd.items():
        k2 = (k.replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.").replace("encoder.layer.", "blocks.")
              .replace(".layernorm_before.", ".norm1.").replace(".layernorm_after.", ".norm2.")
              .replace(".attention.output.dense.", ".attn.proj.").replace(".intermediate.dense.", ".mlp.fc1.")
              .replace(".output.dense.", ".mlp.fc2."))
        if k2.startswith("layernorm."):
            k2 = "norm." + k2[len("layernorm."):]
        if ".attention.attention." in k2 or k2.startswith("embeddings."):
            continue
        out[k2] = v
    for i in range(TINY["num_hidden_layers"]):
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(
                [sd[f"encoder.layer.{i}.attention.attention.{n}.{leaf}"] for n in ("query", "key", "value")])
    return out


def run_ref(ref, pixels):
    with torch.no_grad():
        return ref(torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))),
                   interpolate_pos_encoding=True).last_hidden_state.numpy()


@pytest.mark.parametrize("layout", ["transformers", "original"])
def test_dino_parity_vit(ref, tmp_path, layout):
    if layout == "transformers":
        ref.save_pretrained(tmp_path / "src")
        dino.convert(str(tmp_path / "src"), str(tmp_path / "out"))
    else:
        # The names on disk (transformers 5 renames ViT's modules in memory, not in its files).
        ref.save_pretrained(tmp_path / "saved")
        sd = read_state_dict(str(tmp_path / "saved"))
        torch.save({k: torch.from_numpy(v) for k, v in original_names(sd).items()}, tmp_path / "dino.pth")
        dino.convert(str(tmp_path / "dino.pth"), str(tmp_path / "out"))
    ours = load(tmp_path / "out")
    assert ours.config == ViTConfig.from_transformers(TINY)
    rng = np.random.default_rng(0)
    # The trained 4x4 grid, and a 5x7 grid with a ragged edge (44x60 px): interpolated positions.
    for hw in ((32, 32), (44, 60)):
        x = rng.normal(size=(2, *hw, 3)).astype(np.float32)
        want = run_ref(ref, x)
        got = np.asarray(call(ours, "__call__", jnp.asarray(x)))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, np.abs(want).max()), rtol=0)


def test_dino_parity_subject_consistency(ref, tmp_path):
    """VBench's loop (per frame, torchvision transform, F.normalize, max(0, cos)) against ours."""
    from torchvision.transforms import Compose, Normalize, Resize

    ref.save_pretrained(tmp_path / "src")
    dino.convert(str(tmp_path / "src"), str(tmp_path / "out"))
    ours = load(tmp_path / "out")
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, size=(1, 40, 56, 3))
    video = np.clip(base + rng.integers(-40, 40, size=(4, 40, 56, 3)), 0, 255).astype(np.uint8)
    transform = Compose([Resize(size=32, antialias=False), lambda x: x.float().div(255.0),
                         Normalize(vbench.IMAGENET_MEAN, vbench.IMAGENET_STD)])
    images = transform(torch.from_numpy(video).permute(0, 3, 1, 2))
    sims = []
    with torch.no_grad():
        for i in range(len(images)):
            f = torch.nn.functional.normalize(ref(images[i:i + 1], interpolate_pos_encoding=True).last_hidden_state[:, 0],
                                              dim=-1, p=2)
            if i == 0:
                first = f
            else:
                sims.append((max(0.0, torch.nn.functional.cosine_similarity(prev, f).item())
                             + max(0.0, torch.nn.functional.cosine_similarity(first, f).item())) / 2)
            prev = f
    got = np.asarray(nnx.jit(lambda m, v: vbench.subject_consistency(m.features, v, 32))(ours, jnp.asarray(video)))
    assert 0.05 < np.mean(sims) < 0.999
    np.testing.assert_allclose(got, sims, atol=1e-4, rtol=0)
