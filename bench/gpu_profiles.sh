#!/bin/bash
# GPU profiles with extra networks, and timm models timed on the GPU (issue 16), on a machine without LightGBM or
# pydantic: carry their wheels in .whl/ (see the device notes) with .whl/tune_list.txt holding the bench's tune
# cases (python -c "import sys; sys.path[:0] = ['bench']; import timm_models as t;
# print(','.join(f'{n}@{r}' for n, r in t.TUNE))" > .whl/tune_list.txt), and a partial
# profile to continue in .whl/prof/ if an earlier call was cut short (measure resumes it).
#   BATCHES="1 32" MEASURE_S=330 BENCH_S=150 bash bench/gpu_profiles.sh
# gpu-h200-fp32-b1@1 and bench/measured/timm_h200_fp32_b1.json came from this script (batch 1; three calls), and
# gpu-h200-fp32-b32@1 and bench/measured/timm_h200_fp32_b32.json (BATCHES=32; three calls: MEASURE_S=540 BENCH_S=1
# for the blocks, then MEASURE_S=420 and MEASURE_S=270 with the partial profile in .whl/prof, about 1,450 s of
# device time in all).
# Version 2 of both (session 11) continued a copy of version 1 (its folder copied to .whl/prof/NAME/2 with
# `version: 2` in the manifest; measure continues the newest version under --root), adding
# `--plain-networks 60 --mixed-networks 40` at batch 32 and `--mixed-networks 40` at batch 1 (about 200 s each);
# measure now keeps a continued profile's recorded overhead, which a later session measures differently (0.009 ms
# then, 0.015-0.017 ms that day), so the version-1 blocks keep theirs. Seven of the 40 mixed networks came from a
# first draft of random_mixed_def that strided by 64 (timm dilates those) and were dropped from extra.csv.
# Version 3 of both (session 12) continued a copy of version 2 the same way with only `--same-pad-networks 40`
# (about 220 s per batch size); the `pad` cases were then timed with `BATCHES`-style calls of bench/timm_models.py
# `--cases pad --rounds 3` into bench/measured/timm_h200_fp32_bB_pad.json.
# The timm timings in bench/measured/ are this script's runs (--rounds 3): at batch 32 all cases timed in session
# 11; at batch 1 the tune and held-out cases from session 10, the fresh and late ones from session 11.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HWNAS_PROFILE_PATH=/tmp/prof
GPU=$(python3 -c "import torch; n=torch.cuda.get_device_name(0).lower(); print('h200' if 'h200' in n else 'h100' if 'h100' in n else 'gpu')")
echo "gpu: $GPU"; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
TUNE=$(cat .whl/tune_list.txt)
mkdir -p /tmp/prof && { [ -d .whl/prof ] && cp -r .whl/prof/. /tmp/prof/; true; }
for B in ${BATCHES:-1 32}; do
  NAME=gpu-$GPU-fp32-b$B
  date
  timeout ${MEASURE_S:-170} python3 -m hardware_profiles.measure --profile $NAME --space mobilenet --backend torch-cuda \
    --precision fp32 --channels-last --batch $B --repeats ${REPEATS:-50} --networks 60 --random-networks ${RANDOM_NETS:-150} --timm-models "$TUNE" --root /tmp/prof \
    --device "NVIDIA ${GPU^^} (lent device)" 2>&1 | tr '\r' '\n' | grep -v "it/s\|key/s\|arch/s\|network/s\|^$" | tail -14
  date
  python3 -m predictors.train --profile $NAME --out /tmp/pred_b$B 2>&1 | tail -2
  timeout ${BENCH_S:-100} python3 bench/timm_models.py --backend torch-cuda --channels-last --batch $B --model /tmp/pred_b$B \
    --rounds ${BENCH_ROUNDS:-3} --out $OUT/timm_gpu_b$B.json 2>&1 | tail -14
  tar -C /tmp/prof -cf $OUT/profile_b$B.tar $NAME
done
