"""CMVC's Table 3 ablations of the IT2V mode, as rows of `--set` overrides (docs/cmvc.md, "Ablations").

    m3cvc eval assets/clips/bikes_4s.mp4 --codecs x264 --ablation configs/ablations/cmvc_table3.py \
        --preset demo --max-frames 9 --rate-points ours=i8 --anchor "ours[m3cvc_interpolation]" \
        --out runs/cmvc_table3

(`--rate-points ours=i8`: one rate point for every row; `ours[ROW]=...` sets one row's; without either
every row runs the default ladder. Measured rows: docs/cmvc.md, "Ablations".)

Every row but the last is CMVC IT2V with one knob changed against `full` (the preset's `cmvc` block);
keyframes are the fixed ones (`keyframes.method=fixed`, every `i<N>` frames) in every row, so all rows,
the M3-CVC interpolation row included, code the same keyframes when (max_frames - 1) is a multiple of N
(IT2V adds the last frame as a keyframe; M3-CVC predicts the tail otherwise).

  dialogue.describer=none   no motion description (empty D_C and D_F)
  cmvc.opt_steps=0          uniform w (w = position in the clip) instead of the encoder's optimised w
  cmvc.lora_steps           LoRA training steps {50, 100, 200}
  cmvc.sampling_steps       DDIM steps {20, 50}
"""

import ml_collections

IT2V = ("decode.mode=it2v", "keyframes.method=fixed")
ROWS = (
    ("full", IT2V),
    ("no_motion_text", IT2V + ("dialogue.describer=none",)),
    ("uniform_w", IT2V + ("cmvc.opt_steps=0",)),
    ("lora_50", IT2V + ("cmvc.lora_steps=50",)),
    ("lora_100", IT2V + ("cmvc.lora_steps=100",)),
    ("lora_200", IT2V + ("cmvc.lora_steps=200",)),
    ("sampling_20", IT2V + ("cmvc.sampling_steps=20",)),
    ("sampling_50", IT2V + ("cmvc.sampling_steps=50",)),
    ("m3cvc_interpolation", ("decode.mode=interpolation", "keyframes.method=fixed")),
)


def get_config():
    c = ml_collections.ConfigDict()
    c.base_config = "configs/m3cvc.py"
    c.rows = [ml_collections.ConfigDict({"name": n, "overrides": list(o)}) for n, o in ROWS]
    return c
