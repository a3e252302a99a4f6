#!/usr/bin/env bash
# What the benchmark runs on a bare GPU machine (the project's device tool): install the carried
# wheels, write the synthetic model set to local disk, then run the GPU tests and the benchmark.
#   bash bench/device_run.sh smoke|full   (results under $OUT)
set -uo pipefail
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
python3 -m pytest -q -m gpu -p no:cacheprovider --noconftest tests/test_streaming_gpu.py 2>&1 | tail -5
python3 -c "import torch; from engine.fp8_linear import choose_matmul; print(choose_matmul(torch.device('cuda:0')))"
python3 - <<'PY'
import torch, time
n = 2 << 30
h = torch.empty(n, dtype=torch.uint8).pin_memory(); d = torch.empty(n, dtype=torch.uint8, device="cuda")
for _ in range(2):
    torch.cuda.synchronize(); t = time.perf_counter(); d.copy_(h, non_blocking=True); torch.cuda.synchronize()
print(f"host->GPU pinned copy: {n / (time.perf_counter() - t) / 1e9:.1f} GB/s")
PY
if [ "$MODE" = smoke ]; then
  CONFIGS=${CONFIGS:-ours-nocap,ours-8,recipe-8}
else
  CONFIGS=${CONFIGS:-ref-bf16,ours-nocap,ours-12,ours-8,recipe-12,recipe-8,ours-24}
fi
python3 bench/engine_bench.py --model-dir /tmp/models --out "$OUT/results.jsonl" --log-dir "$OUT" \
  --configs "$CONFIGS" --recipe-steps "${RECIPE_STEPS:-3}" --timeout "${CHILD_TIMEOUT:-200}"
