"""`m3cvc eval` end to end on tiny clips with a real anchor and a stand-in for "ours"; datasets; ablations."""

import csv
import os
import zlib
from fractions import Fraction

import numpy as np
import pytest

from m3cvc_jax.cli import main as cli_main
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.eval import ablations, codecs, datasets
from m3cvc_jax.eval.anchors import ffmpeg_exe
from m3cvc_jax.io.video import PreprocessConfig, Video, preprocess, write_mp4


class ToyCodec:
    """Stands in for "ours": quantise pixels by the rate point, zlib the bytes, a real file either way."""

    name = "toy"
    rate_points = (64, 16, 4)

    def __init__(self, log):
        self.log = log

    def encode(self, frames, fps, rate_point, workdir):
        os.makedirs(workdir, exist_ok=True)
        q = (frames // rate_point).astype(np.uint8)
        path = os.path.join(workdir, f"toy_{rate_point}.bin")
        header = np.asarray(frames.shape + (rate_point,), np.uint32).tobytes()
        with open(path, "wb") as f:
            f.write(header + zlib.compress(q.tobytes(), 9))
        self.log.append(("encode", rate_point))
        return path

    def decode(self, path):
        with open(path, "rb") as f:
            data = f.read()
        t, h, w, c, step = np.frombuffer(data[:20], np.uint32)
        q = np.frombuffer(zlib.decompress(data[20:]), np.uint8).reshape(t, h, w, c)
        return np.clip(q.astype(np.int32) * step + step // 2, 0, 255).astype(np.uint8)


def _clip(seed, t=12, h=180, w=190):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 6.28, size=3)
    frames = [np.stack([128 + 100 * np.sin(xx / (9 + 3 * c) + base[c] + 0.4 * i) * np.cos(yy / 13.0) for c in range(3)], -1)
              for i in range(t)]
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture
def toy_registered(monkeypatch):
    log = []
    monkeypatch.setitem(codecs.CODECS, "toy", lambda rate_points=None, **_: ToyCodec(log))
    return log


def _random_checkpoint(path, build, family, config, seed=0, std=0.1):
    """A converted-checkpoint folder with random weights (no torch, no download)."""
    from flax import nnx

    from m3cvc_jax.weights import flat_params, save_checkpoint

    shapes = {k: v.shape for k, v in flat_params(nnx.eval_shape(build)).items()}
    rng = np.random.default_rng(seed)
    # Norm scales near 1 and std 0.3 keep a random CLIP's embedding image-dependent (not one shared vector).
    params = {k: (rng.normal(0, std, s) + k.endswith("scale")).astype(np.float32) for k, s in shapes.items()}
    save_checkpoint(str(path), family=family, config=config, params=params)


@pytest.fixture
def metric_weights(tmp_path):
    import dataclasses

    from flax import nnx

    from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
    from m3cvc_jax.nn.lpips import LPIPS, LPIPSConfig

    _random_checkpoint(tmp_path / "lpips", lambda: LPIPS(LPIPSConfig("alex"), rngs=nnx.Rngs(0)), "lpips", {"net": "alex"})
    cfg = CLIPConfig.preset("tiny")
    _random_checkpoint(tmp_path / "clip", lambda: CLIPModel(cfg, rngs=nnx.Rngs(0)), "clip",
                       {"kind": "full", **dataclasses.asdict(cfg)}, seed=1, std=0.3)
    return tmp_path / "lpips", tmp_path / "clip"


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_eval_command_end_to_end(tmp_path, toy_registered, metric_weights, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        write_mp4(folder / f"clip{i}.mp4", Video(_clip(i), Fraction(16)))
    out = tmp_path / "out"
    argv = ["eval", str(folder), "--codecs", "x264,toy", "--out", str(out), "--width", "176", "--height", "168",
            "--fps", "8", "--max-frames", "4", "--rate-points", "x264=45,35,25", "--anchor", "x264", "--no-progress",
            "--lpips-weights", str(metric_weights[0]), "--clip-weights", str(metric_weights[1])]
    assert cli_main(argv) == 0
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 2 * (3 + 3)
    for r in rows:
        assert (int(r["width"]), int(r["height"]), int(r["frames"]), float(r["fps"])) == (176, 168, 4, 8.0)
        stream_dir = out / "streams" / r["sequence"] / r["codec"]
        stream = [p for p in stream_dir.iterdir() if p.name.split("_")[1].split(".")[0] == r["rate_point"]
                  and not p.name.endswith(".size")]
        assert len(stream) == 1
        nbytes = stream[0].stat().st_size
        assert int(r["bytes"]) == nbytes
        assert float(r["bpp"]) == pytest.approx(nbytes * 8 / (176 * 168 * 4), rel=1e-5)
        assert 10 < float(r["psnr"]) < 60 and 0 < float(r["ms_ssim"]) <= 1
    # Recompute one row's PSNR independently from the stored stream.
    r = next(r for r in rows if r["codec"] == "toy" and r["rate_point"] == "16" and r["sequence"] == "clip0")
    from m3cvc_jax.eval.datasets import list_sequences, load_sequence

    seq = [s for s in list_sequences(str(folder))[1] if s.name == "clip0"][0]
    gt = load_sequence(seq, PreprocessConfig(width=176, height=168, fps=8, max_frames=4)).frames
    dec = ToyCodec([]).decode(str(out / "streams" / "clip0" / "toy" / "toy_16.bin"))
    mse = ((gt.astype(np.float64) - dec) ** 2).mean(axis=(1, 2, 3))
    assert float(r["psnr"]) == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), abs=1e-3)
    # LPIPS and CLIP-sim columns come from the weights given on the command line.
    import jax.numpy as jnp

    from m3cvc_jax.eval.metrics import load_clip_model, load_lpips
    from m3cvc_jax.nn.clip import preprocess_images

    from flax import nnx

    lp = load_lpips(str(metric_weights[0]))
    want_lp = np.mean(np.asarray(nnx.jit(lambda m, a, b: m(a, b))(lp, jnp.asarray(gt) / 127.5 - 1, jnp.asarray(dec) / 127.5 - 1)))
    assert float(r["lpips"]) == pytest.approx(float(want_lp), rel=1e-4, abs=1e-6)
    clip = load_clip_model(str(metric_weights[1]))
    features = nnx.jit(lambda m, x: m.get_image_features(preprocess_images(x)))
    ea = np.asarray(features(clip, jnp.asarray(gt, jnp.float32)))
    eb = np.asarray(features(clip, jnp.asarray(dec, jnp.float32)))
    cos = (ea * eb).sum(-1) / np.linalg.norm(ea, axis=-1) / np.linalg.norm(eb, axis=-1)
    assert float(r["clip_sim"]) == pytest.approx(float(cos.mean()), abs=1e-4)
    assert float(r["clip_sim"]) < 0.9999
    # Quality rises and size grows with the rate for both codecs.
    for codec, order in (("x264", ["45", "35", "25"]), ("toy", ["64", "16", "4"])):
        pts = {x["rate_point"]: x for x in rows if x["codec"] == codec and x["sequence"] == "clip1"}
        bpps = [float(pts[k]["bpp"]) for k in order]
        assert bpps == sorted(bpps)
    summary = (out / "summary.md").read_text()
    assert "BD-rate (%) against **x264**" in summary and "| toy |" in summary
    bd = _read_csv(out / "bdrate.csv")
    assert {b["metric"] for b in bd} == {"psnr", "ms_ssim", "vmaf", "lpips", "clip_sim"}  # VMAF: on by default
    assert all(0 < float(r["vmaf"]) <= 100 for r in rows)
    for name in ("rd_psnr.png", "rd_ms_ssim.png", "rd_vmaf.png", "rd_lpips.png", "rd_clip_sim.png", "grid_clip0.png",
                 "report.html"):
        assert (out / name).stat().st_size > 1000, name
    assert "results" not in capsys.readouterr().err

    # A second run resumes: nothing is encoded again and the rows stay.
    toy_registered.clear()
    assert cli_main(argv) == 0
    assert toy_registered == [] and len(_read_csv(out / "results.csv")) == 12


