#!/usr/bin/env bash
# The siam-train ablation of README (issue 16): train each row with the CPU recipe, export it,
# evaluate it on ../shared/sequences-val over 4 starts, and draw the learning curves.
#   usage: tools/train_ablation.sh [OUT_DIR]   (default out/ablation; about 1.5-2 h on 2 cores)
#   env:   STEPS=N   train N steps per row instead of the recipe's (a quick smoke run)
#          VAL_SEQ=NAME  evaluate on one sequence of sequences-val, one start (smoke run)
# Rows already trained / evaluated in OUT_DIR are kept. Results: OUT_DIR/val-<row>-<preset>.txt
# (siam-eval tables), OUT_DIR/<row>.time (training wall time), OUT_DIR/curves.png.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${1:-out/ablation}
mkdir -p "$OUT"
RECIPE=siam_tracker_ros/config/train/nanotrack_v3_cpu.yaml
BASE=../shared/reference-models/nanotrack-v3
run() { tools/ros_env.sh "$@"; }
TRAIN_SETS=()
[ -n "${STEPS:-}" ] && TRAIN_SETS=(--set "steps=$STEPS" --set "val.every=0" --set "val.max_frames=10")
EVAL_SETS=(--repeats 4 --jitter 0.3)
[ -n "${VAL_SEQ:-}" ] && EVAL_SETS=(--seq "$VAL_SEQ")

# row name | siam-train overrides | preset(s) it is evaluated with
ROWS=(
  "finetuned||plain update"
  "margin|modules.margin_weight=0.1|plain"
  "st|modules.st_fusion=true val.preset=update|update"
  "tafa|modules.tafa=true|plain"
  "adv_dropout|modules.adv_dropout_weight=0.1|plain"
  "da_pairs|sampler.negative=0.2|plain"
  "st_only|modules.st_fusion=true freeze_head=true optim.module_lr_scale=100 val.preset=update|update"
  "tafa_only|modules.tafa=true freeze_head=true optim.module_lr_scale=100|plain"
)

evaluate() {  # model-dir tag preset
  local txt="$OUT/val-$2-$3.txt"
  [ -s "$txt" ] && return
  run siam-eval --model "$1" --sequences ../shared/sequences-val --preset "$3" --threads 1 \
    "${EVAL_SETS[@]}" --quiet --json "$OUT/val-$2-$3.json" > "$txt"
}

evaluate "$BASE" base plain
evaluate "$BASE" base update
curves=()
for row in "${ROWS[@]}"; do
  IFS='|' read -r name sets presets <<< "$row"
  if [ ! -f "$OUT/$name/model.pth" ]; then
    args=()
    for s in $sets; do args+=(--set "$s"); done
    start=$(date +%s)
    run siam-train "$RECIPE" --out "$OUT/$name" --overwrite --quiet "${TRAIN_SETS[@]}" "${args[@]}"
    echo "$(( $(date +%s) - start )) s" > "$OUT/$name.time"
  fi
  if [ ! -f "$OUT/$name-model/manifest.json" ]; then
    run siam-model export nanotrack-v3 --checkpoint "$OUT/$name/model.pth" \
      --modules "$OUT/$name/modules.pth" --out "$OUT/$name-model"
  fi
  for p in $presets; do evaluate "$OUT/$name-model" "$name" "$p"; done
  curves+=(--run "$name=$OUT/$name")
done
run siam-train --curves "$OUT/curves.png" "${curves[@]}"
for f in "$OUT"/val-*.txt; do printf '%-36s %s\n' "$(basename "$f" .txt)" "$(sed -n 3p "$f")"; done
