#!/bin/bash
# The GPU parts of issue 22 on the lent GPU, which has no pydantic or LightGBM: carry their wheels in .whl/ (the
# device notes say how). PARTS picks what runs, each in its own process writing its own files to $OUT (or
# ./gpu-out), so one cut short loses only itself:
#   tests   the CUDA tests of memory, energy and the GPU timing backend (about 30 s)
#   memory  bench/memory_energy.py's GPU memory part: GPU_NETWORKS (50) networks of each of SPACES (all five),
#           inference at batch 1 and a training step at 32, 128 and 512, each layer's workspace measured alone
#   profile a GPU profile's workspace table (WS_PROFILE, gpu-h100-fp32-b1) as a search uses it, on 20 networks of
#           seed 13 it did not measure, training at 64, 96, 256, 384 and 512 (about 1 minute on an H100)
#   energy  its NVML energy part: 40 networks of each of ENERGY_SPACES at batch 1 and 32, two passes of 2 s each
#           (about 7 minutes a space: run it in a call of its own)
#   PARTS="tests memory" bash bench/gpu_memory_energy.sh; PARTS=energy ENERGY_SPACES=mobilenet bash ...
set -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,power.draw --format=csv,noheader
quiet() { tr '\r' '\n' | grep -v "it/s\]\|s/it\]\|^$"; }
PARTS=${PARTS:-tests memory energy}; SEED=${SEED:-7}; SPACES=${SPACES:-mobilenet,macro,fbnet,muffnet,nb201}
if [[ " $PARTS " == *" tests "* ]]; then
  timeout ${TEST_S:-150} python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_memory.py tests/test_energy.py \
    tests/test_cuda.py 2>&1 | tail -15
fi
if [[ " $PARTS " == *" memory "* ]]; then
  timeout ${MEMORY_S:-400} python3 bench/memory_energy.py --seed $SEED --spaces $SPACES --networks 50 --gpu \
    --gpu-networks ${GPU_NETWORKS:-50} \
    --skip inference,training,energy,gpu-energy --out $OUT/gpu_memory.json 2>&1 | quiet | tee $OUT/gpu_memory.txt
fi
if [[ " $PARTS " == *" profile "* ]]; then
  timeout ${PROFILE_S:-300} python3 bench/memory_energy.py --seed 13 --spaces mobilenet --networks 20 --gpu --gpu-networks 20 \
    --skip inference,training,energy,gpu-memory,gpu-energy --profile-workspace ${WS_PROFILE:-gpu-h100-fp32-b1} \
    --between-batches 64,96,256,384,512 --out $OUT/profile_workspace.json 2>&1 | quiet | tee $OUT/profile_workspace.txt
fi
if [[ " $PARTS " == *" energy "* ]]; then
  S=${ENERGY_SPACES:-mobilenet}
  timeout ${ENERGY_S:-550} python3 bench/memory_energy.py --seed $SEED --spaces $S --energy-spaces $S --networks ${ENERGY_NETWORKS:-40} \
    --gpu --energy-networks ${ENERGY_NETWORKS:-40} --skip inference,training,energy,gpu-memory --out $OUT/gpu_energy.json 2>&1 \
    | quiet | grep -v "batch [0-9]*: [0-9]" | tee $OUT/gpu_energy.txt
fi
