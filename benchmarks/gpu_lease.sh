#!/usr/bin/env bash
# One short GPU lease, in stages, so that the ~300 MB of wheels the GPU machine lacks travel while the teachers
# train there (the device tool carries at most 64 MiB per call; processes started with setsid outlive a call).
#
#   bash benchmarks/gpu_lease.sh setup            # call 1: install .gpu/whl, start ant depth 4 and 64 training
#   bash benchmarks/gpu_lease.sh chunk K          # calls 2-6: park part K of the onnxruntime-gpu wheel
#   bash benchmarks/gpu_lease.sh final            # last call: install onnxruntime-gpu, wait for the chain,
#                                                 # then latency (CUDA vs CPU provider), serve, serve_gpu
# setup starts a detached chain: train both -> gpu_bodies.py curves,distill,export (beside seeds.py) -> done.
#   bash benchmarks/gpu_lease.sh overload         # if time is left: serve_overload.py on the many-core box, with
#                                                 # 1 and 4 server processes (needs .gpu/h2load, below)
#   bash benchmarks/gpu_lease.sh smoke            # every stage on this CPU, tiny (no wheels, CPU provider)
#   bash benchmarks/gpu_lease.sh overload --smoke # the overload stage on this CPU, tiny
# .gpu/h2load: nghttp2's h2load and the libraries the device lacks (`cp /usr/bin/h2load
# /lib/x86_64-linux-gnu/{libnghttp2.so.14,libjemalloc.so.2,libev.so.4} .gpu/h2load/` after `apt install
# nghttp2-client`), copied out of the tree at setup: a call that does not carry .gpu removes it there.
# Measured 2026-12-04 (benchmarks/results/gpu_bodies.json): transfers take seconds; 5 training processes share
# the GPU well; the chain's distil + export need ~5 min after training, so wait for chain.done before `final`.
#
# Wheels (made on the developer machine, ignored by git; see the README's GPU section for the commands):
# .gpu/whl/*.whl (brax, mujoco, mujoco-mjx, jax2onnx, fastapi, uvicorn, tyro, ... for Python 3.12) and
# .gpuc/cK/part0{K-1} (onnxruntime-gpu 1.31.1, CUDA 13, split in 5). Results land in benchmarks/results/ here
# and in $OUT on the device machine.
set -u
stage=${1:?usage: gpu_lease.sh setup|chunk K|final|smoke}
cd "$(dirname "$0")/.."
ROOT=$PWD
LEASE=${DEEPCRL_LEASE_DIR:-/tmp/lease}
TRAIN_MINUTES=${TRAIN_MINUTES:-3.5}
OUTDIR=${OUT:-$ROOT/benchmarks/results}
RES=$LEASE/results
mkdir -p "$LEASE" "$RES" "$OUTDIR"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.3}  # processes share the one GPU

site_path() {
  local p=$ROOT
  [ -d /tmp/site ] && p=/tmp/site:$p
  [ -d /tmp/site_ort ] && p=/tmp/site_ort:$p
  echo "$p"
}

train_one() {  # $1: run name; the rest: train flags. Five runs share the GPU: none takes JAX's default 75%.
  local name=$1; shift
  setsid nohup env PYTHONPATH="$(site_path)" XLA_PYTHON_CLIENT_MEM_FRACTION=0.15 \
    python3 -m deepcrl.cli train --max-minutes "$TRAIN_MINUTES" --out "$LEASE/$name" "$@" \
    >"$LEASE/$name.log" 2>&1 </dev/null &
  echo $! >"$LEASE/$name.pid"
}

start_training() {  # $1: extra train flags (smoke: tiny); $2: reacher steps
  for depth in 4 64; do train_one "ant_d$depth" --env ant --depth "$depth" $1; done
  # reacher teachers (3 seeds) for the CPU distillation study: ~1.0 success in ~2 minutes on a GPU
  for seed in 0 1 2; do train_one "reacher_s$seed" --env reacher --seed "$seed" --steps "$2" $1; done
  echo "training started: ant depth 4 and 64, reacher seeds 0-2, $TRAIN_MINUTES min each, logs in $LEASE"
}

