"""The learned index prior (`codec/index_prior.py`): round trips, code length vs ideal, integer determinism
across JAX settings and device counts, its tables in the weights, and its trainer's contract.

`tests/fixtures/demo_index_maps.npz`: the demo post-encoder's maps of frames 0, 15, 30 of the bundled
clips at 8 fps (the keyframes of the README's main job for bikes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from m3cvc_jax import weights
from m3cvc_jax.codec import entropy as ent
from m3cvc_jax.codec import index_prior as ip
from m3cvc_jax.codec.frequencies import quantize_frequencies
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.pipelines.models import DEMO_WEIGHTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPS = os.path.join(ROOT, "tests", "fixtures", "demo_index_maps.npz")
# The maps of the bundled clips under the two-clip demo weights, and a prior counted from them: a fixed
# pair, so these tests do not move when new demo weights are packed.
PRIOR = os.path.join(ROOT, "tests", "fixtures", "demo_index_prior.npz")  # tests/fixtures/make_demo_index_prior.py
PE = os.path.join(DEMO_WEIGHTS, "post-encoder")  # the shipped prior: its tables are fingerprinted


def demo_prior() -> ip.IndexPrior:
    with np.load(PRIOR) as f:
        return ip.IndexPrior.from_tables({k: f[k] for k in f.files})


def real_maps() -> list[np.ndarray]:
    d = np.load(MAPS)
    return [d[k].astype(np.int32) for k in ("bikes", "carphone")]


def random_prior(seed: int, k: int = 64) -> ip.IndexPrior:
    """Random costs spanning 0 to ~60 bits at a random scale (so rows mix near-zero and large weights)."""
    rng = np.random.default_rng(seed)
    scale = int(rng.integers(1, 65))
    return ip.IndexPrior(rng.integers(0, 20 * scale, k), rng.integers(0, 20 * scale, (3, k + 1, k)), scale)


def learned(prior: ip.IndexPrior) -> ent.IndexModel:
    return ent.IndexModel("learned", prior.codebook_size, prior=prior)


def _round_trip(m, prev, prior):
    data = ent.encode_indices(m, learned(prior), prev)
    np.testing.assert_array_equal(ent.decode_indices(data, m.shape, learned(prior), prev), m)
    ideal = ip.ideal_bits(m, prev, prior)
    assert ideal <= 8 * len(data) <= 1.01 * ideal + 64, (8 * len(data), ideal)
    return data


@pytest.mark.parametrize("seed", range(4))
def test_random_maps_round_trip(seed):
    rng = np.random.default_rng(seed)
    prior = random_prior(seed)
    shape = tuple(int(x) for x in rng.integers(1, 12, 2))
    m = rng.integers(0, 64, shape)
    prev = rng.integers(0, 64, shape)
    _round_trip(m, None, prior)
    _round_trip(m, prev, prior)
    _round_trip(m, m, prior)  # a map equal to its predecessor


def test_real_maps_round_trip_and_code_near_ideal():
    prior = demo_prior()
    for maps in real_maps():
        for i, m in enumerate(maps):
            _round_trip(m, maps[i - 1] if i else None, prior)


def test_learned_beats_uniform_on_real_maps_and_previous_map_helps():
    """The fixture prior (trained on these clips) codes their keyframes below 8 bits per index; the
    carphone clip's fixed camera makes the previous keyframe's map informative."""
    prior = demo_prior()
    bikes, carphone = real_maps()
    bits = sum(ip.ideal_bits(m, maps[i - 1] if i else None, prior)
               for maps in (bikes, carphone) for i, m in enumerate(maps))
    assert bits / sum(m.size for m in (*bikes, *carphone)) < 7.0
    with_prev = ip.ideal_bits(carphone[1], carphone[0], prior)
    without = ip.ideal_bits(carphone[1], None, prior)
    assert with_prev < without


def test_decoder_positions_match_the_vectorised_rows():
    """The decoder's one-position rows (its own left / up / previous words) equal the encoder's and the
    trainer's vectorised rows, and a row depends on each of the three words."""
    prior = demo_prior()
    m, prev = real_maps()[1][1], real_maps()[1][0]
    (x, rows), = ip.frequency_rows(m, prev, prior)
    np.testing.assert_array_equal(x, m.ravel())
    h, w = m.shape
    for r in range(h):
        for col in range(w):
            one = ip.raw_frequencies(prior, m[r, col - 1] if col else -1, m[r - 1, col] if r else -1, prev[r, col])
            np.testing.assert_array_equal(quantize_frequencies(one), rows[r * w + col])
    base = ip.raw_frequencies(prior, 3, 4, 5)
    for args in ((7, 4, 5), (3, 7, 5), (3, 4, 7), (-1, 4, 5), (3, -1, 5), (3, 4, -1)):
        assert not np.array_equal(ip.raw_frequencies(prior, *args), base), args


