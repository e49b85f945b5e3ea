#!/usr/bin/env bash
# The command run on the H200 on 2026-12-04, from the repository root, with .whl (bench_gpu.sh wheels)
# and .fmnist (the four Fashion-MNIST .gz files) carried along; it ran as
#   SUITE_S=210 INFOGAN_S=45 RUN_S=35 bash .fmnist/gpu.sh
# issue 15's suite, then the Lucic InfoGAN step, then one protocol run's training (cut by RUN_S).
set -uo pipefail
out=${OUT:-/tmp/gpuout}; mkdir -p "$out"
BENCH_TIMEOUT=${SUITE_S:-330} bash scripts/bench_gpu.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 WANDB_MODE=disabled GAXP_FASHION_MNIST_DIR=$PWD/.fmnist
PY=${PYTHON:-python3}
timeout ${INFOGAN_S:-90} $PY scripts/bench.py --models infogan --batch ${IG_BATCH:-64 256} --rounds ${IG_ROUNDS:-5} --steps ${IG_STEPS:-20} --no-torch --json "$out/infogan.json" 2>&1 | tee "$out/infogan.log"
SECONDS=0
timeout ${RUN_S:-150} $PY -c "from gaxp.cli import train_main; train_main()" experiment=lucic_fashion/lsgan metrics=none logger=none trainer.steps=${RUN_STEPS:-15625} out_dir=/tmp/lucic_run 2>&1 | tail -20 | tee "$out/lucic_run.log"
echo "lucic lsgan ${RUN_STEPS:-15625} steps, metrics=none: wall ${SECONDS} s" | tee -a "$out/lucic_run.log"
