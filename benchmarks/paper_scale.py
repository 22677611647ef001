"""Every network of the `paper` preset at its real widths (random weights, nothing downloaded) at 512x320:
one forward (or sampler step) each, in float32 and in bfloat16 compute, time and memory per stage, and the
encode / decode time of a 33-frame clip projected from them at the paper's step counts.

    python -m benchmarks.paper_scale [--stages vae,keyframe_unet,...] [--dtypes float32,bfloat16]
                                     [--seine-frames 16] [--json OUT]
    python -m benchmarks.paper_scale --from-json OUT     # the table and projection of a saved run

Stages (each in its own subprocess, one at a time, so one model is resident at once):
  vae            SD VAE (83.7M): encode one frame 512x320, decode one 40x64 latent
  post_encoder   the VQ post-encoder + nearest codeword on one keyframe latent
  keyframe_unet  SD 1.5 UNet with the 32 index channels at conv_in (4 + 32 in), latent 40x64, CFG batch 2,
                 77x768 text: one DDIM step's network call
  clip           CLIP ViT-L/14: image embeddings of 8 frames (one chunk of the keyframe stage), one prompt
  raft           RAFT small at 512x320: features and context of one frame, flow of one pair (12 updates)
  seine          SEINE's video UNet (SD 1.4 + temporal attention), 16 frames of 40x64, CFG batch 2
  qwen2_vl       Qwen2-VL-2B (tied head): vision tower on one 504x308 image (792 patches), a 256-token
                 prefill, one decoded token against a 512-position KV cache

`--seine-frames N` (< 16) runs SEINE on N frames and scales its time by 16/N for the projection (a quick
run; SEINE is per-frame apart from its temporal attention, a small share at 40x64). A stage whose
estimated peak (`PEAK_PER_WEIGHT_BYTE` x its float32 weights, + 2 GB left to the machine) exceeds
MemAvailable is skipped with the reason printed.

Memory per stage, two figures: `xla` is the compiled program's own buffer plan
(`compiled.memory_analysis()`: arguments (weights + inputs) + outputs + temporaries, as this CPU backend
plans them; a GPU backend plans its own, close but not equal), the figure that bounds device memory;
`rss` is the worker process's peak resident memory (VmHWM), host copies of the weights included.
"device memory" of a command = the float32 weights of every model it keeps loaded + the largest program's
temporaries (XLA's plan); GFLOP are XLA's cost analysis of each program.

Projection for 33 frames (stated in the output): keyframes at 0, 15, 30 (SEINE's 16-frame window bounds
a clip), so K=3 keyframes, 3 clips, 3 SEINE windows (the last, 3-frame clip still costs a window).
Encode = 33 x (CLIP image + RAFT features + context + flow) + K x (VAE encode + post-encoder)
       + Qwen2-VL: K x (vision + 256-token prefill + 4 turns x 96 tokens) + 3 clips x (4 x vision for
         8 frames + 3.1 x prefill for ~800 tokens + 96 tokens) (follow-up prompts of later turns ignored).
Decode = (1 + K + 3) prompts + K x (20 DDIM steps x keyframe UNet + VAE decode)
       + 3 windows x (16 VAE encodes + 250 DDPM steps x SEINE + 16 VAE decodes).
Token counts use max_new_tokens (96), an upper bound. Times are wall-clock on this machine's CPU.

The last line is `ratio=<projected decode time with bfloat16 compute / with float32>` on this machine
(nan if a needed stage was not measured): below 1, bf16 decodes faster here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WIDTH, HEIGHT = 512, 320
LAT_H, LAT_W = HEIGHT // 8, WIDTH // 8
TEXT_LEN, TEXT_DIM = 77, 768
SEINE_WINDOW = 16
CLIP_CHUNK = 8
QWEN_PREFILL, QWEN_CACHE = 256, 512
QWEN_GRID = (1, 22, 36)  # 504x308 after the processor's resize to multiples of 28

# The paper preset's step counts and the clip assumed for the projection.
FRAMES, KEYFRAMES, CLIPS, WINDOWS = 33, 3, 3, 3
KEYFRAME_STEPS, SEINE_STEPS = 20, 250
TURNS, CLIP_TURNS, NEW_TOKENS, CLIP_PROMPT_TOKENS = 4, 1, 96, 800
RAFT_UPDATES = 12

STAGES = ("vae", "post_encoder", "keyframe_unet", "clip", "raft", "seine", "qwen2_vl")


# ------------------------------------------------------------------------------------- worker side


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _measure(fn, *args) -> dict:
    """Compile `fn(*args)`, run it once, time that run; XLA's buffer plan and cost estimate."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - t0
    out = {"compile_s": compile_s, "time_s": run_s}
    mem = compiled.memory_analysis()
    if mem is not None:
        out["xla_mb"] = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20
        out["temp_mb"] = mem.temp_size_in_bytes / 2**20
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and "flops" in cost:
        out["gflop"] = float(cost["flops"]) / 1e9
    return out


