"""The research API: pure jitted functions, batched forms = vmap of single calls, docs/api.md runs."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3cvc_jax.pipelines import api
from m3cvc_jax.pipelines.codec import Codec

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def loaded():
    codec = Codec.load("tiny")
    return codec.params, codec.spec


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(-1, 1, (2, 80, 128, 3)), jnp.float32)


def run_docs_example(section: str = "") -> None:
    """Execute the one python block of docs/api.md after the heading `section` (the first block if empty)."""
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    if section:
        text = text[text.index(section):]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    cwd = os.getcwd()
    os.chdir(ROOT)  # the examples name the bundled clip relative to the repository
    try:
        exec(compile(blocks[0], f"docs/api.md {section}".strip(), "exec"), {})
    finally:
        os.chdir(cwd)


def test_docs_example_runs():
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    assert len(re.findall(r"```python\n(.*?)```", text, re.S)) == 2  # the IT2V one runs in tests/test_it2v.py
    run_docs_example()


def test_encode_keyframe_single_and_batch(loaded, frames):
    params, spec = loaded
    batch = api.encode_keyframe_batch(params, frames)
    assert batch.shape == (2, *spec.grid) and batch.dtype == jnp.int32
    assert 0 <= int(batch.min()) and int(batch.max()) < spec.codebook_size
    np.testing.assert_array_equal(api.encode_keyframe(params, frames[1]), batch[1])


def test_decode_keyframe_batch_equals_single_calls(loaded, frames):
    params, spec = loaded
    idx = api.encode_keyframe_batch(params, frames)
    text = api.encode_text(params, api.tokenize(["a red bike", "a blue car"]))
    keys = jax.random.split(jax.random.key(3), 2)
    batch = api.decode_keyframe_batch(params, idx, text, keys, spec.keyframe)
    assert batch.shape == (2, spec.height, spec.width, 3)
    assert float(jnp.abs(batch).max()) <= 1.0
    single = api.decode_keyframe(params, idx[1], text[1], keys[1], spec.keyframe)
    np.testing.assert_allclose(single, batch[1], atol=1e-5)
    again = api.decode_keyframe(params, idx[1], text[1], keys[1], spec.keyframe)
    np.testing.assert_array_equal(single, again)  # pure: same key, same frame
    other = api.decode_keyframe(params, idx[1], text[1], keys[0], spec.keyframe)
    assert not np.allclose(other, single)  # the key drives the sampling noise


def test_decode_keyframe_compiles_once_per_setting(loaded, frames):
    params, spec = loaded
    idx = api.encode_keyframe(params, frames[0])
    text = api.encode_text(params, api.tokenize(["x"]))[0]
    before = api._decode_keyframe_jit._cache_size()
    for seed in range(3):
        api.decode_keyframe(params, idx, text, jax.random.key(seed), spec.keyframe)
    assert api._decode_keyframe_jit._cache_size() - before <= 1


def test_reconstruct_clip_batch_equals_single_calls(loaded, frames):
    params, spec = loaded
    text = api.encode_text(params, api.tokenize(["cyclists"]))
    keys = jax.random.split(jax.random.key(5), 2)
    clips = api.reconstruct_clip_batch(params, frames, frames[::-1], jnp.concatenate([text, text]), keys,
                                       spec.clip, "interpolation", 9, decoding=spec.clip_decoding)
    assert clips.shape == (2, 9, spec.height, spec.width, 3)
    single = api.reconstruct_clip(params, frames[1], frames[0], text[0], keys[1], spec.clip, "interpolation", 9,
                                  decoding=spec.clip_decoding)
    np.testing.assert_allclose(single, clips[1], atol=1e-4)
    assert not np.allclose(clips[0], clips[1])
