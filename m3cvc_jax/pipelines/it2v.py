"""CMVC's IT2V generative model (keyframe images + motion text -> the frames between) as pure functions.

For a clip between decoded keyframes I_0 and I_1 with motion text embedding c (CMVC §IT2V, eqs. 4-8;
DiffMorpher for what CMVC leaves out):

  train_lora         one LoRA per keyframe on the UNet's attention projections, eq. 4:
                     min E_{t,ε} ‖ε − ε_{θ+Δθ}(sqrt(ᾱ_t)·ẑ + sqrt(1−ᾱ_t)·ε, t, c)‖², AdamW (DiffMorpher's
                     lr 2e-4, wd 1e-2), t uniform over SD's 1000 training steps. Everything random comes
                     from `key`, so the decoder retrains the encoder's LoRA bit for bit on one platform.
  invert_keyframe    DDIM inversion of a keyframe latent under its own LoRA (DiffMorpher) -> x_T
  interpolate_frame  x_T = interp(x_T0, x_T1, w_i) (eq. 5: `linear`, or `diffmorpher` = slerp + AdaIN),
                     Δθ_l = w_l·Δθ_0 + (1−w_l)·Δθ_1 (eq. 6, A and B mixed separately), DDIM with
                     ε_{θ+Δθ_l}, VAE decode
  optimise_weights   (w_i, w_l) per frame by Adam on the frame's L2 error (eqs. 7-8), `jax.grad` through the
                     whole sampler (`lax.scan`), each UNet call under `jax.checkpoint` (remat) so the
                     backward pass stores one latent per step instead of every activation; `jax.vmap`
                     over the frames of a clip
  quantize_weights / dequantize_weights    w in [0, 1] on 2^bits − 1 uniform steps

Nothing here jits, reads files or draws hidden randomness: callers `jax.jit` these (the UNet/VAE modules
are pytrees; `IT2VConfig` and the scheduler's static fields are static). The UNet must carry LoRA layers
(`add_it2v_lora`); its factors are replaced by the states passed in. A UNet with extra input channels (our
keyframe UNet reads ẑ there) gets `extra` (broadcast to the latent grid), zeros by default.
Guidance: none (DiffMorpher's default scale 1); the motion text conditions every UNet call.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax.diffusion import morph, predictions, sampler
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import lora
from m3cvc_jax.pipelines.it2v_config import IT2VConfig

F32 = jnp.float32




def add_it2v_lora(unet: nnx.Module, config: IT2VConfig = IT2VConfig(), *, key: jax.Array | None = None) -> list[str]:
    """Give `unet` LoRA layers on every attention projection (q, k, v, out of self- and cross-attention), in
    place. Their initial values do not matter: `train_lora` starts from factors drawn from its own key."""
    return lora.add_lora(unet, lora.ATTENTION_PROJECTIONS, config.lora_rank, config.lora_alpha,
                         key=jax.random.key(0) if key is None else key, init=config.lora_init)


def make_scheduler(steps: int) -> DDIMScheduler:
    """SD's DDIM chain (scaled-linear betas, `steps_offset=1`, no clipping: latents are unbounded)."""
    return DDIMScheduler.create(NoiseSchedule.stable_diffusion(), steps, steps_offset=1, clip_sample=False)


def unet_eps(unet: nnx.Module, x: jax.Array, t: jax.Array, cond: tuple[jax.Array, jax.Array | None]) -> jax.Array:
    """The sampler's model_fn: cond = (text hidden states, extra input channels or None)."""
    text, extra = cond
    n = unet.config.extra_in_channels
    if n:
        shape = (*x.shape[:-1], n)
        e = jnp.zeros(shape, x.dtype) if extra is None else jnp.broadcast_to(extra.astype(x.dtype), shape)
        x = jnp.concatenate([x, e], axis=-1)
    return unet(x, t, text)


# Module-level so that a jitted caller sees the same function every time (a new closure would retrace).
_unet_eps_remat = jax.checkpoint(unet_eps)


def with_lora(unet: nnx.Module, state: Any) -> nnx.Module:
    """The UNet with its LoRA factors replaced by `state` (a new module; `unet` is not changed)."""
    graphdef, _, rest = nnx.split(unet, lora.LoRAWeight, ...)
    return nnx.merge(graphdef, state, rest)


def train_lora(unet: nnx.Module, latent: jax.Array, text_emb: jax.Array, key: jax.Array,
               config: IT2VConfig = IT2VConfig(), *, extra: jax.Array | None = None):
    """(LoRA state, per-step losses `(lora_steps,)`) fitted to one keyframe.

    latent: `(1, h, w, 4)` scaled SD latent of the DECODED keyframe (`keyframe_codec.frame_latent`), so the
    decoder, which has only that, trains the same LoRA; text_emb: `(1, S, D)` motion-text hidden states.
    """
    schedule = NoiseSchedule.stable_diffusion()
    levels = schedule.level()
    n_train = schedule.num_train_timesteps
    graphdef, _, rest = nnx.split(unet, lora.LoRAWeight, ...)
    init_key, train_key = jax.random.split(key)
    state = lora.initial_state(unet, init_key, config.lora_init)
    opt = optax.adamw(config.lora_lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=config.lora_weight_decay)
    latent = latent.astype(F32)

    def loss_fn(s, k):
        k_t, k_eps = jax.random.split(k)
        t = jax.random.randint(k_t, (latent.shape[0],), 0, n_train)
        eps = jax.random.normal(k_eps, latent.shape, F32)
        z_t = predictions.add_noise(latent, eps, levels[t])
        pred = unet_eps(nnx.merge(graphdef, s, rest), z_t, t, (text_emb, extra))
        return jnp.mean(jnp.square(pred.astype(F32) - eps))

    def step(carry, i):
        s, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(s, jax.random.fold_in(train_key, i))
        updates, opt_state = opt.update(grads, opt_state, s)
        return (optax.apply_updates(s, updates), opt_state), loss

    (state, _), losses = jax.lax.scan(step, (state, opt.init(state)), jnp.arange(config.lora_steps))
    return state, losses