def _build(make, name: str):
    from m3cvc_jax.random_weights import random_module

    return random_module(make, 0, name)


def _split(model):
    from flax import nnx

    graphdef, state = nnx.split(model)
    return graphdef, state


def _params(state) -> int:
    import jax

    return int(sum(x.size for x in jax.tree.leaves(state)))


def run_stage(stage: str, dtype_name: str, seine_frames: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    dtype = jnp.dtype(dtype_name)
    key = jax.random.key(0)
    parts: dict[str, dict] = {}
    from m3cvc_jax.nn.keyframe_codec import KeyframeCodecConfig

    codec_cfg = KeyframeCodecConfig.preset("paper", width=WIDTH, height=HEIGHT)

    if stage == "vae":
        from m3cvc_jax.nn.vae import AutoencoderKL

        graphdef, state = _split(_build(lambda r: AutoencoderKL(codec_cfg.vae, dtype=dtype, rngs=r), "sd-vae"))
        frame = jax.random.uniform(key, (1, HEIGHT, WIDTH, 3), minval=-1, maxval=1)
        latent = jax.random.normal(key, (1, LAT_H, LAT_W, codec_cfg.vae.latent_channels))
        parts["encode"] = _measure(lambda s, x: nnx.merge(graphdef, s).encode(x)[0], state, frame)
        parts["decode"] = _measure(lambda s, z: nnx.merge(graphdef, s).decode(z), state, latent)
    elif stage == "post_encoder":
        from m3cvc_jax.codec import vq
        from m3cvc_jax.nn.post_encoder import Codebook, PostEncoder

        pe = codec_cfg.post_encoder
        model = _build(lambda r: nnx.Dict(post_encoder=PostEncoder(pe, dtype=dtype, rngs=r),
                                          codebook=Codebook(pe, rngs=r)), "post-encoder")
        graphdef, state = _split(model)
        latent = jax.random.normal(key, (1, LAT_H, LAT_W, codec_cfg.vae.latent_channels))

        def indices(s, z):
            m = nnx.merge(graphdef, s)
            return vq.nearest(m["post_encoder"](z), m["codebook"]())

        parts["indices"] = _measure(indices, state, latent)
    elif stage == "keyframe_unet":
        from m3cvc_jax.nn.unet import UNet2DConditionModel

        ucfg = codec_cfg.unet
        graphdef, state = _split(_build(lambda r: UNet2DConditionModel(ucfg, dtype=dtype, rngs=r), "keyframe-unet"))
        x = jax.random.normal(key, (2, LAT_H, LAT_W, ucfg.in_channels + ucfg.extra_in_channels))
        text = jax.random.normal(key, (2, TEXT_LEN, TEXT_DIM))
        t = jnp.full((2,), 500.0)
        parts["cfg_step"] = _measure(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), state, x, t, text)
    elif stage == "clip":
        from m3cvc_jax.nn import clip as clip_nn

        cfg = clip_nn.PRESETS["vit-l-14"]
        graphdef, state = _split(_build(lambda r: clip_nn.CLIPModel(cfg, dtype=dtype, rngs=r), "clip"))
        frames = jax.random.randint(key, (CLIP_CHUNK, HEIGHT, WIDTH, 3), 0, 256).astype(jnp.uint8)
        ids = jnp.ones((1, TEXT_LEN), jnp.int32)
        parts["image_chunk"] = _measure(lambda s, f: clip_nn.image_embeddings(nnx.merge(graphdef, s), f), state, frames)
        parts["text"] = _measure(lambda s, i: nnx.merge(graphdef, s).text_model(i).last_hidden_state, state, ids)
    elif stage == "raft":
        from m3cvc_jax.nn.raft import PRESETS as RAFT_PRESETS
        from m3cvc_jax.nn.raft import RAFT

        graphdef, state = _split(_build(lambda r: RAFT(RAFT_PRESETS["small"], dtype=dtype, rngs=r), "raft"))
        frame = jax.random.uniform(key, (1, HEIGHT, WIDTH, 3), minval=-1, maxval=1)
        parts["features"] = _measure(lambda s, x: nnx.merge(graphdef, s).features(x), state, frame)
        parts["context"] = _measure(lambda s, x: nnx.merge(graphdef, s).context(x), state, frame)
        model = nnx.merge(graphdef, state)
        fmap, ctx = model.features(frame), model.context(frame)
        parts["flow"] = _measure(
            lambda s, f1, c1, f2: nnx.merge(graphdef, s).flow_from_features(f1, c1, f2, num_flow_updates=RAFT_UPDATES),
            state, fmap, ctx, fmap)
    elif stage == "seine":
        from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig

        cfg = VideoUNetConfig.seine()
        graphdef, state = _split(_build(lambda r: VideoUNet(cfg, dtype=dtype, rngs=r), "seine"))
        x = jax.random.normal(key, (2, seine_frames, LAT_H, LAT_W, cfg.in_channels))
        text = jax.random.normal(key, (2, TEXT_LEN, cfg.cross_attention_dim))
        t = jnp.full((2,), 500.0)
        parts["cfg_step"] = _measure(lambda s, x, t, c: nnx.merge(graphdef, s)(x, t, c), state, x, t, text)
        parts["cfg_step"]["frames"] = seine_frames
    elif stage == "qwen2_vl":
        from m3cvc_jax.lmm.model_io import random_model
        from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig
        from m3cvc_jax.nn.qwen2_vl_text import KVCache

        cfg = Qwen2VLConfig.preset("2b")
        graphdef, state = _split(random_model(cfg, dtype=dtype))
        v = cfg.vision
        patches = QWEN_GRID[0] * QWEN_GRID[1] * QWEN_GRID[2]
        pixels = jax.random.normal(key, (patches, v.in_channels * v.temporal_patch_size * v.patch_size ** 2))
        parts["vision_image"] = _measure(lambda s, p: nnx.merge(graphdef, s).model.visual(p, (QWEN_GRID,)), state, pixels)
        ids = jnp.ones((1, QWEN_PREFILL), jnp.int32)

        def prefill(s, ids):
            cache = KVCache.empty(cfg.text, 1, QWEN_CACHE, dtype)
            return nnx.merge(graphdef, s)(ids, cache=cache, last_only=True)

        parts["prefill_256"] = _measure(prefill, state, ids)
        empty = KVCache.empty(cfg.text, 1, QWEN_CACHE, dtype)
        cache = KVCache(empty.keys, empty.values, jnp.int32(QWEN_PREFILL))
        parts["decode_token"] = _measure(lambda s, i, c: nnx.merge(graphdef, s)(i, cache=c, last_only=True),
                                         state, ids[:, :1], cache)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"stage": stage, "dtype": dtype_name, "params": _params(state), "parts": parts,
            "rss_mb": _peak_rss_mb()}