def test_eval_command_user_errors(tmp_path, capsys):
    folder = tmp_path / "v"
    folder.mkdir()
    write_mp4(folder / "a.mp4", Video(_clip(0, t=2, h=32, w=32), Fraction(8)))
    assert cli_main(["eval", str(folder), "--codecs", "h263", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("m3cvc: error: unknown codec 'h263'")
    assert cli_main(["eval", str(folder), "--metrics", "lpips", "--out", str(tmp_path / "o")]) == 2
    assert "--lpips-weights" in capsys.readouterr().err
    assert cli_main(["eval", "hevc-b", "--out", str(tmp_path / "o"), "--data-root", str(tmp_path)]) == 2
    assert "HEVC_B" in capsys.readouterr().err


def test_raw_yuv_layout_and_conversion(tmp_path):
    import subprocess

    root = tmp_path / "root"
    (root / "HEVC_C").mkdir(parents=True)
    rgb = _clip(3, t=10, h=48, w=64)
    yuv = root / "HEVC_C" / "RaceHorses_64x48_30.yuv"
    # ffmpeg makes the raw file (BT.601 limited range, what SD-sized test sequences use).
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-i", "-",
                    "-sws_flags", "bicubic+accurate_rnd+full_chroma_int", "-pix_fmt", "yuv420p", "-f", "rawvideo", str(yuv)],
                   input=rgb.tobytes(), check=True)
    label, seqs = datasets.list_sequences("hevc-c", str(root))
    assert label == "hevc-c" and [s.name for s in seqs] == ["RaceHorses"]
    assert (seqs[0].width, seqs[0].height, seqs[0].fps, seqs[0].bit_depth) == (64, 48, 30, 8)
    video = datasets.load_sequence(seqs[0], PreprocessConfig(width=None, height=None, fps=None))
    assert video.frames.shape == rgb.shape and video.fps == 30
    # Chroma subsampling loses detail; the colour matrix must still match ffmpeg's on average.
    assert np.abs(video.frames.astype(int) - rgb).mean() < 6
    small = datasets.load_sequence(seqs[0], PreprocessConfig(width=32, height=16, fps=8))
    assert small.frames.shape == (3, 16, 32, 3) and small.fps == 8