def test_exp2_table_is_the_exact_integer_power():
    """`EXP2[r] = floor(2**30 * 2**(-r/S))` exactly (checked with Python integers), and close to the float."""
    for scale in (1, 7, 32, 256):
        table = ip.exp2_table(scale)
        assert table[0] == 1 << 30 and np.all(np.diff(table) < 0)
        for r, y in enumerate(table.tolist()):
            assert y ** scale <= 1 << (30 * scale - r) < (y + 1) ** scale
            assert abs(y - 2.0 ** (30 - r / scale)) <= 1


def test_entropy_model_dispatch_and_previous_map():
    prior = demo_prior()
    model = ent.IndexModel("learned", 256, prior=prior)
    bikes = real_maps()[0]
    data = ent.encode_indices(bikes[1], model, bikes[0])
    np.testing.assert_array_equal(ent.decode_indices(data, bikes[1].shape, model, bikes[0]), bikes[1])
    # Decoding with another previous map gives other indices (or an error): the context is real.
    try:
        other = ent.decode_indices(data, bikes[1].shape, model, bikes[2])
        assert not np.array_equal(other, bikes[1])
    except BitstreamError:
        pass
    with pytest.raises(ConfigError):
        ent.IndexModel("learned", 256)


def test_corrupt_data_raises_bitstream_error():
    prior = demo_prior()
    m = real_maps()[0][0]
    data = bytearray(ent.encode_indices(m, learned(prior), None))
    rng = np.random.default_rng(0)
    for _ in range(30):
        bad = bytearray(data)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            out = ent.decode_indices(bytes(bad), m.shape, learned(prior), None)
            assert out.min() >= 0 and out.max() < 256
        except BitstreamError:
            pass
    with pytest.raises(BitstreamError):
        ent.decode_indices(bytes(data[:-1]), m.shape, learned(prior), None)


def test_tables_round_trip_and_are_fingerprinted():
    meta, params = weights.load_checkpoint(PE)
    prior = ip.IndexPrior.from_tables(meta["tables"])
    assert ip.IndexPrior.from_tables(prior.tables()).tables() == prior.tables()
    assert meta["fingerprint"] == weights.fingerprint(params, meta["tables"])
    changed = dict(meta["tables"], prior_params=[prior.scale + 1])
    assert weights.fingerprint(params, changed) != meta["fingerprint"]
    with pytest.raises(ConfigError, match="train.index_prior"):
        ip.IndexPrior.from_tables({"histogram": [1, 2]})


_PROBE = """
import hashlib, json, sys
import jax
import numpy as np
from tests.test_index_prior import demo_prior, learned, real_maps
from m3cvc_jax.codec import entropy as ent
from m3cvc_jax.codec import index_prior as ip
prior = demo_prior()
h = hashlib.sha256()
for maps in real_maps():
    for i, m in enumerate(maps):
        h.update(ip.frequency_digest(m, maps[i - 1] if i else None, prior).encode())
    data = ent.encode_index_maps(maps, learned(prior))  # one coder for a clip's maps, as the codec does
    back = ent.decode_index_maps(data, len(maps), maps[0].shape, learned(prior))
    assert all(np.array_equal(a, b) for a, b in zip(back, maps))
    h.update(data)
print(json.dumps({"devices": jax.device_count(), "x64": bool(jax.config.jax_enable_x64),
                  "jit_disabled": bool(jax.config.jax_disable_jit), "digest": h.hexdigest()}))
"""


def _probe(devices: int, x64: bool, disable_jit: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", JAX_ENABLE_X64=str(int(x64)),
               JAX_DISABLE_JIT=str(int(disable_jit)),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_frequencies_and_bytes_identical_across_jax_settings_and_device_counts():
    runs = [_probe(1, False, False), _probe(8, True, True)]
    assert [(r["devices"], r["x64"], r["jit_disabled"]) for r in runs] == [(1, False, False), (8, True, True)]
    assert runs[0]["digest"] == runs[1]["digest"] == GOLDEN_DIGEST


# SHA-256 over every frequency the coder sees for the fixture maps under the fixture prior and the
# coded bytes: a change to the model's arithmetic or to the fixture tables changes it.
GOLDEN_DIGEST = "d6b0d67d45a378a82479e2d9d8eb93a795849dbb677f7e015cc74752260a0e63"


def test_tiny_trainer_contract(tmp_path):
    """metrics.jsonl with step + loss; num_steps 0 makes one pass that counts every map once; an export whose
    tables load; resuming to more steps counts one batch more (a second pass begins)."""
    from configs.index_prior import get_config
    from train import index_prior as trainer

    config = get_config("tiny")
    config.progress = False
    config.max_frames, config.gap, config.weight_grid = 8, 4, (0.0, 1.0)  # fewer maps: a faster test
    config.num_steps, config.batch_size = 0, 3  # one pass: batches of 3, 3 and 2 maps
    prior, rows = trainer.train(config, str(tmp_path))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in logged)
    size = rows[-1]["counted_positions"] // 8
    assert rows[-1]["training_maps"] == 8 and size > 0 and rows[-1]["counted_positions"] == 8 * size
    meta = weights.read_config(str(tmp_path / "export"))
    assert ip.IndexPrior.from_tables(meta["tables"]).tables() == prior.tables()
    config.num_steps = 4
    _, rows = trainer.train(config, str(tmp_path))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert rows[-1]["counted_positions"] == 11 * size


