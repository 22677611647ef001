"""Conversions at the released models' widths (reduced depth): built by diffusers/transformers, randomised
(tests/randomize.py), saved in the library's published layout (save_pretrained), converted by
`python -m convert_weights` (its main()), compared on a small input. The tiny parity tests cover the code
paths; these pin the real key layouts and widths (head counts, projection shapes, a tied head).

Each reference's output is computed first and the torch model dropped before the conversion, and the
converted tensors become jax arrays one at a time, so a test holds about one copy of the model at a time
(SD 1.5's UNet at one layer per block is 2.3 GB in float32, Qwen2-VL-2B's tied 151,936-token embedding 0.93 GB).
"""

import ctypes
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
from m3cvc_jax.weights import load_module  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import nchw, nhwc  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _release_memory():
    """Hand the freed pages back after each test: glibc keeps much of a multi-GB test's heap, and the next
    test would start that much higher (5.3 GB instead of 4.4 GB peak for this file)."""
    yield
    gc.collect()
    jax.clear_caches()
    libc = ctypes.CDLL(None)
    if hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)


def _reference(build, seed):
    ref = build().eval()
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
    return ref


def _float32_arrays(params):
    """In place and one tensor at a time, so a float16 store and its float32 copy never coexist whole."""
    for key in params:
        params[key] = jax.device_put(np.asarray(params[key], np.float32))  # numpy: jnp would compile per shape
    return params


def _converted(build, dst, family):
    """Our float32 model (`build(config, rngs)`, traced abstractly) from a converted checkpoint."""
    return load_module(str(dst), family=family, build=build, adapt=_float32_arrays)


def _run(model, fn, *args):
    """fn(model, *args) compiled as a pure function of the model's state: nnx.jit would also return the
    whole state, a second copy of the weights."""
    graphdef, state = nnx.split(model)
    return jax.device_get(jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))(state, *args))


def _close(got, want, rel=2e-5):
    scale = float(np.abs(want).max())
    assert scale > 1e-3
    np.testing.assert_allclose(np.asarray(got), want, atol=rel * scale, rtol=0)


