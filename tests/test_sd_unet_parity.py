"""SD UNet (and its shared blocks) against diffusers with tiny random weights."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from m3cvc_jax.nn import layers as L  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import abstract, call, load_from_torch, nchw, nhwc  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)
TOL = 1e-4


def _run_spatial(ours, ref, x, *args_t, args_j=()):
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), *args_t))
    return np.asarray(call(ours, "__call__", jnp.asarray(x), *args_j)), want


def _check(got, want):
    """TOL of the output's scale (at least 1): float32 rounding grows with the values compared."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL * max(1.0, float(np.abs(want).max())), rtol=0)


def _pair(build, ref, seed=0):
    ours = abstract(build)
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
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
    ours, ref = _pair(lambda: L.ResnetBlock2D(16, 32, temb_channels=24, groups=8, rngs=nnx.Rngs(0)),
                      ResnetBlock2D(in_channels=16, out_channels=32, temb_channels=24, groups=8))
    _check(*_run_spatial(ours, ref, x, torch.from_numpy(temb), args_j=(jnp.asarray(temb),)))
    # VAE flavour: no time embedding, identity shortcut, output scale.
    ours, ref = _pair(lambda: L.ResnetBlock2D(16, temb_channels=None, groups=4, output_scale_factor=2.0, rngs=nnx.Rngs(0)),
                      ResnetBlock2D(in_channels=16, temb_channels=None, groups=4, output_scale_factor=2.0))
    _check(*_run_spatial(ours, ref, x, None))
    for padding in (1, 0):
        ours, ref = _pair(lambda: L.Downsample2D(16, out_channels=8, padding=padding, rngs=nnx.Rngs(0)),
                          Downsample2D(16, use_conv=True, out_channels=8, padding=padding))
        _check(*_run_spatial(ours, ref, x))
    ours, ref = _pair(lambda: L.Upsample2D(16, rngs=nnx.Rngs(0)), Upsample2D(16, use_conv=True))
    _check(*_run_spatial(ours, ref, x))
    # Odd target size (the UNet's forward_upsample_size path).
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), output_size=(13, 21)))
    _check(np.asarray(call(ours, "__call__", jnp.asarray(x), output_size=(13, 21))), want)


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
        _check(np.asarray(call(ours, "__call__", *[jnp.asarray(a) for a in args])), want)

    run(*_pair(lambda: L.Attention(32, 20, heads=4, dim_head=6, rngs=nnx.Rngs(0)),
               Attention(32, cross_attention_dim=20, heads=4, dim_head=6)), seq, ctx)
    run(*_pair(lambda: L.Attention(32, heads=2, dim_head=16, upcast_attention=True, rngs=nnx.Rngs(0)),
               Attention(32, heads=2, dim_head=16, upcast_attention=True)), seq)
    # Long self-attention takes the blocked path (600 is not a multiple of the block: padded queries).
    long_seq = rng.normal(size=(1, 600, 32)).astype(np.float32)
    from m3cvc_jax.nn.attention import BLOCKED_ATTENTION_MIN_LOGITS
    assert 600 * 600 >= BLOCKED_ATTENTION_MIN_LOGITS
    run(*_pair(lambda: L.Attention(32, heads=2, dim_head=16, rngs=nnx.Rngs(0)), Attention(32, heads=2, dim_head=16)),
        long_seq)
    # VAE mid-block flavour on a spatial input.
    vae_ref = Attention(16, heads=1, dim_head=16, rescale_output_factor=1.5, eps=1e-6, norm_num_groups=4,
                        residual_connection=True, bias=True, upcast_softmax=True, _from_deprecated_attn_block=True)
    vae_ours = lambda: L.Attention(16, heads=1, dim_head=16, bias=True, rescale_output_factor=1.5, eps=1e-6,
                           norm_num_groups=4, residual_connection=True, rngs=nnx.Rngs(0))
    x = rng.normal(size=(2, 5, 7, 16)).astype(np.float32)
    _check(*_run_spatial(*_pair(vae_ours, vae_ref), x))
    for act in ("geglu", "gelu", "gelu-approximate"):
        run(*_pair(lambda: L.FeedForward(32, activation_fn=act, rngs=nnx.Rngs(0)), FeedForward(32, activation_fn=act)), seq)
    ours, ref = _pair(lambda: L.BasicTransformerBlock(32, 4, 8, cross_attention_dim=20, rngs=nnx.Rngs(0)),
                      BasicTransformerBlock(32, 4, 8, cross_attention_dim=20))
    with torch.no_grad():
        want = ref(st, encoder_hidden_states=ct).numpy()
    _check(np.asarray(call(ours, "__call__", jnp.asarray(seq), jnp.asarray(ctx))), want)
    x = rng.normal(size=(2, 6, 10, 32)).astype(np.float32)
    for linear_proj in (False, True):
        ours, ref = _pair(
            lambda: L.Transformer2DModel(4, 8, 32, num_layers=2, cross_attention_dim=20, norm_num_groups=8,
                                 use_linear_projection=linear_proj, upcast_attention=linear_proj, rngs=nnx.Rngs(0)),
            Transformer2DModel(4, 8, in_channels=32, num_layers=2, cross_attention_dim=20, norm_num_groups=8,
                               use_linear_projection=linear_proj, upcast_attention=linear_proj))
        with torch.no_grad():
            want = nhwc(ref(torch.from_numpy(nchw(x)), encoder_hidden_states=ct).sample)
        _check(np.asarray(call(ours, "__call__", jnp.asarray(x), jnp.asarray(ctx))), want)
    t = np.array([0.0, 3.0, 999.0, 17.5], np.float32)
    for flip, shift, dim in ((True, 0.0, 32), (False, 1.0, 33)):
        with torch.no_grad():
            want = Timesteps(dim, flip, shift)(torch.from_numpy(t)).numpy()
        _check(np.asarray(L.Timesteps(dim, flip, shift)(jnp.asarray(t))), want)
    run(*_pair(lambda: L.TimestepEmbedding(32, 48, rngs=nnx.Rngs(0)), TimestepEmbedding(32, 48)), seq[:, 0])


