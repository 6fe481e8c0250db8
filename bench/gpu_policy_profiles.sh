#!/bin/bash
# GPU tables for a compression policy with 16-bit float units (issue 21): the default `mobilenet` space with
# `compression: {precisions: [fp32, fp16], keep: [1, 0.75, 0.5]}`, every block in each precision and at each keep
# ratio (a 16-bit block timed wholly in fp16), and 200 networks with mixed policies timed as core.half runs them
# (fp32 with its fp16 units, a cast where the precision changes), CUDA graphs, channels-last; then a predictor
# judged on a held-out split of each table's own networks. On the lent GPU, which has no pydantic or LightGBM:
# carry their wheels in .whl/ (the device notes say how), e.g.
#   BATCHES="1 32" MEASURE_S=250 bash bench/gpu_policy_profiles.sh
# A profile cut short by MEASURE_S comes back as profile_bB.tar; put it under .whl/prof/ and call again: measure
# continues it.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HWNAS_PROFILE_PATH=/tmp/prof
GPU=$(python3 -c "import torch; n=torch.cuda.get_device_name(0).lower(); print('h200' if 'h200' in n else 'h100' if 'h100' in n else 'gpu')")
echo "gpu: $GPU"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
mkdir -p /tmp/prof && { [ -d .whl/prof ] && cp -r .whl/prof/. /tmp/prof/; true; }
echo "compression: {precisions: [fp32, fp16], keep: [1, 0.75, 0.5]}" > /tmp/policy.yaml
for B in ${BATCHES:-1 32}; do
  NAME=gpu-$GPU-policy-b$B
  date
  timeout ${MEASURE_S:-250} python3 -m hardware_profiles.measure --profile $NAME --space mobilenet \
    --space-options /tmp/policy.yaml --backend torch-cuda --precision fp32 --channels-last --batch $B \
    --repeats ${REPEATS:-50} --networks 200 --root /tmp/prof --device "NVIDIA ${GPU^^} (lent device)" 2>&1 \
    | tr '\r' '\n' | grep -v "it/s\|key/s\|arch/s\|network/s\|^$" | tail -8
  date
  tar -C /tmp/prof -cf $OUT/profile_b$B.tar $NAME
  python3 bench/x86_predictor.py --profile $NAME --train-networks 140 2>&1 | tail -20
done