def invert_keyframe(unet: nnx.Module, lora_state: Any, latent: jax.Array, text_emb: jax.Array,
                    scheduler: DDIMScheduler, *, extra: jax.Array | None = None) -> jax.Array:
    """x_T of a keyframe latent `(1, h, w, 4)` by DDIM inversion under the keyframe's own LoRA."""
    return morph.ddim_invert(unet_eps, with_lora(unet, lora_state), latent, scheduler, (text_emb, extra))


def render(unet, vae, lora0, lora1, x_T0: jax.Array, x_T1: jax.Array, w_i, w_l, text_emb: jax.Array,
           scheduler: DDIMScheduler, *, interpolation: str = "linear", remat: bool = False,
           extra: jax.Array | None = None) -> jax.Array:
    """The frame for weights (w_i, w_l), unclipped `(1, H, W, 3)` (the loss of eqs. 7-8 is taken on it)."""
    x_T = morph.interpolate_latents(interpolation, x_T0, x_T1, w_i)
    model = with_lora(unet, lora.interpolate(lora0, lora1, w_l))
    z = sampler.sample(_unet_eps_remat if remat else unet_eps, model, x_T, scheduler, (text_emb, extra))
    return vae.decode(z / vae.config.scaling_factor)


def interpolate_frame(unet, vae, lora0, lora1, x_T0: jax.Array, x_T1: jax.Array, w_i, w_l, text_emb: jax.Array,
                      scheduler: DDIMScheduler, *, interpolation: str = "linear",
                      extra: jax.Array | None = None) -> jax.Array:
    """One in-between frame `(1, H, W, 3)` in [-1, 1]: eq. 5 on the inverted latents, eq. 6 on the LoRAs,
    then DDIM with ε_{θ+Δθ_l} and the VAE decoder. w = 1 reproduces keyframe 0's side, w = 0 keyframe 1's."""
    image = render(unet, vae, lora0, lora1, x_T0, x_T1, w_i, w_l, text_emb, scheduler,
                   interpolation=interpolation, extra=extra)
    return jnp.clip(image, -1.0, 1.0)


def position_weights(num_frames: int) -> jax.Array:
    """Uniform (not optimised) weights `(num_frames, 2)` for the frames strictly between two keyframes:
    frame k of n gets w_i = w_l = 1 - k / (n + 1)."""
    w = 1.0 - jnp.arange(1, num_frames + 1, dtype=F32) / (num_frames + 1)
    return jnp.stack([w, w], axis=-1)


def optimise_weights(unet, vae, lora0, lora1, x_T0: jax.Array, x_T1: jax.Array, text_emb: jax.Array,
                     frames: jax.Array, w_init: jax.Array, scheduler: DDIMScheduler,
                     config: IT2VConfig = IT2VConfig(), *, extra: jax.Array | None = None):
    """Per-frame (w_i, w_l) minimising the mean squared error to the true frames (CMVC eqs. 7-8).

    frames: `(F, H, W, 3)` in [-1, 1]; w_init: `(F, 2)` (e.g. `position_weights(F)`). Adam with
    `config.opt_lr` for `config.opt_steps` steps, every frame independently (`jax.vmap`), weights projected
    onto [0, 1] after each step (the range they are quantised on). Returns (w `(F, 2)`, losses
    `(opt_steps + 1, F)`: before each step, then after the last).
    """

    def frame_loss(w, target):
        image = render(unet, vae, lora0, lora1, x_T0, x_T1, w[0], w[1], text_emb, scheduler,
                       interpolation=config.interpolation, remat=config.remat, extra=extra)
        return jnp.mean(jnp.square(image[0].astype(F32) - target.astype(F32)))

    value_and_grad = jax.vmap(jax.value_and_grad(frame_loss))
    opt = optax.adam(config.opt_lr)

    def step(carry, _):
        w, opt_state = carry
        loss, grads = value_and_grad(w, frames)
        updates, opt_state = opt.update(grads, opt_state, w)
        return (jnp.clip(optax.apply_updates(w, updates), 0.0, 1.0), opt_state), loss

    w0 = jnp.clip(jnp.asarray(w_init, F32), 0.0, 1.0)
    (w, _), losses = jax.lax.scan(step, (w0, opt.init(w0)), None, length=config.opt_steps)
    final = jax.vmap(frame_loss)(w, frames)
    return w, jnp.concatenate([losses, final[None]], axis=0)


def quantize_weights(w: jax.Array, bits: int) -> jax.Array:
    """w in [0, 1] -> integer codes in [0, 2^bits - 1] (nearest level; values outside are clipped)."""
    if not 1 <= int(bits) <= 16:
        raise ConfigError(f"w_bits must be in [1, 16], got {bits}")
    levels = (1 << int(bits)) - 1
    return jnp.round(jnp.clip(jnp.asarray(w, F32), 0.0, 1.0) * levels).astype(jnp.int32)


def dequantize_weights(codes: jax.Array, bits: int) -> jax.Array:
    if not 1 <= int(bits) <= 16:
        raise ConfigError(f"w_bits must be in [1, 16], got {bits}")
    return jnp.asarray(codes, F32) / ((1 << int(bits)) - 1)
