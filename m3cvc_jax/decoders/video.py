"""Clips rebuilt from decoded keyframes and clip text with SEINE (prediction or interpolation).

One window is SEINE's sampling script (`sample_scripts/with_mask_sample.py`) made functional: the given
keyframe(s) are placed in a 16-frame pixel window (other frames 0 = grey after masking), the window is
VAE-encoded (a posterior sample, x 0.18215, as the script does), and the UNet denoises 4 latent
channels with the frame mask and the masked-video latent concatenated to its input, under classifier-
free guidance against the empty prompt; the latents are then decoded.

Modes: `prediction` (mask `first1`: keyframe i given, the following frames generated) and
`interpolation` (`onelast1`: keyframes i and i+1 at both ends). Clips longer than a window are chained:
each further window is conditioned on the last frame generated so far (prediction windows), and in
interpolation mode the final window ends on keyframe i+1; a final window that needs fewer than 16 frames
is sampled at 16 and evenly subsampled (keeping both ends). Output frame rate (nearest-frame retiming
from SEINE's native rate) and resolution are set in the config.

Deviation from the reference, on by default (`keep_keyframes`): after sampling, the latents of the
given frames are replaced by the encoded keyframes (SEINE leaves the model's own reproduction there).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from m3cvc_jax.diffusion import predictions, seine_masks
from m3cvc_jax.diffusion import sampler as sampler_lib
from m3cvc_jax.diffusion.ddim import DDIMScheduler
from m3cvc_jax.diffusion.ddpm import DDPMScheduler
from m3cvc_jax.diffusion.dpm_solver import DPMSolverMultistepScheduler
from m3cvc_jax.diffusion.guidance import CFGCond, guided, unguided
from m3cvc_jax.decoders.video_decoding import SAMPLERS, VideoDecoding
from m3cvc_jax.diffusion.schedules import NoiseSchedule
from m3cvc_jax.errors import ConfigError
from m3cvc_jax.nn.vae import sample_posterior
from m3cvc_jax.nn.video_unet import VideoUNet

MAX_SIDE = 512
DECODE_MULTIPLE = 8  # VideoReconstructor.clips decodes its frames in batches of a multiple of this


@dataclasses.dataclass(frozen=True)
class VideoReconstructionConfig:
    """The decoder's shape, fixed per stream: window: frames per SEINE call. height/width: generation size
    (multiples of 8, at most 512); out_height/out_width: output size (None: the generation size).
    source_fps: SEINE's frame rate; out_fps: output rate (None: unchanged). keep_keyframes: put the encoded
    keyframes back into the sampled latents; sample_posterior: encode the masked window with a posterior
    sample (SEINE) rather than the mean. How to sample (sampler, steps, guidance, strength) is a call
    argument, `VideoDecoding`; the latent scale is the VAE's own `scaling_factor`."""

    window: int = 16
    height: int = 320
    width: int = 512
    out_height: int | None = None
    out_width: int | None = None
    source_fps: float = 8.0
    out_fps: float | None = None
    keep_keyframes: bool = True
    sample_posterior: bool = True

    def __post_init__(self):
        for name in ("height", "width"):
            v = getattr(self, name)
            if v % 8 or not 8 <= v <= MAX_SIDE:
                raise ConfigError(f"{name} must be a multiple of 8 in [8, {MAX_SIDE}], got {v}")
        for name in ("out_height", "out_width"):
            v = getattr(self, name)
            if v is not None and not 1 <= v <= MAX_SIDE:
                raise ConfigError(f"{name} must be in [1, {MAX_SIDE}], got {v}")
        if self.window < 3:
            raise ConfigError(f"window must be at least 3 frames, got {self.window}")
        if self.source_fps <= 0 or (self.out_fps is not None and self.out_fps <= 0):
            raise ConfigError("frame rates must be positive")


