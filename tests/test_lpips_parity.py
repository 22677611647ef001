"""LPIPS port vs the `lpips` package: random torchvision trunk, the package's real heads, our converter."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
lpips_ref = pytest.importorskip("lpips")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from convert_weights.__main__ import main as convert_main  # noqa: E402
from m3cvc_jax.errors import WeightsError  # noqa: E402
from m3cvc_jax.eval.metrics import load_lpips, lpips_distance  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402

_lpips = nnx.jit(lpips_distance)

def _reference(net, tmp_path):
    """lpips.LPIPS with a random trunk, and that trunk saved as a torchvision `features.N.*` state dict."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # pnet_rand=True: the package must not fetch torchvision's ImageNet weights.
    ref = lpips_ref.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    randomize_all(ref.net, seed=0)  # the trunk (biases included); the heads are the package's real weights
    assert_no_init_constants(ref)
    # The package's sliceK.N modules are torchvision's features[N]: same tensors, torchvision's names.
    trunk = {"features." + k.split(".", 1)[1]: v for k, v in ref.net.state_dict().items()}
    path = tmp_path / f"{net}-backbone.pth"
    torch.save(trunk, path)
    return ref, path


@pytest.mark.parity
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_parity(net, tmp_path):
    ref, backbone = _reference(net, tmp_path)
    dst = tmp_path / "converted"
    assert convert_main(["lpips", str(backbone), str(dst)]) == 0
    model = load_lpips(str(dst))
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, size=x.shape), -1, 1).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y).permute(0, 3, 1, 2)).numpy().reshape(-1)
    got = np.asarray(_lpips(model, jnp.asarray(x), jnp.asarray(y)))
    assert want.min() > 1e-3  # a real, non-degenerate distance
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_lpips_converter_accepts_lpips_state_dict_and_uint8(tmp_path):
    ref, _ = _reference("alex", tmp_path)
    src = tmp_path / "lpips-full.pth"
    torch.save(ref.state_dict(), src)
    from convert_weights.lpips import convert

    convert(str(src), str(tmp_path / "out"))
    model = load_lpips(str(tmp_path / "out"))
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8)
    t = lambda v: torch.from_numpy(v.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = ref(t(a), t(b)).numpy().reshape(-1)
    np.testing.assert_allclose(np.asarray(_lpips(model, jnp.asarray(a), jnp.asarray(b))), want, atol=1e-4)


def test_lpips_converter_rejects_wrong_weights(tmp_path):
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "bad.pth")
    from convert_weights.lpips import convert

    with pytest.raises(WeightsError, match="missing"):
        convert(str(tmp_path / "bad.pth"), str(tmp_path / "out"))
