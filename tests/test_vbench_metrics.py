"""VBench dimensions (eval/vbench.py): hand-computed cases, and the frame transforms against torchvision."""

import numpy as np
import pytest

import jax.numpy as jnp

from m3cvc_jax.eval import vbench


def test_temporal_flickering_known_frame_differences():
    # Frame t is uniform grey 10*t except frame 3, where half the pixels jump by a further 60.
    t, h, w = 5, 6, 8
    video = np.stack([np.full((h, w, 3), 10 * i, np.uint8) for i in range(t)])
    video[3, :, : w // 2] += 60
    scores = np.asarray(vbench.temporal_flickering(jnp.asarray(video)))
    # Pairs: 10, 10, then left |90 - 20| and right |30 - 20| -> 40, then left |40 - 90|, right |40 - 30| -> 30.
    mae = np.array([10.0, 10.0, 40.0, 30.0])
    np.testing.assert_allclose(scores, (255 - mae) / 255, rtol=0, atol=1e-6)
    assert np.asarray(vbench.temporal_flickering(jnp.asarray(np.repeat(video[:1], 3, 0)))).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        vbench.temporal_flickering(jnp.asarray(video, jnp.float32))


def test_consistency_hand_computed():
    e1, e2 = np.eye(3)[0], np.eye(3)[1]
    feats = np.stack([2 * e1, e1, e2, (e1 + e2) / np.sqrt(2), -e1]).astype(np.float32)
    got = np.asarray(vbench.consistency(jnp.asarray(feats)))
    c = 1 / np.sqrt(2)
    # frame t: (max(0, cos(prev, t)) + max(0, cos(first, t))) / 2
    want = [(1 + 1) / 2, (0 + 0) / 2, (c + c) / 2, (0 + 0) / 2]
    np.testing.assert_allclose(got, want, atol=1e-6)


torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")


@pytest.mark.parametrize("hw", [(36, 50), (61, 40), (224, 224)])
def test_vbench_transforms_match_torchvision(hw):
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(2, *hw, 3), dtype=np.uint8)
    tvideo = torch.from_numpy(video).permute(0, 3, 1, 2)  # VBench's load_video: uint8 (T, C, H, W)
    div = lambda x: x.float().div(255.0)  # noqa: E731
    dino = Compose([Resize(size=32, antialias=False), div, Normalize(vbench.IMAGENET_MEAN, vbench.IMAGENET_STD)])
    clip = Compose([Resize(32, interpolation=InterpolationMode.BICUBIC, antialias=False), CenterCrop(32), div,
                    Normalize(vbench.CLIP_MEAN, vbench.CLIP_STD)])
    for ref, ours in ((dino, vbench.dino_transform), (clip, vbench.clip_transform)):
        want = ref(tvideo).permute(0, 2, 3, 1).numpy()
        got = np.asarray(ours(jnp.asarray(video), 32))
        assert got.shape == want.shape
        # Rounding back to uint8 can flip one level where torch and XLA sum in another order.
        np.testing.assert_allclose(got, want, atol=1.01 / 255 / 0.22, rtol=0)
        assert np.mean(np.abs(got - want) > 1e-4) < 0.01


