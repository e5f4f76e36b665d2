#!/usr/bin/env bash
# One short GPU lease, in stages, so that the ~300 MB of wheels the GPU machine lacks travel while the teachers
# train there (the device tool carries at most 64 MiB per call; processes started with setsid outlive a call).
#
#   bash benchmarks/gpu_lease.sh setup            # call 1: install .gpu/whl, start ant depth 4 and 64 training
#   bash benchmarks/gpu_lease.sh chunk K          # calls 2-6: park part K of the onnxruntime-gpu wheel
#   bash benchmarks/gpu_lease.sh final            # last call: install onnxruntime-gpu, wait for the teachers,
#                                                 # distil + export + serve (CUDA provider), seeds, serve_gpu
#   bash benchmarks/gpu_lease.sh smoke            # every stage on this CPU, tiny (no wheels, CPU provider)
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
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
OUTDIR=${OUT:-$ROOT/benchmarks/results}
mkdir -p "$LEASE" "$OUTDIR"
export PYTHONUNBUFFERED=1

site_path() {
  local p=$ROOT
  [ -d /tmp/site ] && p=/tmp/site:$p
  [ -d /tmp/site_ort ] && p=/tmp/site_ort:$p
  echo "$p"
}

start_training() {  # $1: extra train flags (smoke: tiny)
  for depth in 4 64; do
    # two processes share the GPU: neither may take JAX's default 75% of its memory
    setsid nohup env PYTHONPATH="$(site_path)" XLA_PYTHON_CLIENT_MEM_FRACTION=0.35 \
      python3 -m deepcrl.cli train --env ant --depth "$depth" --max-minutes "$TRAIN_MINUTES" \
      --out "$LEASE/ant_d$depth" $1 >"$LEASE/ant_d$depth.log" 2>&1 </dev/null &
    echo $! >"$LEASE/ant_d$depth.pid"
  done
  echo "training started: ant depth 4 and 64, $TRAIN_MINUTES min each, logs in $LEASE"
}

progress() {
  for f in "$LEASE"/ant_d*/metrics.jsonl; do
    [ -f "$f" ] && echo "$f: $(wc -l <"$f") records, last: $(tail -n 1 "$f" | cut -c1-300)"
  done
  for f in "$LEASE"/ant_d*.log; do [ -f "$f" ] && echo "== $f" && tail -n 3 "$f" | cut -c1-300; done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
}

wait_training() {  # $1: the most seconds to wait
  local deadline=$((SECONDS + $1))
  for depth in 4 64; do
    local pid; pid=$(cat "$LEASE/ant_d$depth.pid" 2>/dev/null) || continue
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 2; done
    kill -0 "$pid" 2>/dev/null && { echo "ant depth $depth still training at the deadline: stopping it"; kill -INT "$pid"; sleep 20; }
  done
}

run_rest() {  # $1: --smoke or empty; each stage bounded, a failing stage recorded, the next one still runs
  local smoke=$1 py; py="env PYTHONPATH=$(site_path) python3"
  [ -f benchmarks/gpu_bodies.py ] && timeout 300 $py benchmarks/gpu_bodies.py $smoke --runs-dir "$LEASE" \
    --out "$OUTDIR/gpu_bodies.json" 2>&1 | tail -n 40
  [ -f benchmarks/serve_gpu.py ] && timeout 150 $py benchmarks/serve_gpu.py $smoke \
    --out "$OUTDIR/serve_gpu.json" 2>&1 | tail -n 20
  [ -f benchmarks/seeds.py ] && timeout 240 $py benchmarks/seeds.py $smoke --out "$OUTDIR/seeds.json" 2>&1 | tail -n 20
  tar czf "$OUTDIR/gpu_lease_runs.tar.gz" -C "$LEASE" --exclude='train_state' --exclude='checkpoint' . 2>/dev/null
  true
}

case "$stage" in
  setup)
    nvidia-smi -L
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
    PYTHONPATH=$(site_path) python3 -c "import jax, brax, mujoco, mujoco.mjx, jax2onnx, fastapi, uvicorn, tyro, onnxruntime as o; print(jax.__version__, jax.devices(), o.__version__)" || exit 1
    start_training "--eval-every 3"
    ;;
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
    wait_training 420
    progress
    run_rest ""
    cp "$LEASE"/ant_d*.log "$OUTDIR"/ 2>/dev/null
    ;;
  smoke)
    TRAIN_MINUTES=0.5 start_training "--num-envs 8 --unroll-length 10 --batch-size 32 --sgd-steps 2 --width 32 --steps 800 --eval-every 2 --eval-episodes 8"
    wait_training 600
    progress
    run_rest --smoke
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
