#!/usr/bin/env bash
# Issue 15's GPU figures in one command (docs/speed.md, "On a GPU").
#
#   bash scripts/bench_gpu.sh wheels   # here, where pip reaches the registry: the packages gaxp
#                                      # imports that the GPU machine's image lacks, as cp312
#                                      # x86-64 wheels in .whl/ (git-ignored through info/exclude)
#   bash scripts/bench_gpu.sh          # on the GPU machine: installs .whl/ (if there) into
#                                      # /tmp/site, runs `scripts/bench.py --gpu-suite`;
#                                      # ${OUT:-.}/gpu.json (rewritten after each job), gpu.log
#
# The GPU machine's image has python3 3.12 with JAX (CUDA), flax, optax, orbax-checkpoint, chex,
# numpy and scipy, and reaches no registry; the wheels are the rest of what the suite imports.
# BENCH_TIMEOUT (seconds, default 540) stops the suite; the JSON then holds the jobs done so far.
# PYTHON (default python3) runs it; BENCH_ARGS are added to bench.py's (--smoke: a tiny CPU check);
# BENCH_WHEELS: the wheels' folder (default .whl).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = wheels ]; then
  set -e
  mkdir -p .whl
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
  platforms=()
  for p in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${p}_x86_64")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl grain==0.2.18 array_record==0.8.6 hydra-core==1.3.8 omegaconf==2.3.1 \
    mlxtend==0.25.0 googleapis-common-protos==1.76.0 portpicker==1.6.0 dm-pix==0.4.5
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # an sdist only: built here
  ls -l .whl && du -sh .whl
  exit 0
fi

out=${OUT:-.}
wheels=${BENCH_WHEELS:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi -L 2>/dev/null | tee "$out/gpu.log"
# shellcheck disable=SC2086  # BENCH_ARGS: words
timeout "${BENCH_TIMEOUT:-540}" "${PYTHON:-python3}" scripts/bench.py --gpu-suite ${BENCH_ARGS:-} \
  --json "$out/gpu.json" 2>&1 \
  | tee -a "$out/gpu.log"