def test_trainer_walks_clips_recursively_and_holds_out_whole_sources(tmp_path):
    from train import index_prior as trainer

    for name in ("real/a.mp4", "camera/pkg/photo_0.y4m", "camera/pkg/photo_1.y4m", "camera/pkg/other_0.y4m",
                 "camera/x/notes.txt", "skip.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    clips = trainer.video_files(str(tmp_path), {"skip.mp4"})
    assert clips == ["camera/pkg/other_0.y4m", "camera/pkg/photo_0.y4m", "camera/pkg/photo_1.y4m", "real/a.mp4"]
    assert [trainer.source_of(c) for c in clips] == ["camera/pkg/other", "camera/pkg/photo", "camera/pkg/photo",
                                                     "real/a"]
    maps = np.zeros((2, 2, 3), np.int32)
    config = type("C", (), {"validation_every": 2, "gap": 1})()
    pairs, _ = trainer.validation_pairs([(c, maps) for c in clips], config)
    assert len(pairs) == 2 * 2  # sources 0 and 2 of 3 (other, real/a): 2 clips of 2 maps
    config.validation_every = 1
    with pytest.raises(ConfigError, match="no training source"):
        trainer.validation_pairs([(c, maps) for c in clips], config)


def test_build_prior_codes_at_the_float_model_length():
    """The rounded integer tables cost what the float product of experts they come from costs (within
    0.5%), and weights of zero reduce the model to the word histogram."""
    from train.index_prior import build_prior, count

    bikes, carphone = real_maps()
    pairs = [(m[i], m[i - 1] if i else None) for m in (bikes, carphone) for i in range(len(m))]
    counts, words = count(pairs, 256)
    assert words.sum() == counts[0].sum() == sum(m.size for m, _ in pairs)
    w, alpha = np.array([0.7, 0.6, 0.6]), 16.0
    prior = build_prior(counts, words, w, alpha, 32)
    p0 = (words + 1) / (words.sum() + 256)
    logp = (1 - w.sum()) * np.log2(p0)
    float_bits = 0.0
    for m, prev in pairs:
        for row, x in zip(np.stack([c.ravel() for c in ip.context_words(m, prev)], 1), m.ravel()):
            s = logp + sum(w[i] * np.log2((counts[i, n] + alpha * p0) / (counts[i, n].sum() + alpha))
                           for i, n in enumerate(np.where(row < 0, 256, row)))
            float_bits += np.log2(np.sum(2.0 ** (s - s.max()))) - (s[x] - s.max())
    integer_bits = sum(ip.ideal_bits(m, prev, prior) for m, prev in pairs)
    assert abs(integer_bits / float_bits - 1) < 0.005, (integer_bits, float_bits)
    flat = build_prior(counts, words, (0.0, 0.0, 0.0), alpha, 32)
    assert not flat.context.any()
    assert abs(ip.ideal_bits(bikes[0], None, flat) + np.log2(p0[bikes[0]]).sum()) < 0.01 * bikes[0].size


def test_auto_keeps_the_shortest_coding_so_a_poor_prior_costs_nothing():
    """`coding.entropy_model=auto` (the demo default): the prior trained on these maps wins on them; a prior that
    does not fit them (random tables) loses to a model without training."""
    from m3cvc_jax.pipelines.codec import smallest_coding

    maps = real_maps()[0]
    plain = [ent.IndexModel("uniform", 256), ent.IndexModel("adaptive", 256)]
    payload, chosen = smallest_coding(maps, [*plain, learned(demo_prior())])
    assert chosen.kind == "learned"
    assert len(payload[0]) == min(len(ent.encode_index_maps(maps, m)) for m in [*plain, learned(demo_prior())])
    poor = random_prior(1, k=256)
    assert len(ent.encode_index_maps(maps, learned(poor))) > len(ent.encode_index_maps(maps, plain[0]))
    assert smallest_coding(maps, [*plain, learned(poor)])[1].kind != "learned"
