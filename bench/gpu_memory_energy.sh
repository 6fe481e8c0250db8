#!/bin/bash
# The GPU parts of issue 22 on the lent GPU, which has no pydantic or LightGBM: carry their wheels in .whl/ (the
# device notes say how). First the CUDA tests of memory, energy and the GPU timing backend, then
# bench/memory_energy.py's GPU part in two processes (each writes its JSON, so one cut short loses only itself):
# memory of 50 networks per space (inference at batch 1, a training step at 32, 128 and 512), then NVML energy
# per inference of 40 networks of two spaces at batch 1 and 32. Outputs land in $OUT (or ./gpu-out).
#   bash bench/gpu_memory_energy.sh
set -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,power.draw --format=csv,noheader
quiet() { tr '\r' '\n' | grep -v "it/s\]\|s/it\]\|^$"; }
timeout ${TEST_S:-150} python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_memory.py tests/test_energy.py \
  tests/test_cuda.py 2>&1 | tail -15
SEED=${SEED:-7}
timeout ${MEMORY_S:-330} python3 bench/memory_energy.py --seed $SEED --networks 50 --gpu --gpu-networks 50 \
  --skip inference,training,energy,gpu-energy --out $OUT/gpu_memory.json 2>&1 | quiet | tee $OUT/gpu_memory.txt
timeout ${ENERGY_S:-240} python3 bench/memory_energy.py --seed $SEED --spaces ${ENERGY_SPACES:-mobilenet,nb201} \
  --networks 40 --gpu --energy-networks 40 --skip inference,training,energy,gpu-memory --out $OUT/gpu_energy.json \
  2>&1 | quiet | tee $OUT/gpu_energy.txt
