"""VAE pretraining: an SD-architecture AutoencoderKL learns to reconstruct frames (L1 + L2 + small KL).

    python -m train.vae_pretrain --config configs/vae_pretrain.py:tiny --workdir /tmp/vae_tiny

The paper never trains a VAE (it uses SD 1.5's); this trainer exists for the `demo` preset, whose small
VAE is trained here on the bundled clips. The loss is `l1 * |x - x'| + l2 * (x - x')^2 + kl * KL(q || N(0,1))`
(per element means; the KL per latent element) with `x'` decoded from a posterior sample, plus
`colour * |mean_hw(x) - mean_hw(x')|` (per image and channel) when `loss.colour_weight` > 0. The trained VAE is
exported to `<workdir>/export` (family `sd-vae`, its `VAEConfig`) with `scaling_factor` set to
1 / std of the posterior means over the training frames (as SD chose 0.18215), so diffusion sees unit-variance latents.

`init_weights=DIR` starts from an exported VAE (its own config; `vae` must match it) and
`trainable="decoder"` then trains only `post_quant_conv` and the decoder: the encoder, hence every latent,
VQ index map and keyframe UNet trained on them, stays valid, and the export keeps the start's `scaling_factor`.
The demo uses this to improve reconstruction and colour after the rest of the codec was trained.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax import weights
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig, sample_posterior
from m3cvc_jax.random_weights import random_module
from train import cli, loop, optim, sharding
from train.vq_pretrain import _images, make_batches, pure_to_flat


@dataclasses.dataclass(frozen=True)
class Spec:
    model: nnx.GraphDef
    optimizer: optim.OptimizerConfig
    schedule_steps: int
    l1_weight: float
    l2_weight: float
    kl_weight: float
    colour_weight: float = 0.0
    trainable: tuple[str, ...] = ()  # top-level parameter groups that train; () = all


def vae_config(config) -> VAEConfig:
    m = config.vae
    return VAEConfig(block_out_channels=tuple(m.block_out_channels), layers_per_block=m.layers_per_block,
                     latent_channels=m.latent_channels, norm_num_groups=m.norm_num_groups,
                     mid_block_add_attention=m.mid_block_add_attention)


def split_trainable(spec: Spec, params: dict) -> tuple[dict, dict]:
    """(trained, frozen) top-level groups of the VAE's parameters."""
    if not spec.trainable:
        return params, {}
    return ({k: v for k, v in params.items() if k in spec.trainable},
            {k: v for k, v in params.items() if k not in spec.trainable})


def _step(spec: Spec, state: dict, batch: dict, key: jax.Array) -> tuple[dict, dict]:
    x = batch["image"]

    def loss_fn(trained, frozen):
        # Only `trained` is differentiated: a frozen encoder costs its forward pass, no backward.
        vae = nnx.merge(spec.model, {**frozen, **trained})
        mean, logvar = vae.encode(x)
        rec = vae.decode(sample_posterior(mean, logvar, key)).astype(jnp.float32)
        err = rec - x
        l1, l2 = jnp.mean(jnp.abs(err)), jnp.mean(jnp.square(err))
        m, lv = mean.astype(jnp.float32), logvar.astype(jnp.float32)
        kl = 0.5 * jnp.mean(jnp.square(m) + jnp.exp(lv) - 1.0 - lv)
        # Per image and channel: the mean colour a small decoder drifts on first (docs/demo.md).
        colour = jnp.mean(jnp.abs(jnp.mean(err, axis=(1, 2))))
        loss = spec.l1_weight * l1 + spec.l2_weight * l2 + spec.kl_weight * kl + spec.colour_weight * colour
        psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(l2, 1e-10))  # [-1, 1] images: peak-to-peak 2
        return loss, dict(l1=l1, l2=l2, kl=kl, colour=colour, psnr=psnr, latent_std=jnp.std(m))

    trained, frozen = split_trainable(spec, state["params"])
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trained, frozen)
    tx = optim.adamw(spec.optimizer, spec.schedule_steps)
    updates, opt_state = tx.update(grads, state["opt_state"], trained)
    trained = optax.apply_updates(trained, updates)
    metrics = dict(loss=loss, **aux, grad_norm=optax.global_norm(grads))
    return dict(step=state["step"] + 1, params={**frozen, **trained}, opt_state=opt_state), metrics