# --- the whole UNet, through the converter users run -------------------------------------------------

SD1 = dict(block_out_channels=(16, 32, 32), layers_per_block=1, cross_attention_dim=24, attention_head_dim=2,
           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8,
           sample_size=16)
SD2 = dict(SD1, attention_head_dim=(1, 2, 4), use_linear_projection=True, upcast_attention=True,
           layers_per_block=2, transformer_layers_per_block=2)


def reference_unet(cfg, seed=0):
    ref = diffusers.UNet2DConditionModel(**cfg)
    randomize_all(ref, seed)
    assert_no_init_constants(ref)
    return ref.eval()


def convert_and_load(ref, tmp, **opts):
    from convert_weights import sd_unet
    from m3cvc_jax.nn.unet import UNet2DConditionModel, UNetConfig
    from m3cvc_jax.weights import abstract_module, assign_params, load_checkpoint

    ref.save_pretrained(tmp / "unet")
    sd_unet.convert(str(tmp / "unet"), str(tmp / "converted"), **opts)
    meta, params = load_checkpoint(str(tmp / "converted"), family="sd-unet")
    model = abstract_module(lambda rngs: UNet2DConditionModel(UNetConfig.from_dict(meta["config"]), rngs=rngs))
    assign_params(model, params)
    return model


def compare_unet(ref, ours, latent_hw, seed=0, extra=0):
    rng = np.random.default_rng(seed)
    b, (h, w) = 2, latent_hw
    x = rng.normal(size=(b, h, w, 4)).astype(np.float32)
    ctx = rng.normal(size=(b, 5, 24)).astype(np.float32)
    t = np.array([10.0, 870.0], np.float32)
    with torch.no_grad():
        want = nhwc(ref(torch.from_numpy(nchw(x)), torch.from_numpy(t), torch.from_numpy(ctx)).sample)
    if extra:
        x = np.concatenate([x, rng.normal(size=(b, h, w, extra)).astype(np.float32)], axis=-1)
    got = np.asarray(call(ours, "__call__", jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)))
    _check(got, want)


def test_sd_unet_parity_sd1(tmp_path):
    ref = reference_unet(SD1)
    ours = convert_and_load(ref, tmp_path)
    assert ours.config.num_attention_heads == 2 and not ours.config.use_linear_projection
    compare_unet(ref, ours, (8, 12))
    # bfloat16 compute with the same float32 parameters stays close (norms and softmax run in f32).
    from m3cvc_jax.nn.unet import UNet2DConditionModel
    from m3cvc_jax.weights import assign_params, flat_params

    half = abstract(lambda: UNet2DConditionModel(ours.config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    assign_params(half, flat_params(ours))
    rng = np.random.default_rng(5)
    args = (rng.normal(size=(1, 8, 12, 4)), np.array([300.0]), rng.normal(size=(1, 5, 24)))
    args = [jnp.asarray(a, jnp.float32) for a in args]
    full, low = call(ours, "__call__", *args), call(half, "__call__", *args)
    assert low.dtype == jnp.bfloat16
    err = float(jnp.max(jnp.abs(low.astype(jnp.float32) - full)) / jnp.max(jnp.abs(full)))
    assert err < 0.05, err


def test_sd_unet_parity_sd2_odd_size(tmp_path):
    # 10x14 is not a multiple of 4: the up path resizes to each skip's size, as diffusers does.
    ref = reference_unet(SD2, seed=1)
    ours = convert_and_load(ref, tmp_path)
    assert ours.config.num_attention_heads == (1, 2, 4) and ours.config.use_linear_projection
    compare_unet(ref, ours, (10, 14), seed=1)


def test_sd_unet_parity_extra_in_channels(tmp_path):
    # New conv_in channels start at zero: whatever they hold, the output is the reference's.
    ref = reference_unet(SD1, seed=2)
    ours = convert_and_load(ref, tmp_path, extra_in_channels=3)
    kernel = np.asarray(ours.conv_in.kernel.get_value())
    assert kernel.shape[2] == 7 and not kernel[:, :, 4:].any() and kernel[:, :, :4].any()
    compare_unet(ref, ours, (8, 8), seed=2, extra=3)
