"""AnimateDiff (SD UNet + motion modules) against diffusers' UNetMotionModel / AnimateDiffPipeline.

The reference is a tiny UNet2DConditionModel joined to a tiny MotionAdapter with `from_unet2d`, every
parameter randomised (the zero-initialised motion `proj_out` too, or the motion modules would be invisible).
Its weights reach us the way a user's do: the SD part through the `sd-unet` converter, the motion part
saved as a MotionAdapter folder (and rewritten under the original AnimateDiff names) through `animatediff`.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from convert_weights import animatediff as convert_ad  # noqa: E402
from convert_weights import sd_unet  # noqa: E402
from m3cvc_jax.errors import WeightsError  # noqa: E402
from m3cvc_jax.nn.animatediff import MotionAdapterConfig, UNetMotionModel, merge_params  # noqa: E402
from m3cvc_jax.nn.unet import UNetConfig  # noqa: E402
from m3cvc_jax.weights import assign_params, load_checkpoint  # noqa: E402
from tests.randomize import assert_no_init_constants, randomize_all  # noqa: E402
from tests.sd_reference import abstract, call, torch_state  # noqa: E402

pytestmark = pytest.mark.parity
torch.set_num_threads(1)
TOL = 1e-4

UNET = dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=16, attention_head_dim=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8, sample_size=8)
# Two temporal layers in the second block, a mid-block module, 4 heads of 8/16 dims.
ADAPTER = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=4,
               motion_norm_num_groups=8, motion_transformer_layers_per_block=(1, 2), motion_max_seq_length=24)


def reference(seed=0, adapter=ADAPTER, unet=UNET):
    torch.manual_seed(seed)
    u = diffusers.UNet2DConditionModel(**unet)
    a = diffusers.MotionAdapter(**adapter)
    model = diffusers.UNetMotionModel.from_unet2d(u, a)
    randomize_all(model, seed)
    assert_no_init_constants(model)
    return model.eval()


def save_adapter(ref, adapter, path):
    """The motion weights as a MotionAdapter folder (diffusers' own `save_motion_modules` drops
    `motion_transformer_layers_per_block`)."""
    a = diffusers.MotionAdapter(**adapter)
    a.load_state_dict({k: v for k, v in ref.state_dict().items() if "motion_modules" in k}, strict=False)
    missing = set(a.state_dict()) - {k for k in ref.state_dict() if "motion_modules" in k}
    assert all(k.endswith("pos_embed.pe") for k in missing), missing
    a.save_pretrained(str(path))
    return a


def convert(ref, tmp, original=False, unet_config=UNET, adapter=ADAPTER):
    """The reference's weights through both converters -> our UNetMotionModel."""
    unet = diffusers.UNet2DConditionModel(**unet_config)
    unet.load_state_dict({k: v for k, v in ref.state_dict().items() if "motion_modules" not in k})
    unet.save_pretrained(str(tmp / "unet"))
    sd_unet.convert(str(tmp / "unet"), str(tmp / "sd"))
    meta, unet_params = load_checkpoint(str(tmp / "sd"), family="sd-unet")
    ucfg = UNetConfig.from_dict(meta["config"])
    a = save_adapter(ref, adapter, tmp / "adapter")
    src = tmp / "adapter"
    if original:
        src = tmp / "mm.ckpt"
        torch.save({k: torch.from_numpy(v) for k, v in original_names(torch_state(a)).items()}, src)
    convert_ad.convert(str(src), str(tmp / "motion"))
    meta, adapter_params = load_checkpoint(str(tmp / "motion"), family="animatediff")
    mcfg = MotionAdapterConfig.from_dict(meta["config"])
    ours = abstract(lambda: UNetMotionModel(ucfg, mcfg, rngs=nnx.Rngs(0)))
    assign_params(ours, merge_params(unet_params, adapter_params))
    return ours


