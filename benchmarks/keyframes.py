"""Frames per second of the whole M3-CVC keyframe selection (CLIP embeddings + RAFT flow against the current
keyframe + the sequential decision) on a 33-frame 512x320 clip, JAX vs PyTorch.

    python -m benchmarks.keyframes [--video PATH] [--configs tiny,b32] [--repeats 1] [--block N]

Configs: `tiny` (CLIP tiny + RAFT tiny) and `b32` (CLIP ViT-B/32 + RAFT small), random weights (the
speed hardly depends on them; which frames are keyframes does). PyTorch runs the reference's loop: one flow
per frame, T flows whatever is decided. JAX computes flows only for the frames whose decision needs them
(not frame 0, forced keyframes, or frames CLIP alone makes keyframes), up to `--block` of them against the
current keyframe in one batched call, and discards those after a new keyframe. Both flow counts are
printed, and the whole scan's seconds per flow computed on each side (PyTorch's / JAX's: above 1, JAX is
faster per flow), so the gain from skipping and the per-flow speed show apart. JAX: one jitted call for
CLIP and the scan, timed after a warm-up (compile time printed apart). PyTorch: transformers' CLIPModel and
torchvision's RAFT with the same weights and the same per-frame loop, at its best thread count (1 or 2).
The last line is `ratio=` JAX frames/s / PyTorch frames/s for the last config (the figure of issue 21).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

T, WIDTH, HEIGHT = 33, 512, 320
DEFAULT_VIDEO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                             "bigbuckbunny.mp4")
CONFIGS = {"tiny": ("tiny", "tiny"), "b32": ("vit-b-32", "small")}


def load_clip(path: str) -> np.ndarray:
    """33 frames, centre-cropped and resized to 512x320 (random frames if the file is absent)."""
    if not os.path.isfile(path):
        print(f"{path} not found: random frames")
        return np.random.default_rng(0).integers(0, 256, (T, HEIGHT, WIDTH, 3), dtype=np.uint8)
    import av

    from m3cvc_jax.io.video import crop_resize

    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frames.append(crop_resize(frame.to_ndarray(format="rgb24"), WIDTH, HEIGHT))
            if len(frames) == T:
                break
    return np.stack(frames)


def run_jax(frames, clip_preset, raft_preset, repeats, block):
    import jax

    from types import SimpleNamespace

    from m3cvc_jax.codec.keyframes import KeyframeConfig, block_schedule, keyframe_indices
    from m3cvc_jax.nn.clip import CLIPConfig, CLIPModel
    from m3cvc_jax.nn.raft import RAFT, RAFTConfig
    from m3cvc_jax.pipelines.keyframe_stage import flow_block, flow_size, select_raft
    from m3cvc_jax.random_weights import random_module

    cfg = KeyframeConfig(method="m3cvc", clip_model=clip_preset, flow_model=raft_preset)
    models = SimpleNamespace(
        clip=random_module(lambda r: CLIPModel(CLIPConfig.preset(clip_preset), rngs=r), 0, "clip"),
        raft=random_module(lambda r: RAFT(RAFTConfig.preset(raft_preset), rngs=r), 0, "raft"))
    start = time.perf_counter()
    jax.block_until_ready(select_raft(frames, cfg, models, block=block))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        d, sizes = select_raft(frames, cfg, models, block=block)
        keys = keyframe_indices(d)
        jax.block_until_ready((d, sizes))
        times.append(time.perf_counter() - start)
    t, h, w, _ = frames.shape
    fh, fw = flow_size(h, w, 16 * 2 ** (models.raft.config.corr_block_num_levels - 1))
    used = flow_block(t, fh, fw, cfg, block, models.raft.config)
    calls = block_schedule(sizes)
    flows = sum(s for _, s in calls)
    print(f"JAX flows: {flows} computed for {t} frames in {len(calls)} calls of up to {used} "
          f"(batches {[s for _, s in calls]})")
    return models, cfg, keys, flows, first - min(times), min(times)


def run_torch(frames, models, cfg, threads, repeats):
    import torch
    import transformers
    import torchvision.models.optical_flow.raft as tv_raft

    from m3cvc_jax.nn.clip import CLIP_MEAN, CLIP_STD

    torch.set_num_threads(threads)
    ccfg = models.clip.config
    hf = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dataclasses.asdict(ccfg.text), vision_config=dataclasses.asdict(ccfg.vision),
        projection_dim=ccfg.projection_dim)).eval()
    rcfg = models.raft.config
    norms = {"instance": torch.nn.InstanceNorm2d, "batch": torch.nn.BatchNorm2d, None: None}
    blocks = {"residual": tv_raft.ResidualBlock, "bottleneck": tv_raft.BottleneckBlock}
    # torchvision's own builder (raft_small/raft_large call it with these very presets).
    ref = tv_raft._raft(
        feature_encoder_layers=rcfg.feature_encoder_layers, feature_encoder_block=blocks[rcfg.feature_encoder_block],
        feature_encoder_norm_layer=norms[rcfg.feature_encoder_norm],
        context_encoder_layers=rcfg.context_encoder_layers, context_encoder_block=blocks[rcfg.context_encoder_block],
        context_encoder_norm_layer=norms[rcfg.context_encoder_norm],
        corr_block_num_levels=rcfg.corr_block_num_levels, corr_block_radius=rcfg.corr_block_radius,
        motion_encoder_corr_layers=rcfg.motion_encoder_corr_layers,
        motion_encoder_flow_layers=rcfg.motion_encoder_flow_layers,
        motion_encoder_out_channels=rcfg.motion_encoder_out_channels,
        recurrent_block_hidden_state_size=rcfg.recurrent_block_hidden_state_size,
        recurrent_block_kernel_size=rcfg.recurrent_block_kernel_size,
        recurrent_block_padding=rcfg.recurrent_block_padding, flow_head_hidden_size=rcfg.flow_head_hidden_size,
        use_mask_predictor=rcfg.use_mask_predictor)
    ref = ref.eval()

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def once():
        with torch.no_grad():
            x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
            short = ccfg.vision.image_size
            resized = torch.nn.functional.interpolate(x, size=(short, int(short * WIDTH / HEIGHT)), mode="bicubic",
                                                      antialias=True)
            left = (resized.shape[-1] - short) // 2
            pix = ((resized[..., left:left + short].clamp(0, 255) / 255) - mean) / std
            emb = hf.get_image_features(pixel_values=pix).pooler_output
            emb = emb / emb.norm(dim=-1, keepdim=True)
            imgs = x / 127.5 - 1
            last, keys = 0, [0]
            diag = float(np.hypot(HEIGHT, WIDTH))
            for n in range(len(frames)):
                flow = ref(imgs[last:last + 1], imgs[n:n + 1], num_flow_updates=12)[-1]
                motion = flow.norm(dim=1).mean().item() / diag
                sem = 1 - float(emb[n] @ emb[last])
                if n and (cfg.lambda1 * sem + cfg.lambda2 * motion - cfg.threshold > 0
                          or n - last >= cfg.max_clip_length - 1):
                    last = n
                    keys.append(n)
        return keys

    with torch.no_grad():  # warm-up of the allocator and kernels on one frame (PyTorch compiles nothing)
        hf.get_image_features(pixel_values=torch.zeros(1, 3, ccfg.vision.image_size, ccfg.vision.image_size))
        one = torch.zeros(1, 3, HEIGHT, WIDTH)
        ref(one, one, num_flow_updates=2)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default=DEFAULT_VIDEO)
    parser.add_argument("--configs", default="tiny,b32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", default="1,2", help="PyTorch thread counts to try (best reported)")
    parser.add_argument("--block", type=int, default=None, help="JAX flows per batched call (default: the stage's)")
    args = parser.parse_args()
    frames = load_clip(args.video)
    print(f"clip: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]}")
    ratio = float("nan")
    for name in args.configs.split(","):
        clip_preset, raft_preset = CONFIGS[name]
        models, cfg, keys, jax_flows, compile_s, jax_s = run_jax(frames, clip_preset, raft_preset, args.repeats,
                                                                 args.block)
        torch_s = {int(t): run_torch(frames, models, cfg, int(t), args.repeats) for t in args.threads.split(",")}
        best_threads = min(torch_s, key=torch_s.get)
        jax_fps, torch_fps = T / jax_s, T / torch_s[best_threads]
        print(f"{name} (CLIP {clip_preset} + RAFT {raft_preset}): JAX {jax_s:.2f} s = {jax_fps:.2f} frames/s "
              f"(compile {compile_s:.1f} s; keyframes {keys}); PyTorch "
              + ", ".join(f"{t} thread(s) {s:.2f} s" for t, s in torch_s.items())
              + f" -> best {torch_fps:.2f} frames/s")
        ratio = jax_fps / torch_fps
        per_flow = (torch_s[best_threads] / T) / (jax_s / max(jax_flows, 1))
        print(f"{name}: flows JAX {jax_flows}, PyTorch {T}; whole-scan seconds per flow PyTorch/JAX = {per_flow:.3f}")
        print(f"{name}: JAX/PyTorch frames/s = {ratio:.3f}")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
