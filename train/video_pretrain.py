"""Video model pretraining: SEINE's video UNet learns the epsilon loss on masked-frame conditioning.

    python -m train.video_pretrain --config configs/video_pretrain.py:tiny --workdir /tmp/video_tiny

The paper uses the released SEINE (`python -m convert_weights seine`); this trainer makes the small video
model of the `demo` preset. A training example is a `window`-frame clip of VAE latents (a posterior
sample x the VAE's `scaling_factor`, as the reconstruction pipeline encodes) with one of SEINE's masks
(`first1` prediction, `onelast1` interpolation; drawn per example): the UNet sees
`[x_t, mask, masked-video latent]` where the masked-video latent is the clip's latent on given frames and
the latent of a grey (0) frame elsewhere, exactly what `decoders/video.py` feeds it; it predicts the
noise of SEINE's linear schedule (1e-4..0.02, 1000 steps). The loss averages over every frame of the
window, the given ones included, as SEINE's own training does. The text is the CLIP embedding of the empty prompt (the demo
has no describer); `text_dropout` does not apply. The trained UNet is exported to `<workdir>/export`
(family `seine`, its `VideoUNetConfig`).
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax import weights
from m3cvc_jax.diffusion import predictions, seine_masks
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import clip_tokenizer
from m3cvc_jax.nn.clip import PRESETS as CLIP_PRESETS
from m3cvc_jax.nn.clip import CLIPConfig, CLIPTextModel
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig, sample_posterior
from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig
from m3cvc_jax.random_weights import random_module
from train import cli, loop, optim, sharding
from train.data.windows import LatentWindows
from train.vq_pretrain import pure_to_flat


@dataclasses.dataclass(frozen=True)
class Spec:
    unet: nnx.GraphDef
    optimizer: optim.OptimizerConfig
    schedule_steps: int
    masks: tuple[tuple[float, ...], ...]  # frame masks (1 = generated) the examples draw from
    scale: float  # the VAE's scaling_factor


def unet_config(config, cross_attention_dim: int) -> VideoUNetConfig:
    m = config.unet
    n = len(m.block_out_channels)
    return VideoUNetConfig(
        block_out_channels=tuple(m.block_out_channels), layers_per_block=m.layers_per_block,
        num_heads=tuple(m.num_heads), norm_num_groups=m.norm_num_groups, cross_attention_dim=cross_attention_dim,
        down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1))


def masked_video_loss(predict, z: jax.Array, noise: jax.Array, t: jax.Array, levels: NoiseLevel,
                      mask: jax.Array, masked: jax.Array) -> jax.Array:
    """SEINE's epsilon objective: the network sees [x_t, mask, masked-video latent] on the channel axis and
    the loss is mean (eps_hat - noise)^2 over every element of the window.

    Over every frame, given ones included, as SEINE's training_losses (mean_flat over the window): sampling
    denoises the given frames too, and their noise estimates feed the others through temporal attention;
    left untrained they diverge and take the generated frames with them."""
    x_t = predictions.add_noise(z, noise, levels[t])
    eps = predict(seine_masks.unet_input(x_t, mask, masked), t).astype(jnp.float32)
    return jnp.mean(jnp.square(eps - noise))


def _step(spec: Spec, levels: NoiseLevel, context: jax.Array, grey: jax.Array, state: dict, batch: dict,
          key: jax.Array) -> tuple[dict, dict]:
    mean, logvar = batch["mean"], batch["logvar"]
    b = mean.shape[0]
    k_post, k_grey, k_mask, k_t, k_noise = jax.random.split(key, 5)
    z = sample_posterior(mean, logvar, k_post) * spec.scale
    masks = jnp.asarray(spec.masks, jnp.float32)
    frame_mask = masks[jax.random.randint(k_mask, (b,), 0, masks.shape[0])]  # (B, T)
    lat_mask = jnp.broadcast_to(frame_mask[:, :, None, None, None], (*z.shape[:-1], 1))
    grey_z = sample_posterior(jnp.broadcast_to(grey[0], z.shape), jnp.broadcast_to(grey[1], z.shape), k_grey)
    masked = jnp.where(lat_mask == 0, z, grey_z * spec.scale)
    t = jax.random.randint(k_t, (b,), 0, levels.sqrt_alpha_prod.shape[0])
    noise = jax.random.normal(k_noise, z.shape, jnp.float32)
    ctx = jnp.broadcast_to(context, (b, *context.shape[-2:]))

    def loss_fn(params):
        unet = nnx.merge(spec.unet, params)
        return masked_video_loss(lambda x_in, t: unet(x_in, t, ctx), z, noise, t, levels, lat_mask, masked)

    params = state["params"]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optim.adamw(spec.optimizer, spec.schedule_steps).update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), latent_std=jnp.std(z))
    return dict(step=state["step"] + 1, params=params, opt_state=opt_state), metrics


train_step = jax.jit(_step, static_argnums=0, donate_argnums=4)


def load_vae(config, seed: int) -> AutoencoderKL:
    if config.vae_weights:
        return weights.load_module(config.vae_weights, family="sd-vae",
                                   build=lambda cfg, rngs: AutoencoderKL(VAEConfig.from_dict(cfg), rngs=rngs))
    if config.vae_preset != "tiny":
        raise ConfigError("vae_weights is empty: only vae_preset='tiny' may use a random VAE")
    return random_module(lambda rngs: AutoencoderKL(VAEConfig.preset("tiny"), rngs=rngs), seed, "sd-vae")


def empty_prompt(config, seed: int) -> jax.Array:
    """(1, L, D) CLIP text hidden states of "" (from `text_weights`, else a random `clip_preset` tower)."""
    if config.text_weights:
        def build(cfg, rngs):
            if cfg.pop("kind", "full") != "full":
                raise ConfigError(f"{config.text_weights}: a full CLIP checkpoint is expected (the codec loads both "
                                  f"towers)")
            return CLIPTextModel(CLIPConfig.from_dict(cfg).text, rngs=rngs)

        prefix = "text_model."
        model = weights.load_module(config.text_weights, family="clip", build=build,
                                    adapt=lambda p: {k: v for k, v in p.items() if k.startswith(prefix)})
    else:
        if config.clip_preset != "tiny":
            raise ConfigError("text_weights is empty: only clip_preset='tiny' may use a random text tower")
        model = random_module(lambda rngs: CLIPTextModel(CLIP_PRESETS["tiny"].text, rngs=rngs), seed, "clip-text")
    ids = jnp.asarray(clip_tokenizer.tokenize("", pad_id=config.text_pad_id))
    return jax.jit(lambda m, i: m(i).last_hidden_state)(model, ids)


def vae_encoder(vae: AutoencoderKL, chunk: int = 8):
    """uint8 frames (N, H, W, 3) -> numpy posterior (mean, logvar) (N, h, w, C), in fixed-size jitted chunks."""
    graphdef, state = nnx.split(vae)
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x))

    def fn(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(frames)
        # Padded to whole chunks: one compiled shape for every video.
        x = np.concatenate([frames, np.zeros((-n % chunk, *frames.shape[1:]), frames.dtype)]).astype(np.float32)
        out = [encode(state, jnp.asarray(x[i:i + chunk]) / 127.5 - 1.0) for i in range(0, len(x), chunk)]
        mean = np.concatenate([np.asarray(m) for m, _ in out])[:n]
        return mean, np.concatenate([np.asarray(lv) for _, lv in out])[:n]

    return fn


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    bad = [m for m in config.mask_types if not m.startswith(("first", "onelast"))]
    if bad or not config.mask_types:
        raise ConfigError(f"mask_types must be SEINE masks firstN / onelastN, got {list(config.mask_types)}")
    # numpy-drawn random weights: eager JAX initialisers compile one program per parameter shape.
    vae = load_vae(config, config.seed)
    context = empty_prompt(config, config.seed)
    cfg = unet_config(config, int(context.shape[-1]))
    unet = random_module(lambda rngs: VideoUNet(cfg, rngs=rngs), config.seed, "video-pretrain")
    unet_def, params = nnx.split(unet, nnx.Param)
    masks = tuple(tuple(float(v) for v in seine_masks.frame_mask(m, config.window)) for m in config.mask_types)
    spec = Spec(unet_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps), masks, float(vae.config.scaling_factor))
    params = params.to_pure_dict()
    state = dict(step=jnp.zeros((), jnp.int32), params=params,
                 opt_state=optim.adamw(spec.optimizer, spec.schedule_steps).init(params))
    state = sharding.put_replicated(state, mesh)
    encode = vae_encoder(vae)
    # Generated frames are grey (0) before the pipeline encodes them with a posterior sample.
    grey = tuple(m[0] for m in encode(np.full((1, config.height, config.width, 3), 127.5)))
    d = config.data
    # An export reads no data: LatentWindows VAE-encodes every window up front (minutes on the demo corpus).
    batches = None
    if not config.get("export_only", False):
        batches = LatentWindows(d.manual_dir, width=config.width, height=config.height, fps=d.fps,
                                window=config.window, stride=d.stride, batch_size=config.batch_size, seed=config.seed,
                                encode=encode, max_frames=d.max_frames, flip=d.flip)
        print(f"video_pretrain: {batches.num_examples} windows of {config.window} frames; "
              f"{sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)):,} UNet parameters", flush=True)
    levels = sharding.put_replicated(NoiseSchedule.seine().level(), mesh)
    context, grey = sharding.put_replicated((context, grey), mesh)

    def step_fn(state, batch, key):
        return train_step(spec, levels, context, grey, state, batch, key)

    state, rows = loop.run(config=config, workdir=workdir, state=state, step_fn=step_fn, batches=batches,
                           mesh=mesh, name="video_pretrain")
    loop.save_export(workdir, family="seine", config=dataclasses.asdict(cfg), params=pure_to_flat(state["params"]))
    return state, rows


if __name__ == "__main__":
    cli.main(train)
