#!/usr/bin/env bash
# The `demo` preset's recipe: every weight it ships is trained here, by this repository's trainers, on the
# bundled clips (assets/clips, see its README for sources and licences). Seeds are the configs' (0).
#
#   scripts/train_demo.sh [RUNS_DIR]        (default runs/demo; resumable: rerun after an interruption)
#
# Stages (each resumes from its latest checkpoint; metrics in RUNS_DIR/<stage>/metrics.jsonl):
#   clip   the tiny CLIP layout with deterministic random weights (no CLIP can be trained here; the demo
#          uses only its text tower's embedding of the empty prompt, and fixed-interval keyframes)
#   vae    train.vae_pretrain       configs/demo/vae_pretrain.py      (L1 + L2 + 1e-6 KL, 128x80)
#   vq     train.vq_pretrain        configs/demo/vq_pretrain.py       (on the trained VAE's latents)
#   unet   train.decoder_finetune   configs/demo/decoder_finetune.py  (trainable=all: from random)
#   video  train.video_pretrain     configs/demo/video_pretrain.py    (SEINE layout, first1/onelast1)
# The exports (RUNS_DIR/<stage>/export) are then packed into the committed weights folder.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/demo}
PY=${PYTHON:-.venv/bin/python}
# Extra flags for every trainer, e.g. EXTRA="--config.num_steps=2" for a smoke run of the whole chain.
read -r -a EXTRA <<< "${EXTRA:-}"
mkdir -p "$RUNS"

stage() {  # name, then the command; output in RUNS/<name>.log; prints the wall time of the stage
  local name=$1; shift
  local t0; t0=$(date +%s)
  if ! "$@" > "$RUNS/$name.log" 2>&1; then
    tail -n 20 "$RUNS/$name.log"; echo "stage $name failed (log: $RUNS/$name.log)"; return 1
  fi
  echo "stage $name: $(( $(date +%s) - t0 )) s" | tee -a "$RUNS/times.txt"
}

[ -f "$RUNS/clip/config.json" ] || stage clip "$PY" scripts/demo_clip.py "$RUNS/clip"
stage vae "$PY" -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir "$RUNS/vae" "${EXTRA[@]}"
# vq -> unet and video need only the VAE: they run side by side (one process does not keep 2 cores busy).
(
  stage vq "$PY" -m train.vq_pretrain --config configs/demo/vq_pretrain.py --workdir "$RUNS/vq" "${EXTRA[@]}" \
    --config.vae_weights="$RUNS/vae/export"
  stage unet "$PY" -m train.decoder_finetune --config configs/demo/decoder_finetune.py --workdir "$RUNS/unet" \
    "${EXTRA[@]}" --config.vae_weights="$RUNS/vae/export" --config.vq_weights="$RUNS/vq/export" \
    --config.text_weights="$RUNS/clip"
) &
keyframe_chain=$!
stage video "$PY" -m train.video_pretrain --config configs/demo/video_pretrain.py --workdir "$RUNS/video" "${EXTRA[@]}" \
  --config.vae_weights="$RUNS/vae/export" --config.text_weights="$RUNS/clip"
wait "$keyframe_chain"

# Pack the exports as the folder the `demo` preset loads (float16, about 17 MB; see the script).
DEST=${DEMO_WEIGHTS:-m3cvc_jax/assets/demo}
"$PY" scripts/pack_demo.py "$RUNS" "$DEST"
du -sh "$DEST"
"$PY" scripts/plot_demo_losses.py "$RUNS" "${PLOTS:-docs}"
