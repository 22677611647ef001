"""Conversions at the released models' widths (reduced depth): built by diffusers/transformers, randomised
(tests/randomize.py), saved in the library's published layout (save_pretrained), converted by
`python -m convert_weights` (its main()), compared on a small input. The tiny parity tests cover the code
paths; these pin the real key layouts and widths (head counts, projection shapes, a tied head).

Each reference's output is computed first and the torch model dropped before the conversion, so a test
holds about one copy of the model at a time (SD 1.5's UNet at one layer per block is 2.3 GB in float32).
"""

import dataclasses
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from convert_weights.__main__ import main as convert_main  # noqa: E402
from convert_weights.core import to_device_arrays  # noqa: E402
from m3cvc_jax.weights import assign_params, load_checkpoint  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import nchw, nhwc  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(2)


def _reference(build, seed):
    ref = build().eval()
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
    return ref


def _converted(build_abstract, dst, family):
    """Our model from a converted checkpoint, its numpy tensors turned into jax arrays one at a time."""
    meta, params = load_checkpoint(str(dst), family=family)
    model = nnx.eval_shape(lambda: build_abstract(meta["config"]))
    assign_params(model, to_device_arrays(params))
    return model


def _run(model, fn, *args):
    """fn(model, *args) compiled as a pure function of the model's state: nnx.jit would also return the
    whole state, a second copy of the weights."""
    graphdef, state = nnx.split(model)
    return jax.device_get(jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))(state, *args))


def _close(got, want, rel=2e-5):
    scale = float(np.abs(want).max())
    assert scale > 1e-3
    np.testing.assert_allclose(np.asarray(got), want, atol=rel * scale, rtol=0)


@pytest.mark.slow  # 2.3 GB of float32 and minutes on 2 cores; the tiny SD parity tests run the same code
def test_sd15_unet_widths_convert(tmp_path):
    """SD 1.5's UNet (320/640/1280/1280, cross-attention 768, 8 heads, conv projections), 1 layer per block."""
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig

    ref = _reference(lambda: diffusers.UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=1, cross_attention_dim=768,
        attention_head_dim=8, sample_size=64), seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
    t = np.array([321.0], np.float32)
    ctx = rng.normal(size=(1, 7, 768)).astype(np.float32)
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    # Sharded (diffusers' index layout): safetensors serialises each shard in memory before writing it.
    ref.save_pretrained(tmp_path / "unet", max_shard_size="200MB")
    del ref
    gc.collect()
    assert convert_main(["sd-unet", str(tmp_path / "unet"), str(tmp_path / "ours")]) == 0
    ours = _converted(lambda c: UNet2DConditionModel(UNetConfig.from_dict(c), rngs=nnx.Rngs(0)), tmp_path / "ours",
                      "sd-unet")
    assert ours.config == dataclasses.replace(UNetConfig.preset("sd15"), layers_per_block=1)
    got = _run(ours, lambda m, a, b, c: m(a, b, c), jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))
    _close(got, want)