progress() {
  for f in "$LEASE"/*/metrics.jsonl; do
    [ -f "$f" ] && echo "$f: $(wc -l <"$f") records, last: $(tail -n 1 "$f" | cut -c1-300)"
  done
  for f in "$LEASE"/*.log; do [ -f "$f" ] && echo "== $f" && tail -n 3 "$f" | cut -c1-300; done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
}

wait_training() {  # $1: the most seconds to wait
  local deadline=$((SECONDS + $1))
  for f in "$LEASE"/*.pid; do
    local pid; pid=$(cat "$f" 2>/dev/null) || continue
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 2; done
    kill -0 "$pid" 2>/dev/null && { echo "$f still training at the deadline: stopping it"; kill -INT "$pid"; sleep 20; }
  done
}

chain() {  # $1: train flags; $2: --smoke or empty; $3 reacher steps. Detached: train -> distil + export, seeds -> done
  local py; py="env PYTHONPATH=$(site_path) python3"
  start_training "$1" "$3"
  wait_training 900
  (timeout 300 $py benchmarks/seeds.py $2 --out "$RES/seeds_gpu.json" >"$LEASE/seeds.log" 2>&1) &
  timeout 600 $py benchmarks/gpu_bodies.py $2 --stages curves,distill,export --runs-dir "$LEASE" \
    --out "$RES/gpu_bodies.json" >"$LEASE/bodies.log" 2>&1
  wait
  touch "$LEASE/chain.done"
}

finish() {  # $1: --smoke or empty; each stage bounded, a failing one recorded, the next still runs
  local py; py="env PYTHONPATH=$(site_path) python3"
  local deadline=$((SECONDS + ${CHAIN_WAIT_S:-200}))
  while [ ! -f "$LEASE/chain.done" ] && [ $SECONDS -lt $deadline ]; do sleep 3; done
  [ -f "$LEASE/chain.done" ] || echo "the chain is still running at the deadline; measuring what is there"
  cp "$RES"/*.json "$RES"/*.png "$OUTDIR"/ 2>/dev/null
  timeout 120 $py benchmarks/gpu_bodies.py $1 --stages latency,serve --runs-dir "$LEASE" \
    --out "$RES/gpu_bodies.json" 2>&1 | tail -n 8
  cp "$RES"/*.json "$RES"/*.png "$OUTDIR"/ 2>/dev/null
  timeout 150 $py benchmarks/serve_gpu.py $1 --out "$RES/serve_gpu.json" 2>&1 | tail -n 8
  tail -n 4 "$LEASE"/*.log >"$RES/gpu_lease_logs.txt" 2>&1; tail -n 30 "$RES/gpu_lease_logs.txt"
  tar czf "$RES/runs_reacher.tar.gz" -C "$LEASE" --exclude='train_state' reacher_s0 reacher_s1 reacher_s2 2>/dev/null
  tar czf "$RES/runs_ant.tar.gz" -C "$LEASE" --exclude='train_state' --exclude='checkpoint' --exclude='teacher_d64.onnx' \
    ant_d4 ant_d64 bodies 2>/dev/null
  cp "$RES"/* "$OUTDIR"/ 2>/dev/null
  ls -la "$OUTDIR"
}

overload() {  # $1: --smoke or empty. The server on 1, then 4 cores (processes), h2load robots on the rest
  local py; py="env PYTHONPATH=$(site_path) python3"
  local h2=$LEASE/h2load
  [ -x "$h2/h2load" ] && { printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s/h2load "$@"\n' "$h2" "$h2" >"$h2/run";
    mkdir -p "$h2/bin"; mv "$h2/run" "$h2/bin/h2load"; chmod +x "$h2/bin/h2load"; }
  export PATH=$h2/bin:$PATH
  command -v h2load >/dev/null || { echo "no h2load: carry .gpu/h2load (see the top of this script)"; return 1; }
  local small=""
  [ "$1" = --smoke ] && small="--capacity-s 1 --steady-s 1 --overload-s 2 --after-s 1 --fleet-connections 40"
  for w in 1 4; do
    [ "$1" = --smoke ] && [ $w -gt 1 ] && [ "$(nproc)" -le $w ] && continue
    timeout 200 $py benchmarks/serve_overload.py $small --workers $w --out "$RES/serve_overload_${w}w_$(nproc)cores.json" \
      2>&1 | grep -v "^wrote" | tail -n 5
  done
  cp "$RES"/serve_overload_* "$OUTDIR"/ 2>/dev/null
}

case "$stage" in
  setup)
    nvidia-smi -L
    # a later call that does not carry .gpu removes it on the device: keep what the chain reads outside the tree
    [ -d .gpu/h2load ] && cp -r .gpu/h2load "$LEASE/"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
    PYTHONPATH=$(site_path) python3 -c "import jax, brax, mujoco, mujoco.mjx, jax2onnx, fastapi, uvicorn, tyro, onnxruntime as o; print(jax.__version__, jax.devices(), o.__version__)" || exit 1
    setsid nohup bash "$ROOT/benchmarks/gpu_lease.sh" chain-gpu >"$LEASE/chain.log" 2>&1 </dev/null &
    sleep 20; progress
    ;;
  chain-gpu) chain "--eval-every 3" "" 1500000 ;;
  chain-smoke) chain "--num-envs 8 --unroll-length 10 --batch-size 32 --sgd-steps 2 --width 32 --steps 800 --eval-every 2 --eval-episodes 8" --smoke 800 ;;
  chunk)
    mkdir -p /tmp/ortparts && cp .gpuc/c"${2:?chunk number}"/* /tmp/ortparts/ && ls -la /tmp/ortparts
    progress
    ;;
  final)
    whl=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
    cat /tmp/ortparts/part0* >"$whl"
    echo "05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  $whl" | sha256sum -c - &&
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site_ort "$whl"
    PYTHONPATH=$(site_path) python3 -c "import onnxruntime as o; o.preload_dlls(); print(o.__version__, o.get_available_providers())"
    progress
    finish ""
    ;;
  smoke)
    TRAIN_MINUTES=0.5 CHAIN_WAIT_S=1800 bash "$ROOT/benchmarks/gpu_lease.sh" chain-smoke
    CHAIN_WAIT_S=10 finish --smoke
    ;;
  finish-smoke) CHAIN_WAIT_S=0 finish --smoke ;;
  overload) overload "${2:-}" ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
