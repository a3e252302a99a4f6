#!/usr/bin/env bash
# What the benchmark runs on a bare GPU machine (the project's device tool): install the carried wheels
# (bench/wheels.txt), write the synthetic model set to local disk, run the GPU tests, then the benchmark.
#   PARTS=ref,ours,variants,generate,recipe CARDS=12,8,6 bash bench/device_run.sh   (results under $OUT)
# GPU=N runs everything on that GPU (CUDA_VISIBLE_DEVICES), so two calls can share a two-GPU machine.
set -uo pipefail
START=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -n "${GPU:-}" ] && export CUDA_VISIBLE_DEVICES=$GPU
[ -d /tmp/site/diffsynth ] || python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=index,name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv
python3 -c "import torch, diffsynth, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" || exit 3
free -g | head -2
if [ ! -f /tmp/models/MAILAND/majicflus_v1/majicflus_v134.safetensors ]; then
  t0=$(date +%s)
  python3 bench/make_synthetic_flux.py --out /tmp/models --dit-dtype fp8 --device cuda 2>&1 | grep -v "^wrote" | tail -3
  echo "synthetic set written in $(( $(date +%s) - t0 )) s"
fi
if [ -n "${PARTS:-}" ]; then
  python3 bench/engine_bench.py --model-dir /tmp/models --out "$OUT/results${GPU:-}.jsonl" --work "/tmp/bench${GPU:-}" \
    --parts "$PARTS" --cards "${CARDS:-12,8,6}" --recipe-cards "${RECIPE_CARDS:-12,8}" --steps "${STEPS:-20}" \
    --recipe-steps "${RECIPE_STEPS:-20}" \
    --big "${BIG:-2048}" --timeout "${CHILD_TIMEOUT:-420}"
  cp "/tmp/bench${GPU:-}/table.txt" "$OUT/table${GPU:-}.txt" 2>/dev/null
  tail -c 3000000 "/tmp/bench${GPU:-}/children.log" > "$OUT/children${GPU:-}.log" 2>/dev/null
fi
if [ -n "${GPU_TESTS:-}" ] && [ $(( $(date +%s) - START )) -lt "${TESTS_BEFORE_S:-100000}" ]; then
  t0=$(date +%s)
  MAJICBOT_GPU_MODEL_DIR=/tmp/models python3 -m pytest -q -m gpu -p no:cacheprovider $GPU_TESTS > "$OUT/gpu_tests${GPU:-}.log" 2>&1
  tail -5 "$OUT/gpu_tests${GPU:-}.log"
  echo "gpu tests took $(( $(date +%s) - t0 )) s"
fi
echo "device_run.sh finished after $(( $(date +%s) - START )) s"
