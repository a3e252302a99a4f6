#!/usr/bin/env bash
# The whole card matrix in one call on a two-GPU machine (the device tool's nvidia-h200-x2):
#   GPU 0: DiffSynth all resident (ref), ours on simulated 12/8/6 GB cards (2048x2048 included), the
#          recipe's load on 12 GB, several images / image-to-image ("sets"), then the GPU tests;
#   GPU 1: DiffSynth's low-VRAM recipe, a whole 20-step image on 12 and 8 GB (minutes each).
# One table from both: $OUT/table.txt.   Usage: bash bench/device_matrix.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash bench/device_run.sh > "$OUT/setup.txt" 2>&1 || { cat "$OUT/setup.txt"; exit 1; }  # wheels, model set
GPU=1 PARTS=recipe RECIPE_CARDS=12,8 RECIPE_STEPS=20 BIG=0 CHILD_TIMEOUT=330 \
  bash bench/device_run.sh > "$OUT/gpu1.txt" 2>&1 &
GPU=0 PARTS=ref,ours,recipe,sets CARDS=12,8,6 RECIPE_CARDS=12 RECIPE_STEPS=1 CHILD_TIMEOUT=200 \
  GPU_TESTS="tests/test_image_to_image_gpu.py tests/test_weight_loading.py tests/test_cards_gpu.py tests/test_streaming_gpu.py" \
  TESTS_BEFORE_S=${TESTS_BEFORE_S:-420} bash bench/device_run.sh > "$OUT/gpu0.txt" 2>&1
wait
export PYTHONPATH=/tmp/site:$PWD
python3 bench/engine_bench.py --model-dir /tmp/models --work /tmp/bench0 \
  --table "$OUT/results0.jsonl" "$OUT/results1.jsonl" > "$OUT/table.txt" 2>&1
cat "$OUT/table.txt"; tail -n 4 "$OUT/gpu0.txt" "$OUT/gpu1.txt"
grep -h "four_singles_s\|set_over" "$OUT/results0.jsonl" | head -2
