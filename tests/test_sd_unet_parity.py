"""SD UNet (and its shared blocks) against diffusers with tiny random weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from m3cvc_jax.nn import layers as L  # noqa: E402
from tests.sd_reference import load_from_torch, nchw, nhwc, randomise  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)
TOL = 1e-4


def _run_spatial(ours, ref, x, *args_t, args_j=()):
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), *args_t))
    return np.asarray(ours(jnp.asarray(x), *args_j)), want


def _check(got, want):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def _pair(ours, ref, seed=0):
    randomise(ref, seed)
    ref.eval()
    load_from_torch(ours, ref)
    return ours, ref


def test_sd_unet_blocks_parity_resnet_sampling():
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 10, 16)).astype(np.float32)
    temb = rng.normal(size=(2, 24)).astype(np.float32)
    ours, ref = _pair(L.ResnetBlock2D(16, 32, temb_channels=24, groups=8, rngs=nnx.Rngs(0)),
                      ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=24, groups=8))
    _check(*_run_spatial(ours, ref, x, torch.from_numpy(temb), args_j=(jnp.asarray(temb),)))
    # VAE flavour: no time embedding, identity shortcut, output scale.
    ours, ref = _pair(L.ResnetBlock2D(16, temb_channels=None, groups=4, output_scale_factor=2.0, rngs=nnx.Rngs(0)),
                      ResnetBlock2D(in_channels=16, temb_channels=None, groups=4, output_scale_factor=2.0))
    _check(*_run_spatial(ours, ref, x, None))
    for padding in (1, 0):
        ours, ref = _pair(L.Downsample2D(16, out_channels=8, padding=padding, rngs=nnx.Rngs(0)),
                          Downsample2D(16, use_conv=True, out_channels=8, padding=padding))
        _check(*_run_spatial(ours, ref, x))
    ours, ref = _pair(L.Upsample2D(16, rngs=nnx.Rngs(0)), Upsample2D(16, use_conv=True))
    _check(*_run_spatial(ours, ref, x))
    # Odd target size (the UNet's forward_upsample_size path).
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), output_size=(13, 21)))
    _check(np.asarray(ours(jnp.asarray(x), (13, 21))), want)


def test_sd_unet_blocks_parity_attention():
    from diffusers.models.attention import BasicTransformerBlock, FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    rng = np.random.default_rng(1)
    seq = rng.normal(size=(2, 12, 32)).astype(np.float32)
    ctx = rng.normal(size=(2, 7, 20)).astype(np.float32)
    st, ct = torch.from_numpy(seq), torch.from_numpy(ctx)

    def run(ours, ref, *args):
        with torch.no_grad():
            want = ref(*[torch.from_numpy(a) for a in args]).numpy()
        _check(np.asarray(ours(*[jnp.asarray(a) for a in args])), want)

    run(*_pair(L.Attention(32, 20, heads=4, dim_head=6, rngs=nnx.Rngs(0)),
               Attention(32, cross_attention_dim=20, heads=4, dim_head=6)), seq, ctx)
    run(*_pair(L.Attention(32, heads=2, dim_head=16, upcast_attention=True, rngs=nnx.Rngs(0)),
               Attention(32, heads=2, dim_head=16, upcast_attention=True)), seq)
    # VAE mid-block flavour on a spatial input.
    vae_ref = Attention(16, heads=1, dim_head=16, rescale_output_factor=1.5, eps=1e-6, norm_num_groups=4,
                        residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)
    vae_ours = L.Attention(16, heads=1, dim_head=16, bias=True, rescale_output_factor=1.5, eps=1e-6,
                           norm_num_groups=4, residual_connection=True, rngs=nnx.Rngs(0))
    x = rng.normal(size=(2, 5, 7, 16)).astype(np.float32)
    _check(*_run_spatial(*_pair(vae_ours, vae_ref), x))
    for act in ("geglu", "gelu", "gelu-approximate"):
        run(*_pair(L.FeedForward(32, activation_fn=act, rngs=nnx.Rngs(0)), FeedForward(32, activation_fn=act)), seq)
    ours, ref = _pair(L.BasicTransformerBlock(32, 4, 8, cross_attention_dim=20, rngs=nnx.Rngs(0)),
                      BasicTransformerBlock(32, 4, 8, cross_attention_dim=20))
    with torch.no_grad():
        want = ref(st, encoder_hidden_states=ct).numpy()
    _check(np.asarray(ours(jnp.asarray(seq), jnp.asarray(ctx))), want)
    x = rng.normal(size=(2, 6, 10, 32)).astype(np.float32)
    for linear_proj in (False, True):
        ours, ref = _pair(
            L.Transformer2DModel(4, 8, 32, num_layers=2, cross_attention_dim=20, norm_num_groups=8,
                                 use_linear_projection=linear_proj, upcast_attention=linear_proj, rngs=nnx.Rngs(0)),
            Transformer2DModel(4, 8, in_channels=32, num_layers=2, cross_attention_dim=20, norm_num_groups=8,
                               use_linear_projection=linear_proj, upcast_attention=linear_proj))
        with torch.no_grad():
            want = nhwc(ref(torch.from_numpy(nchw(x)), encoder_hidden_states=ct).sample)
        _check(np.asarray(ours(jnp.asarray(x), jnp.asarray(ctx))), want)
    t = np.array([0.0, 3.0, 999.0, 17.5], np.float32)
    for flip, shift, dim in ((True, 0.0, 32), (False, 1.0, 33)):
        with torch.no_grad():
            want = Timesteps(dim, flip, shift)(torch.from_numpy(t)).numpy()
        _check(np.asarray(L.Timesteps(dim, flip, shift)(jnp.asarray(t))), want)
    run(*_pair(L.TimestepEmbedding(32, 48, rngs=nnx.Rngs(0)), TimestepEmbedding(32, 48)), seq[:, 0])
