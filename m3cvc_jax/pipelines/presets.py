"""The M3-CVC codec presets: one `get_config(preset)` tree; every field settable with `--set`.

This table is part of the bitstream format: a decoder rebuilds its settings from the preset name in the
header (plus the decoder-side settings the stream carries), so it lives in the library, not in `configs/`.

    m3cvc encode clip.mp4 -o clip.m3cvc --preset tiny --set keyframes.method=fixed --set dialogue.turns=2

Presets:
  tiny   random weights drawn from `seed` (the decoder rebuilds them from the seed in the header), toy
         widths, 128x80 frames, few sampling steps: a 33-frame round trip runs in seconds.
  demo   small weights trained here by the repository's trainers on the bundled clips (docs/demo.md),
         128x80, keyframes every 15 frames, no describer, mean-colour correction on: a blurry but real
         reconstruction anywhere, in the input's colours.
  paper  converted checkpoints in `weights` (a folder with one sub-folder per component, see
         `m3cvc_jax/pipelines/models.py`), 512x320 at 8 fps, the paper's settings.

Modes (`decode.mode`, `m3cvc encode --mode`): tiny and paper run all of them; demo refuses tt2v
(`UNSUPPORTED_MODES`): its keyframe UNet is trained here on VQ index maps with the empty prompt, so it is
no text-to-image model and a text-only stream would decode to video unrelated to the input.

Defaults that belong to a component are read from its own dataclass, written once there: the keyframe
decision's (`codec.keyframe_config.KeyframeConfig`) and the keyframe decoder's
(`decoders.keyframe_decoding.KeyframeDecoding`) and the video decoder's (`decoders.video_decoding.VideoDecoding`).

The fields mirror the paper's knobs (section numbers of M3-CVC): keyframe decision λ1, λ2, D_th (II-A),
dialogue turns (II-B), keyframe decoding steps and guidance (II-C), clip reconstruction mode (II-D).
Blocks map one to one onto the components' own configs: `keyframes` is `codec.keyframe_config.KeyframeConfig`,
`keyframe_codec` feeds `nn.keyframe_codec.KeyframeCodecConfig` (preset, grid) and
`decoders.keyframe_decoding.KeyframeDecoding` (sampler, steps, guidance), `video_model` feeds
`decoders.video.VideoReconstructionConfig` (window, keyframes kept, posterior) and
`decoders.video_decoding.VideoDecoding` (sampler, steps, guidance, strength).
Settings in `keyframe_codec` and `video_model` that differ from the preset travel in the bitstream (a small
skippable section) so the decoder runs with what the encoder was told.
"""

from __future__ import annotations

import ml_collections

from m3cvc_jax.codec.keyframe_config import KeyframeConfig
from m3cvc_jax.decoders.keyframe_decoding import KeyframeDecoding
from m3cvc_jax.decoders.video_decoding import VideoDecoding
from m3cvc_jax.pipelines.it2v_config import IT2VConfig

_KEYFRAMES = KeyframeConfig()
_KEYFRAME_DECODING = KeyframeDecoding()
_VIDEO_DECODING = VideoDecoding()
_IT2V = IT2VConfig()

