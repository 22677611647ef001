"""Decoder fine-tuning: the conditional SD UNet learns to denoise given z_hat (VQ indices) and D_F.

    python -m train.decoder_finetune --config configs/decoder_finetune.py:tiny --workdir /tmp/ft_tiny

Frozen: the VAE, the post-encoder + codebook (from VQ pretraining), the CLIP text tower and every UNet
weight except its linear layers and the new conv_in input channels (optax.multi_transform with
set_to_zero for the rest; the conv_in kernel's original channels get a zero gradient mask). The trained
UNet is exported to `<workdir>/export` (family `sd-unet`, its config with `extra_in_channels`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax import weights
from m3cvc_jax.codec import vq
from m3cvc_jax.diffusion import predictions
from m3cvc_jax.diffusion.schedules import NoiseLevel, NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn import clip_tokenizer
from m3cvc_jax.nn.clip import CLIPTextModel
from m3cvc_jax.nn.keyframe_codec import KeyframeCodecConfig, condition, frame_latent, unet_eps
from m3cvc_jax.nn.post_encoder import Codebook, PostEncoder
from m3cvc_jax.nn.unet import UNet2DConditionModel
from m3cvc_jax.pipelines.models import assign_vq, widen_conv_in
from m3cvc_jax.random_weights import random_module
from train import cli, loop, optim, sharding
from train.data import latent_cache, loader
from train.vq_pretrain import EXPORT_FAMILY as VQ_FAMILY
from train.vq_pretrain import Setup, codec_config, load_frozen_vae, make_batches, pure_to_flat


class Frozen(nnx.Module):
    """The parts fine-tuning only runs forward."""

    def __init__(self, cfg: KeyframeCodecConfig, *, rngs: nnx.Rngs):
        self.vae = nnx.data(None)  # set by `build`: the same VAE (and random draw) as VQ pretraining
        self.post_encoder = PostEncoder(cfg.post_encoder, rngs=rngs)
        self.codebook = Codebook(cfg.post_encoder, rngs=rngs)
        self.text = CLIPTextModel(cfg.text, rngs=rngs)


def trainable_paths(unet: UNet2DConditionModel) -> frozenset[tuple]:
    """Parameter paths the fine-tune trains: the reference's nn.Linear layers, plus conv_in.kernel.

    Our 1x1 convolutions are nnx.Linear too (same matmul in channels-last); the reference's are Conv2d,
    so `conv_shortcut` and, with conv projections, `proj_in`/`proj_out` stay frozen.
    """
    conv_like = {"conv_shortcut"} | (set() if unet.config.use_linear_projection else {"proj_in", "proj_out"})
    paths = {("conv_in", "kernel")}
    for path, module in nnx.iter_graph(unet):
        if isinstance(module, nnx.Linear) and path[-1] not in conv_like:
            paths.add((*path, "kernel"))
            if module.bias is not None:
                paths.add((*path, "bias"))
    return frozenset(paths)


def _path(keys) -> tuple:
    return tuple(k.key for k in keys)


@dataclasses.dataclass(frozen=True)
class Spec:
    unet: nnx.GraphDef
    frozen: nnx.GraphDef
    optimizer: optim.OptimizerConfig
    schedule_steps: int  # the run length when the schedule depends on it (else 0: resuming with a
                         # larger num_steps reuses the compiled step)
    trainable: frozenset
    in_channels: int  # conv_in channels that stay frozen (0: all of conv_in trains)
    text_dropout: float
    prediction_type: str = "epsilon"


def _tx(spec: Spec, params: Any) -> optax.GradientTransformation:
    trainable = jax.tree_util.tree_map_with_path(lambda p, _: _path(p) in spec.trainable, params)
    return optim.masked(spec.optimizer, spec.schedule_steps, trainable)


def denoising_loss(predict, x0: jax.Array, noise: jax.Array, t: jax.Array, levels: NoiseLevel,
                   prediction_type: str = "epsilon") -> jax.Array:
    """The fine-tuning objective: mean over every element of (predict(x_t, t) - target)^2, with
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise and the target of `prediction_type` (noise for epsilon)."""
    level = levels[t]
    x_t = predictions.add_noise(x0, noise, level)
    target = predictions.training_target(prediction_type, x0, noise, level)
    return jnp.mean(jnp.square(predict(x_t, t).astype(jnp.float32) - target))


def _step(spec: Spec, frozen_params: Any, levels: NoiseLevel, null_ids: jax.Array, state: dict, batch: dict,
          key: jax.Array) -> tuple[dict, dict]:
    frozen = nnx.merge(spec.frozen, frozen_params)
    # A cached batch carries the frozen VAE's latents (config cache_latents), computed once per example.
    latent = batch["latent"] if "latent" in batch else frame_latent(frozen.vae, batch["image"])
    codebook = frozen.codebook()
    indices = vq.nearest(frozen.post_encoder(latent), codebook)
    z_hat = condition(codebook, indices, latent.shape[1:3])
    text = frozen.text(batch["ids"]).last_hidden_state
    null = frozen.text(null_ids).last_hidden_state
    latent, z_hat, text, null = jax.lax.stop_gradient((latent, z_hat, text, null))

    b = latent.shape[0]
    k_drop, k_t, k_noise = jax.random.split(key, 3)
    drop = jax.random.uniform(k_drop, (b,)) < spec.text_dropout
    context = jnp.where(drop[:, None, None], null, text)
    t = jax.random.randint(k_t, (b,), 0, levels.sqrt_alpha_prod.shape[0])
    noise = jax.random.normal(k_noise, latent.shape, jnp.float32)

    def loss_fn(params):
        unet = nnx.merge(spec.unet, params)
        predict = lambda x_t, t: unet_eps(unet, x_t, t, (z_hat, context))  # noqa: E731
        return denoising_loss(predict, latent, noise, t, levels, spec.prediction_type)

    params = state["params"]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    # Only the new conv_in channels train: the SD channels keep the pretrained filters.
    g = grads["conv_in"]["kernel"]
    extension = (jnp.arange(g.shape[2]) >= spec.in_channels).astype(g.dtype)
    grads = {**grads, "conv_in": {**grads["conv_in"], "kernel": g * extension[None, None, :, None]}}
    updates, opt_state = _tx(spec, params).update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    metrics = dict(loss=loss, grad_norm=optax.global_norm(grads), text_dropped=jnp.mean(drop.astype(jnp.float32)))
    return dict(step=state["step"] + 1, params=params, opt_state=opt_state), metrics


train_step = jax.jit(_step, static_argnums=0, donate_argnums=4)


def build(config, codec_cfg: KeyframeCodecConfig):
    """(UNet with its base weights, frozen parts) from the config's weight folders (random if empty)."""
    paper_sized = config.model != "tiny"
    # A UNet trained from scratch (trainable='all', the demo's) has no base weights.
    needed = ("vae_weights", "text_weights", "vq_weights") + (() if config.trainable == "all" else ("unet_weights",))
    missing = [n for n in needed if not config[n]]
    if paper_sized and missing:
        raise ConfigError(f"the {config.model} decoder fine-tune needs {', '.join(missing)}")
    vae = load_frozen_vae(codec_cfg, config.vae_weights, config.seed)
    # Random parts are drawn from numpy (`random_module`): eager JAX initialisers compile one program
    # per parameter shape, which costs more than the tiny run itself.
    frozen = random_module(lambda rngs: Frozen(codec_cfg, rngs=rngs), config.seed, "finetune-frozen")
    frozen.vae = nnx.data(vae)
    if config.vq_weights:
        _, vq_params = weights.load_checkpoint(config.vq_weights, family=VQ_FAMILY)
        assign_vq(frozen.post_encoder, frozen.codebook, vq_params, config.vq_weights)
    if config.text_weights:
        text_prefix = "text_model."
        frozen.text = weights.load_module(
            config.text_weights, family="clip", build=lambda _, rngs: CLIPTextModel(codec_cfg.text, rngs=rngs),
            adapt=lambda p: {k: v for k, v in p.items() if k.startswith(text_prefix)})
    if config.unet_weights:
        unet = weights.load_module(config.unet_weights, family="sd-unet", adapt=widen_conv_in(codec_cfg.unet),
                                   build=lambda _, rngs: UNet2DConditionModel(codec_cfg.unet, rngs=rngs))
    else:
        unet = random_module(lambda rngs: UNet2DConditionModel(codec_cfg.unet, rngs=rngs), config.seed,
                             "keyframe-unet")
        # The extension starts at zero (the UNet's own initialisation): fine-tuning must open it.
        k = unet.conv_in.kernel
        k.set_value(k.get_value().at[:, :, codec_cfg.unet.in_channels:].set(0))
    return unet, frozen


