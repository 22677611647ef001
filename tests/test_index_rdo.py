"""The entropy-constrained choice of keyframe indices (codec/index_rdo.py): what it minimises, that it is
the nearest word at lambda 0, and that the codec writes and reads its maps."""

from __future__ import annotations

import numpy as np
import pytest

from m3cvc_jax.codec import entropy as ent
from m3cvc_jax.codec import index_prior as ip
from m3cvc_jax.codec import index_rdo
from m3cvc_jax.errors import ConfigError
from tests.test_index_prior import demo_prior, learned, random_prior, real_maps


def total_cost(distances, m, previous, prior, lam) -> float:
    """distortion + lambda x the map's ideal code length under the prior (what the RD choice lowers)."""
    h, w, _ = distances.shape
    dist = distances[np.arange(h)[:, None], np.arange(w), m].sum()
    return float(dist + lam * ip.ideal_bits(m, previous, prior))


def distances_near(m: np.ndarray, k: int, seed: int, spread: float = 0.05) -> np.ndarray:
    """Distances whose nearest word is `m` at every position, with other words close enough that bits
    matter: the situation of a real post-encoder output between codewords."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.01, 0.01 + spread, (*m.shape, k))
    h, w = m.shape
    d[np.arange(h)[:, None], np.arange(w), m] = 0.005
    return d


def test_lambda_zero_is_the_nearest_word_with_ties_to_the_lowest_index():
    rng = np.random.default_rng(0)
    prior = random_prior(1)
    d = rng.uniform(0, 1, (5, 7, 64)).round(1)  # rounding makes ties
    out = index_rdo.rd_index_map(d, None, prior, 0.0)
    np.testing.assert_array_equal(out, np.argmin(d, axis=-1))
    assert out.dtype == np.int32


@pytest.mark.parametrize("seed", range(3))
def test_sweeps_never_raise_the_cost_and_never_cost_more_than_the_nearest_words(seed):
    prior = random_prior(seed + 20)
    rng = np.random.default_rng(seed)
    nearest_map = rng.integers(0, 64, (5, 6))
    prev = rng.integers(0, 64, (5, 6)) if seed else None
    d = distances_near(nearest_map, 64, seed)
    lam = 0.002
    costs = [total_cost(d, index_rdo.rd_index_map(d, prev, prior, lam, passes=p), prev, prior, lam) for p in range(4)]
    assert costs[0] == pytest.approx(total_cost(d, nearest_map, prev, prior, lam))
    assert all(b <= a + 1e-9 for a, b in zip(costs, costs[1:])), costs
    assert costs[1] < costs[0]  # the first sweep finds something on these maps


def test_converged_map_is_a_local_optimum_of_the_whole_cost():
    """No single word changed anywhere lowers distortion + lambda x ideal bits of the map (brute force
    over every position and word): the sweeps weigh exactly the terms a word takes part in."""
    prior = random_prior(7, k=16)
    rng = np.random.default_rng(7)
    prev = rng.integers(0, 16, (3, 4))
    d = distances_near(rng.integers(0, 16, (3, 4)), 16, 7)
    lam = 0.003
    out = index_rdo.rd_index_map(d, prev, prior, lam, passes=index_rdo.MAX_PASSES)
    best = total_cost(d, out, prev, prior, lam)
    for r in range(3):
        for c in range(4):
            for k in range(16):
                trial = out.copy()
                trial[r, c] = k
                assert total_cost(d, trial, prev, prior, lam) >= best - 1e-9, (r, c, k)


def test_on_real_maps_bits_fall_as_lambda_rises_and_maps_round_trip():
    """The demo prior with maps of the bundled clips, a third of their words replaced by random ones (as a
    post-encoder output between codewords would land), distances built around them: a larger lambda
    spends fewer bits and moves further from the nearest words; every map decodes as chosen."""
    prior = demo_prior()
    rng = np.random.default_rng(0)
    maps = [np.where(rng.uniform(size=m.shape) < 0.3, rng.integers(0, prior.codebook_size, m.shape), m)
            for m in real_maps()[0]]  # bikes' three keyframe maps
    bits, moved = [], []
    for lam in (0.0, 0.005, 0.02):
        chosen = []
        for i, m in enumerate(maps):
            d = distances_near(m, prior.codebook_size, i, spread=0.03)
            chosen.append(index_rdo.rd_index_map(d, chosen[-1] if chosen else None, prior, lam))
        data = ent.encode_index_maps(chosen, learned(prior))
        decoded = ent.decode_index_maps(data, len(chosen), chosen[0].shape, learned(prior))
        for a, b in zip(decoded, chosen):
            np.testing.assert_array_equal(a, b)
        bits.append(8 * len(data))
        moved.append(np.mean([np.mean(c != m) for c, m in zip(chosen, maps)]))
    assert moved[0] == 0
    assert bits[0] > bits[1] > bits[2], bits
    assert moved[1] < moved[2]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 2e6])
def test_lambda_is_validated_where_it_is_read(bad):
    with pytest.raises(ConfigError, match="rd_lambda"):
        index_rdo.rd_index_map(np.zeros((2, 2, 64)), None, random_prior(0), bad)


def test_shapes_are_checked():
    with pytest.raises(ConfigError, match="distances must be"):
        index_rdo.rd_index_map(np.zeros((2, 2, 63)), None, random_prior(0), 0.01)
    with pytest.raises(ConfigError, match="previous"):
        index_rdo.rd_index_map(np.zeros((2, 2, 64)), np.zeros((3, 2), np.int64), random_prior(0), 0.01)


def test_keyframe_distances_argmin_is_the_encoders_map():
    from m3cvc_jax.pipelines import api
    from m3cvc_jax.pipelines.codec import Codec

    codec = Codec.load("tiny")
    frame = np.random.default_rng(0).uniform(-1, 1, (codec.config.video.height, codec.config.video.width, 3))
    d = np.asarray(api.keyframe_distances(codec.params, frame))
    np.testing.assert_array_equal(np.argmin(d, axis=-1), np.asarray(api.encode_keyframe(codec.params, frame)))
    assert d.shape[-1] == codec.spec.codebook_size and d.min() >= -1e-5


def test_codec_without_a_prior_refuses_a_positive_lambda_in_one_line():
    from m3cvc_jax.pipelines.codec import Codec, read_input
    from tests.pipeline_fixtures import CLIP

    codec = Codec.load("tiny", overrides=["coding.rd_lambda=0.01", "video.max_frames=2", "dialogue.describer=none"])
    with pytest.raises(ConfigError, match="rd_lambda > 0 .* learned index prior"):
        codec.encode(read_input(CLIP, codec.config))


def test_demo_codec_writes_the_rd_maps_and_they_cost_less():
    """The demo (rd_lambda 0.02): the stream holds exactly `rd_index_map`'s maps of the encoder's
    distances, each given the previous one, and its index payload is smaller than the nearest words'."""
    from m3cvc_jax.codec import bitstream as bs
    from m3cvc_jax.pipelines import codec as pipeline
    from tests.pipeline_fixtures import CLIP

    codec = pipeline.Codec.load("demo", overrides=["video.max_frames=16"])
    lam = float(codec.config.coding.rd_lambda)
    assert lam > 0
    video = pipeline.read_input(CLIP, codec.config)
    cache: dict = {}
    stream, _ = codec.encode(video, cache=cache)
    h = stream.header
    written = pipeline.decode_maps(stream.index_data, len(h.keyframes), h.index_grid,
                                   codec.index_model(h.entropy_model))
    prior = codec.index_model("learned").prior
    fp = codec.models.fingerprint()
    expected = []
    for k in h.keyframes:
        expected.append(index_rdo.rd_index_map(cache["distances", fp, k], expected[-1] if expected else None,
                                               prior, lam))
    for a, b in zip(written, expected):
        np.testing.assert_array_equal(a, b)
    nearest = codec.with_config(pipeline.settings_lib.load_config("demo", ["video.max_frames=16",
                                                                           "coding.rd_lambda=0"]))
    plain, _ = nearest.encode(video)
    assert len(bs.pack(stream, bs.WRITE_VERSION)) < len(bs.pack(plain, bs.WRITE_VERSION))
    assert any(np.any(a != np.argmin(cache["distances", fp, k], -1)) for a, k in zip(written, h.keyframes))
