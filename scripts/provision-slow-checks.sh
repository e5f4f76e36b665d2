#!/usr/bin/env bash
# Provision what the slow checks need that `pip install -e '.[dev]'` does not bring, from this checkout's own
# files. Idempotent: whatever is already there and working is reused, so a second run takes seconds.
#
#   chromium                 tests/envs/test_render.py (the HTML replay, offline)    apt-get, as root
#   h2load (nghttp2-client)  tests/serve/test_overload_bench.py (a C++ fleet)        apt-get, as root
#   the TensorFlow virtualenv tests/export/test_savedmodel.py (jax2tf -> SavedModel)  the `tf` extra of pyproject.toml
#   the Triton virtualenv    tests/export/test_triton.py (a real tritonserver 2.51)  nvidia-pytriton 0.7.0, numpy<2
#
# The virtualenvs live under ${XDG_CACHE_HOME:-~/.cache}/deepcrl/venvs/ (or $DEEPCRL_CACHE_DIR/venvs/), where
# the tests look for them; DEEPCRL_TF_VENV / DEEPCRL_TRITON_VENV point the tests at other ones. The TensorFlow
# one sees this Python's packages (--system-site-packages: jax, deepcrl's dependencies) and adds TensorFlow,
# which stays out of the main environment (it pins its own protobuf / ml_dtypes ranges). The Triton one is
# separate: nvidia-pytriton needs numpy<2, deepcrl numpy>=2.
#
# Usage: scripts/provision-slow-checks.sh          (PYTHON=... to make the virtualenvs from another interpreter)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python || command -v python3)}"
cache="${DEEPCRL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepcrl}"
venvs="$cache/venvs"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
log() { printf 'provision: %s\n' "$*"; }
t0=$SECONDS

# ---- chromium and h2load (apt) -----------------------------------------------------------------------------
need=()
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} = 0 ]; then
  log "chromium, h2load: present ($(command -v chromium || command -v chromium-browser), $(command -v h2load))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "provision: ${need[*]} missing and this is not a root Debian/Ubuntu shell; install with" \
       "\`sudo apt-get install -y ${need[*]}\` (or your system's packages) and run this again." >&2
  exit 1
fi

# ---- the TensorFlow virtualenv (the `tf` extra) ------------------------------------------------------------
tf_reqs="$(cd "$repo" && "$python" -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(" ".join(extras["tf"]))')"
tf="$venvs/tf"
if [ -x "$tf/bin/python" ] && [ "$(cat "$tf/.deepcrl-requirements" 2>/dev/null)" = "$tf_reqs" ] \
   && "$tf/bin/python" -c 'import tensorflow, jax.experimental.jax2tf' 2>/dev/null; then
  log "TensorFlow venv: present ($tf)"
else
  log "TensorFlow venv: $tf <- $tf_reqs"
  "$python" -m venv --system-site-packages "$tf"
  "$tf/bin/python" -m pip install -q $tf_reqs
  "$tf/bin/python" -c 'import tensorflow, jax.experimental.jax2tf'
  echo "$tf_reqs" > "$tf/.deepcrl-requirements"
fi

# ---- the Triton virtualenv ---------------------------------------------------------------------------------
# nvidia-pytriton 0.7.0 ships tritonserver 2.51 and its Python backend; onnxruntime runs the graph inside the
# test's stand-in `onnxruntime` backend (tests/export/triton_backend/).
triton_reqs="nvidia-pytriton==0.7.0 numpy<2 onnxruntime"
triton="$venvs/triton"
if [ -x "$triton/bin/python" ] && [ "$(cat "$triton/.deepcrl-requirements" 2>/dev/null)" = "$triton_reqs" ] \
   && compgen -G "$triton/lib/python3.*/site-packages/pytriton/tritonserver/bin/tritonserver" >/dev/null \
   && "$triton/bin/python" -c 'import numpy, onnxruntime' 2>/dev/null; then
  log "Triton venv: present ($triton)"
else
  log "Triton venv: $triton <- $triton_reqs"
  "$python" -m venv "$triton"
  # shellcheck disable=SC2086
  "$triton/bin/python" -m pip install -q $triton_reqs
  "$triton/bin/python" -c 'import numpy, onnxruntime'
  echo "$triton_reqs" > "$triton/.deepcrl-requirements"
fi

log "done in $((SECONDS - t0)) s (virtualenvs under $venvs)"