@pytest.mark.parity
def test_aesthetic_parity_head_and_score(tmp_path):
    """VBench's aesthetic score: torch Linear(768, 1) on normalised embeddings / 10, through the converter."""
    from flax import nnx

    from convert_weights import aesthetic
    from m3cvc_jax.nn.aesthetic import aesthetic_head
    from m3cvc_jax.weights import assign_params, load_checkpoint

    torch.manual_seed(0)
    ref = torch.nn.Linear(768, 1)
    with torch.no_grad():
        ref.bias.fill_(5.3)  # LAION's head sits near the middle of its 1..10 scale
    torch.save(ref.state_dict(), tmp_path / "sa_0_4_vit_l_14_linear.pth")
    aesthetic.convert(str(tmp_path / "sa_0_4_vit_l_14_linear.pth"), str(tmp_path / "head"))
    meta, params = load_checkpoint(str(tmp_path / "head"), family="aesthetic")
    head = aesthetic_head(meta["config"]["embed_dim"], rngs=nnx.Rngs(1))
    assign_params(head, params)
    emb = np.random.default_rng(1).normal(size=(4, 768)).astype(np.float32) * 3
    with torch.no_grad():
        want = (ref(torch.nn.functional.normalize(torch.from_numpy(emb), dim=-1, p=2)).squeeze() / 10).numpy()
    # The CLIP tower is the identity here: this checks the head and VBench's arithmetic around it.
    got = np.asarray(vbench.aesthetic_quality(lambda x: jnp.asarray(emb), head, jnp.zeros((4, 224, 224, 3), jnp.uint8)))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_eval_command_vbench_dimensions(tmp_path, monkeypatch):
    """`m3cvc eval --metrics <VBench dimensions>` with random tiny networks: each column is the mean of the
    dimension computed directly on the decoded video."""
    import csv
    import dataclasses
    from fractions import Fraction

    from flax import nnx

    from m3cvc_jax.cli import main as cli_main
    from m3cvc_jax.eval import codecs
    from m3cvc_jax.eval.datasets import list_sequences, load_sequence
    from m3cvc_jax.eval.metrics import load_clip_model
    from m3cvc_jax.io.video import PreprocessConfig, Video, write_mp4
    from m3cvc_jax.nn.aesthetic import aesthetic_head
    from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
    from m3cvc_jax.nn.vit import ViTConfig, ViTModel
    from tests.test_eval_runner import ToyCodec, _clip, _random_checkpoint

    monkeypatch.setitem(codecs.CODECS, "toy", lambda rate_points=None, **_: ToyCodec([]))
    ccfg, vcfg = CLIPConfig.preset("tiny"), ViTConfig.preset("tiny")
    _random_checkpoint(tmp_path / "clip", lambda: CLIPModel(ccfg, rngs=nnx.Rngs(0)), "clip",
                       {"kind": "full", **dataclasses.asdict(ccfg)}, seed=1, std=0.3)
    _random_checkpoint(tmp_path / "dino", lambda: ViTModel(vcfg, rngs=nnx.Rngs(0)), "dino", dataclasses.asdict(vcfg),
                       seed=2, std=0.3)
    dim = ccfg.projection_dim
    _random_checkpoint(tmp_path / "head", lambda: aesthetic_head(dim, rngs=nnx.Rngs(0)), "aesthetic",
                       {"embed_dim": dim}, seed=3, std=1.0)
    folder = tmp_path / "videos"
    folder.mkdir()
    write_mp4(folder / "clip0.mp4", Video(_clip(0), Fraction(16)))
    out = tmp_path / "out"
    names = ["temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality"]
    argv = ["eval", str(folder), "--codecs", "toy", "--rate-points", "toy=16", "--out", str(out), "--width", "96",
            "--height", "64", "--fps", "8", "--max-frames", "5", "--no-progress", "--metrics", ",".join(names),
            "--clip-weights", str(tmp_path / "clip"), "--dino-weights", str(tmp_path / "dino"),
            "--aesthetic-weights", f"{tmp_path / 'head'},{tmp_path / 'clip'}"]
    assert cli_main(argv) == 0
    with open(out / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    seq = list_sequences(str(folder))[1][0]
    gt = load_sequence(seq, PreprocessConfig(width=96, height=64, fps=8, max_frames=5)).frames
    dec = jnp.asarray(ToyCodec([]).decode(ToyCodec([]).encode(gt, 8, 16, str(tmp_path / "again"))))
    from m3cvc_jax.commands.eval import _load_aesthetic, _load_dino

    clip, dino, head = load_clip_model(str(tmp_path / "clip")), _load_dino(str(tmp_path / "dino")), _load_aesthetic(
        str(tmp_path / "head"))
    size = clip.config.vision.image_size
    want = {
        "temporal_flickering": vbench.temporal_flickering(dec),
        "subject_consistency": nnx.jit(lambda m, v: vbench.subject_consistency(m.features, v))(dino, dec),
        "background_consistency": nnx.jit(lambda m, v: vbench.background_consistency(m.get_image_features, v, size))(
            clip, dec),
        "aesthetic_quality": nnx.jit(lambda m, h, v: vbench.aesthetic_quality(m.get_image_features, h, v, size))(
            clip, head, dec),
    }
    for name in names:
        value = float(np.mean(np.asarray(want[name])))
        assert float(row[name]) == pytest.approx(value, abs=2e-5), name
    assert 0.2 < float(row["subject_consistency"]) < 0.9999 and 0.2 < float(row["background_consistency"]) < 0.9999
    # A dimension without its network is a user error.
    assert cli_main(["eval", str(folder), "--codecs", "toy", "--out", str(out / "x"), "--metrics",
                     "subject_consistency"]) == 2
