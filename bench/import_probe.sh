set -u
python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
pip list 2>/dev/null | grep -i -E "flash|xformers|kernels|sage|triton|cutlass|torchvision|transformers|accelerate|peft|pandas|imageio|torch" 
for i in 1 2; do
python3 -X importtime -c "import torch, time; t=time.perf_counter(); import diffsynth.models.flux_dit; print('flux_dit import', time.perf_counter()-t); t=time.perf_counter(); import diffsynth.pipelines.flux_image; print('pipeline import', time.perf_counter()-t)" 2>$OUT/imp$i.err
done
sort -t'|' -k2 -n $OUT/imp2.err | tail -40