# ------------------------------------------------------------------------------------- parent side


def param_count(stage: str) -> int:
    """Parameters of a stage's model from its abstract shapes (nothing allocated)."""
    import jax
    from flax import nnx

    from m3cvc_jax.nn import clip as clip_nn
    from m3cvc_jax.nn.keyframe_codec import KeyframeCodecConfig
    from m3cvc_jax.nn.post_encoder import PostEncoder
    from m3cvc_jax.nn.qwen2_vl import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from m3cvc_jax.nn.raft import PRESETS as RAFT_PRESETS
    from m3cvc_jax.nn.raft import RAFT
    from m3cvc_jax.nn.unet import UNet2DConditionModel
    from m3cvc_jax.nn.vae import AutoencoderKL
    from m3cvc_jax.nn.video_unet import VideoUNet, VideoUNetConfig

    cc = KeyframeCodecConfig.preset("paper", width=WIDTH, height=HEIGHT)
    make = {
        "vae": lambda: AutoencoderKL(cc.vae, rngs=nnx.Rngs(0)),
        "post_encoder": lambda: PostEncoder(cc.post_encoder, rngs=nnx.Rngs(0)),
        "keyframe_unet": lambda: UNet2DConditionModel(cc.unet, rngs=nnx.Rngs(0)),
        "clip": lambda: clip_nn.CLIPModel(clip_nn.PRESETS["vit-l-14"], rngs=nnx.Rngs(0)),
        "raft": lambda: RAFT(RAFT_PRESETS["small"], rngs=nnx.Rngs(0)),
        "seine": lambda: VideoUNet(VideoUNetConfig.seine(), rngs=nnx.Rngs(0)),
        "qwen2_vl": lambda: Qwen2VLForConditionalGeneration(Qwen2VLConfig.preset("2b"), rngs=nnx.Rngs(0)),
    }[stage]
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(make)))))


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def run_worker(stage: str, dtype: str, seine_frames: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.paper_scale", "--worker", stage, "--dtypes", dtype,
           "--seine-frames", str(seine_frames)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"stage": stage, "dtype": dtype, "error": f"exit {proc.returncode}: {tail}"}


