"""`python -m benchmarks.it2v_quality [--preset tiny|demo]`: IT2V quality choices on a real clip.

The bundled clip `assets/clips/bikes_4s.mp4` at 128x80, 8 fps, frames 0..5: frames 0 and 5 are the
keyframes (taken uncoded here), 1..4 are rebuilt. Models: `tiny` = the tiny UNet and VAE presets with
random weights; `demo` = the bundled demo VAE and keyframe UNet (its ẑ input channels get zeros). The
motion text is the tiny CLIP's encoding of a fixed sentence. Cheap settings (LoRA 20 steps, 10 DDIM
steps, 30 Adam steps on w at lr 1e-2) so the whole run takes minutes on 2 cores.

Prints, for each latent interpolation (`linear` = CMVC eq. 5, `diffmorpher` = slerp + AdaIN): the PSNR of
the rebuilt frames with uniform w (w = position in the clip) and with optimised w, and for the optimised w
quantised to b bits the PSNR and the rate (2·b bits per frame). Last line: `ratio=` PSNR gain of
`diffmorpher` over `linear` with optimised w, in dB (positive: diffmorpher better).
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from m3cvc_jax.io.video import PreprocessConfig, load_video
from m3cvc_jax.pipelines import api, it2v
from m3cvc_jax.pipelines.codec import Codec
from m3cvc_jax.pipelines.it2v_clips import IT2VClips

BITS = (2, 3, 4, 6, 8)


def psnr(a, b) -> float:
    mse = float(jnp.mean(jnp.square((a - b) / 2.0)))  # [-1, 1] -> [0, 1]
    return 10 * np.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny", choices=("tiny", "demo"))
    args = parser.parse_args(argv)
    codec = Codec.load(args.preset)
    params, spec = codec.params, codec.spec
    video = load_video("assets/clips/bikes_4s.mp4",
                       PreprocessConfig(width=spec.width, height=spec.height, fps=8, max_frames=6))
    frames = jnp.asarray(video.frames, jnp.float32) / 127.5 - 1.0
    text = api.encode_text(params, api.tokenize(["two cyclists ride along a country road"]))
    cfg = it2v.IT2VConfig(lora_rank=16, lora_steps=20, sampling_steps=10, opt_steps=30, opt_lr=1e-2)
    # The codec's own path: a UNet copy with LoRA layers, both LoRAs trained and inverted (endpoints).
    clips = IT2VClips(params["codec"].unet, params["codec"].vae, cfg)
    ends = clips.endpoints(frames[0], frames[5], text[0], jax.random.key(0))
    unet, vae, sched = clips.unet, clips.vae, clips.scheduler
    s0, s1, x0, x1 = ends.lora0, ends.lora1, ends.x0, ends.x1
    targets = frames[1:5]
    uniform = it2v.position_weights(4)
    results = {}
    for method in ("linear", "diffmorpher"):
        mcfg = dataclasses.replace(cfg, interpolation=method)

        @jax.jit
        def rebuild(ws, method=method):
            return jax.vmap(lambda w: it2v.interpolate_frame(unet, vae, s0, s1, x0, x1, w[0], w[1], text, sched,
                                                             interpolation=method)[0])(ws)

        w_opt, losses = jax.jit(it2v.optimise_weights, static_argnames="config")(
            unet, vae, s0, s1, x0, x1, text, targets, uniform, sched, mcfg)
        p_uniform, p_opt = psnr(rebuild(uniform), targets), psnr(rebuild(w_opt), targets)
        results[method] = p_opt
        print(f"{method:12s} uniform w: PSNR {p_uniform:6.2f} dB   optimised w: PSNR {p_opt:6.2f} dB   "
              f"w = {np.round(np.asarray(w_opt), 3).tolist()}")
        for bits in BITS:
            wq = it2v.dequantize_weights(it2v.quantize_weights(w_opt, bits), bits)
            print(f"{'':12s} {bits} bits/weight ({2 * bits} bits/frame): PSNR {psnr(rebuild(wq), targets):6.2f} dB")
    print(f"preset {args.preset}, {spec.width}x{spec.height}, LoRA {cfg.lora_steps} steps, "
          f"{cfg.sampling_steps} DDIM steps, {cfg.opt_steps} w steps at lr {cfg.opt_lr}")
    gain = results["diffmorpher"] - results["linear"]
    print(f"ratio={gain:.3f}")
    return gain


if __name__ == "__main__":
    main()
