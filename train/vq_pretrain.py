"""VQ pretraining: post-encoder + codebook on frozen SD VAE latents (commit loss + latent reconstruction).

    python -m train.vq_pretrain --config configs/vq_pretrain.py:tiny --workdir /tmp/vq_tiny

The paper trains the VQ with the commit loss ||z - sg(z_q)||^2 only; alone it is minimised by putting every
vector on one codeword. We add the MSE of a small post-decoder's reconstruction of the SD latent from the
straight-through quantised `h` (the post-decoder is dropped after training), and update the codebook by EMA
with dead-code restarts (or by the codebook loss). The final post-encoder + codebook are exported to
`<workdir>/export` (family `keyframe-vq`) for the decoder fine-tune and the codec, with the word counts
of the final model over the training frames (the table `coding.entropy_model=static` codes with).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from m3cvc_jax import weights
from m3cvc_jax.codec import entropy, vq
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.keyframe_codec import KeyframeCodecConfig, frame_latent
from m3cvc_jax.nn.post_encoder import Codebook, PostDecoder, PostEncoder, PostEncoderConfig
from m3cvc_jax.nn.vae import AutoencoderKL, VAEConfig
from m3cvc_jax.random_weights import random_module
from train import cli, loop, optim, sharding
from train.data import loader

EXPORT_FAMILY = "keyframe-vq"


class VQModel(nnx.Module):
    """What VQ pretraining trains; names match `KeyframeCodec` (post_encoder.*, codebook.embedding)."""

    def __init__(self, config: PostEncoderConfig, *, rngs: nnx.Rngs):
        self.post_encoder = PostEncoder(config, rngs=rngs)
        self.codebook = Codebook(config, rngs=rngs)
        self.post_decoder = PostDecoder(config, rngs=rngs)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything static about a step (hashable: jitted once per run shape)."""

    model: nnx.GraphDef
    vae: nnx.GraphDef
    optimizer: optim.OptimizerConfig
    schedule_steps: int  # the run length when the schedule depends on it (else 0: resuming with a
                         # larger num_steps reuses the compiled step)
    update: str
    commit_weight: float
    ema_decay: float
    restart_every: int
    restart_threshold: float
    rate_weight: float = 0.0  # 0: no rate term (the step is the one without it, op for op)
    rate_temperature: float = 1.0


def _tx(spec: Spec, params: Any) -> optax.GradientTransformation:
    # With EMA updates the codebook moves by k-means averaging, never by the optimiser.
    trainable = jax.tree_util.tree_map_with_path(
        lambda path, _: not (spec.update == "ema" and path[0].key == "codebook"), params)
    return optim.masked(spec.optimizer, spec.schedule_steps, trainable)


def vq_objective(h: jax.Array, codewords: jax.Array, rec: jax.Array, latent: jax.Array, commit_weight: float,
                 *, codebook_term: bool) -> tuple[jax.Array, dict]:
    """rec + beta * ||h - sg(z_q)||^2 / D (+ ||sg(h) - z_q||^2 / D when the codebook learns by the loss).

    The reconstruction term is normalised by the batch's latent variance: the fraction of the latent the
    indices fail to carry, comparable across VAEs (a random tiny VAE's latents are far smaller than SD's).
    The squared norms sum over D; dividing by D weights them per element as in VQ-VAE."""
    rec_loss = jnp.mean(jnp.square(rec.astype(jnp.float32) - latent)) / (jnp.var(latent) + 1e-12)
    commit = vq.commit_loss(h, codewords)
    book = vq.codebook_loss(h, codewords) if codebook_term else jnp.zeros(())
    d = h.shape[-1]
    loss = rec_loss + commit_weight * commit / d + book / d
    return loss, dict(rec_loss=rec_loss, commit_loss=commit, codebook_loss=book)


