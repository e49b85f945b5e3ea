#!/usr/bin/env bash
# The study on one GPU machine lent through this workplace's device tool (README.md, "On a GPU").
#
# That machine reaches no registry and one call carries at most 64 MiB, while the study needs
# about 125 MB that the repository does not hold: the FID Inception weights (87 MB), the
# Fashion-MNIST files (31 MB) and the wheels that the machine's image lacks (7 MB). So:
#
#   bash experiments/lucic_fashion/gpu_study.sh pack     # here: .carry/1 .. .carry/K, chunks of one
#                                                        # tar of all three, each with the manifest
#   bash experiments/lucic_fashion/gpu_study.sh          # there, once per chunk, carrying .carry/<k>:
#                                                        # stores the chunk in /tmp (the machine stays
#                                                        # warm 30 s between calls); once every chunk is
#                                                        # there and matches its checksum, unpacks and
#                                                        # runs the study
#   bash experiments/lucic_fashion/gpu_study.sh unpack F # here: F (the returned results.tar) into runs/
#   python experiments/lucic_fashion/study.py --wandb-replay runs/<name> ...   # here: their W&B runs
#
# The run: the FID floor (10,000 training against the 10,000 test images, which also caches the
# test statistics once), then WORKERS study.py processes side by side, each with its share of
# ROWS x SEEDS (seed 0 of every row first), with JAX_DEFAULT_MATMUL_PRECISION=highest (the
# authors' TF 1 ran in float32; a GPU's default is TF32), logger=none (no W&B on that machine).
# STUDY_S (default 420) stops the workers; whatever finished is in $OUT/results.tar, with the logs.
# Runs already in runs/ (DONE_DIR) are skipped. The narrow search (README.md, "Commands") runs
# here too: SEARCH="wgan mm" adds each row's trials 0 .. TRIALS-1 (8) at SEARCH_STEPS D updates
# (7812) to the workers' tasks, and SEARCHED="wgan mm" each row's best trial's setting at the full
# protocol, SEEDS, if all those trials were done when the call began (in DONE_DIR/search, where
# unpack puts them, or from an earlier call on this machine); ROWS="" leaves the table's rows out.
# A search call gives the workers up to 8 trials a row more: raise STUDY_S for it. Other
# settings (environment): ROWS, SEEDS, WORKERS (8), STUDY_EXTRA and STUDY_EVAL_EXTRA (gaxp-train
# and gaxp-eval overrides), FLOOR_N (10000), FLOOR_S (its time limit, 120), MEM_FRACTION (each
# process's share of the GPU, 0.08), PYTHON (python3); for pack: CHUNK_MB (54), CARRY_DIR
# (.carry), WHEELS (a folder of wheels instead of bench_gpu.sh's). A chunk whose checksum fails is
# refused in one line; carry it again.
set -uo pipefail
cd "$(dirname "$0")/../.."
here=experiments/lucic_fashion
chunk_mb=${CHUNK_MB:-54}
carry=${CARRY_DIR:-.carry}
store=${GAXP_CARRY_STORE:-/tmp/gaxp_carry}
payload=${GAXP_PAYLOAD:-/tmp/gaxp_payload}
out=${OUT:-/tmp/gaxp_gpu_out}

sha() { sha256sum "$1" | cut -d' ' -f1; }
# manifest FILE count|payload|K: the number of chunks, the payload's SHA-256, or chunk K's
manifest() {
  python3 -c "import json, sys; m = json.load(open(sys.argv[1])); k = sys.argv[2]
print(len(m['chunks']) if k == 'count' else m['payload_sha256'] if k == 'payload' else m['chunks'][int(k) - 1])" "$1" "$2"
}

