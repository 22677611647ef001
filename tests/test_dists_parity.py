"""DISTS port vs DISTS_pytorch: random torchvision VGG-16 trunk, the package's real alpha/beta, our converter."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
dists_pt = pytest.importorskip("DISTS_pytorch.DISTS_pt", reason="DISTS_pytorch (the reference) is not installed")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from convert_weights.__main__ import main as convert_main  # noqa: E402
from convert_weights.dists import packaged_alpha_beta  # noqa: E402
from m3cvc_jax.eval.metrics import dists_distance, load_dists  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402

_dists = nnx.jit(dists_distance)


@pytest.mark.parity
def test_dists_parity(tmp_path, monkeypatch):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # The package asks torchvision for ImageNet weights; a random trunk keeps everything offline.
    # Only the feature stack: building the 120M-parameter classifier would dominate the test's time.
    from types import SimpleNamespace

    from torchvision.models import vgg

    monkeypatch.setattr(dists_pt.models, "vgg16", lambda pretrained=True: SimpleNamespace(features=vgg.make_layers(vgg.cfgs["D"])))
    ref = dists_pt.DISTS(load_weights=False).eval()
    ab = torch.load(packaged_alpha_beta(), weights_only=True)
    ref.alpha.data, ref.beta.data = ab["alpha"], ab["beta"]
    for i in range(1, 6):  # the trunk, biases included; alpha/beta are the package's trained weights
        randomize_all(getattr(ref, f"stage{i}"), seed=i)
    assert_no_init_constants(ref)
    trunk = {}
    for k, v in ref.state_dict().items():
        parts = k.split(".")
        if parts[0].startswith("stage") and parts[-1] in ("weight", "bias"):
            trunk[f"features.{parts[1]}.{parts[2]}"] = v
    torch.save(trunk, tmp_path / "vgg16.pth")
    assert convert_main(["dists", str(tmp_path / "vgg16.pth"), str(tmp_path / "dists")]) == 0
    model = load_dists(str(tmp_path / "dists"))

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(2, 64, 64, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, size=x.shape), -1, 1).astype(np.float32)
    t = lambda v: torch.from_numpy((v + 1) / 2).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = ref(t(x), t(y)).numpy().reshape(-1)
    got = np.asarray(_dists(model, jnp.asarray(x), jnp.asarray(y)))
    assert want.min() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(np.asarray(_dists(model, jnp.asarray(x), jnp.asarray(x))), 0.0, atol=1e-5)