def project(results: dict, field: str = "time_s") -> dict[str, float]:
    """Encode and decode seconds (`field="gflop"`: GFLOP) of the 33-frame clip (module docstring); missing
    stages -> nan."""

    def _t(stage: str, part: str) -> float:
        r = results.get(stage)
        if r is None or "parts" not in r:
            raise KeyError(stage)
        return r["parts"][part].get(field, float("nan"))

    out = {}
    try:
        raft = _t("raft", "features") + _t("raft", "context") + _t("raft", "flow")
        vision, prefill, token = (_t("qwen2_vl", p) for p in ("vision_image", "prefill_256", "decode_token"))
        qwen = (KEYFRAMES * (vision + prefill + TURNS * NEW_TOKENS * token)
                + CLIPS * (4 * vision + CLIP_PROMPT_TOKENS / QWEN_PREFILL * prefill + CLIP_TURNS * NEW_TOKENS * token))
        out["encode_s"] = (FRAMES * (_t("clip", "image_chunk") / CLIP_CHUNK + raft) + qwen
                           + KEYFRAMES * (_t("vae", "encode") + _t("post_encoder", "indices")))
        out["encode_qwen_s"] = qwen
    except KeyError:
        out["encode_s"] = float("nan")
    try:
        seine = results["seine"]["parts"]["cfg_step"]
        seine_step = seine.get(field, float("nan")) * SEINE_WINDOW / seine["frames"]
        enc, dec = _t("vae", "encode"), _t("vae", "decode")
        out["decode_s"] = ((1 + KEYFRAMES + CLIPS) * _t("clip", "text")
                           + KEYFRAMES * (KEYFRAME_STEPS * _t("keyframe_unet", "cfg_step") + dec)
                           + WINDOWS * (SEINE_WINDOW * (enc + dec) + SEINE_STEPS * seine_step))
        out["decode_seine_s"] = WINDOWS * SEINE_STEPS * seine_step
    except KeyError:
        out["decode_s"] = float("nan")
    return out


# The encoder builds the whole keyframe codec (`Models.codec`), its UNet included, though it runs only the
# VAE encoder and the post-encoder.
ENCODE_STAGES = ("vae", "post_encoder", "keyframe_unet", "clip", "raft", "qwen2_vl")
DECODE_STAGES = ("vae", "post_encoder", "keyframe_unet", "clip", "seine")


def device_memory_gb(results: dict, stages) -> float:
    """What one device holds for a command: every model it loads stays resident (the codec keeps them), so
    all their float32 weights, plus the largest program's temporaries (NaN if one is missing). SEINE's
    activations are scaled from the frames measured to 16; in bfloat16 the temporaries also hold a bf16
    copy of the weights (2 bytes a parameter), which does not grow with frames."""

    def scratch(stage: str, part: dict, dtype: str, params: int) -> float:
        total = part.get("temp_mb", 0.0) * 2**20
        if stage != "seine":
            return total
        copies = min(total, 2 * params) if dtype == "bfloat16" else 0
        return copies + (total - copies) * SEINE_WINDOW / part["frames"]

    try:
        weights = sum(results[s]["params"] * 4 for s in stages)
        temp = max(scratch(s, p, results[s]["dtype"], results[s]["params"]) for s in stages
                   for p in results[s]["parts"].values())
    except KeyError:
        return float("nan")
    return (weights + temp) / 2**30


def print_row(stage: str, dtype: str, r: dict) -> None:
    for part, p in r["parts"].items():
        print(f"{stage:14} {part:13} {dtype:9} {r['params'] / 1e6:7.1f}M {p['time_s']:8.3f} "
              f"{p['compile_s']:9.1f} {p.get('gflop', float('nan')):8.1f} {p.get('xla_mb', float('nan')):8.0f} "
              f"{r['rss_mb']:8.0f}")
    sys.stdout.flush()