if [ "${1:-}" = pack ]; then
  set -e
  wheels=${WHEELS:-}
  if [ -z "$wheels" ]; then bash scripts/bench_gpu.sh wheels >/dev/null; wheels=.whl; fi
  cache=${GAXP_CACHE:-$HOME/.cache/gaxp}
  fmnist=${GAXP_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  weights=$(ls "$cache"/inception/fid-inception-pt-*.npz 2>/dev/null | head -1)
  [ -n "$weights" ] || { echo "gpu_study.sh pack: no FID Inception weights in $cache/inception; run any gaxp-fid once here first" >&2; exit 2; }
  ls "$fmnist"/train-images-idx3-ubyte.gz >/dev/null 2>&1 || { echo "gpu_study.sh pack: no Fashion-MNIST in $fmnist; apt-get install dataset-fashion-mnist" >&2; exit 2; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/p/whl" "$tmp/p/fmnist" "$tmp/p/cache/inception"
  cp "$wheels"/*.whl "$tmp/p/whl/" 2>/dev/null || true  # none: the machine has every package
  cp "$fmnist"/*-ubyte.gz "$tmp/p/fmnist/"
  cp "$weights" "${weights%.npz}.json" "$tmp/p/cache/inception/"
  tar -cf "$tmp/payload.tar" -C "$tmp/p" .
  rm -rf "$carry" && mkdir -p "$carry"
  split -b "${chunk_mb}M" -d -a 2 "$tmp/payload.tar" "$tmp/chunk."
  chunks=("$tmp"/chunk.*)
  {  # the manifest: the payload's SHA-256, then each chunk's, in order
    echo "{\"payload_sha256\": \"$(sha "$tmp/payload.tar")\", \"chunks\": ["
    sep=
    for c in "${chunks[@]}"; do echo "$sep\"$(sha "$c")\""; sep=,; done
    echo "]}"
  } >"$tmp/manifest.json"
  k=0
  for c in "${chunks[@]}"; do
    k=$((k + 1))
    mkdir -p "$carry/$k"
    mv "$c" "$carry/$k/part-$k"
    cp "$tmp/manifest.json" "$carry/$k/manifest.json"
  done
  rm -rf "$tmp"
  tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
  echo "$k chunks in $carry/ (the working tree without them: $((tree / 1048576)) MiB; one call carries 64 MiB):"
  du -sh "$carry"/*
  echo "call the device tool $k times, at once one after another, with carry [\".carry/<k>\"] and:"
  echo "  bash $here/gpu_study.sh"
  exit 0
fi

if [ "${1:-}" = unpack ]; then
  set -e
  dest=${3:-$here/runs}
  tmp=$(mktemp -d)
  tar -xf "$2" -C "$tmp"
  for d in "$tmp"/results/*/ "$tmp"/results/search/*/t*/; do  # runs, then search trials
    [ -f "$d/result.json" ] || [ -f "$d/trial.json" ] || continue
    name=${d#"$tmp"/results/} && name=${name%/}
    if [ -e "$dest/$name/result.json" ] || [ -e "$dest/$name/trial.json" ]; then echo "kept $dest/$name (already there)"; continue; fi
    mkdir -p "$dest/$name" && cp -r "$d". "$dest/$name/" && echo "$dest/$name"
  done
  rm -rf "$tmp"
  exit 0
fi

# On the GPU machine: store the chunks carried this time, then check whether all are there.
mkdir -p "$store" "$out"
for d in "$carry"/*/; do
  [ -d "$d" ] || continue
  for part in "$d"/part-*; do
    k=${part##*-}
    want=$(manifest "$d/manifest.json" "$k")
    if [ "$(sha "$part")" != "$want" ]; then
      echo "gpu_study.sh: chunk $k does not match its checksum (a broken transfer?); carry $carry/$k again"
      exit 2
    fi
    if [ -f "$store/manifest.json" ] && ! cmp -s "$store/manifest.json" "$d/manifest.json"; then
      rm -f "$store"/part-* "$payload/.done"  # chunks of an older pack: start again with this one
    fi
    cp "$part" "$d/manifest.json" "$store"/
  done
done
[ -f "$store/manifest.json" ] || { echo "gpu_study.sh: no chunk carried (carry $carry/<k>; see the head of this file)"; exit 2; }
total=$(manifest "$store/manifest.json" count)
have=0
for k in $(seq 1 "$total"); do [ -f "$store/part-$k" ] && have=$((have + 1)); done
if [ "$have" -lt "$total" ]; then
  echo "gpu_study.sh: $have of $total chunks stored in $store; call again at once with the next one"
  exit 0
fi
if [ ! -f "$payload/.done" ]; then
  cat $(for k in $(seq 1 "$total"); do echo "$store/part-$k"; done) >"$store/payload.tar"
  want=$(manifest "$store/manifest.json" payload)
  [ "$(sha "$store/payload.tar")" = "$want" ] || { echo "gpu_study.sh: the reassembled payload does not match its checksum; pack again here and carry every chunk anew"; rm -f "$store"/part-* "$store/payload.tar"; exit 2; }
  rm -rf "$payload" && mkdir -p "$payload" && tar -xf "$store/payload.tar" -C "$payload" && rm "$store/payload.tar"
  touch "$payload/.done"
fi
PY=${PYTHON:-python3}
if ! $PY -c "import grain, hydra, omegaconf, mlxtend, dm_pix" 2>/dev/null; then  # what the image lacks
  ls "$payload"/whl/*.whl >/dev/null 2>&1 || { echo "gpu_study.sh: this Python lacks gaxp's packages and no wheels were carried; pack here with bench_gpu.sh's wheels"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$payload"/whl/*.whl || exit 1
fi

export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 WANDB_MODE=disabled \
  GAXP_CACHE="$payload/cache" GAXP_FASHION_MNIST_DIR="$payload/fmnist" \
  JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.08}
jaxv=$($PY -c "import jax; print(jax.__version__)")
export GAXP_STUDY_MACHINE="$(nvidia-smi -L 2>/dev/null | head -1 | sed 's/ (UUID.*//'), JAX $jaxv, matmul precision highest"
echo "gpu_study.sh: $GAXP_STUDY_MACHINE"
runs=${STUDY_RUNS:-/tmp/lucic_runs}
results=${STUDY_RESULTS:-/tmp/lucic_results/results}
mkdir -p "$runs" "$results"
SECONDS=0
# the FID floor of the protocol; it also computes and caches the test split's statistics once
timeout "${FLOOR_S:-120}" $PY -c "from gaxp.cli import fid_main; fid_main()" fashion_mnist:train fashion_mnist:test \
  --n "${FLOOR_N:-10000}" --json "$out/fid_floor.json" 2>&1 | tail -3
echo "floor: ${SECONDS} s"
read -r -a rows <<<"${ROWS-ns lsgan wgan_gp mm wgan dragan ns_sn_ema hinge_sn_ema}"
read -r -a seeds <<<"${SEEDS:-0 1}"
read -r -a extra <<<"${STUDY_EXTRA:-}"
done_dir=${DONE_DIR:-$here/runs}  # runs already committed (by the CPU study, or an earlier lease) are skipped
read -r -a search <<<"${SEARCH:-}"
read -r -a searched <<<"${SEARCHED:-}"
trials=${TRIALS:-8}
# the search's finished trials, where the search skips them and --searched ranks them
[ -d "$done_dir/search" ] && mkdir -p "$results/search" && cp -rn "$done_dir/search/." "$results/search/"
missing() {  # the trial numbers among 0 .. trials-1 of row $1 that are not in results/search yet
  for k in $(seq 0 $((trials - 1))); do [ -f "$results/search/$1/t$k/trial.json" ] || echo "$k"; done
}
pairs=()  # the workers' tasks: <row>:<seed> (a table run), search:<row>:<k>, searched:<row>:<seed>
for s in "${seeds[@]}"; do for r in "${rows[@]}"; do
  [ -f "$done_dir/$r-s$s/result.json" ] || pairs+=("$r:$s")
done; done
for r in "${search[@]}"; do for k in $(missing "$r"); do pairs+=("search:$r:$k"); done; done
for r in "${searched[@]}"; do
  have=$((trials - $(missing "$r" | wc -l)))
  if [ "$have" -lt "$trials" ]; then
    echo "searched $r: $have of its $trials search trials were done when this call began; call again once SEARCH=$r has run them"
    continue
  fi
  for s in "${seeds[@]}"; do
    [ -f "$done_dir/${r}_searched-s$s/result.json" ] || pairs+=("searched:$r:$s")
  done
done
echo "runs to do: ${pairs[*]:-none}"
workers=${WORKERS:-8}
pids=()
set -m  # each worker in its own process group, so that the time limit stops it and its runs alone
for w in $(seq 0 $((workers - 1))); do
  (
    for ((i = w; i < ${#pairs[@]}; i += workers)); do
      IFS=: read -r kind r s <<<"${pairs[$i]}"
      case $kind in
        search) what=(--search "$r" --trials "$trials" --trial "$s" --search-steps "${SEARCH_STEPS:-7812}") ;;
        searched) what=(--searched "$r" --trials "$trials" --seeds "$s") ;;
        *) s=$r r=$kind what=(--rows "$r" --seeds "$s") ;;
      esac
      $PY $here/study.py "${what[@]}" --runs "$runs" --results "$results" \
        --extra logger=none "${extra[@]}" ${STUDY_EVAL_EXTRA:+--eval-extra $STUDY_EVAL_EXTRA} || echo "worker $w: ${pairs[$i]} failed"
    done
  ) >"$runs/worker-$w.log" 2>&1 &
  pids+=($!)
done
set +m
# the workers stop at STUDY_S (SIGTERM: a training run saves its checkpoint); what finished is kept
deadline=$((SECONDS + ${STUDY_S:-420}))
while [ "$SECONDS" -lt "$deadline" ] && kill -0 "${pids[@]}" 2>/dev/null; do sleep 2; done
for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
wait "${pids[@]}" 2>/dev/null
echo "study: ${SECONDS} s; finished: $(ls "$results" | tr '\n' ' ')"
tail -n 3 "$runs"/worker-*.log
tar -cf "$out/results.tar" -C "$(dirname "$results")" results
tar -cf "$out/logs.tar" -C "$runs" $(cd "$runs" && ls *.log)
exit 0