def test_sd15_unet_widths_convert(tmp_path):
    """SD 1.5's UNet (320/640/1280/1280, cross-attention 768, 8 heads, conv projections), 1 layer per block,
    stored in float16 like SD 1.5's published fp16 weights, converted with the keyframe condition's extra
    input channels (zero-initialised: the output stays the reference's whatever they hold)."""
    from m3cvc_jax.nn.post_encoder import PostEncoderConfig
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig

    extra = PostEncoderConfig().codebook_dim
    # Built without diffusers' own init (580M values that randomize_all redraws anyway); the UNet has no
    # buffers that to_empty would leave undefined.
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=1, cross_attention_dim=768,
            attention_head_dim=8, sample_size=64)
    assert not list(ref.buffers())
    ref = ref.to_empty(device="cpu").eval()
    randomize_all(ref, 0)
    with torch.no_grad():  # float16-exact weights: the float32 reference computes what the fp16 file holds
        for p in ref.parameters():
            p.copy_(p.half())
    assert_no_init_constants(ref)
    rng = np.random.default_rng(0)
    # 32x32 keeps every level at least 4x4: below that XLA's CPU convolutions reverse each 3x3 kernel per
    # call (1.2 GB more at 8x8).
    x = rng.normal(size=(1, 32, 32, 4 + extra)).astype(np.float32)
    t = np.array([321.0], np.float32)
    ctx = rng.normal(size=(1, 7, 768)).astype(np.float32)
    with torch.inference_mode():
        want = nhwc(ref(torch.from_numpy(nchw(x[..., :4])), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    # Sharded (diffusers' index layout): safetensors serialises each shard in memory before writing it.
    ref.half().save_pretrained(tmp_path / "unet", max_shard_size="200MB")
    del ref
    gc.collect()
    assert convert_main(["sd-unet", str(tmp_path / "unet"), str(tmp_path / "ours"),
                         "--extra-in-channels", str(extra)]) == 0
    # float32 weights: float16 ones inside one jitted forward are cast to float32 copies all alive at once
    ours = _converted(lambda c, rngs: UNet2DConditionModel(UNetConfig.from_dict(c), rngs=rngs), tmp_path / "ours",
                      "sd-unet")
    assert ours.config == dataclasses.replace(UNetConfig.preset("sd15"), layers_per_block=1, extra_in_channels=extra)
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
    ours = _converted(lambda c, rngs: AutoencoderKL(VAEConfig.from_dict(c), rngs=rngs), tmp_path / "ours", "sd-vae")
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
    ours = _converted(lambda c, rngs: CLIPModel(config_from_saved(c), rngs=rngs), tmp_path / "ours", "clip")
    text, image = _run(ours, lambda m, i, p: (m.get_text_features(i), m.get_image_features(p)),
                       jnp.asarray(ids), jnp.asarray(pixels))
    # transformers 5 returns normalised embeddings; ours are the raw projections.
    norm = lambda a: np.asarray(a) / np.linalg.norm(np.asarray(a), axis=-1, keepdims=True)  # noqa: E731
    _close(norm(text), want_text)
    _close(norm(image), want_image)


def test_qwen2_vl_2b_widths_tied_convert(tmp_path):
    """Qwen2-VL-2B's widths (text 1536, MLP 8960, 12 heads / 2 KV heads; vision 1280, 16 heads; merger to
    1536) with its full 151,936-token vocabulary and tied head, 2 layers each."""
    from convert_weights import qwen2_vl as conv
    from m3cvc_jax.nn.qwen2_vl import (
        Qwen2VLConfig, Qwen2VLForConditionalGeneration, get_rope_index, mm_token_type_ids,
    )

    two_b = Qwen2VLConfig.preset("2b")
    assert two_b.tie_word_embeddings and two_b.text.vocab_size == 151936
    cfg = dataclasses.replace(two_b, text=dataclasses.replace(two_b.text, num_hidden_layers=2),
                              vision=dataclasses.replace(two_b.vision, depth=2))
    ref = _reference(lambda: transformers.Qwen2VLForConditionalGeneration(
        transformers.Qwen2VLConfig(**conv.hf_config_dict(cfg))), seed=3)
    assert ref.lm_head.weight is ref.model.language_model.embed_tokens.weight
    grid = ((1, 4, 4),)
    rng = np.random.default_rng(3)
    ids = np.asarray([[cfg.bos_token_id, 11, 151000, cfg.vision_start_token_id] + [cfg.image_token_id] * 4
                      + [cfg.vision_end_token_id, 13, 140000, 151935]], np.int64)
    pixels = rng.standard_normal((16, 3 * 2 * 14 * 14)).astype(np.float32)
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones_like(torch.from_numpy(ids)),
              "mm_token_type_ids": torch.from_numpy(mm_token_type_ids(ids, cfg)).long(),
              "pixel_values": torch.from_numpy(pixels), "image_grid_thw": torch.tensor(grid)}
    with torch.no_grad():
        want = ref(**inputs).logits.numpy()
    ref.save_pretrained(tmp_path / "qwen")
    del ref
    assert convert_main(["qwen2-vl", str(tmp_path / "qwen"), str(tmp_path / "ours")]) == 0
    ours = _converted(lambda c, rngs: Qwen2VLForConditionalGeneration(Qwen2VLConfig.from_dict(c), rngs=rngs),
                      tmp_path / "ours", "qwen2-vl")
    assert ours.cfg == cfg and not hasattr(ours, "lm_head")
    positions, _ = get_rope_index(ids, cfg, image_grid_thw=grid)
    got = _run(ours, lambda m, i, p, px: m(i, p, pixel_values=px, image_grid_thw=grid)[0], ids, positions, pixels)
    _close(got, want)