def _step(spec: Spec, vae_params: Any, state: dict, batch: dict, key: jax.Array) -> tuple[dict, dict]:
    vae = nnx.merge(spec.vae, vae_params)
    latent = jax.lax.stop_gradient(frame_latent(vae, batch["image"]))

    def loss_fn(params):
        m = nnx.merge(spec.model, params)
        h = m.post_encoder(latent)
        codebook = m.codebook()
        q = vq.quantize(h, codebook)
        rec = m.post_decoder(q.z_q)
        loss, parts = vq_objective(h, q.codewords, rec, latent, spec.commit_weight,
                                   codebook_term=spec.update == "loss")
        if spec.rate_weight:  # static: a weight of 0 traces exactly the step without the term
            # The words' running counts (+1: none has probability 0) are the context model's marginal.
            marginal = jax.lax.stop_gradient(state["ema"].cluster_size) + 1.0
            rate = vq.context_rate_bits(h, codebook, q.indices, marginal, spec.rate_temperature)
            loss = loss + spec.rate_weight * rate
            parts = dict(parts, rate_bits=rate)
        return loss, dict(h=h, indices=q.indices, **parts)

    params = state["params"]
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = _tx(spec, params).update(grads, state["opt_state"], params)
    params = optax.apply_updates(params, updates)

    h, indices = aux.pop("h"), aux.pop("indices")
    ema, ema_codebook = vq.ema_update(state["ema"], h, indices, decay=spec.ema_decay)
    codebook = ema_codebook if spec.update == "ema" else params["codebook"]["embedding"]
    step = state["step"] + 1
    due = (spec.restart_every > 0) & (step % max(spec.restart_every, 1) == 0)
    restarted, dead = vq.restart_dead_codes(key, codebook, ema.cluster_size, h, threshold=spec.restart_threshold)
    # Step 1 restarts every code: the codebook starts on real encoder outputs (data-dependent init).
    dead = (dead & due) | (step == 1)
    codebook = jnp.where(dead[:, None], restarted, codebook).astype(params["codebook"]["embedding"].dtype)
    ema = vq.ema_reset(ema, codebook, dead)
    params = {**params, "codebook": {"embedding": codebook}}

    stats = vq.code_stats(indices, codebook.shape[0])
    metrics = dict(loss=loss, **aux, perplexity=stats.perplexity, usage=stats.usage, dead_codes=stats.dead,
                   index_entropy_bits=stats.entropy_bits, restarted_codes=jnp.sum(dead),
                   grad_norm=optax.global_norm(grads))
    return dict(step=step, params=params, opt_state=opt_state, ema=ema), metrics


train_step = jax.jit(_step, static_argnums=0, donate_argnums=2)


@functools.partial(jax.jit, static_argnums=0)
def _indices(spec: Spec, vae_params: Any, params: Any, images: jax.Array) -> jax.Array:
    vae, m = nnx.merge(spec.vae, vae_params), nnx.merge(spec.model, params)
    return vq.nearest(m.post_encoder(frame_latent(vae, images)), m.codebook())


def load_frozen_vae(codec_cfg: KeyframeCodecConfig, path: str, seed: int) -> AutoencoderKL:
    """The frozen VAE: converted/trained weights from `path`, else numpy-random for `seed` (tiny only)."""
    if path:
        # The checkpoint's own config: a trained VAE carries its measured scaling_factor.
        return weights.load_module(path, family="sd-vae",
                                   build=lambda cfg, rngs: AutoencoderKL(VAEConfig.from_dict(cfg), rngs=rngs))
    if codec_cfg.vae.block_out_channels == (128, 256, 512, 512):
        raise ConfigError("vae_weights is empty: the paper-sized VAE must be converted weights "
                          "(python -m convert_weights sd-vae SRC DST)")
    # numpy-drawn (`random_module`): eager JAX initialisers compile one program per parameter shape,
    # which costs more than a tiny run itself.
    return random_module(lambda rngs: AutoencoderKL(codec_cfg.vae, rngs=rngs), seed, "sd-vae")


def codec_config(config) -> KeyframeCodecConfig:
    return KeyframeCodecConfig.preset(config.model, pixels_per_index=config.pixels_per_index,
                                      width=config.width, height=config.height)


def make_batches(config, workdir: str, fn) -> loader.Batches:
    d = config.data
    data_dir = d.data_dir or os.path.join(workdir, "data")
    b = loader.prepare(d.name, manual_dir=d.manual_dir, data_dir=data_dir, width=config.width,
                       height=config.height, fps=d.fps, keyframes=d.keyframes, interval=d.interval,
                       threshold=d.threshold, max_clip_length=d.max_clip_length, clip_weights=d.clip_weights,
                       captions=d.captions, describer=d.describer, describer_weights=d.describer_weights,
                       max_frames=d.max_frames)
    return loader.Batches(b.as_data_source(split="train"), batch_size=config.batch_size, seed=config.seed, fn=fn)


def _images(example: dict) -> dict:
    return {"image": loader.image_to_model(example)["image"]}


