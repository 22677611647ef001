"""The paper's Table I ablations as `--set` overrides of the one M3-CVC config (configs/m3cvc.py).

    m3cvc eval DATASET --codecs x265 --ablation configs/ablations/table1.py --preset paper \
        --weights WEIGHTS --out runs/table1 --anchor "ours[full]"

Each row is codec "ours" with the base overrides of the run plus the row's own; every row changes one
knob against `full` (the paper's setting: adaptive keyframes with λ1, λ2 != 0, 4 dialogue turns,
interpolation):

  keyframes.method   m3cvc (D = λ1·CLIP + λ2·flow − D_th) | fixed (every `keyframes.interval` frames)
  keyframes.lambda2  0 disables the optical-flow term (CLIP only)
  dialogue.turns     keyframe dialogue rounds: 1, 2 or 4
  decode.mode        interpolation (keyframes i and i+1 given) | prediction (keyframe i only)
"""

import ml_collections

ROWS = (
    ("full", ()),
    ("kf_fixed_interval", ("keyframes.method=fixed",)),
    ("kf_lambda2_0", ("keyframes.method=m3cvc", "keyframes.lambda2=0")),
    ("kf_lambda1_lambda2", ("keyframes.method=m3cvc", "keyframes.lambda1=1", "keyframes.lambda2=1")),
    ("turns_1", ("dialogue.turns=1",)),
    ("turns_2", ("dialogue.turns=2",)),
    ("turns_4", ("dialogue.turns=4",)),
    ("mode_interpolation", ("decode.mode=interpolation",)),
    ("mode_prediction", ("decode.mode=prediction",)),
)


def get_config():
    c = ml_collections.ConfigDict()
    c.base_config = "configs/m3cvc.py"
    c.rows = [ml_collections.ConfigDict({"name": n, "overrides": list(o)}) for n, o in ROWS]
    return c
