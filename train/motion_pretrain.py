"""Motion-module pretraining: AnimateDiff's motion modules learn the epsilon loss on a frozen spatial UNet.

    python -m train.motion_pretrain --config configs/motion_pretrain.py:tiny --workdir /tmp/motion_tiny

AnimateDiff's first training stage at our scale (item 3 of CMVC's TT2V mode): the spatial UNet (an
`sd-unet` checkpoint; by default the `demo` keyframe UNet) stays frozen and only the motion modules that
`UNetMotionModel` inserts train (an optax mask: the spatial parameters get zero updates and no optimiser
state). A training example is a `window`-frame clip of VAE latents (a posterior sample x the VAE's
`scaling_factor`, as the codec encodes); every frame of a clip shares one timestep of AnimateDiff's
noise schedule (linear betas 0.00085..0.012; `beta_schedule`) and the model predicts the noise. The text
is the empty prompt's CLIP embedding, as for the demo's other models (the demo has no describer).

The keyframe UNet's extra conv_in channels (the M3-CVC index condition) are dropped: a text-to-video model
has no such condition, and dropping the input channels is the same as feeding them zeros. The motion
modules' `proj_out` starts at zero, as in AnimateDiff (`zero_initialize`), so training starts from the
frozen image model applied frame by frame.

Export: `<workdir>/export/motion_adapter` (family `animatediff`, its `MotionAdapterConfig`) and
`<workdir>/export/unet` (family `sd-unet`, the frozen spatial UNet as used); `nn.animatediff.merge_params`
joins them into the `UNetMotionModel` parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax import weights
from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.animatediff import AnimateDiffTransformer3D, MotionAdapterConfig, UNetMotionModel
from m3cvc_jax.nn.unet import UNetConfig
from m3cvc_jax.nn.vae import sample_posterior
from m3cvc_jax.random_weights import random_module
from train import cli, loop, optim, sharding
from train.data.windows import LatentWindows
from train.video_pretrain import empty_prompt, load_vae, vae_encoder
from train.vq_pretrain import pure_to_flat

MOTION_KEY = "motion_modules"  # a parameter trains iff its path goes through a block's motion modules


@dataclasses.dataclass(frozen=True)
class Spec:
    model: nnx.GraphDef
    optimizer: optim.OptimizerConfig
    schedule_steps: int
    scale: float  # the VAE's scaling_factor


def is_motion(path: tuple) -> bool:
    return MOTION_KEY in path


def _path(keys) -> tuple:
    return tuple(k.key for k in keys)


def _tx(spec: Spec, params: Any) -> optax.GradientTransformation:
    trainable = jax.tree_util.tree_map_with_path(lambda p, _: is_motion(_path(p)), params)
    return optim.masked(spec.optimizer, spec.schedule_steps, trainable)


def _noised(spec: Spec, levels: NoiseLevel, batch: dict, key: jax.Array):
    """(x_t, t, noise, z) of a batch: a posterior sample z of each window, one timestep t per clip."""
    mean, logvar = batch["mean"], batch["logvar"]
    k_post, k_t, k_noise = jax.random.split(key, 3)
    z = sample_posterior(mean, logvar, k_post) * spec.scale
    t = jax.random.randint(k_t, (mean.shape[0],), 0, levels.sqrt_alpha_prod.shape[0])
    noise = jax.random.normal(k_noise, z.shape, jnp.float32)
    return predictions.add_noise(z, noise, levels[t]), t, noise, z


def _loss(spec: Spec, params: Any, x_t: jax.Array, t: jax.Array, noise: jax.Array, context: jax.Array) -> jax.Array:
    ctx = jnp.broadcast_to(context, (x_t.shape[0], *context.shape[-2:]))
    eps = nnx.merge(spec.model, params)(x_t, t, ctx).astype(jnp.float32)
    return jnp.mean(jnp.square(eps - noise))


def _step(spec: Spec, levels: NoiseLevel, context: jax.Array, state: dict, batch: dict,
          key: jax.Array) -> tuple[dict, dict]:
    x_t, t, noise, z = _noised(spec, levels, batch, key)
    params = state["params"]
    # The spatial weights' gradients feed nothing (set_to_zero ignores them), so XLA drops their computation.
    loss, grads = jax.value_and_grad(_loss, argnums=1)(spec, params, x_t, t, noise, context)
    updates, opt_state = _tx(spec, params).update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    motion_grads = [g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0] if is_motion(_path(p))]
    metrics = dict(loss=loss, grad_norm=optax.global_norm(motion_grads), latent_std=jnp.std(z))
    return dict(step=state["step"] + 1, params=params, opt_state=opt_state), metrics


@functools.partial(jax.jit, static_argnums=0)
def eval_loss(spec: Spec, levels: NoiseLevel, context: jax.Array, params: Any, batch: dict, key: jax.Array) -> jax.Array:
    """The training loss of `params` on one batch and key, without an update (for held-fixed comparisons)."""
    x_t, t, noise, _ = _noised(spec, levels, batch, key)
    return _loss(spec, params, x_t, t, noise, context)


train_step = jax.jit(_step, static_argnums=0, donate_argnums=3)


def spatial_unet(path: str) -> tuple[UNetConfig, dict[str, np.ndarray]]:
    """An sd-unet checkpoint as a plain text-conditioned UNet: extra conv_in channels (an image condition,
    which text-to-video does not have) are dropped, which equals feeding them zeros."""
    meta, params = weights.load_checkpoint(path, family="sd-unet")
    cfg = UNetConfig.from_dict(meta["config"])
    if cfg.extra_in_channels:
        params = {**params, "conv_in.kernel": params["conv_in.kernel"][:, :, :cfg.in_channels]}
        cfg = dataclasses.replace(cfg, extra_in_channels=0)
    return cfg, params


def motion_config(config, unet: UNetConfig) -> MotionAdapterConfig:
    fields = {f.name for f in dataclasses.fields(MotionAdapterConfig)} - {"block_out_channels",
                                                                           "motion_layers_per_block"}
    unknown = sorted(set(config.motion.keys()) - fields)
    if unknown:
        raise ConfigError(f"unknown motion option(s): {', '.join(unknown)} (the UNet sets block_out_channels "
                          "and motion_layers_per_block)")
    return MotionAdapterConfig(block_out_channels=tuple(unet.block_out_channels),
                               motion_layers_per_block=unet.layers_per_block, **config.motion.to_dict())


def build(config, seed: int) -> UNetMotionModel:
    """The frozen spatial UNet's weights with fresh motion modules (zero `proj_out`: AnimateDiff's init)."""
    unet_cfg, unet_params = spatial_unet(config.unet_weights)
    # numpy-drawn random weights: eager JAX initialisers compile one program per parameter shape.
    model = random_module(lambda rngs: UNetMotionModel(unet_cfg, motion_config(config, unet_cfg), rngs=rngs),
                          seed, "motion-modules")
    for _, module in nnx.iter_graph(model):
        if isinstance(module, AnimateDiffTransformer3D):
            for var in (module.proj_out.kernel, module.proj_out.bias):
                var.set_value(jnp.zeros_like(var.get_value()))
    motion = {k: v for k, v in weights.flat_params(model).items() if is_motion(tuple(k.split(".")))}
    weights.assign_params(model, {**unet_params, **motion}, source=config.unet_weights)
    return model


def noise_schedule(config) -> NoiseSchedule:
    """AnimateDiff trains (and samples) with *linear* betas 0.00085..0.012 over 1000 steps, on an SD UNet
    trained with `scaled_linear` over the same range; `beta_schedule` picks either."""
    return NoiseSchedule.create(config.beta_schedule, 1000, 0.00085, 0.012, precision="float32")


def _validate(config) -> None:
    if config.beta_schedule not in ("linear", "scaled_linear"):
        raise ConfigError(f"beta_schedule must be 'linear' (AnimateDiff) or 'scaled_linear' (SD), "
                          f"got {config.beta_schedule!r}")
    missing = [n for n in ("unet_weights", "vae_weights", "text_weights") if not config[n]]
    if missing:
        raise ConfigError(f"motion_pretrain needs {', '.join(missing)} (the frozen models)")
    if not 2 <= config.window <= config.motion.motion_max_seq_length:
        raise ConfigError(f"window must lie in [2, motion_max_seq_length={config.motion.motion_max_seq_length}], "
                          f"got {config.window}")
    for name in ("width", "height"):
        if not 8 <= config[name] <= 4096 or config[name] % 8:
            raise ConfigError(f"{name} must be a multiple of 8 in [8, 4096], got {config[name]}")


def export(params: dict, model: UNetMotionModel, directory: str) -> tuple[str, str]:
    """`directory/motion_adapter` (animatediff) and `directory/unet` (sd-unet); returns their fingerprints."""
    flat = pure_to_flat(params)
    motion = {k: v for k, v in flat.items() if is_motion(tuple(k.split(".")))}
    spatial = {k: v for k, v in flat.items() if k not in motion}
    fp_motion = weights.save_checkpoint(os.path.join(directory, "motion_adapter"), family="animatediff",
                                        config=dataclasses.asdict(model.motion_config), params=motion,
                                        overwrite=True)
    fp_unet = weights.save_checkpoint(os.path.join(directory, "unet"), family="sd-unet",
                                      config=dataclasses.asdict(model.config), params=spatial,
                                      overwrite=True)
    return fp_motion, fp_unet


def count_trained(params: dict) -> tuple[int, int]:
    sizes = [(is_motion(_path(p)), int(np.prod(x.shape))) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]]
    trained, total = sum(n for m, n in sizes if m), sum(n for _, n in sizes)
    print(f"motion_pretrain: training {trained:,} motion-module parameters; {total - trained:,} spatial UNet "
          "parameters frozen", flush=True)
    return trained, total


@dataclasses.dataclass
class Run:
    """What `train` loops over; the tests evaluate `eval_loss(spec, levels, context, ...)` with it."""
    state: dict
    step_fn: Any
    batches: LatentWindows
    mesh: Any
    model: UNetMotionModel
    spec: Spec
    levels: NoiseLevel
    context: jax.Array


def setup(config) -> Run:
    _validate(config)
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    vae = load_vae(config, config.seed)
    context = empty_prompt(config, config.seed)
    model = build(config, config.seed)
    if model.config.cross_attention_dim != context.shape[-1]:
        raise ConfigError(f"{config.text_weights} embeds text in {context.shape[-1]} dims, the UNet attends to "
                          f"{model.config.cross_attention_dim}")
    model_def, params = nnx.split(model, nnx.Param)
    params = params.to_pure_dict()
    spec = Spec(model_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps), float(vae.config.scaling_factor))
    count_trained(params)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=_tx(spec, params).init(params))
    state = sharding.put_replicated(state, mesh)
    d = config.data
    batches = LatentWindows(d.manual_dir, width=config.width, height=config.height, fps=d.fps, window=config.window,
                            stride=d.stride, batch_size=config.batch_size, seed=config.seed, encode=vae_encoder(vae),
                            max_frames=d.max_frames, flip=d.flip)
    print(f"motion_pretrain: {batches.num_examples} windows of {config.window} frames", flush=True)
    levels = sharding.put_replicated(noise_schedule(config).level(), mesh)
    context = sharding.put_replicated(context, mesh)

    def step_fn(state, batch, key):
        return train_step(spec, levels, context, state, batch, key)

    return Run(state, step_fn, batches, mesh, model, spec, levels, context)


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    """Run (or resume) the pretraining; returns the final state and the metric rows logged by this call."""
    r = setup(config)
    state, rows = loop.run(config=config, workdir=workdir, state=r.state, step_fn=r.step_fn, batches=r.batches,
                           mesh=r.mesh, name="motion_pretrain")
    export(state["params"], r.model, os.path.join(workdir, "export"))
    return state, rows


if __name__ == "__main__":
    cli.main(train)
