#!/usr/bin/env bash
# Build the GPU profiles (default `mobilenet` space) on a CUDA machine:
#   bash hardware_profiles/build_gpu_profiles.sh OUT_ROOT [NETWORKS] [DEVICE_TAG]
# One profile per (precision, batch): CUDA graphs, channels-last. Each run is resumable (re-run to continue).
set -euo pipefail
root=${1:?usage: build_gpu_profiles.sh OUT_ROOT [NETWORKS] [DEVICE_TAG]}
networks=${2:-40}
tag=${3:-h100}
device=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))")
for precision in fp16 fp32; do
  for batch in 1 32; do
    python3 -m hardware_profiles.measure --profile "gpu-${tag}-${precision}-b${batch}" --space mobilenet \
      --backend torch-cuda --precision "$precision" --batch "$batch" --channels-last \
      --networks "$networks" --warmup 20 --repeats 100 --device "$device" --root "$root"
  done
done
