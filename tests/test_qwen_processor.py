"""Qwen2-VL preprocessing and chat inputs vs transformers' Qwen2VL image/video processors and processor."""

from __future__ import annotations

import numpy as np
import pytest

from m3cvc_jax.lmm.chat import build_inputs
from m3cvc_jax.lmm.processor import ProcessorConfig, process_image, process_video, smart_resize
from m3cvc_jax.lmm.tokenizer import qwen2_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parity
def test_qwen2_vl_smart_resize_matches_reference():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as ref

    for h, w in [(320, 512), (28, 28), (10, 900), (2000, 3000), (57, 113), (480, 854)]:
        for lo, hi in [(56 * 56, 28 * 28 * 1280), (128 * 28 * 28, 28 * 28 * 768), (3136, 50000)]:
            assert smart_resize(h, w, 28, lo, hi) == ref(h, w, 28, lo, hi)


@pytest.mark.parity
def test_qwen2_vl_image_patches_match_reference():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(56, 84, 3), dtype=np.uint8)  # already a multiple of 28: no resize
    ref = transformers.Qwen2VLImageProcessor()(images=[image], return_tensors="np")
    patches, grid = process_image(image)
    assert grid == tuple(ref["image_grid_thw"][0])
    np.testing.assert_allclose(patches, ref["pixel_values"], atol=1e-5)


@pytest.mark.parity
def test_qwen2_vl_video_patches_match_reference():
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(5, 112, 112, 3), dtype=np.uint8)  # odd count: last frame repeated
    vp = transformers.Qwen2VLVideoProcessor(cap_pixels_per_frame=False, min_pixels=56 * 56)
    ref = vp(videos=[frames], return_tensors="np", do_sample_frames=False)
    patches, grid = process_video(frames, ProcessorConfig(video_min_pixels=56 * 56))
    assert grid == tuple(ref["video_grid_thw"][0]) == (3, 8, 8)
    np.testing.assert_allclose(patches, ref["pixel_values_videos"], atol=1e-5)


def test_qwen2_vl_resize_close_to_reference():
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    smooth = np.kron(rng.integers(0, 256, size=(10, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)  # 320x512
    cfg = ProcessorConfig(max_pixels=28 * 28 * 64)  # forces a downscale
    ref = transformers.Qwen2VLImageProcessor(max_pixels=cfg.max_pixels)(images=[smooth], return_tensors="np")
    patches, grid = process_image(smooth, cfg)
    assert grid == tuple(ref["image_grid_thw"][0])
    # Bicubic kernels differ slightly between jax and torchvision; normalised values span ~[-1.8, 2.1].
    assert np.mean(np.abs(patches - ref["pixel_values"])) < 0.05


@pytest.mark.parity
def test_qwen2_vl_chat_inputs_match_reference_processor(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = qwen2_tokenizer(str(tmp_path))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok._tok)
    proc = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(),
        tokenizer=hf_tok,
        video_processor=transformers.Qwen2VLVideoProcessor(cap_pixels_per_frame=False, min_pixels=56 * 56),
    )
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(56, 112, 3), dtype=np.uint8)
    video = rng.integers(0, 256, size=(4, 56, 56, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "Objects?"}, {"type": "video"}, {"type": "text", "text": "Motion?"},
    ]}]
    ours = build_inputs(tok, messages, images=[image], videos=[video],
                        processor=ProcessorConfig(video_min_pixels=56 * 56))
    from m3cvc_jax.lmm.chat import format_chat

    ref = proc(text=[format_chat(messages)], images=[image], videos=[video], return_tensors="np",
               do_sample_frames=False)
    np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(ours["mm_token_type_ids"], ref["mm_token_type_ids"])
    np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-5)
    np.testing.assert_allclose(ours["pixel_values_videos"], ref["pixel_values_videos"], atol=1e-5)
    assert ours["image_grid_thw"] == tuple(map(tuple, ref["image_grid_thw"]))
    assert ours["video_grid_thw"] == tuple(map(tuple, ref["video_grid_thw"]))
