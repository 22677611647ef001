"""Qwen2-VL port vs transformers' Qwen2VLForConditionalGeneration, same random weights, tiny config.

The reference is saved as a sharded transformers folder and converted with our converter, so the
converter's streaming path is what the comparison exercises.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from convert_weights import qwen2_vl as conv  # noqa: E402
from m3cvc_jax.errors import WeightsError  # noqa: E402
from m3cvc_jax.lmm.generate import Generator, SamplingConfig  # noqa: E402
from m3cvc_jax.lmm.model_io import load_model  # noqa: E402
from m3cvc_jax.nn.qwen2_vl import (  # noqa: E402
    Qwen2VLConfig, Qwen2VLTextConfig, Qwen2VLVisionConfig, get_rope_index, mm_token_type_ids,
)
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402

CFG = Qwen2VLConfig(
    text=Qwen2VLTextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, mrope_section=(2, 3, 3),
    ),
    vision=Qwen2VLVisionConfig(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14),
    image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503,
    bos_token_id=505, eos_token_id=504,
)
IMAGE_GRID = ((1, 4, 6),)  # 24 patches -> 6 tokens
VIDEO_GRID = ((3, 4, 4),)  # 6 frames; t > max(h, w)/merge exercises the 5.x position advance
PATCH_DIM = 3 * 2 * 14 * 14


def reference(cfg: Qwen2VLConfig, seed: int = 0):
    torch.set_num_threads(1)
    hf_cfg = transformers.Qwen2VLConfig(**conv.hf_config_dict(cfg))
    ref = transformers.Qwen2VLForConditionalGeneration(hf_cfg).eval()
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
    assert (ref.lm_head.weight is ref.model.language_model.embed_tokens.weight) == cfg.tie_word_embeddings
    return ref


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = reference(CFG)
    src = str(tmp_path_factory.mktemp("hf"))
    ref.save_pretrained(src, max_shard_size="200KB")
    dst = str(tmp_path_factory.mktemp("ours") / "ckpt")
    conv.convert(src, dst)
    return ref, load_model(dst), src


def _ids(rng, grid, token, n_before=5, n_after=4):
    t, h, w = grid[0]
    n = t * h * w // 4
    text = lambda k: rng.integers(0, 400, size=k).tolist()  # noqa: E731
    row = [CFG.bos_token_id] + text(n_before) + [CFG.vision_start_token_id] + [token] * n
    return np.asarray([row + [CFG.vision_end_token_id] + text(n_after)], np.int64)


def _hf_inputs(ids, **vision):
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.ones_like(torch.from_numpy(ids)),
           "mm_token_type_ids": torch.from_numpy(mm_token_type_ids(ids, CFG)).long()}
    for k, v in vision.items():
        out[k] = torch.from_numpy(np.asarray(v))
    return out


def _forward(model, ids, **vision):
    """Our logits, jitted (one compilation is much cheaper than eager op-by-op dispatch)."""
    from flax import nnx

    grids = {k: v for k, v in vision.items() if k.endswith("grid_thw")}
    pixels = {k: v for k, v in vision.items() if not k.endswith("grid_thw")}
    positions, _ = get_rope_index(ids, CFG, **grids)
    return np.asarray(nnx.jit(lambda m, i, p, px: m(i, p, **px, **grids)[0])(model, ids, positions, pixels))


def test_qwen2_vl_sharded_index_written(pair):
    _, _, src = pair
    assert os.path.isfile(os.path.join(src, "model.safetensors.index.json"))
    assert len(conv.safetensors_files(src)) > 1


@pytest.mark.parity
def test_qwen2_vl_parity_image_logits(pair):
    """Two images of different sizes in one prompt: separate attention blocks, features in order."""
    ref, ours, _ = pair
    rng = np.random.default_rng(1)
    grids = IMAGE_GRID + ((1, 2, 4),)
    ids = np.concatenate([_ids(rng, IMAGE_GRID, CFG.image_token_id), _ids(rng, grids[1:], CFG.image_token_id)], 1)
    pixels = rng.standard_normal((24 + 8, PATCH_DIM)).astype(np.float32)
    with torch.no_grad():
        want = ref(**_hf_inputs(ids, pixel_values=pixels, image_grid_thw=np.asarray(grids))).logits.numpy()
    got = _forward(ours, ids, pixel_values=pixels, image_grid_thw=grids)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


@pytest.mark.parity
def test_qwen2_vl_parity_video_logits(pair):
    ref, ours, _ = pair
    rng = np.random.default_rng(2)
    ids = _ids(rng, VIDEO_GRID, CFG.video_token_id)
    pixels = rng.standard_normal((48, PATCH_DIM)).astype(np.float32)
    with torch.no_grad():
        want = ref(**_hf_inputs(ids, pixel_values_videos=pixels, video_grid_thw=np.asarray(VIDEO_GRID))).logits.numpy()
    got = _forward(ours, ids, pixel_values_videos=pixels, video_grid_thw=VIDEO_GRID)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


@pytest.mark.parity
def test_qwen2_vl_parity_rope_index(pair):
    """Two images and a video in one row, plus a left-padded second row."""
    ref, _, _ = pair
    rng = np.random.default_rng(3)
    row = np.concatenate([_ids(rng, IMAGE_GRID, CFG.image_token_id), _ids(rng, VIDEO_GRID, CFG.video_token_id),
                          _ids(rng, IMAGE_GRID, CFG.image_token_id)], 1)
    short = _ids(rng, IMAGE_GRID, CFG.image_token_id)
    ids = np.zeros((2, row.shape[1]), np.int64)
    ids[0], ids[1, -short.shape[1]:] = row[0], short[0]
    mask = ids != 0
    mask[0] = True
    images, videos = IMAGE_GRID * 3, VIDEO_GRID
    want, want_d = ref.model.get_rope_index(
        torch.from_numpy(ids), mm_token_type_ids=torch.from_numpy(mm_token_type_ids(ids, CFG)),
        image_grid_thw=torch.tensor(images), video_grid_thw=torch.tensor(videos),
        attention_mask=torch.from_numpy(mask).long(),
    )
    got, got_d = get_rope_index(ids, CFG, image_grid_thw=images, video_grid_thw=videos, attention_mask=mask)
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(got_d, want_d.numpy())


@pytest.mark.parity
def test_qwen2_vl_parity_greedy_generate(pair):
    ref, ours, _ = pair
    rng = np.random.default_rng(4)
    ids = _ids(rng, IMAGE_GRID, CFG.image_token_id)
    pixels = rng.standard_normal((24, PATCH_DIM)).astype(np.float32)
    inputs = _hf_inputs(ids, pixel_values=pixels, image_grid_thw=np.asarray(IMAGE_GRID))
    with torch.no_grad():
        want = ref.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=0)
    want = want[:, ids.shape[1]:].numpy()
    # A bucket smaller than the prompt also exercises right-padding of the prefill.
    out = Generator(ours, length_bucket=8).generate(
        ids, sampling=SamplingConfig(max_new_tokens=16), pixel_values=pixels, image_grid_thw=IMAGE_GRID
    )
    assert want.shape == (1, 16)
    np.testing.assert_array_equal(out.tokens, want)


def test_qwen2_vl_converter_legacy_layout_and_bf16(pair, tmp_path):
    """Published checkpoints use `visual.*` / `model.*`; bf16 is kept with --dtype keep."""
    from safetensors.torch import save_file

    ref, ours, src = pair
    legacy = {}
    for k, v in ref.state_dict().items():
        k = k.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        legacy[k] = v.to(torch.bfloat16).contiguous()
    folder = tmp_path / "legacy"
    folder.mkdir()
    save_file(legacy, str(folder / "model.safetensors"))
    with open(folder / "config.json", "w") as f:
        json.dump(json.load(open(os.path.join(src, "config.json"))), f)
    conv.convert(str(folder), str(tmp_path / "out"), dtype="keep")
    model = load_model(str(tmp_path / "out"))
    emb = model.model.language_model.embed_tokens.embedding[...]
    assert str(emb.dtype) == "bfloat16"
    want = ours.model.language_model.embed_tokens.embedding[...]
    np.testing.assert_allclose(np.asarray(emb, np.float32), np.asarray(want), atol=1e-2)


def test_qwen2_vl_converter_reports_missing_keys(pair, tmp_path):
    from safetensors.torch import save_file

    ref, _, src = pair
    sd = {k: v.contiguous() for k, v in ref.state_dict().items() if "blocks.1.mlp.fc2" not in k}
    folder = tmp_path / "broken"
    folder.mkdir()
    save_file(sd, str(folder / "model.safetensors"))
    with open(folder / "config.json", "w") as f:
        json.dump(json.load(open(os.path.join(src, "config.json"))), f)
    with pytest.raises(WeightsError, match="missing.*blocks.1.mlp.fc2"):
        conv.convert(str(folder), str(tmp_path / "out"))


def test_qwen2_vl_converter_cli(pair, tmp_path):
    from convert_weights.__main__ import main

    _, _, src = pair
    assert main(["qwen2-vl", src, str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "config.json").is_file()
    assert (tmp_path / "cli" / "tokenizer" / "generation_config.json").is_file()  # SRC's side files travel along
    assert main(["qwen2-vl", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2


@pytest.mark.parity
@pytest.mark.parametrize("stored_head", [False, True])
def test_qwen2_vl_parity_tied_head(tmp_path, stored_head):
    """Qwen2-VL-2B ties lm_head to the embeddings. transformers saves no lm_head then; checkpoints that
    store it anyway (the published layout, `visual.*`/`model.*`/`lm_head.*`) must convert the same."""
    from safetensors.torch import save_file

    cfg = dataclasses.replace(CFG, tie_word_embeddings=True)
    ref = reference(cfg, seed=1)
    src = tmp_path / "hf"
    ref.save_pretrained(src)
    if stored_head:
        legacy = {}
        for k, v in ref.state_dict().items():
            k = k.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
            legacy[k] = v.clone().contiguous()
        assert "lm_head.weight" in legacy
        for f in src.glob("*.safetensors"):
            f.unlink()
        save_file(legacy, str(src / "model.safetensors"))
    else:
        from safetensors import safe_open

        with safe_open(str(src / "model.safetensors"), framework="pt") as f:
            assert not any(k.startswith("lm_head") for k in f.keys())
    conv.convert(str(src), str(tmp_path / "ours"))
    ours = load_model(str(tmp_path / "ours"))
    assert ours.cfg.tie_word_embeddings and not hasattr(ours, "lm_head")
    rng = np.random.default_rng(5)
    ids = _ids(rng, IMAGE_GRID, CFG.image_token_id)
    pixels = rng.standard_normal((24, PATCH_DIM)).astype(np.float32)
    with torch.no_grad():
        want = ref(**_hf_inputs(ids, pixel_values=pixels, image_grid_thw=np.asarray(IMAGE_GRID))).logits.numpy()
    got = _forward(ours, ids, pixel_values=pixels, image_grid_thw=IMAGE_GRID)
    np.testing.assert_allclose(got, want, atol=1e-4 * max(1.0, float(np.abs(want).max())), rtol=0)


def test_qwen2_vl_config_roundtrip():
    for name in ("tiny", "2b", "7b"):
        cfg = Qwen2VLConfig.preset(name)
        assert Qwen2VLConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    assert Qwen2VLConfig.from_hf(conv.hf_config_dict(CFG)) == CFG
    # The flat config.json layout of the published Qwen2-VL-2B-Instruct checkpoint.
    published_2b = {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", "bos_token_id": 151643,
        "eos_token_id": 151645, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656, "hidden_act": "silu",
        "hidden_size": 1536, "intermediate_size": 8960, "max_position_embeddings": 32768, "max_window_layers": 28,
        "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "use_sliding_window": False, "vocab_size": 151936,
        "vision_config": {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
                          "hidden_size": 1536, "patch_size": 14, "spatial_merge_size": 2, "spatial_patch_size": 14,
                          "temporal_patch_size": 2},
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    }
    assert Qwen2VLConfig.from_hf(published_2b) == Qwen2VLConfig.preset("2b")