def seine_scheduler(sampler: str = "ddpm", num_steps: int = 250):
    """SEINE's `create_diffusion(str(num_steps))` chain: DDPM (fixed-large variance) or DDIM (eta 0),
    epsilon prediction, no x0 clipping, the original timestep numbers given to the network; or
    DPM-Solver++ 2M on SEINE's schedule."""
    schedule = NoiseSchedule.seine()
    if sampler == "ddpm":
        return DDPMScheduler.respaced(schedule, str(num_steps))
    if sampler == "ddim":
        return DDIMScheduler.respaced(schedule, str(num_steps), eta=0.0)
    if sampler == "dpmpp2m":
        return DPMSolverMultistepScheduler.create(schedule, num_steps)
    raise ConfigError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")


@functools.lru_cache(maxsize=16)
def seine_chain(decoding: VideoDecoding):
    """The steps a `VideoDecoding` runs: `seine_scheduler`, cut to its last `run_steps` (strength < 1)."""
    scheduler = seine_scheduler(decoding.sampler, decoding.steps)
    skip = decoding.steps - decoding.run_steps
    return jax.tree.map(lambda a: a[skip:], scheduler) if skip else scheduler


@struct.dataclass
class SeineCond:
    """What SEINE's UNet sees besides x_t: text embeddings, latent frame mask, masked-video latent."""

    text: jax.Array  # (B, L, D)
    mask: jax.Array  # (B, T, h, w, 1)
    masked: jax.Array  # (B, T, h, w, 4)


def seine_model_fn(graphdef: nnx.GraphDef):
    """`model_fn(state, x, t, SeineCond) -> eps` for the diffusion sampler."""

    def model_fn(state, x, t, cond: SeineCond):
        unet = nnx.merge(graphdef, state)
        return unet(seine_masks.unet_input(x, cond.mask, cond.masked), t, cond.text)

    return model_fn


def sample_window(model_fn, state, scheduler, cond: SeineCond, null_text: jax.Array, cfg_scale, *,
                  key: jax.Array | None = None, x_T: jax.Array | None = None,
                  noises: jax.Array | None = None) -> jax.Array:
    """Latents of one window, guided as SEINE's `forward_with_cfg` ([cond; uncond] in one batch).

    model_fn must be `guided(seine_model_fn(...))` built once by the caller (jit caches on it).
    """
    b, t, h, w, _ = cond.masked.shape
    uncond = SeineCond(jnp.broadcast_to(null_text, (b, *null_text.shape[-2:])), cond.mask, cond.masked)
    return sampler_lib.sample(model_fn, state, x_T, scheduler, CFGCond(cond, uncond, cfg_scale), key=key,
                              shape=(b, t, h, w, 4), noises=noises)


def retime(num_frames: int, source_fps: float, out_fps: float | None) -> np.ndarray:
    """Indices of the source frames shown at `out_fps` (nearest earlier frame), same duration."""
    if out_fps is None or out_fps == source_fps:
        return np.arange(num_frames)
    n_out = max(1, int(round(num_frames * out_fps / source_fps)))
    return np.minimum(np.floor(np.arange(n_out) * source_fps / out_fps + 1e-9).astype(int), num_frames - 1)


def subsample(num_have: int, num_want: int) -> np.ndarray:
    """`num_want` evenly spread indices into `num_have` frames, both ends included."""
    return np.round(np.linspace(0, num_have - 1, num_want)).astype(int)


def window_plan(num_frames: int, mode: str, window: int) -> list[tuple[str, np.ndarray]]:
    """The windows a clip is chained over: (window mode, indices of the window's frames kept) each. Every
    window after the first starts on the last frame kept so far (its first kept frame repeats it)."""
    seine_masks.mask_type_for(mode)
    if num_frames < 1:
        raise ConfigError(f"a clip needs at least one frame, got {num_frames}")
    if mode == "interpolation" and num_frames < 2:
        raise ConfigError("interpolation needs at least 2 frames (both keyframes)")
    plan, have = [], 1  # frames produced so far, counting the first keyframe
    while True:
        remaining = num_frames - have
        final = remaining <= window - 1
        wmode = "interpolation" if (mode == "interpolation" and final) else "prediction"
        take = subsample(window, remaining + 1) if wmode == "interpolation" else np.arange(min(window, remaining + 1))
        plan.append((wmode, take))
        have += len(take) - 1
        if final:
            return plan


