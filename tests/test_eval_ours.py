"""Codec "ours" in `m3cvc eval`: real bitstreams from the tiny preset next to x264, and one Table I row."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image

from m3cvc_jax.errors import ConfigError
from m3cvc_jax.eval import ours as eval_codec
from m3cvc_jax.eval import runner
from m3cvc_jax.io import bitstream_file as bsf
from m3cvc_jax.pipelines.settings import load_config
from tests.pipeline_fixtures import CLIP, run_cli

W, H, T = 128, 80, 5
ROW = "kf_fixed_interval"
TABLE1 = os.path.join(os.path.dirname(__file__), "..", "configs", "ablations", "table1.py")


def _table1_row(name):
    spec = importlib.util.spec_from_file_location("_table1", TABLE1)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.ROWS)[name]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One `m3cvc eval` of 5 frames: ours at one rate point, x264 at one QP, one ablation row of Table I."""
    tmp = tmp_path_factory.mktemp("eval_ours")
    ablation = tmp / "one_row.py"
    overrides = ", ".join(repr(o) for o in _table1_row(ROW))  # the real row, so a renamed key fails here
    ablation.write_text("import ml_collections\n\ndef get_config():\n    c = ml_collections.ConfigDict()\n"
                        f"    c.rows = [ml_collections.ConfigDict({{'name': {ROW!r}, 'overrides': [{overrides}]}})]\n"
                        "    return c\n")
    out = tmp / "out"
    code, stdout, err = run_cli([
        "eval", CLIP, "--codecs", "ours,x264", "--out", str(out), "--width", str(W), "--height", str(H),
        "--max-frames", str(T), "--preset", "tiny", "--rate-points", "ours=g16-t0.05", "--rate-points", "x264=51",
        "--rate-points", f"ours[{ROW}]=g16-i2", "--ablation", str(ablation)])
    assert code == 0, err
    rows = {r["codec"]: r for r in runner.read_results(str(out / "results.csv"))}
    return out, rows, err


def test_ours_rows_carry_real_bitstream_sizes(run):
    out, rows, _ = run
    assert set(rows) == {"ours", "x264", f"ours[{ROW}]"}
    for codec, rp in (("ours", "g16-t0.05"), (f"ours[{ROW}]", "g16-i2")):
        r = rows[codec]
        assert r["rate_point"] == rp
        path = out / "streams" / "bikes_4s" / codec / f"{rp}.m3cvc"
        size = os.path.getsize(path)
        assert r["bytes"] == size
        assert r["bpp"] == pytest.approx(size * 8 / (W * H * T), rel=1e-5)
        header = bsf.read_bitstream(str(path)).header
        assert (header.width, header.height, header.num_frames, header.preset) == (W, H, T, "tiny")
        assert tuple(header.index_grid) == (H // 16, W // 16)  # the rate point's grid
        assert (r["width"], r["height"], r["frames"]) == (W, H, T)
        assert np.isfinite(r["psnr"]) and r["psnr"] > 0
        # the runner refuses decodes of the wrong shape; the saved middle frame is the decoded one
        assert Image.open(out / "frames" / "bikes_4s" / f"{codec}_{rp}.png").size == (W, H)
    assert rows["x264"]["bytes"] > 0


def test_ablation_row_settings_reach_the_stream(run):
    out, _, _ = run
    fixed = bsf.read_bitstream(str(out / "streams" / "bikes_4s" / f"ours[{ROW}]" / "g16-i2.m3cvc")).header
    assert fixed.keyframe_method == "fixed" and list(fixed.keyframes) == [0, 2, 4]
    base = bsf.read_bitstream(str(out / "streams" / "bikes_4s" / "ours" / "g16-t0.05.m3cvc")).header
    assert base.keyframe_method == "m3cvc"
    summary = (out / "summary.md").read_text()
    assert "ours" in summary and f"ours[{ROW}]" in summary


def test_progress_follows_the_pipeline_stages(run):
    # The pipeline's own stages reach the eval bar's label (frames for SEINE), not only "encode"/"decode".
    _, _, err = run
    for stage in ("encode: keyframe selection 0/5", "encode: describe keyframes", "encode: encode keyframes",
                  "decode: text encoding", "decode: decode keyframes", "decode: SEINE frames (interpolation) 5/5",
                  "metrics on 5 frames"):
        assert f"bikes_4s ours@g16-t0.05: {stage}" in err, stage


def test_rate_point_names():
    assert eval_codec.rate_point_overrides("g8-t0.125") == ["keyframe_codec.pixels_per_index=8",
                                                            "keyframes.threshold=0.125"]
    assert eval_codec.rate_point_overrides("i4") == ["keyframes.interval=4"]
    # a mode is a knob: CMVC IT2V at CMVC's keyframes (the mode's method, unless the user set one)
    assert eval_codec.rate_point_overrides("it2v-i8") == ["keyframes.interval=8", "decode.mode=it2v"]
    assert load_config("tiny", eval_codec.rate_point_overrides("it2v-i8")).keyframes.method == "cmvc"
    for bad in ("", "q30", "g16-g8", "gx", "t0.1-", 30, "it2v-prediction", "it2v-"):
        with pytest.raises(ConfigError):
            eval_codec.rate_point_overrides(bad)


def test_default_ladder_and_checks():
    tiny = eval_codec.M3CVCCodec(preset="tiny")
    d = load_config("tiny").keyframes.threshold
    assert tiny.rate_points == tuple(f"g{g}-t{t:g}" for g in (16, 8) for t in (2 * d, d, d / 2))
    assert eval_codec.default_rate_points(load_config("paper"), random_weights=False) == (
        "g16-t0.5", "g16-t0.25", "g16-t0.125")
    # Fixed keyframes (the demo preset) have no threshold: the interval sets the rate.
    assert eval_codec.default_rate_points(load_config("demo"), random_weights=False) == ("g8-i15", "g8-i8", "g8-i4")
    assert eval_codec.M3CVCCodec(preset="tiny", rate_points=["g8-t0.1"]).rate_points == ("g8-t0.1",)
    with pytest.raises(ConfigError, match="--width"):
        eval_codec.M3CVCCodec(preset="tiny", overrides=["video.width=64"])
    with pytest.raises(ConfigError, match="unknown setting"):
        eval_codec.M3CVCCodec(preset="tiny", overrides=["keyframes.treshold=0.1"])
    with pytest.raises(ConfigError, match="must be positive"):  # a bad rate point fails before any encode
        eval_codec.M3CVCCodec(preset="tiny", rate_points=["g0"])
    cfg = tiny.config("g8-t0.3", 96, 64, 8)
    assert (cfg.video.width, cfg.video.height, cfg.keyframe_codec.pixels_per_index, cfg.keyframes.threshold) == (
        96, 64, 8, 0.3)