def original_names(sd):
    """A diffusers MotionAdapter state dict under the names of the released AnimateDiff checkpoints:
    the inverse of diffusers' conversion, with a position table stored at each attention block."""
    out = {}
    for k, v in sd.items():
        k = (k.replace(".motion_modules.", ".MM.").replace(".norm1.", ".norms.0.").replace(".norm2.", ".norms.1.")
             .replace(".norm3.", ".ff_norm.").replace(".attn1.", ".attention_blocks.0.")
             .replace(".attn2.", ".attention_blocks.1."))
        head, _, rest = k.partition(".MM.")
        index, _, tail = rest.partition(".")
        k = f"{head}.motion_modules.{index}.temporal_transformer.{tail}"
        if k.endswith(".pos_embed.pe"):
            for j in (0, 1):
                out[k.replace(".pos_embed.pe", f".attention_blocks.{j}.pos_encoder.pe")] = v
        else:
            out[k] = v
    return out


def run_reference(ref, x, t, ctx):
    """diffusers wants (B, C, T, H, W) and the text context repeated per frame."""
    frames = x.shape[1]
    with torch.no_grad():
        out = ref(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))), torch.from_numpy(t),
                  torch.from_numpy(np.repeat(ctx, frames, axis=0))).sample
    return out.numpy().transpose(0, 2, 3, 4, 1)


def check(got, want):
    assert got.shape == want.shape
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(got, want, atol=TOL * scale, rtol=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = reference()
    return ref, convert(ref, tmp_path_factory.mktemp("animatediff"))


def test_animatediff_parity_unet_motion_model(pair):
    ref, ours = pair
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8, 12, 4)).astype(np.float32)
    ctx = rng.normal(size=(2, 7, 16)).astype(np.float32)
    t = np.array([20.0, 901.0], np.float32)
    want = run_reference(ref, x, t, ctx)
    got = np.asarray(call(ours, "__call__", jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)))
    check(got, want)
    # The motion modules matter: each frame alone (T = 1 clips) gives another answer.
    b, f = x.shape[:2]
    alone = np.asarray(call(ours, "__call__", jnp.asarray(x.reshape(b * f, 1, *x.shape[2:])),
                            jnp.asarray(np.repeat(t, f)), jnp.asarray(np.repeat(ctx, f, axis=0)))).reshape(want.shape)
    assert np.max(np.abs(alone - want)) > 100 * TOL * max(1.0, float(np.max(np.abs(want))))
    # bfloat16 compute on the same float32 parameters stays close (norms and softmax run in float32).
    from m3cvc_jax.weights import flat_params

    half = abstract(lambda: UNetMotionModel(ours.config, ours.motion_config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
    assign_params(half, flat_params(ours))
    low = call(half, "__call__", jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))
    assert low.dtype == jnp.bfloat16
    assert float(np.max(np.abs(np.asarray(low, np.float32) - got)) / np.max(np.abs(got))) < 0.05


def test_animatediff_parity_original_checkpoint_no_mid_block(tmp_path):
    # The v1/v3 layout (no mid-block module), read from original AnimateDiff names; the config is inferred,
    # so the reference keeps AnimateDiff's 8 heads and 32 groups (widths 32/64 allow both).
    adapter = dict(ADAPTER, motion_num_attention_heads=8, motion_norm_num_groups=32, use_motion_mid_block=False)
    unet = dict(UNET, norm_num_groups=32)
    ref = reference(seed=1, adapter=adapter, unet=unet)
    ours = convert(ref, tmp_path, original=True, unet_config=unet, adapter=adapter)
    assert ours.mid_block.motion_modules == [] or len(ours.mid_block.motion_modules) == 0
    assert ours.motion_config.motion_max_seq_length == 24 and not ours.motion_config.use_motion_mid_block
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 8, 8, 4)).astype(np.float32)
    ctx = rng.normal(size=(1, 3, 16)).astype(np.float32)
    t = np.array([500.0], np.float32)
    check(np.asarray(call(ours, "__call__", jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx))),
          run_reference(ref, x, t, ctx))