class Setup(NamedTuple):
    state: dict  # initial train state (replicated on the mesh)
    step_fn: Callable  # (state, batch, key) -> (state, metrics)
    batches: loader.Batches
    mesh: Any
    codec_config: KeyframeCodecConfig
    indices_fn: Callable | None = None  # (params, images) -> index maps of the model being trained


def setup(config, workdir: str) -> Setup:
    """Models, initial state, the jitted step and the data of a run (what `train` loops over)."""
    rate_weight, rate_temperature = float(config.vq.rate_weight), float(config.vq.rate_temperature)
    if not (math.isfinite(rate_weight) and 0 <= rate_weight <= 1e3):
        raise ConfigError(f"vq.rate_weight = {rate_weight} outside [0, 1000]")
    if not (math.isfinite(rate_temperature) and 1e-4 <= rate_temperature <= 1e4):
        raise ConfigError(f"vq.rate_temperature = {rate_temperature} outside [1e-4, 1e4]")
    mesh = sharding.data_mesh()
    sharding.check_batch_size(config.batch_size, mesh)
    codec_cfg = codec_config(config)
    vae = load_frozen_vae(codec_cfg, config.vae_weights, config.seed)
    model = random_module(lambda rngs: VQModel(codec_cfg.post_encoder, rngs=rngs), config.seed, "vq-pretrain")
    model_def, params = nnx.split(model, nnx.Param)
    vae_def, vae_params = nnx.split(vae, nnx.Param)
    spec = Spec(model_def, vae_def, optim.OptimizerConfig.from_config(config.optimizer),
                optim.schedule_steps(config.optimizer, config.num_steps),
                config.vq.codebook_update, config.vq.commit_weight, config.vq.ema_decay, config.vq.restart_every,
                config.vq.restart_threshold, rate_weight, rate_temperature)
    if spec.update not in ("ema", "loss"):
        raise ConfigError(f"vq.codebook_update must be 'ema' or 'loss', got {spec.update!r}")
    params = params.to_pure_dict()
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=_tx(spec, params).init(params),
                 ema=vq.ema_init(params["codebook"]["embedding"]))
    state = sharding.put_replicated(state, mesh)
    vae_params = sharding.put_replicated(vae_params.to_pure_dict(), mesh)

    def step_fn(state, batch, key):
        return train_step(spec, vae_params, state, batch, key)

    def indices_fn(params, images):
        return _indices(spec, vae_params, params, images)

    return Setup(state, step_fn, make_batches(config, workdir, _images), mesh, codec_cfg, indices_fn)


def index_histogram(s: Setup, params: Any, num_batches: int) -> tuple[int, ...]:
    """Word counts of the model `params` over the first `num_batches` batches (at most one epoch)."""
    epoch = math.ceil(s.batches.num_examples / s.batches.batch_size)
    maps = (np.asarray(s.indices_fn(params, sharding.put_batch(s.batches[i], s.mesh)["image"]))
            for i in range(max(1, min(num_batches, epoch))))
    return entropy.fit_histogram(maps, s.codec_config.post_encoder.codebook_size)


def train(config, workdir: str) -> tuple[dict, list[dict]]:
    """Run (or resume) VQ pretraining; returns the final state and the metric rows logged by this call."""
    s = setup(config, workdir)
    state, rows = loop.run(config=config, workdir=workdir, state=s.state, step_fn=s.step_fn, batches=s.batches,
                           mesh=s.mesh, name="vq_pretrain")
    histogram = index_histogram(s, state["params"], config.histogram_batches)
    export(state["params"], s.codec_config.post_encoder, workdir, histogram=histogram)
    return state, rows


def pure_to_flat(tree: Any) -> dict[str, Any]:
    """Nested pure dict (NNX `to_pure_dict`) -> flat dot-joined keys, as `m3cvc_jax.weights` stores them."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {".".join(str(k.key) for k in path): jax.device_get(v) for path, v in leaves}


def export(params: dict, pe_config: PostEncoderConfig, workdir: str,
           histogram: tuple[int, ...] | None = None) -> str:
    """post_encoder.* and codebook.embedding as a weights checkpoint (what the codec loads), with the word
    histogram of `coding.entropy_model=static` when given."""
    flat = pure_to_flat({k: params[k] for k in ("post_encoder", "codebook")})
    return loop.save_export(workdir, family=EXPORT_FAMILY, config=dataclasses.asdict(pe_config), params=flat,
                            tables={"histogram": histogram} if histogram else None)


if __name__ == "__main__":
    cli.main(train)
