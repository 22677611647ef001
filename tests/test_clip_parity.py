"""CLIP: the JAX port against transformers' CLIPModel (tiny random config), the tokenizer against open_clip,
and the jnp preprocessing against PIL."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from convert_weights.clip import convert_state_dict
from m3cvc_jax.nn import clip_tokenizer
from m3cvc_jax.nn.clip import (
    CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, config_from_saved, preprocess_images,
)
from m3cvc_jax.weights import assign_params
from tests.randomize import assert_no_init_constants, randomize_all

SENTENCES = [
    "a photo of a cat",
    "A man riding a BICYCLE down a busy street, at night.",
    "Don't stop   believing!!! 3 dogs & 12 cats &amp; café",
    "",
    " ".join(["long"] * 100),
]

TINY = CLIPConfig(
    text=CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=77),
    vision=CLIPVisionConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=3,
                            image_size=64, patch_size=16),
    projection_dim=24,
)


def _reference(config: CLIPConfig, eos_token_id: int):
    import torch
    import transformers

    torch.manual_seed(0)
    hf = transformers.CLIPConfig(
        text_config={**dataclasses.asdict(config.text), "eos_token_id": eos_token_id, "pad_token_id": 1,
                     "bos_token_id": 0},
        vision_config=dataclasses.asdict(config.vision),
        projection_dim=config.projection_dim,
    )
    model = transformers.CLIPModel(hf).eval()
    randomize_all(model, seed=0)
    assert_no_init_constants(model)
    return model


@pytest.mark.parity
@pytest.mark.parametrize("eos_token_id", [2, 49407])
def test_clip_parity_image_and_text(eos_token_id):
    import torch

    torch.set_num_threads(1)
    ref = _reference(TINY, eos_token_id)
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    config = dataclasses.replace(TINY, text=dataclasses.replace(TINY.text, eos_token_id=eos_token_id))
    model = nnx.eval_shape(lambda: CLIPModel(config, rngs=nnx.Rngs(1)))
    assign_params(model, convert_state_dict(sd, config))

    ids = clip_tokenizer.tokenize(SENTENCES[:3], pad_id=clip_tokenizer.EOS_ID)
    pixels = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        t_ids = torch.from_numpy(ids.astype(np.int64))
        t_pix = torch.from_numpy(pixels.transpose(0, 3, 1, 2))
        out = ref(input_ids=t_ids, pixel_values=t_pix)
        text_hidden = ref.text_model(input_ids=t_ids).last_hidden_state.numpy()
        vision_hidden = ref.vision_model(pixel_values=t_pix).last_hidden_state.numpy()

        text_features = ref.text_projection(ref.text_model(input_ids=t_ids).pooler_output).numpy()
        image_features = ref.visual_projection(ref.vision_model(pixel_values=t_pix).pooler_output).numpy()

    got = _forward(model, jnp.asarray(ids), jnp.asarray(pixels))
    np.testing.assert_allclose(got["text_features"], text_features, atol=1e-4)
    np.testing.assert_allclose(got["image_features"], image_features, atol=1e-4)
    np.testing.assert_allclose(got["text_hidden"], text_hidden, atol=1e-4)
    np.testing.assert_allclose(got["vision_hidden"], vision_hidden, atol=1e-4)
    np.testing.assert_allclose(got["per_image"], out.logits_per_image.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["per_text"], out.logits_per_text.numpy(), atol=1e-4)


@nnx.jit
def _forward(model, ids, pixels):
    """Every output in one compiled call (eager NNX would compile each primitive separately)."""
    per_image, per_text = model(ids, pixels)
    return dict(text_features=model.get_text_features(ids), image_features=model.get_image_features(pixels),
                text_hidden=model.text_model(ids).last_hidden_state,
                vision_hidden=model.vision_model(pixels).last_hidden_state, per_image=per_image, per_text=per_text)


@pytest.mark.parity
def test_clip_parity_text_only_with_attention_mask():
    """The Stable Diffusion `text_encoder` path: a text-only checkpoint, padding masked out."""
    import torch

    torch.set_num_threads(1)
    ref = _reference(TINY, 49407)
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    model = nnx.eval_shape(lambda: CLIPTextModel(TINY.text, rngs=nnx.Rngs(1)))
    assign_params(model, convert_state_dict(sd, TINY.text))
    ids, mask = clip_tokenizer.tokenize(SENTENCES[:2], context_length=16, return_mask=True)
    with torch.no_grad():
        want = ref.text_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                              attention_mask=torch.from_numpy(mask.astype(np.int64)))
    got = nnx.jit(lambda m, i, a: m(i, a))(model, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(got.last_hidden_state, want.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(got.pooler_output, want.pooler_output.numpy(), atol=1e-4)


def test_clip_tokenizer_matches_open_clip():
    open_clip = pytest.importorskip("open_clip")
    reference = open_clip.get_tokenizer("ViT-B-32")(SENTENCES).numpy()
    ours = clip_tokenizer.tokenize(SENTENCES, pad_id=0)
    np.testing.assert_array_equal(ours, reference)
    assert clip_tokenizer.decode(ours[1]) == "a man riding a bicycle down a busy street , at night ."


def test_clip_preprocess_close_to_pil():
    """jax.image.resize (bicubic, antialiased) against PIL's bicubic resize on a 320x512 frame."""
    from PIL import Image

    rng = np.random.default_rng(0)
    # A smooth image plus texture: PIL's per-pass uint8 rounding is the only expected difference.
    yy, xx = np.mgrid[0:320, 0:512]
    base = 127 + 100 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 17.0)[..., None] * np.array([1.0, 0.7, -0.5])
    img = np.clip(base + rng.normal(0, 12, size=(320, 512, 3)), 0, 255).astype(np.uint8)
    ours = np.asarray(preprocess_images(jnp.asarray(img[None])))[0]
    pil = np.asarray(Image.fromarray(img).resize((358, 224), Image.BICUBIC), np.float32)[:, 67:67 + 224] / 255.0
    pil = (pil - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array([0.26862954, 0.26130258, 0.27577711])
    grey_levels = np.abs(ours - pil) * np.array([0.26862954, 0.26130258, 0.27577711]) * 255
    assert ours.shape == (224, 224, 3)
    assert grey_levels.mean() < 0.5 and grey_levels.max() <= 3.0, (grey_levels.mean(), grey_levels.max())


def test_clip_convert_command(tmp_path):
    """`python -m convert_weights clip` on saved transformers folders (full model and SD-style text encoder)."""
    import torch
    import transformers

    from convert_weights.__main__ import main
    from m3cvc_jax.weights import load_checkpoint

    torch.set_num_threads(1)
    ref = _reference(TINY, 2)
    ref.save_pretrained(tmp_path / "hf")
    assert main(["clip", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    meta, params = load_checkpoint(str(tmp_path / "ours"), family="clip")
    assert meta["config"]["kind"] == "full"
    config = config_from_saved(meta["config"])
    assert config.vision == TINY.vision and config.text.eos_token_id == 2
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    np.testing.assert_array_equal(params["text_projection.kernel"], sd["text_projection.weight"].T)

    text = transformers.CLIPTextModel(ref.config.text_config)
    text.save_pretrained(tmp_path / "text_encoder")
    assert main(["clip", str(tmp_path / "text_encoder"), str(tmp_path / "text"), "--text-only"]) == 0
    meta, params = load_checkpoint(str(tmp_path / "text"), family="clip")
    assert meta["config"]["kind"] == "text" and config_from_saved(meta["config"]) == TINY.text
    assert "text_model.final_layer_norm.scale" in params and not any(k.startswith("vision") for k in params)
    assert main(["clip", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("preset", ["vit-b-32", pytest.param("vit-b-16", marks=pytest.mark.slow),
                                    pytest.param("vit-l-14", marks=pytest.mark.slow)])
def test_clip_presets_match_transformers_shapes(preset):
    """Every reference-sized preset has exactly the tensors of transformers' CLIPModel (built on meta)."""
    import torch
    import transformers

    from convert_weights.core import abstract_shapes

    config = CLIPConfig.preset(preset)
    hf_config = transformers.CLIPConfig(text_config=dataclasses.asdict(config.text),
                                        vision_config=dataclasses.asdict(config.vision),
                                        projection_dim=config.projection_dim)
    with torch.device("meta"):
        ref = transformers.CLIPModel(hf_config)
    ours = abstract_shapes(lambda: CLIPModel(config, rngs=nnx.Rngs(0)))
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
    assert sum(np.prod(s, dtype=np.int64) for s in ours.values()) == sum(
        np.prod(s, dtype=np.int64) for s in theirs.values())
    assert len(ours) == len(theirs)
    assert {"vit-b-32": 151_277_313, "vit-b-16": 149_620_737, "vit-l-14": 427_616_513}[preset] == sum(
        int(np.prod(s)) for s in ours.values())