def test_animatediff_converter_both_layouts_agree_and_are_strict(pair, tmp_path):
    ref = pair[0]
    sd = torch_state(save_adapter(ref, ADAPTER, tmp_path / "adapter"))
    cfg = MotionAdapterConfig.from_diffusers(ADAPTER)
    a = convert_ad.convert_state_dict(sd, cfg)
    b = convert_ad.convert_state_dict(original_names(sd), cfg)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(".motion_modules." in k and k.endswith("attn2.to_q.kernel") for k in a)
    with pytest.raises(WeightsError, match="1 missing"):
        convert_ad.convert_state_dict({k: v for k, v in sd.items() if not k.endswith("mid_block.motion_modules.0.proj_out.bias")}, cfg)
    with pytest.raises(WeightsError, match="1 unexpected"):
        convert_ad.convert_state_dict({**sd, "down_blocks.0.motion_modules.0.extra.weight": np.zeros(3)}, cfg)
    key = "up_blocks.0.motion_modules.1.proj_in.weight"
    with pytest.raises(WeightsError, match="mis-shaped"):
        convert_ad.convert_state_dict({**sd, key: sd[key][:, :-1]}, cfg)
    pe = next(k for k in sd if k.endswith("pos_embed.pe"))
    with pytest.raises(WeightsError, match="position tables"):
        convert_ad.convert_state_dict({**sd, pe: sd[pe] * 1.01}, cfg)
    # The command line: a folder converts; a file that is no checkpoint is one error line, exit 2.
    from convert_weights.__main__ import main as convert_main

    assert convert_main(["animatediff", str(tmp_path / "adapter"), str(tmp_path / "cli")]) == 0
    assert load_checkpoint(str(tmp_path / "cli"), family="animatediff")[0]["config"]["motion_max_seq_length"] == 24
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    assert convert_main(["animatediff", str(tmp_path / "junk.ckpt"), str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    # An adapter for other block widths does not fit the UNet.
    from m3cvc_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="does not fit"):
        UNetMotionModel(UNetConfig.preset("tiny"), MotionAdapterConfig.preset("v2"), rngs=nnx.Rngs(0))


def test_animatediff_parity_ddim_cfg_sampling(pair):
    """A few DDIM steps with classifier-free guidance, diffusers' AnimateDiffPipeline (latents and text
    embeddings fed in) against our scanned sampler with the same initial noise."""
    from m3cvc_jax.diffusion.ddim import DDIMScheduler
    from m3cvc_jax.diffusion.guidance import CFGCond, guided
    from m3cvc_jax.diffusion.sampler import sample
    from m3cvc_jax.diffusion.schedules import NoiseSchedule

    ref, ours = pair
    rng = np.random.default_rng(3)
    frames, steps, scale = 6, 4, 7.5
    x_T = rng.normal(size=(1, frames, 8, 8, 4)).astype(np.float32)
    text, null = (rng.normal(size=(1, 5, 16)).astype(np.float32) for _ in range(2))
    # AnimateDiff's sampling config (its inference yaml; diffusers' docs example): linear betas.
    sched_kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", steps_offset=1, clip_sample=False,
                    timestep_spacing="linspace", set_alpha_to_one=False)
    pipe = diffusers.AnimateDiffPipeline(vae=diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4),
                                         text_encoder=None, tokenizer=None, unet=ref, motion_adapter=None,
                                         scheduler=diffusers.DDIMScheduler(**sched_kw))
    with torch.no_grad():
        want = pipe(prompt_embeds=torch.from_numpy(text), negative_prompt_embeds=torch.from_numpy(null),
                    latents=torch.from_numpy(np.ascontiguousarray(x_T.transpose(0, 4, 1, 2, 3))), num_frames=frames,
                    height=8, width=8, num_inference_steps=steps, guidance_scale=scale, output_type="latent").frames
    want = want.numpy().transpose(0, 2, 3, 4, 1)

    graphdef, state = nnx.split(ours)
    schedule = NoiseSchedule.create("linear", 1000, 0.00085, 0.012)
    scheduler = DDIMScheduler.create(schedule, steps, steps_offset=1, clip_sample=False, timestep_spacing="linspace",
                                     set_alpha_to_one=False)
    fn = guided(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c))
    got = jax.jit(lambda s, x: sample(fn, s, x, scheduler, CFGCond(jnp.asarray(text), jnp.asarray(null), scale)))(
        state, jnp.asarray(x_T))
    assert not np.allclose(want, x_T, atol=0.1)
    check(np.asarray(got), want)