@pytest.mark.parametrize("n,src,fps,start,max_frames", [(25, 25, 8, 0.0, None), (31, 30, 8, 0.3, None),
                                                        (10, 24, 7, 0.0, 2), (9, 8, None, 0.5, None)])
def test_raw_frame_selection_matches_video_io(n, src, fps, start, max_frames):
    marks = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    cfg = PreprocessConfig(width=None, height=None, fps=fps, start_time=start, max_frames=max_frames)
    want = preprocess(Video(marks, Fraction(src)), cfg).frames[:, 0, 0, 0].tolist()
    assert datasets.select_indices(n, src, cfg) == want


def test_dataset_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("M3CVC_DATA", raising=False)
    with pytest.raises(ConfigError, match="--data-root"):
        datasets.list_sequences("uvg", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no videos"):
        datasets.list_sequences(str(tmp_path / "empty"))
    with pytest.raises(Exception, match="_<W>x<H>_<fps>"):
        datasets.raw_format("foo.yuv")


def test_small_frames_drop_ms_ssim_with_a_note():
    from m3cvc_jax.eval.runner import parse_rate_points, usable_metrics

    keep, dropped = usable_metrics(["psnr", "ms_ssim", "lpips"], 128, 200)
    assert keep == ["psnr", "lpips"] and "161" in dropped[0]
    assert usable_metrics(["ms_ssim"], 320, 512) == (["ms_ssim"], [])
    assert parse_rate_points(["x264=51,45", "ours=a,b"]) == {"x264": [51, 45], "ours": ["a", "b"]}
    with pytest.raises(ConfigError, match="CODEC=V1"):
        parse_rate_points(["x264"])


def test_table1_ablation_rows(monkeypatch):
    import importlib

    path = os.path.join(os.path.dirname(__file__), "..", "configs", "ablations", "table1.py")
    rows = ablations.load_rows(path)
    names = [n for n, _ in rows]
    assert names[0] == "full" and {"kf_fixed_interval", "kf_lambda2_0", "turns_1", "turns_2", "turns_4",
                                    "mode_interpolation", "mode_prediction"} <= set(names)
    m3cvc_config = importlib.import_module("configs.m3cvc").get_config("paper")
    ablations.check_overrides(rows, m3cvc_config)  # every key is a real field of the codec config
    with pytest.raises(ConfigError, match="not a field"):
        ablations.check_overrides([("x", ("keyframes.nope=1",))], m3cvc_config)

    made = []
    monkeypatch.setitem(codecs.CODECS, "ours", lambda overrides=(), **kw: made.append(overrides) or ToyCodec([]))
    got = ablations.ablation_codecs(path, overrides=("seed=1",), preset="tiny")
    assert list(got) == [f"ours[{n}]" for n in names]
    assert made[names.index("turns_2")] == ("seed=1", "dialogue.turns=2")