train_step = jax.jit(_step, static_argnums=0, donate_argnums=1)


def latent_scale(model: nnx.GraphDef, params: dict, batches, num_batches: int) -> float:
    """1 / std of the posterior means over `num_batches` batches (SD's choice of `scaling_factor`)."""
    encode = jax.jit(lambda p, x: nnx.merge(model, p).encode(x)[0])
    means = [np.asarray(encode(params, batches[i]["image"])) for i in range(num_batches)]
    return float(1.0 / max(np.std(np.concatenate(means)), 1e-6))


TRAINABLE = {"all": (), "decoder": ("post_quant_conv", "decoder")}


def _loss_weights(config) -> tuple[float, float, float, float]:
    loss = config.loss
    values = tuple(float(loss.get(k, 0.0)) for k in ("l1_weight", "l2_weight", "kl_weight", "colour_weight"))
    if not all(np.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"loss weights must be finite and >= 0, got l1/l2/kl/colour {values}")
    return values


def initial_model(config) -> AutoencoderKL:
    """Random (numpy-drawn: eager JAX initialisers compile one program per parameter shape) or, with
    `init_weights`, the exported VAE there; its architecture must be the one `config.vae` describes."""
    cfg = vae_config(config)
    if not config.get("init_weights", ""):
        return random_module(lambda rngs: AutoencoderKL(cfg, rngs=rngs), config.seed, "vae-pretrain")
    model = weights.load_module(config.init_weights, family="sd-vae",
                                build=lambda c, rngs: AutoencoderKL(VAEConfig.from_dict(c), rngs=rngs))
    start = dataclasses.replace(model.config, scaling_factor=cfg.scaling_factor)
    if start != cfg:
        raise ConfigError(f"init_weights {config.init_weights}: its VAE {start} is not the configured {cfg}")
    return model


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    """Run (or resume) VAE pretraining; returns the final state and the metric rows logged by this call."""
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    weights_ = _loss_weights(config)
    trainable = config.get("trainable", "all")
    if trainable not in TRAINABLE:
        raise ConfigError(f"trainable must be one of {sorted(TRAINABLE)}, got {trainable!r}")
    if trainable != "all" and not config.get("init_weights", ""):
        raise ConfigError(f"trainable={trainable!r} fine-tunes a trained VAE: set init_weights to its export")
    model = initial_model(config)
    cfg = model.config
    model_def, params = nnx.split(model, nnx.Param)
    spec = Spec(model_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps), *weights_, trainable=TRAINABLE[trainable])
    params = params.to_pure_dict()
    tx = optim.adamw(spec.optimizer, spec.schedule_steps)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(split_trainable(spec, params)[0]))
    state = sharding.put_replicated(state, mesh)
    batches = make_batches(config, workdir, _images)

    def step_fn(state, batch, key):
        return train_step(spec, state, batch, key)

    state, rows = loop.run(config=config, workdir=workdir, state=state, step_fn=step_fn, batches=batches,
                           mesh=mesh, name="vae_pretrain")
    if not spec.trainable or "encoder" in spec.trainable:
        n = max(1, min(config.scale_batches, -(-batches.num_examples // config.batch_size)))
        cfg = dataclasses.replace(cfg, scaling_factor=latent_scale(model_def, state["params"], batches, n))
    export(state["params"], cfg, workdir)
    return state, rows


def export(params: dict, cfg: VAEConfig, workdir: str) -> str:
    """The VAE as a weights checkpoint of family `sd-vae` (what the codec and the other trainers load)."""
    return loop.save_export(workdir, family="sd-vae", config=dataclasses.asdict(cfg), params=pure_to_flat(params))


if __name__ == "__main__":
    cli.main(train)
