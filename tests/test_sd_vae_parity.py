"""SD VAE (AutoencoderKL) against diffusers, through the converter users run."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from convert_weights import sd_vae  # noqa: E402
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig  # noqa: E402
from m3cvc_jax.weights import assign_params, load_checkpoint  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import abstract, call, nchw, nhwc  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)

TINY = dict(block_out_channels=(8, 16, 16), layers_per_block=2, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
            scaling_factor=0.5)


def reference_vae(seed=0):
    ref = diffusers.AutoencoderKL(**TINY)
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
    return ref.eval()


def load_converted(dst):
    meta, params = load_checkpoint(dst, family="sd-vae")
    model = abstract(lambda: AutoencoderKL(VAEConfig.from_dict(meta["config"]), rngs=nnx.Rngs(0)))
    assign_params(model, params)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd_vae")
    ref = reference_vae()
    ref.save_pretrained(tmp / "vae")
    sd_vae.convert(str(tmp / "vae"), str(tmp / "converted"))
    return ref, load_converted(str(tmp / "converted"))


def test_sd_vae_parity_encode(pair):
    ref, ours = pair
    assert ours.config.scaling_factor == 0.5 and ours.config.block_out_channels == (8, 16, 16)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 24, 40, 3)).astype(np.float32)
    with torch.no_grad():
        dist = ref.encode(torch.from_numpy(nchw(x))).latent_dist
    mean, logvar = call(ours, "encode", jnp.asarray(x))
    assert mean.shape == (2, 6, 10, 4)
    np.testing.assert_allclose(np.asarray(mean), nhwc(dist.mean), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logvar), nhwc(dist.logvar), atol=1e-4, rtol=0)


def test_sd_vae_parity_decode(pair):
    ref, ours = pair
    z = np.random.default_rng(1).normal(size=(2, 5, 7, 4)).astype(np.float32)
    with torch.no_grad():
        want = nhwc(ref.decode(torch.from_numpy(nchw(z))).sample)
    got = np.asarray(call(ours, "decode", jnp.asarray(z)))
    assert got.shape == (2, 20, 28, 3)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