def _tokenize(pad_id: int):
    def fn(example: dict) -> dict:
        text = example["text"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        return {"image": loader.image_to_model(example)["image"],
                "ids": clip_tokenizer.tokenize(text, pad_id=pad_id)[0]}

    return fn


def setup(config, workdir: str) -> Setup:
    """Models, initial state, the jitted step and the data of a run (what `train` loops over)."""
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    if not 0.0 <= config.text_dropout <= 1.0:
        raise ConfigError(f"text_dropout must lie in [0, 1], got {config.text_dropout}")
    codec_cfg = codec_config(config)
    unet, frozen = build(config, codec_cfg)
    unet_def, params = nnx.split(unet, nnx.Param)
    frozen_def, frozen_params = nnx.split(frozen, nnx.Param)
    if config.trainable not in ("linear", "all"):
        raise ConfigError(f"trainable must be 'linear' (the paper) or 'all' (a UNet trained from scratch), "
                          f"got {config.trainable!r}")
    train_all = config.trainable == "all"
    paths = frozenset(_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params.to_pure_dict())[0]) \
        if train_all else trainable_paths(unet)
    spec = Spec(unet_def, frozen_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps),
                paths, 0 if train_all else codec_cfg.unet.in_channels, float(config.text_dropout))
    params = params.to_pure_dict()
    count_trained(params, spec)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=_tx(spec, params).init(params))
    state = sharding.put_replicated(state, mesh)
    frozen_params = sharding.put_replicated(frozen_params.to_pure_dict(), mesh)
    levels = sharding.put_replicated(NoiseSchedule.stable_diffusion().level(), mesh)
    null_ids = sharding.put_replicated(jnp.asarray(clip_tokenizer.tokenize("", pad_id=codec_cfg.text_pad_id)), mesh)

    def step_fn(state, batch, key):
        return train_step(spec, frozen_params, levels, null_ids, state, batch, key)

    batches = make_batches(config, workdir, _tokenize(codec_cfg.text_pad_id))
    if config.get("cache_latents", False):
        batches = latent_cache.cached(batches, _latent_fn(frozen_def), frozen_params, seed=config.seed)
    return Setup(state, step_fn, batches, mesh, codec_cfg)


