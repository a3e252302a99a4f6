#!/usr/bin/env bash
# What the benchmark runs on a bare GPU machine (the project's device tool): install the carried
# wheels, write the synthetic model set to local disk, then run the GPU tests and the benchmark.
#   bash bench/device_run.sh smoke|full   (results under $OUT)
set -uo pipefail
START=$(date +%s)
MODE=${1:-smoke}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,pcie.link.gen.max,pcie.link.width.max --format=csv
python3 -c "import torch, diffsynth, transformers, pydantic; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'pydantic', pydantic.__version__)"
free -g | head -2; df -h /tmp | tail -1
if [ ! -f /tmp/models/MAILAND/majicflus_v1/majicflus_v134.safetensors ]; then
  t0=$(date +%s)
  python3 bench/make_synthetic_flux.py --out /tmp/models --dit-dtype fp8 --device cuda 2>&1 | grep -v "^wrote" | tail -8
  echo "synthetic set written in $(( $(date +%s) - t0 )) s"
fi
python3 -c "from pathlib import Path; from models import check_models; print(check_models(Path('/tmp/models')).render())"
# The first compiled quantisation (cold caches) happens here; later processes reuse its caches.
# SKIP_GPU_TESTS=1 leaves them out when the call's time is short.
if [ -z "${SKIP_GPU_TESTS:-}" ]; then
  t0=$(date +%s)
  python3 -m pytest -q -m gpu -p no:cacheprovider --noconftest -s tests/test_fp8_gpu.py tests/test_streaming_gpu.py > "$OUT/gpu_tests.log" 2>&1
  grep -E "^fp8|^bf16|passed|failed|^E " "$OUT/gpu_tests.log" | tail -12
  echo "gpu tests (with the cold compile) took $(( $(date +%s) - t0 )) s"
fi
if [ "$MODE" = smoke ]; then
  CONFIGS=${CONFIGS:-ours-nocap,ours-8,recipe-8}
else
  CONFIGS=${CONFIGS:-ref-bf16,ours-nocap,compiled-nocap,ours-12,ours-8,queue-nocap,queue-8}
fi
# Stop in time for the device call's own limit (TOTAL_S after START), so that results come back.
LEFT=$(( ${TOTAL_S:-530} - ($(date +%s) - START) ))
echo "setup took $(( $(date +%s) - START )) s; $LEFT s left for: $CONFIGS"
timeout "$LEFT" python3 bench/engine_bench.py --model-dir /tmp/models --out "$OUT/results.jsonl" --log-dir "$OUT" \
  --configs "$CONFIGS" --recipe-steps "${RECIPE_STEPS:-3}" --timeout "${CHILD_TIMEOUT:-200}"
echo "device_run.sh finished after $(( $(date +%s) - START )) s"