PRESETS = ("tiny", "paper", "demo")
# mode -> the reason a preset cannot run it (docs/cmvc.md, "TT2V: presets").
UNSUPPORTED_MODES = {
    "demo": {"tt2v": "its keyframe UNet is trained on VQ index maps with the empty prompt, not a text-to-image "
                      "model; use --preset paper (converted SD 1.5 + AnimateDiff weights) or tiny (random weights)"},
}
# What `m3cvc encode` and codec `ours` use when no preset is named: the one that decodes real pictures
# on any machine without converted checkpoints.
DEFAULT_PRESET = "demo"
ANCHOR_TOLERANCE_DEMO = 24.0  # levels: docs/demo.md measures the choice


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.weights = ""  # folder of converted checkpoints (paper); ignored by tiny
    c.seed = 0  # decoder sampling seed (written to the header); tiny: also the weights' seed
    # Compute dtype of every network (float32 | bfloat16): parameters stay float32, norms and softmax run in
    # float32 either way. A choice of each side, not part of the stream (docs/performance.md).
    c.dtype = "float32"

    c.video = ml_collections.ConfigDict()
    c.video.width = 512
    c.video.height = 320
    c.video.fps = 8.0
    c.video.start_time = 0.0  # seconds skipped at the start of the input
    c.video.max_frames = 0  # 0: all frames

    c.keyframes = ml_collections.ConfigDict()
    k = _KEYFRAMES
    c.keyframes.method = k.method  # m3cvc | semantic | cmvc | fixed
    c.keyframes.lambda1 = k.lambda1  # weight of the CLIP semantic change 1 - cos
    c.keyframes.lambda2 = k.lambda2  # weight of the RAFT motion magnitude (mean flow length / frame diagonal)
    c.keyframes.threshold = k.threshold  # D_th
    c.keyframes.max_clip_length = k.max_clip_length  # SEINE's window: a longer clip forces a keyframe
    c.keyframes.interval = k.interval  # fixed interval (method=fixed) and CMVC's uniform intervals
    c.keyframes.clip_model = k.clip_model  # CLIP preset; its image tower drives the decision, its text tower
    #                                        conditions the keyframe UNet and SEINE (SD 1.x's text encoder)
    c.keyframes.flow_model = k.flow_model  # raft_small | raft_large | tiny | classical (Lucas-Kanade, no weights)
    c.keyframes.flow_updates = k.flow_updates  # RAFT GRU iterations

    c.dialogue = ml_collections.ConfigDict()
    c.dialogue.describer = "qwen2-vl"  # qwen2-vl | fixed | none
    c.dialogue.turns = 4  # keyframe dialogue rounds (1, 2, 4 in the paper's ablation)
    c.dialogue.clip_turns = 1
    c.dialogue.clip_frames = 8  # frames of a clip shown to the describer (evenly spread, ends included)
    c.dialogue.texts = ""  # JSON file {"keyframe": [...], "clip": [...]} for describer=fixed
    c.dialogue.templates = ""  # prompt template file; empty: m3cvc_jax/lmm/m3cvc_dialogue.json
    c.dialogue.max_new_tokens = 96
    c.dialogue.temperature = 0.0  # 0: greedy
    c.dialogue.model = "2b"  # Qwen2-VL preset for random weights (tiny); paper loads weights/qwen2-vl

    c.coding = ml_collections.ConfigDict()
    c.coding.text_codec = "zstd-dict"  # lzw | zlib | brotli | zstd | zstd-dict (benchmarks/text_coding.py)
    c.coding.entropy_model = "adaptive"  # uniform | adaptive | static | learned (static, learned: tables stored
    #                                      with the weights) | auto: each stream takes the one that codes it shortest
    # Entropy-constrained choice of the keyframe indices (codec/index_rdo.py): each vector takes the word
    # minimising distance/D + rd_lambda x its bits under the learned prior. 0: the nearest word (the paper).
    c.coding.rd_lambda = 0.0

    c.keyframe_codec = ml_collections.ConfigDict()
    c.keyframe_codec.preset = "paper"  # m3cvc_jax/nn/keyframe_codec.py preset (random weights only)
    c.keyframe_codec.pixels_per_index = 16  # 16: 32x20 indices at 512x320 (0.031 bpp); 8: 64x40
    c.keyframe_codec.sampler = _KEYFRAME_DECODING.sampler  # ddim | ddpm | dpmpp2m (DPM-Solver++ 2M: fewer steps)
    c.keyframe_codec.steps = _KEYFRAME_DECODING.steps  # sampler steps
    c.keyframe_codec.guidance_scale = _KEYFRAME_DECODING.guidance_scale

    c.video_model = ml_collections.ConfigDict()
    c.video_model.preset = "seine"  # nn/video_unet.py preset (random weights only)
    c.video_model.sampler = _VIDEO_DECODING.sampler  # ddpm (respaced) | ddim | dpmpp2m
    c.video_model.steps = _VIDEO_DECODING.steps
    c.video_model.guidance_scale = _VIDEO_DECODING.guidance_scale
    c.video_model.window = 16
    c.video_model.keep_keyframes = True  # put the encoded keyframes back into the sampled latents
    c.video_model.sample_posterior = True  # SEINE encodes the masked video with a posterior sample
    c.video_model.strength = _VIDEO_DECODING.strength  # 1: from pure noise (SEINE); < 1: from the blended keyframes

    c.decode = ml_collections.ConfigDict()
    c.decode.mode = "interpolation"  # a mode of pipelines/modes.py: interpolation | prediction | it2v | tt2v (in the header)

    # Mean-colour side information (codec/colour_means.py, codec/colour_correction.py): the encoder sends each
    # keyframe's original per-channel mean (3 x mean_bits bits per keyframe, a skippable section); the decoder
    # shifts the decoded keyframes to those means and the frames between by interpolated offsets. Not part of
    # M3-CVC: off for paper (and tiny, its stand-in with random weights); on for demo, whose small VAE moves
    # colours by ~20/255 (docs/demo.md). A decoder follows the stream (the section's presence), not this default.
    c.colour = ml_collections.ConfigDict()
    c.colour.mean_correction = False
    c.colour.mean_bits = 6  # per channel: mean error <= 255 / (2 (2^bits - 1)) = 2.0 levels (docs/demo.md measures)
    # Also send the means of frames between keyframes where the original's colour leaves the straight line
    # between keyframes by more than this many levels (colour_means.choose_anchors, extra tag 6); 0: keyframes only.
    c.colour.anchor_tolerance = 0.0

    # CMVC's TT2V mode (decode.mode=tt2v): AnimateDiff generates every clip from its texts (decoders/t2v.py).
    c.t2v = ml_collections.ConfigDict()
    c.t2v.template = ""  # TT2V prompt template file; empty: m3cvc_jax/lmm/tt2v_prompt.json
    c.t2v.steps = 25  # DDIM steps (AnimateDiff's inference config)
    c.t2v.guidance_scale = 7.5  # classifier-free guidance against the template's negative prompt
    c.t2v.window = 16  # frames generated per clip (AnimateDiff's training length), then resampled to the clip

    # CMVC's IT2V mode (docs/cmvc.md; pipelines/it2v.IT2VConfig): CMVC's final setting, DiffMorpher's rest.
    c.cmvc = ml_collections.ConfigDict()
    i = _IT2V
    c.cmvc.lora_rank = i.lora_rank
    c.cmvc.lora_steps = i.lora_steps  # CMVC Table 3: {50, 100, 200}
    c.cmvc.lora_lr = i.lora_lr
    c.cmvc.sampling_steps = i.sampling_steps  # CMVC Table 3: {20, 50}
    c.cmvc.interpolation = i.interpolation  # linear (CMVC eq. 5) | diffmorpher (slerp + AdaIN)
    c.cmvc.opt_steps = i.opt_steps  # encoder only: Adam steps on (w_i, w_l); 0 = uniform w (ablation)
    c.cmvc.opt_lr = i.opt_lr
    c.cmvc.w_bits = i.w_bits  # bits per weight in the stream

    if preset == "tiny":
        c.video.width, c.video.height = 128, 80
        c.video.max_frames = 33
        c.keyframes.clip_model = "tiny"
        c.keyframes.flow_model = "tiny"
        c.keyframes.flow_updates = 2
        c.keyframes.threshold = 0.05  # random features: keep the decision exercised on real motion
        c.dialogue.model = "tiny"
        c.dialogue.turns = 1
        c.dialogue.max_new_tokens = 6
        c.dialogue.temperature = 1.0  # greedy decoding of random weights repeats one token
        c.keyframe_codec.preset = "tiny"
        c.keyframe_codec.steps = 2
        c.video_model.preset = "tiny"
        c.video_model.sampler = "ddim"
        c.video_model.steps = 2
        c.cmvc.lora_rank = 4
        c.cmvc.lora_steps = 2
        c.cmvc.lora_lr = 1e-2  # two steps at 2e-4 would leave the LoRAs at their start
        c.cmvc.sampling_steps = 2
        c.cmvc.opt_steps = 2
        c.cmvc.opt_lr = 0.05
        c.t2v.steps = 2
    elif preset == "demo":
        # Small weights trained here (docs/demo.md, scripts/train_demo.sh), bundled in m3cvc_jax/assets/demo;
        # the architectures come from their config.json files, so the `*.preset` fields do not apply.
        # Nothing here can train CLIP, RAFT or Qwen2-VL: keyframes every `interval` frames (the bundled
        # CLIP is random and only embeds the empty prompt), no describer (empty texts). With
        # keyframes.method=m3cvc the motion term uses Lucas-Kanade flow (no RAFT weights).
        c.video.width, c.video.height = 128, 80
        c.keyframes.method = "fixed"
        c.keyframes.interval = 15  # a clip of 16 frames: the video model's training window
        c.keyframes.flow_model = "classical"
        c.dialogue.describer = "none"
        c.keyframe_codec.pixels_per_index = 8
        c.keyframe_codec.guidance_scale = 1.0  # the empty prompt on both sides: guidance would do nothing
        # The index prior trained on the demo weights' maps (train.index_prior, shipped with them) codes the
        # bundled clips shortest; `auto` also tries static / adaptive / uniform per stream (the header names the
        # winner), so a prior that fits unseen footage badly (new weights) never costs more than those.
        c.coding.entropy_model = "auto"
        # Each index weighed against its bits under the shipped prior: on the bundled clips 0.64x the bits of
        # plain 8-bit indices instead of 0.80x for -0.01 / -0.08 dB decoded (docs/bitstream.md, benchmarks.index_coding).
        c.coding.rd_lambda = 0.02
        c.colour.mean_correction = True
        c.colour.anchor_tolerance = ANCHOR_TOLERANCE_DEMO
        c.video_model.sampler = "ddim"
        # 8 DDIM steps, of which strength 0.1 runs 1 (25 ran 2): on the README's main job -0.03 dB and 3%
        # less decode time with the retrained weights (with the earlier ones at strength 0.5: +0.15 dB and a
        # third of the SEINE time); `python -m benchmarks.end_to_end --preset demo` rechecks it.
        c.video_model.steps = 8
        c.video_model.guidance_scale = 1.0
        # The small video model (900 steps on the corpus) does not converge from pure noise (docs/demo.md): it
        # starts near the end of the chain, from the keyframe latents blended across the clip. 0.1 was chosen
        # on the training clip carphone (16 frames: PSNR 18.0 / 19.2 / 20.1 dB at 0.5 / 0.3 / 0.1), never on
        # the held-out split.
        c.video_model.strength = 0.1
        # IT2V on 2 cores: the paper's 100 LoRA steps / 50 DDIM steps / 20 w steps cost minutes per clip;
        # a cheaper setting (docs/cmvc.md measures what it costs in quality).
        c.cmvc.lora_steps = 20
        c.cmvc.sampling_steps = 10
        c.cmvc.opt_steps = 10
        c.cmvc.opt_lr = 1e-2
    elif preset != "paper":
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    return c