# Peak RSS / float32 weight bytes measured here for the SD UNet and SEINE workers (1.2-1.3 in float32; 2.2
# in bfloat16, where this CPU backend also holds bf16 copies of the weights and float32 temporaries), plus
# room left for the machine's other processes.
PEAK_PER_WEIGHT_BYTE = {"float32": 1.4, "bfloat16": 2.3}
HEADROOM_MB = 2048


def measure(stages, dtypes, seine_frames: int) -> dict[str, dict[str, dict]]:
    """{dtype: {stage: worker result}}, one subprocess per (stage, dtype), rows printed as they come."""
    results: dict[str, dict[str, dict]] = {d: {} for d in dtypes}
    for stage in stages:
        weights_mb = param_count(stage) * 4 / 2**20
        for dtype in dtypes:
            need, have = weights_mb * PEAK_PER_WEIGHT_BYTE[dtype] + HEADROOM_MB, available_mb()
            if need > have:
                print(f"{stage:14} skipped ({dtype}): needs about {need / 1024:.1f} GB, {have / 1024:.1f} GB available")
                continue
            r = run_worker(stage, dtype, seine_frames)
            if "error" in r:
                print(f"{stage:14} failed ({dtype}): {r['error']}")
                continue
            results[dtype][stage] = r
            print_row(stage, dtype, r)
    return results


def report(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    print(f"projection for {FRAMES} frames ({KEYFRAMES} keyframes, {CLIPS} clips, {WINDOWS} SEINE windows; "
          f"{KEYFRAME_STEPS} DDIM keyframe steps, {SEINE_STEPS} DDPM SEINE steps, CFG; Qwen2-VL {TURNS}+{CLIP_TURNS} "
          f"turns of {NEW_TOKENS} tokens) on this CPU:")
    projections = {}
    for dtype, res in results.items():
        p = projections[dtype] = project(res)
        work = project(res, "gflop")
        p.update({"encode_tflop": work["encode_s"] / 1e3, "decode_tflop": work["decode_s"] / 1e3,
                  "encode_device_gb": device_memory_gb(res, ENCODE_STAGES),
                  "decode_device_gb": device_memory_gb(res, DECODE_STAGES)})
        print(f"  {dtype:9} encode {p['encode_s']:9.0f} s ({p['encode_tflop']:.0f} TFLOP)   decode "
              f"{p['decode_s']:9.0f} s ({p['decode_tflop']:.0f} TFLOP)   device memory: encode "
              f"{p['encode_device_gb']:5.1f} GB, decode {p['decode_device_gb']:5.1f} GB")
    print("  M3-CVC (paper, RTX 3090, ParkScene): encode 76.7 s, decode 142.5 s")
    return projections


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--seine-frames", type=int, default=SEINE_WINDOW,
                        help="frames per SEINE call (fewer: a quick run, time scaled to 16)")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--from-json", default=None, help="print the table and projection of a saved --json run")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    if args.worker:
        print("RESULT " + json.dumps(run_stage(args.worker, dtypes[0], args.seine_frames)))
        return
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not 1 <= args.seine_frames <= SEINE_WINDOW:
        parser.error(f"unknown stages {unknown}" if unknown else "--seine-frames must be in [1, 16]")

    seine_frames = args.seine_frames
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        results, seine_frames = saved["results"], saved["seine_frames"]
    print(f"paper preset networks at {WIDTH}x{HEIGHT}, random weights, one call each (compile apart); "
          f"SEINE on {seine_frames} frame(s)" + (" scaled to 16" if seine_frames < SEINE_WINDOW else ""))
    print(f"{'stage':14} {'part':13} {'dtype':9} {'params':>8} {'time s':>8} {'compile s':>9} {'GFLOP':>8} "
          f"{'xla MB':>8} {'rss MB':>8}")
    if args.from_json:
        for dtype, res in results.items():
            for stage, r in res.items():
                print_row(stage, dtype, r)
    else:
        results = measure(stages, dtypes, seine_frames)
    projections = report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "projections": projections, "seine_frames": seine_frames}, f, indent=1)
    if {"float32", "bfloat16"} <= set(projections):
        print(f"ratio={projections['bfloat16']['decode_s'] / projections['float32']['decode_s']:.3f}")
    else:
        print("ratio=nan")


if __name__ == "__main__":
    main()