def _seine_eps(graphdef: nnx.GraphDef, guide: bool):
    # A new closure per trace is fine: the jitted functions below cache on the (static) graphdef.
    # Guidance at scale 1 is the conditional output: `guide=False` skips the unconditional half of the batch.
    return guided(seine_model_fn(graphdef), batched=True) if guide else unguided(seine_model_fn(graphdef))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample(graphdef: nnx.GraphDef, guide: bool, state, scheduler, cond: SeineCond, null_text: jax.Array,
            cfg_scale, *, key: jax.Array | None = None, x_T: jax.Array | None = None) -> jax.Array:
    return sample_window(_seine_eps(graphdef, guide), state, scheduler, cond, null_text, cfg_scale, key=key,
                         x_T=x_T)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _encode(vae_graphdef: nnx.GraphDef, latent_scale: float, posterior_sample: bool, vae_state, frames: jax.Array,
            key: jax.Array) -> jax.Array:
    """(B, T, H, W, 3) pixels -> scaled latents (a posterior sample, or the mean)."""
    vae = nnx.merge(vae_graphdef, vae_state)
    b, t = frames.shape[:2]
    mean, logvar = vae.encode(frames.reshape(b * t, *frames.shape[2:]))
    z = sample_posterior(mean, logvar, key) if posterior_sample else mean
    return (z * latent_scale).reshape(b, t, *z.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 1))
def _decode(vae_graphdef: nnx.GraphDef, latent_scale: float, vae_state, latents: jax.Array) -> jax.Array:
    vae = nnx.merge(vae_graphdef, vae_state)
    b, t = latents.shape[:2]
    x = vae.decode(latents.reshape(b * t, *latents.shape[2:]) / latent_scale)
    return jnp.clip(x, -1.0, 1.0).reshape(b, t, *x.shape[1:])


