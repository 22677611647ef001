"""VAE pretraining: an SD-architecture AutoencoderKL learns to reconstruct frames (L1 + L2 + small KL).

    python -m train.vae_pretrain --config configs/vae_pretrain.py:tiny --workdir /tmp/vae_tiny

The paper never trains a VAE (it uses SD 1.5's); this trainer exists for the `demo` preset, whose small
VAE is trained here on the bundled clips. The loss is `l1 * |x - x'| + l2 * (x - x')^2 + kl * KL(q || N(0,1))`
(per element means; the KL per latent element) with `x'` decoded from a posterior sample. The trained VAE is
exported to `<workdir>/export` (family `sd-vae`, its `VAEConfig`) with `scaling_factor` set to
1 / std of the posterior means over the training frames (as SD chose 0.18215), so diffusion sees unit-variance latents.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

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


def vae_config(config) -> VAEConfig:
    m = config.vae
    return VAEConfig(block_out_channels=tuple(m.block_out_channels), layers_per_block=m.layers_per_block,
                     latent_channels=m.latent_channels, norm_num_groups=m.norm_num_groups,
                     mid_block_add_attention=m.mid_block_add_attention)


def _step(spec: Spec, state: dict, batch: dict, key: jax.Array) -> tuple[dict, dict]:
    x = batch["image"]

    def loss_fn(params):
        vae = nnx.merge(spec.model, params)
        mean, logvar = vae.encode(x)
        rec = vae.decode(sample_posterior(mean, logvar, key)).astype(jnp.float32)
        err = rec - x
        l1, l2 = jnp.mean(jnp.abs(err)), jnp.mean(jnp.square(err))
        m, lv = mean.astype(jnp.float32), logvar.astype(jnp.float32)
        kl = 0.5 * jnp.mean(jnp.square(m) + jnp.exp(lv) - 1.0 - lv)
        loss = spec.l1_weight * l1 + spec.l2_weight * l2 + spec.kl_weight * kl
        psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(l2, 1e-10))  # [-1, 1] images: peak-to-peak 2
        return loss, dict(l1=l1, l2=l2, kl=kl, psnr=psnr, latent_std=jnp.std(m))

    params = state["params"]
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    tx = optim.adamw(spec.optimizer, spec.schedule_steps)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)
    metrics = dict(loss=loss, **aux, grad_norm=optax.global_norm(grads))
    return dict(step=state["step"] + 1, params=params, opt_state=opt_state), metrics


train_step = jax.jit(_step, static_argnums=0, donate_argnums=1)


def latent_scale(model: nnx.GraphDef, params: dict, batches, num_batches: int) -> float:
    """1 / std of the posterior means over `num_batches` batches (SD's choice of `scaling_factor`)."""
    encode = jax.jit(lambda p, x: nnx.merge(model, p).encode(x)[0])
    means = [np.asarray(encode(params, batches[i]["image"])) for i in range(num_batches)]
    return float(1.0 / max(np.std(np.concatenate(means)), 1e-6))


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    """Run (or resume) VAE pretraining; returns the final state and the metric rows logged by this call."""
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    if min(config.loss.l1_weight, config.loss.l2_weight, config.loss.kl_weight) < 0:
        raise ConfigError("loss weights must be >= 0")
    cfg = vae_config(config)
    # numpy-drawn: eager JAX initialisers compile one program per parameter shape.
    model = random_module(lambda rngs: AutoencoderKL(cfg, rngs=rngs), config.seed, "vae-pretrain")
    model_def, params = nnx.split(model, nnx.Param)
    spec = Spec(model_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps),
                float(config.loss.l1_weight), float(config.loss.l2_weight), float(config.loss.kl_weight))
    params = params.to_pure_dict()
    tx = optim.adamw(spec.optimizer, spec.schedule_steps)
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    state = sharding.put_replicated(state, mesh)
    batches = make_batches(config, workdir, _images)

    def step_fn(state, batch, key):
        return train_step(spec, state, batch, key)

    state, rows = loop.run(config=config, workdir=workdir, state=state, step_fn=step_fn, batches=batches,
                           mesh=mesh, name="vae_pretrain")
    n = max(1, min(config.scale_batches, -(-batches.num_examples // config.batch_size)))
    scale = latent_scale(model_def, state["params"], batches, n)
    export(state["params"], dataclasses.replace(cfg, scaling_factor=scale), workdir)
    return state, rows


def export(params: dict, cfg: VAEConfig, workdir: str) -> str:
    """The VAE as a weights checkpoint of family `sd-vae` (what the codec and the other trainers load)."""
    return loop.save_export(workdir, family="sd-vae", config=dataclasses.asdict(cfg), params=pure_to_flat(params))


if __name__ == "__main__":
    cli.main(train)
