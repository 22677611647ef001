"""The learned index prior (`codec/index_prior.py`): round trips, code length vs ideal, integer determinism
across JAX settings and device counts, its tables in the weights, and its trainer's contract.

`tests/fixtures/demo_index_maps.npz`: the demo post-encoder's maps of frames 0, 15, 30 of the bundled
clips at 8 fps (the keyframes of the README's main job for bikes).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from m3cvc_jax import weights
from m3cvc_jax.codec import entropy as ent
from m3cvc_jax.codec import index_prior as ip
from m3cvc_jax.errors import BitstreamError, ConfigError
from m3cvc_jax.pipelines.models import DEMO_WEIGHTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAPS = os.path.join(ROOT, "tests", "fixtures", "demo_index_maps.npz")
# The maps of the bundled clips under the two-clip demo weights, and the prior those weights shipped,
# trained on them: a fixed pair, so these tests do not move when new demo weights are packed.
PRIOR = os.path.join(ROOT, "tests", "fixtures", "demo_index_prior.json")
PE = os.path.join(DEMO_WEIGHTS, "post-encoder")  # the shipped prior: its tables are fingerprinted


def demo_prior() -> ip.IndexPrior:
    with open(PRIOR) as f:
        return ip.IndexPrior.from_tables(json.load(f)["tables"])


def real_maps() -> list[np.ndarray]:
    d = np.load(MAPS)
    return [d[k].astype(np.int32) for k in ("bikes", "carphone")]


def random_prior(seed: int, k: int = 64, c: int = 6) -> ip.IndexPrior:
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, c, k)
    clusters[:c] = np.arange(c)  # every cluster used; some hold one word
    clusters[c:2 * c] = np.arange(c)
    return ip.IndexPrior(clusters, rng.integers(0, 30, ((c + 1) ** 3, c)), rng.integers(0, 100, k),
                         int(rng.integers(1, 9)), tuple(int(b) for b in rng.integers(0, 17, 3)))


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


def test_positions_use_the_vectorised_contexts_of_training():
    """`_position` (coding, one at a time) and `context_ids` (training, vectorised) agree on the context."""
    prior = demo_prior()
    m, prev = real_maps()[1][1], real_maps()[1][0]
    ids = ip.context_ids(m, prev, prior.clusters, prior.num_clusters)
    c = prior.num_clusters
    for r in range(m.shape[0]):
        for col in range(m.shape[1]):
            left, up, p = ip.context_words(m, prev, r, col)
            cl = [c if w < 0 else int(prior.clusters[w]) for w in (left, up, p)]
            assert ids[r, col] == cl[0] + (c + 1) * cl[1] + (c + 1) ** 2 * cl[2]


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
    changed = dict(meta["tables"], prior_params=[prior.num_clusters, prior.alpha + 1, *prior.boosts])
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
GOLDEN_DIGEST = "d785f50975557cf5a54ce21f0a9f2e8eded6ae270aaa17389e09219c1ed59c8e"


def test_tiny_trainer_contract(tmp_path):
    """metrics.jsonl with step + loss, an export whose tables load, and resuming to more steps."""
    from configs.index_prior import get_config
    from train import index_prior as trainer

    config = get_config("tiny")
    config.progress = False
    config.max_frames, config.gap, config.boost_grid = 8, 4, (0, 4)  # fewer maps: a faster test
    config.num_steps = 2
    prior, rows = trainer.train(config, str(tmp_path))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in logged] == [1, 2] and all(np.isfinite(r["loss"]) for r in logged)
    meta = weights.read_config(str(tmp_path / "export"))
    assert ip.IndexPrior.from_tables(meta["tables"]).tables() == prior.tables()
    config.num_steps = 3
    prior3, _ = trainer.train(config, str(tmp_path))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert prior3.cluster_counts.sum() > prior.cluster_counts.sum()  # the resumed run counted one batch more


def test_auto_keeps_the_shortest_coding_so_a_poor_prior_costs_nothing():
    """`coding.entropy_model=auto` (the demo default): the prior trained on these maps wins on them; a prior that
    does not fit them (random tables) loses to a model without training."""
    from m3cvc_jax.pipelines.codec import smallest_coding

    maps = real_maps()[0]
    plain = [ent.IndexModel("uniform", 256), ent.IndexModel("adaptive", 256)]
    payload, chosen = smallest_coding(maps, [*plain, learned(demo_prior())])
    assert chosen.kind == "learned"
    assert len(payload[0]) == min(len(ent.encode_index_maps(maps, m)) for m in [*plain, learned(demo_prior())])
    poor = random_prior(1, k=256, c=8)
    assert len(ent.encode_index_maps(maps, learned(poor))) > len(ent.encode_index_maps(maps, plain[0]))
    assert smallest_coding(maps, [*plain, learned(poor)])[1].kind != "learned"