def _encode_distinct(vae, latent_scale: float, posterior_sample: bool, video: jax.Array, mask: jax.Array,
                     key: jax.Array) -> jax.Array:
    """`_encode` of one masked window (T, H, W, 3) -> (1, T, h, w, 4), running the VAE encoder on its three
    distinct frames only (the first, the last, a masked one: the encoder works frame by frame, so the
    others are copies); the posterior noise is drawn for all frames as `_encode` does."""
    t = video.shape[0]
    distinct = jnp.stack([video[0], video[-1], jnp.zeros_like(video[0])])
    mean, logvar = vae.encode(distinct)
    # Given frames in the first half come from the first frame, in the second half from the last.
    source = jnp.where(mask == 0, jnp.where(jnp.arange(t) >= t // 2, 1, 0), 2)
    mean, logvar = mean[source], logvar[source]
    z = sample_posterior(mean, logvar, key) if posterior_sample else mean
    return (z * latent_scale)[None]


def _windows_impl(graphdef: nnx.GraphDef, vae_graphdef: nnx.GraphDef, static: tuple, state, vae_state, scheduler,
             video, mask, blend, text, null_text, cfg_scale, keys):
    """The latents `VideoReconstructor.window` samples, for N independent windows in one program (vmapped,
    so window n with key n equals `window` with that key): video (N, T, H, W, 3) before masking, mask
    (N, T), blend (N, T) (the `strength` < 1 start: 0 holds the first frame, a ramp blends to the last),
    text (N, L, D), keys (N,) -> (N, T, h, w, 4). The VAE decode is left to the caller, which decodes only
    the frames it keeps (`VideoReconstructor.clips`).
    static: (latent_scale, sample_posterior, keep_keyframes, from_blend, guide)."""
    latent_scale, posterior_sample, keep_keyframes, from_blend, guide = static
    vae = nnx.merge(vae_graphdef, vae_state)
    model_fn = _seine_eps(graphdef, guide)

    def one(video, mask, blend, text, key):
        enc_key, sample_key = jax.random.split(key)
        masked = _encode_distinct(vae, latent_scale, posterior_sample, video, mask, enc_key)
        _, t, h, w, _ = masked.shape
        lat_mask = seine_masks.latent_mask(mask, 1, (h, w))
        x_T = None
        if from_blend:
            init_key, sample_key = jax.random.split(sample_key)
            wgt = blend[None, :, None, None, None]
            init = (1.0 - wgt) * masked[:, :1] + wgt * masked[:, -1:]
            x_T = predictions.add_noise(init, jax.random.normal(init_key, masked.shape, masked.dtype),
                                        scheduler.level[0])
        latents = sample_window(model_fn, state, scheduler, SeineCond(text[None], lat_mask, masked),
                                null_text, cfg_scale, key=sample_key, x_T=x_T)
        if keep_keyframes:
            latents = jnp.where(lat_mask == 0, masked, latents)
        return latents[0]

    return jax.vmap(one)(video, mask, blend, text, keys)


_windows = jax.jit(_windows_impl, static_argnums=(0, 1, 2))


class VideoReconstructor:
    """SEINE + VAE over the module-level jitted pieces above (static graphdefs and settings), so every
    reconstructor of the same architectures and settings shares their compiled programs.
    `text`/`null_text`: CLIP embeddings `(1, L, D)` of the clip description and of the empty prompt
    (the negative prompt of SEINE's configs)."""

    def __init__(self, unet: VideoUNet, vae, config: VideoReconstructionConfig = VideoReconstructionConfig()):
        self.config = config
        self.latent_scale = float(vae.config.scaling_factor)
        self.graphdef, self.state = nnx.split(unet)
        self.vae_graphdef, self.vae_state = nnx.split(vae)

    def _encode(self, vae_state, frames: jax.Array, key: jax.Array) -> jax.Array:
        return _encode(self.vae_graphdef, self.latent_scale, self.config.sample_posterior, vae_state, frames, key)

    def _decode(self, vae_state, latents: jax.Array) -> jax.Array:
        return _decode(self.vae_graphdef, self.latent_scale, vae_state, latents)

    def _fit(self, image: jax.Array) -> jax.Array:
        """(B, H, W, 3) in [-1, 1] at the generation size (bilinear, as SEINE's ResizeVideo)."""
        cfg = self.config
        image = jnp.asarray(image, jnp.float32)
        if image.ndim == 3:
            image = image[None]
        if image.shape[1:3] == (cfg.height, cfg.width):
            return image
        return jax.image.resize(image, (image.shape[0], cfg.height, cfg.width, image.shape[-1]), "bilinear",
                                antialias=False)

    def window(self, first: jax.Array, last: jax.Array | None, mode: str, text: jax.Array,
               null_text: jax.Array, key: jax.Array, decoding: VideoDecoding = VideoDecoding()
               ) -> tuple[jax.Array, jax.Array]:
        """One SEINE window: (frames (B, window, H, W, 3) in [-1, 1], latents (B, window, h, w, 4))."""
        cfg = self.config
        scheduler = seine_chain(decoding)
        mask_type = seine_masks.mask_type_for(mode)
        mask = seine_masks.frame_mask(mask_type, cfg.window)
        first = self._fit(first)
        last = None if last is None else self._fit(last)
        video = seine_masks.window_video(first, last, mask_type, cfg.window)
        enc_key, sample_key = jax.random.split(key)
        masked = self._encode(self.vae_state, seine_masks.masked_video(video, mask), enc_key)
        b, _, h, w, _ = masked.shape
        lat_mask = seine_masks.latent_mask(mask, b, (h, w))
        text = jnp.broadcast_to(jnp.asarray(text, jnp.float32), (b, *text.shape[-2:]))
        cond = SeineCond(text, lat_mask, masked)
        x_T = None
        if decoding.strength < 1.0:
            init_key, sample_key = jax.random.split(sample_key)
            x_T = self._start(masked, mode, scheduler.level[0], init_key)
        latents = _sample(self.graphdef, decoding.guidance_scale != 1.0, self.state, scheduler, cond,
                          jnp.asarray(null_text, jnp.float32), jnp.float32(decoding.guidance_scale), key=sample_key,
                          x_T=x_T)
        if cfg.keep_keyframes:
            latents = jnp.where(lat_mask == 0, masked, latents)
        return self._decode(self.vae_state, latents), latents

    @staticmethod
    def _start(masked: jax.Array, mode: str, level, key: jax.Array) -> jax.Array:
        """x at the first step of a shortened chain: the given frames' latents blended linearly across the
        window (interpolation) or held (prediction), noised to `level`."""
        t = masked.shape[1]
        w = jnp.linspace(0.0, 1.0, t)[None, :, None, None, None] if mode == "interpolation" else 0.0
        init = (1.0 - w) * masked[:, :1] + w * masked[:, -1:]
        return predictions.add_noise(init, jax.random.normal(key, masked.shape, masked.dtype), level)

    def clip(self, first: jax.Array, last: jax.Array | None, num_frames: int, mode: str, text: jax.Array,
             null_text: jax.Array, key: jax.Array, decoding: VideoDecoding = VideoDecoding()) -> jax.Array:
        """`num_frames` frames at SEINE's rate starting on `first` (and, in interpolation mode, ending on
        `last`), chained over windows; then retimed and resized per the config. Returns (B, N, H, W, 3)."""
        frames, start = [], self._fit(first)
        for index, (wmode, take) in enumerate(window_plan(num_frames, mode, self.config.window)):
            out, _ = self.window(start, last if wmode == "interpolation" else None, wmode, text, null_text,
                                 jax.random.fold_in(key, index), decoding)
            out = out[:, take]
            frames.append(out if index == 0 else out[:, 1:])
            start = out[:, -1]
        video = jnp.concatenate(frames, axis=1)[:, :num_frames]
        return self.finish(video)

    def clips(self, firsts: jax.Array, lasts: list, num_frames: list[int], modes: list[str], texts: jax.Array,
              null_text: jax.Array, keys: jax.Array, decoding: VideoDecoding = VideoDecoding(),
              windows_per_call: int | None = None) -> list[jax.Array]:
        """Every clip of a stream at once: what `clip` gives for clip c with `keys[c]`, but window k of every
        clip is sampled in ONE batched program (round k); a round with fewer windows than clips is padded
        to the number of clips, so every round runs the same compiled program. `windows_per_call` caps the
        batch (a round runs in calls of that many windows, padded); None: all windows of a round in one call.

        Only the frames a clip keeps go through the VAE decoder (in one call per round, padded to a multiple
        of `DECODE_MULTIPLE` frames): the frames a window drops (a short final window is sampled at the full
        window and subsampled) are never decoded, and the frames given to SEINE (the first keyframe, and the
        last in interpolation) are returned as given, not as their VAE round trip: at 128x80 the decoder
        is 10x a SEINE step per frame, and the codec shows its own decoded keyframes there anyway.

        firsts: (C, H, W, 3); lasts: C frames (H, W, 3) or None (prediction); texts: (C, L, D);
        null_text: (1, L, D); keys: (C,). Returns C videos (N_c, H', W', 3), retimed and resized.
        """
        cfg = self.config
        count = len(num_frames)
        if not (len(lasts) == len(modes) == count == firsts.shape[0] == texts.shape[0] == keys.shape[0]):
            raise ConfigError("clips: one first frame, last frame, length, mode, text and key per clip")
        plans = [window_plan(n, m, cfg.window) for n, m in zip(num_frames, modes)]
        starts = [self._fit(firsts[c]) for c in range(count)]
        ends = [None if last is None else self._fit(last) for last in lasts]
        texts = jnp.asarray(texts, jnp.float32)
        pieces: list[list[jax.Array]] = [[] for _ in range(count)]
        ramp = np.linspace(0.0, 1.0, cfg.window, dtype=np.float32)
        scheduler = seine_chain(decoding)
        static = (self.latent_scale, cfg.sample_posterior, cfg.keep_keyframes, decoding.strength < 1.0,
                  decoding.guidance_scale != 1.0)
        for index in range(max(len(p) for p in plans)):
            active = [c for c in range(count) if index < len(plans[c])]
            videos, masks, blends = [], [], []
            for c in active:
                wmode = plans[c][index][0]
                mask_type = seine_masks.mask_type_for(wmode)
                videos.append(seine_masks.window_video(starts[c], ends[c] if wmode == "interpolation" else None,
                                                       mask_type, cfg.window)[0])
                masks.append(seine_masks.frame_mask(mask_type, cfg.window))
                blends.append(ramp if wmode == "interpolation" else np.zeros_like(ramp))
            per_call = count if windows_per_call is None else max(1, min(windows_per_call, count))
            outs = []
            for lo in range(0, len(active), per_call):
                part = slice(lo, lo + per_call)
                rows = active[part]
                pad = per_call - len(rows)  # pad: repeat the call's first window
                outs.append(_windows(
                    self.graphdef, self.vae_graphdef, static, self.state, self.vae_state, scheduler,
                    jnp.stack(videos[part] + videos[lo:lo + 1] * pad),
                    jnp.asarray(np.stack(masks[part] + masks[lo:lo + 1] * pad)),
                    jnp.asarray(np.stack(blends[part] + blends[lo:lo + 1] * pad)),
                    texts[jnp.asarray(rows + rows[:1] * pad)], jnp.asarray(null_text, jnp.float32),
                    jnp.float32(decoding.guidance_scale),
                    jax.vmap(lambda k: jax.random.fold_in(k, index))(keys[jnp.asarray(rows + rows[:1] * pad)]))
                    [: len(rows)])
            latents = jnp.concatenate(outs)
            # Per window, the frames it adds to its clip: None for a given frame, else its row in `wanted`.
            wanted, slots = [], []
            for row, c in enumerate(active):
                wmode, take = plans[c][index]
                keep = take if index == 0 else take[1:]
                given = {0: starts[c][0]} if index == 0 else {}
                if wmode == "interpolation":
                    given[cfg.window - 1] = ends[c][0]
                slots.append([(int(j), given.get(int(j))) for j in keep])
                wanted += [(row, int(j)) for j in keep if int(j) not in given]
            decoded = self._decode_wanted(latents, wanted)
            position = {w: i for i, w in enumerate(wanted)}
            for (row, c), window_slots in zip(enumerate(active), slots):
                frames = [frame if frame is not None else decoded[position[row, j]] for j, frame in window_slots]
                pieces[c].append(jnp.stack(frames))
                starts[c] = frames[-1][None]
        return [self.finish(jnp.concatenate(p, axis=0)[None, :n])[0] for p, n in zip(pieces, num_frames)]

    def _decode_wanted(self, latents: jax.Array, wanted: list[tuple[int, int]]) -> jax.Array:
        """VAE-decode latents[row, frame] for every (row, frame) of `wanted` in one call, the frame count
        padded to a multiple of DECODE_MULTIPLE so streams of similar lengths share one program."""
        if not wanted:
            return jnp.zeros((0,))
        rows, frames = (np.array(v) for v in zip(*wanted))
        picked = latents[rows, frames]
        padded = -(-len(wanted) // DECODE_MULTIPLE) * DECODE_MULTIPLE
        picked = jnp.concatenate([picked, jnp.broadcast_to(picked[:1], (padded - len(wanted), *picked.shape[1:]))])
        return self._decode(self.vae_state, picked[None])[0, : len(wanted)]

    def finish(self, video: jax.Array) -> jax.Array:
        """Apply the output frame rate and resolution."""
        cfg = self.config
        video = video[:, retime(video.shape[1], cfg.source_fps, cfg.out_fps)]
        oh, ow = cfg.out_height or cfg.height, cfg.out_width or cfg.width
        if (oh, ow) != video.shape[2:4]:
            b, t = video.shape[:2]
            video = jax.image.resize(video, (b, t, oh, ow, video.shape[-1]), "bilinear")
        return video
