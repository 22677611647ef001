"""CMVC IT2V over a codec's keyframe UNet and VAE: compiled LoRA training, inversion, frame rendering and
the encoder's weight search (`pipelines/it2v.py` holds the pure maths; docs/cmvc.md).

One `IT2VClips` per codec settings. Its UNet is a copy of the keyframe UNet carrying LoRA layers on every
attention projection (the codec's own UNet is untouched); the keyframe UNet's extra input channels (ẑ)
get zeros, as no index map exists between keyframes. Every program is jitted at module level with its
settings static, so it compiles once per frame size and serves every clip and frame: the encoder's search
runs one frame at a time (clips have different lengths; a per-length vmap would compile per length).

Both sides call `endpoints` on the DECODED keyframes with the key of `it2v_key`, so on one platform the
decoder's LoRAs and inverted latents equal the encoder's bit for bit (tests/test_cli_it2v.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from m3cvc_jax.nn.keyframe_codec import frame_latent
from m3cvc_jax.pipelines import it2v

_latents = jax.jit(frame_latent)
_train = jax.jit(it2v.train_lora, static_argnames="config")
_invert = jax.jit(it2v.invert_keyframe)
_frame = jax.jit(it2v.interpolate_frame, static_argnames="interpolation")
_optimise = jax.jit(it2v.optimise_weights, static_argnames="config")

KEY_TAG = 0x17  # folded into the stream seed: the LoRA keys never coincide with the keyframe sampling keys


def it2v_key(seed: int, clip: int) -> jax.Array:
    """The LoRA training key of clip `clip` (both sides derive it from the header's seed)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), KEY_TAG), clip)


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """What both sides rebuild per clip: the two LoRAs and the inverted keyframe latents x_T."""

    lora0: object
    lora1: object
    x0: jax.Array
    x1: jax.Array
    text: jax.Array  # (1, S, D)


class IT2VClips:
    def __init__(self, unet: nnx.Module, vae: nnx.Module, config: it2v.IT2VConfig):
        self.config = config
        # The LoRA training program's static settings without the encoder-only w search: an encoder that
        # changed `opt_steps`/`opt_lr` then shares the decoder's compiled program instead of tracing and
        # compiling the same LoRA training again (eval encodes and decodes in one process).
        defaults = it2v.IT2VConfig()
        self.lora_config = dataclasses.replace(config, opt_steps=defaults.opt_steps, opt_lr=defaults.opt_lr)
        self.vae = vae
        self.unet = nnx.clone(unet)
        it2v.add_it2v_lora(self.unet, config)
        self.scheduler = it2v.make_scheduler(config.sampling_steps)

    def endpoints(self, first: jax.Array, last: jax.Array, text_emb: jax.Array, key: jax.Array) -> Endpoints:
        """LoRAs trained on the decoded keyframes `(H, W, 3)` under the clip's motion text `(S, D)`."""
        latents = _latents(self.vae, jnp.stack([first, last]).astype(jnp.float32))
        text = jnp.asarray(text_emb, jnp.float32)[None]
        k0, k1 = jax.random.split(key)
        lora0, _ = _train(self.unet, latents[:1], text, k0, self.lora_config)
        lora1, _ = _train(self.unet, latents[1:], text, k1, self.lora_config)
        x0 = _invert(self.unet, lora0, latents[:1], text, self.scheduler)
        x1 = _invert(self.unet, lora1, latents[1:], text, self.scheduler)
        return Endpoints(lora0, lora1, x0, x1, text)

    def frames(self, ends: Endpoints, w: np.ndarray) -> jax.Array:
        """In-between frames `(F, H, W, 3)` in [-1, 1] for weights `(F, 2)` = (w_i, w_l) per frame, F >= 1."""
        w = jnp.asarray(w, jnp.float32)
        out = [_frame(self.unet, self.vae, ends.lora0, ends.lora1, ends.x0, ends.x1, w[k, 0], w[k, 1], ends.text,
                      self.scheduler, interpolation=self.config.interpolation)[0] for k in range(w.shape[0])]
        return jnp.stack(out)

    def search(self, ends: Endpoints, frames: jax.Array) -> np.ndarray:
        """The encoder's (w_i, w_l) `(F, 2)` for the true in-between frames `(F, H, W, 3)` in [-1, 1]
        (eqs. 7-8; `opt_steps = 0` keeps the uniform start)."""
        n = frames.shape[0]
        start = np.asarray(it2v.position_weights(n))
        if self.config.opt_steps == 0 or n == 0:
            return start
        out = []
        for k in range(n):
            w, _ = _optimise(self.unet, self.vae, ends.lora0, ends.lora1, ends.x0, ends.x1, ends.text,
                             jnp.asarray(frames[k:k + 1], jnp.float32), jnp.asarray(start[k:k + 1]),
                             self.scheduler, self.config)
            out.append(np.asarray(w[0]))
        return np.stack(out)
