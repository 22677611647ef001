"""Rate control (`pipelines/rate_control.py`, `codec/rate_target.py`): the search lands at or under the target
on the bundled clip with the tiny and demo presets and takes the largest stream that fits; an unreachable
target is one line naming the smallest size; targets parse (CLI, eval rate points) and travel in the stream."""

from __future__ import annotations

import json

import pytest

from m3cvc_jax.codec import bitstream as bs
from m3cvc_jax.codec import rate_target
from m3cvc_jax.errors import ConfigError, M3CVCError
from m3cvc_jax.eval import ours
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.pipelines import rate_control
from m3cvc_jax.pipelines.codec import Codec, read_input
from tests.pipeline_fixtures import CLIP, run_cli, workdir  # noqa: F401  (workdir: a private XLA cache)

# Small but real: the tiny preset without the (slow) random describer, 9 frames; the demo preset, 16 frames.
TINY = ["video.max_frames=9", "dialogue.describer=none", "keyframes.method=fixed", "keyframes.interval=4"]
PRESETS = {"tiny": TINY, "demo": ["video.max_frames=16"]}
BIG = rate_target.bytes_target(10**6)


def sizes_under(target, sizes) -> list[int]:
    """The candidates' sizes with `target`'s section instead of BIG's (the section counts in the size)."""
    delta = len(target.section().payload) - len(BIG.section().payload)
    return [s + delta for s in sizes.values()]


@pytest.fixture(scope="module", params=list(PRESETS))
def searched(request, workdir):  # noqa: F811
    """(codec, video, the size of every candidate) from a search with a target no stream exceeds."""
    codec = Codec.load(request.param, overrides=PRESETS[request.param])
    video = read_input(CLIP, codec.config)
    choice = rate_control.search(codec, video, BIG)
    assert choice.size == max(choice.sizes.values())
    return codec, video, choice.sizes


def test_search_lands_at_or_under_the_target_with_the_largest_stream_that_fits(searched):
    codec, video, sizes = searched
    distinct = sorted(set(sizes.values()))
    assert len(distinct) >= 3, sizes  # the knobs do move the rate
    t, h, w, _ = video.frames.shape
    middle = distinct[len(distinct) // 2]
    for target in (rate_target.bytes_target(middle - 1),
                   rate_target.bpp_target(8 * (middle + 1) / (w * h * t))):  # bpp: a bit over `middle`
        choice = rate_control.search(codec, video, target)
        fits = [s for s in sizes_under(target, sizes) if s <= target.max_bytes(w, h, t)]
        assert choice.size <= target.max_bytes(w, h, t) and choice.size == max(fits)
        data = bs.pack(choice.stream, bs.WRITE_VERSION)
        assert len(data) == choice.size
        if target.kind == "bpp":
            assert 8 * len(data) / (w * h * t) <= target.value / 1e6
        assert rate_target.from_stream(bs.unpack(data)) == target  # the target travels in the stream


def test_unreachable_target_names_the_smallest_size(searched):
    codec, video, sizes = searched
    smallest = min(sizes_under(rate_target.bytes_target(min(sizes.values())), sizes))
    below = rate_target.bytes_target(smallest - 1)
    with pytest.raises(M3CVCError, match=f"unreachable: the smallest stream is {min(sizes_under(below, sizes))} "
                                         f"bytes") as e:
        rate_control.search(codec, video, below)
    assert "\n" not in str(e.value)
    assert rate_control.search(codec, video, rate_target.bytes_target(smallest)).size == smallest


def test_cli_target_bytes_reports_target_and_achieved_and_inspect_shows_both(tmp_path, workdir):  # noqa: F811
    out_path = str(tmp_path / "t.m3cvc")
    args = ["encode", CLIP, "-o", out_path, "--preset", "tiny", *sum([["--set", o] for o in TINY], [])]
    code, out, err = run_cli([*args, "--target-bytes", "150"])
    assert code == 0, err
    size = len(open(out_path, "rb").read())
    assert size <= 150 and f"target bytes:150 (<= 150 bytes here), achieved {size} bytes" in out
    code, out, _ = run_cli(["inspect", out_path, "--json"])
    info = json.loads(out)["rate_target"]
    assert info["target"] == "bytes:150" and info["target_bytes"] == 150 and info["achieved_bytes"] == size
    code, out, _ = run_cli(["inspect", out_path])
    assert f"rate target    bytes:150 (<= 150 bytes), achieved {size} bytes" in out
    code, _, err = run_cli([*args, "--target-bytes", "20"])
    assert code == 2 and err.startswith("m3cvc: error: target bytes:20") and "smallest stream is" in err
    assert err.count("\n") == 1 and not (tmp_path / "u.m3cvc").exists()


@pytest.mark.parametrize("text, kind, value, label", [("bpp:0.01", "bpp", 10_000, "bpp:0.01"),
                                                      ("bytes:400", "bytes", 400, "bytes:400"),
                                                      (" bpp:1e-3 ", "bpp", 1000, "bpp:0.001")])
def test_rate_targets_parse(text, kind, value, label):
    t = rate_target.parse(text)
    assert (t.kind, t.value, t.label) == (kind, value, label) and rate_target.parse(t.label) == t
    assert ours.rate_point_target(text) == t and ours.rate_point_overrides(text) == []


@pytest.mark.parametrize("text", ["bpp:x", "kbps:3", "bpp:-1", "bpp:nan", "bytes:0", "bytes:1.5", "bpp:", "bpp:99"])
def test_bad_rate_targets_are_config_errors(text):
    with pytest.raises(ConfigError):
        rate_target.parse(text)


def test_eval_accepts_rate_targets_as_rate_points():
    codec = ours.M3CVCCodec(preset="tiny", rate_points=["bpp:0.01", "bytes:300", "g8-t0.1"])
    assert codec.rate_points == ("bpp:0.01", "bytes:300", "g8-t0.1")
    assert ours.rate_point_target("g8-t0.1") is None
    with pytest.raises(ConfigError, match="bpp:abc"):
        ours.M3CVCCodec(preset="tiny", rate_points=["bpp:abc"])


def test_rd_weight_is_a_knob_only_where_the_config_weighs_bits(searched):
    """demo (rd_lambda > 0): each keyframe setting is tried at the RD weight x1, x2, x4, and x4 never gives a
    larger stream than x1 (x2 may land either side of them by a few bytes: each weight finds its own local
    optimum); tiny (lambda 0, no prior): the weight is not searched."""
    codec, _, sizes = searched
    lam = float(codec.config.coding.rd_lambda)
    weighted = [o for o in sizes if any(x.startswith("coding.rd_lambda=") for x in o)]
    if not lam:
        assert not weighted
        return
    assert weighted
    by_rest: dict = {}
    for overrides, size in sizes.items():
        rest = tuple(x for x in overrides if not x.startswith("coding.rd_lambda="))
        factor = next((float(x.partition("=")[2]) / lam for x in overrides if x.startswith("coding.rd_lambda=")), 1.0)
        by_rest.setdefault(rest, {})[round(factor)] = size
    for rest, row in by_rest.items():
        assert sorted(row) == [1, 2, 4], rest
        assert row[1] >= row[4], (rest, row)
    assert any(row[1] > row[4] for row in by_rest.values())