def _latent_fn(frozen_def: nnx.GraphDef):
    return jax.jit(lambda p, images: frame_latent(nnx.merge(frozen_def, p).vae, images))


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    """Run (or resume) the fine-tune; returns the final state and the metric rows logged by this call."""
    s = setup(config, workdir)
    state, rows = loop.run(config=config, workdir=workdir, state=s.state, step_fn=s.step_fn, batches=s.batches,
                           mesh=s.mesh, name="decoder_finetune")
    loop.save_export(workdir, family="sd-unet", config=dataclasses.asdict(s.codec_config.unet),
                     params=pure_to_flat(state["params"]))
    return state, rows


def count_trained(params: dict, spec: Spec) -> tuple[int, int]:
    """(trained, total) UNet parameters, counting only the extension channels of conv_in; printed."""
    total = trained = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        p, n = _path(path), int(np.prod(leaf.shape))
        total += n
        if p == ("conv_in", "kernel"):
            trained += n // leaf.shape[2] * (leaf.shape[2] - spec.in_channels)
        elif p in spec.trainable:
            trained += n
    what = "all" if trained == total else "linear layers + conv_in extension"
    print(f"decoder_finetune: training {trained:,} of {total:,} UNet parameters "
          f"({100 * trained / total:.1f}%: {what})", flush=True)
    return trained, total


if __name__ == "__main__":
    cli.main(train)
