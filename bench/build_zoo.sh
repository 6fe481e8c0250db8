#!/bin/bash
# The shipped model zoo (zoo/): one search per shipped recipe that runs and measures accuracy on this machine, its
# winners final-trained, then released as one version. Searches and final training go to runs/zoo/ (not in git);
# only the release lands in zoo/. Re-running skips what is done (searches resume, trained networks are kept,
# releases are idempotent). Not in it: the ARM profiles (FBNet space: its 22-layer networks stay at chance accuracy
# on MNIST-5k after the few hundred CPU steps a search here can spend on each) and the GPU profiles (mobilenet at
# 224 px: training them needs the GPU; release there with --measure gpu-h200-fp32-b1 to add measured GPU figures).
#   bash bench/build_zoo.sh            # about 35 minutes on a 2-core x86 VM (what made zoo/ v1)
#   VERSION=v2 bash bench/build_zoo.sh  # a new version beside v1 (never overwrites it)
#   RELEASE=0 bash bench/build_zoo.sh   # searches and final training only
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${VERSION:-v1}
RUNS=${RUNS:-runs/zoo}
ZOO=${ZOO:-zoo}
#         recipe                      trained  epochs  released (best final accuracy)
JOBS=("recipes/quickstart.yaml         3        5       3"
      "recipes/macro_x86.yaml          2        3       1"
      "recipes/lrssd_detection.yaml    1        30      1")
for job in "${JOBS[@]}"; do
  read -r recipe top epochs keep <<<"$job"
  name=$(basename "$recipe" .yaml)
  run="$RUNS/$name"
  if [ ! -f "$run/best.json" ]; then
    flags=(); [ -f "$run/state.json" ] && flags=(--resume)
    python -m nas.run "$recipe" --output "$run" "${flags[@]}"
  fi
  python -m nas.train "$run" --top "$top" --epochs "$epochs"
  if [ "${RELEASE:-1}" = 1 ]; then
    python -m nas.zoo release "$run" --zoo "$ZOO" --version "$VERSION" --top "$keep" --rank final
  fi
done
du -sh --exclude=wandb "$ZOO"