def test_sd_vae_widths_convert(tmp_path):
    """SD's AutoencoderKL (128/256/512/512, 32 groups, 4 latent channels), 1 layer per block."""
    from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig

    ref = _reference(lambda: diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=1, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215), seed=1)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(1, 32, 24, 3)).astype(np.float32)
    z = rng.normal(size=(1, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want_mean = nhwc(ref.encode(torch.from_numpy(nchw(x))).latent_dist.mean)
        want_img = nhwc(ref.decode(torch.from_numpy(nchw(z))).sample)
    ref.save_pretrained(tmp_path / "vae")
    del ref
    assert convert_main(["sd-vae", str(tmp_path / "vae"), str(tmp_path / "ours")]) == 0
    ours = _converted(lambda c: AutoencoderKL(VAEConfig.from_dict(c), rngs=nnx.Rngs(0)), tmp_path / "ours", "sd-vae")
    assert ours.config == dataclasses.replace(VAEConfig.preset("sd"), layers_per_block=1)
    mean, img = _run(ours, lambda m, a, b: (m.encode(a)[0], m.decode(b)), jnp.asarray(x), jnp.asarray(z))
    _close(mean, want_mean)
    _close(img, want_img)


def test_clip_vit_l14_widths_convert(tmp_path):
    """CLIP ViT-L/14 (text 768/12 heads, vision 1024/16 heads, patch 14 at 224, projection 768), 2 layers."""
    from m3cvc_jax.nn import clip_tokenizer
    from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel, config_from_saved

    preset = CLIPConfig.preset("vit-l-14")
    config = dataclasses.replace(preset, text=dataclasses.replace(preset.text, num_hidden_layers=2),
                                 vision=dataclasses.replace(preset.vision, num_hidden_layers=2))
    hf = transformers.CLIPConfig(text_config=dataclasses.asdict(config.text),
                                 vision_config=dataclasses.asdict(config.vision), projection_dim=config.projection_dim)
    ref = _reference(lambda: transformers.CLIPModel(hf), seed=2)
    ids = clip_tokenizer.tokenize(["a photo of a cat", "two dogs on a beach at night"], pad_id=clip_tokenizer.EOS_ID)
    pixels = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        out = ref(input_ids=torch.from_numpy(ids.astype(np.int64)), pixel_values=torch.from_numpy(nchw(pixels)))
        want_text, want_image = out.text_embeds.numpy(), out.image_embeds.numpy()
    ref.save_pretrained(tmp_path / "clip")
    del ref, out
    assert convert_main(["clip", str(tmp_path / "clip"), str(tmp_path / "ours")]) == 0
    ours = _converted(lambda c: CLIPModel(config_from_saved(c), rngs=nnx.Rngs(0)), tmp_path / "ours", "clip")
    text, image = _run(ours, lambda m, i, p: (m.get_text_features(i), m.get_image_features(p)),
                       jnp.asarray(ids), jnp.asarray(pixels))
    # transformers 5 returns normalised embeddings; ours are the raw projections.
    norm = lambda a: np.asarray(a) / np.linalg.norm(np.asarray(a), axis=-1, keepdims=True)  # noqa: E731
    _close(norm(text), want_text)
    _close(norm(image), want_image)


def test_qwen2_vl_2b_widths_tied_convert(tmp_path):
    """Qwen2-VL-2B's widths (text 1536, MLP 8960, 12 heads / 2 KV heads; vision 1280, 16 heads; merger to
    1536) with its tied head, 2 layers each; the vocabulary is cut to 32k to stay well under 3 GB."""
    from convert_weights import qwen2_vl as conv
    from m3cvc_jax.nn.qwen2_vl import (
        Qwen2VLConfig, Qwen2VLForConditionalGeneration, get_rope_index, mm_token_type_ids,
    )

    two_b = Qwen2VLConfig.preset("2b")
    assert two_b.tie_word_embeddings
    cfg = dataclasses.replace(
        two_b, text=dataclasses.replace(two_b.text, num_hidden_layers=2, vocab_size=32000),
        vision=dataclasses.replace(two_b.vision, depth=2), image_token_id=31990, video_token_id=31991,
        vision_start_token_id=31992, vision_end_token_id=31993, bos_token_id=31994, eos_token_id=31995)
    ref = _reference(lambda: transformers.Qwen2VLForConditionalGeneration(
        transformers.Qwen2VLConfig(**conv.hf_config_dict(cfg))), seed=3)
    assert ref.lm_head.weight is ref.model.language_model.embed_tokens.weight
    grid = ((1, 4, 4),)
    rng = np.random.default_rng(3)
    ids = np.asarray([[cfg.bos_token_id, 11, 12, cfg.vision_start_token_id] + [cfg.image_token_id] * 4
                      + [cfg.vision_end_token_id, 13, 14, 15]], np.int64)
    pixels = rng.standard_normal((16, 3 * 2 * 14 * 14)).astype(np.float32)
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones_like(torch.from_numpy(ids)),
              "mm_token_type_ids": torch.from_numpy(mm_token_type_ids(ids, cfg)).long(),
              "pixel_values": torch.from_numpy(pixels), "image_grid_thw": torch.tensor(grid)}
    with torch.no_grad():
        want = ref(**inputs).logits.numpy()
    ref.save_pretrained(tmp_path / "qwen")
    del ref
    assert convert_main(["qwen2-vl", str(tmp_path / "qwen"), str(tmp_path / "ours")]) == 0
    ours = _converted(lambda c: Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_dict(c), rngs=nnx.Rngs(0)),
                      tmp_path / "ours", "qwen2-vl")
    assert ours.cfg == cfg and not hasattr(ours, "lm_head")
    positions, _ = get_rope_index(ids, cfg, image_grid_thw=grid)
    got = _run(ours, lambda m, i, p, px: m(i, p, pixel_values=px, image_grid_thw=grid)[0], ids, positions, pixels)
    _close(got, want)
