#!/usr/bin/env bash
# Build the paper's own stack for the checks marked `reference` (tests/interop/test_reference_stack.py) and for
# benchmarks/vs_reference.py: a CPU virtualenv with the reference's pinned packages, beside a checkout of the
# reference repository (scaling-crl, the code of "1000 Layer Networks for Self-Supervised RL").
#
# The checkout is an input, not something this script downloads: CI reaches package registries only, and the
# reference is a GitHub repository. Clone it once where you can (`git clone <scaling-crl repository URL> DIR`)
# and pass DIR. Everything else comes from PyPI (pip's ordinary index/wheel configuration).
#
# What it does (idempotent; a second run takes seconds):
#   1. finds a Python 3.10 (the reference pins ==3.10.*): $PYTHON310, `python3.10`, pyenv's, or uv's;
#   2. makes the venv (default ${XDG_CACHE_HOME:-~/.cache}/deepcrl/venvs/scaling-crl, or $DEEPCRL_SCALING_CRL_VENV)
#      and installs the reference's pins from its pyproject.toml with the CPU jaxlib (its Linux pin is a CUDA
#      build), plus four upper bounds its pins leave open and that would pull a jax newer than 0.4.23;
#   3. applies the reference README's brax 0.10.1 contact.py fix (brax calls `mjx.ncon`, gone in mujoco 3.2.6);
#      its second fix (brax/io/json.py) only matters for HTML rendering, which the checks turn off;
#   4. links the checkout to ${XDG_CACHE_HOME:-~/.cache}/deepcrl/scaling-crl-src (or $DEEPCRL_SCALING_CRL_SRC),
#      where the tests and the benchmark look;
#   5. checks: the versions, and that the checkout's ant env builds with that brax.
#
# Usage: scripts/provision-reference.sh PATH/TO/scaling-crl-checkout
# Then:  python -m pytest -q -m reference tests/interop/test_reference_stack.py
set -euo pipefail
if [ $# -ne 1 ] || [ ! -f "$1/train.py" ] || [ ! -d "$1/envs" ]; then
  echo "usage: $0 PATH/TO/scaling-crl-checkout   (a clone of the reference repository: it holds train.py and" \
       "envs/; this script cannot download it)" >&2
  exit 2
fi
src="$(cd "$1" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/deepcrl"
venv="${DEEPCRL_SCALING_CRL_VENV:-$cache/venvs/scaling-crl}"
link="${DEEPCRL_SCALING_CRL_SRC:-$cache/scaling-crl-src}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
log() { printf 'provision-reference: %s\n' "$*"; }

# The reference's pyproject.toml pins (jaxlib: the CPU build of the same version) and the bounds that keep pip
# from resolving its unpinned transitive dependencies to releases that need a newer jax / numpy.
reqs="numpy==1.26.4 jax==0.4.23 jaxlib==0.4.23 flax==0.7.4 tyro wandb==0.17.9 wandb-osh==1.2.2 brax==0.10.1
mediapy==1.2.2 scipy==1.12.0 mujoco==3.2.6 ml_dtypes<0.5 orbax-checkpoint<0.5 chex<0.1.87 optax<0.2.3"
if ! grep -q '"brax==0.10.1"' "$src/pyproject.toml" 2>/dev/null; then
  log "warning: $src/pyproject.toml does not pin brax==0.10.1 as the checkout this was written for does"
fi

# ---- 1. Python 3.10 -----------------------------------------------------------------------------------------
find_python310() {
  local c
  for c in "${PYTHON310:-}" "$(command -v python3.10 || true)" \
           "$(command -v pyenv >/dev/null && pyenv root 2>/dev/null)/versions/"3.10*/bin/python3.10 \
           "$(command -v uv >/dev/null && uv python find 3.10 2>/dev/null || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' 2>/dev/null
    then echo "$c"; return 0; fi
  done
  return 1
}
if ! python310="$(find_python310)"; then
  echo "provision-reference: no Python 3.10 found (the reference pins ==3.10.*); install one" \
       "(\`pyenv install 3.10\`, \`uv python install 3.10\` or apt's python3.10 python3.10-venv)" \
       "or set PYTHON310=/path/to/python3.10." >&2
  exit 1
fi
log "python: $python310"

# ---- 2. the virtualenv --------------------------------------------------------------------------------------
stamp="$venv/.deepcrl-requirements"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$reqs" ]; then
  log "venv: present ($venv)"
else
  log "venv: $venv <- $(echo $reqs)"
  "$python310" -m venv "$venv"
  # shellcheck disable=SC2086  # the requirement list is word-split on purpose
  "$venv/bin/python" -m pip install -q $reqs
  echo "$reqs" > "$stamp"
fi

# ---- 3. brax's contact.py fix -------------------------------------------------------------------------------
contact="$("$venv/bin/python" -c 'import brax, os; print(os.path.join(os.path.dirname(brax.__file__), "contact.py"))')"
if grep -q 'mjx\.ncon(sys)' "$contact"; then
  log "brax: patching $contact (mjx.ncon -> the contact count of mjx.make_data)"
  sed -i 's/^\(\s*\)ncon = mjx\.ncon(sys)/\1ncon = mjx.make_data(sys).contact.geom1.shape[0]  # mujoco >= 3.2 has no mjx.ncon/' \
    "$contact"
fi
grep -q 'mjx\.ncon(sys)' "$contact" && { echo "provision-reference: could not patch $contact" >&2; exit 1; }

# ---- 4. the checkout where the checks look ------------------------------------------------------------------
if [ "$(readlink -f "$link" 2>/dev/null)" != "$src" ]; then
  if [ -e "$link" ] && [ ! -L "$link" ]; then
    echo "provision-reference: $link exists and is not a link; move it away or set DEEPCRL_SCALING_CRL_SRC." >&2
    exit 1
  fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$src" "$link"
fi
log "checkout: $link -> $src"

# ---- 5. checks ----------------------------------------------------------------------------------------------
(cd "$src" && env -u PYTHONPATH JAX_PLATFORMS=cpu "$venv/bin/python" - <<'EOF'
import jax, flax, brax, mujoco, numpy
want = {"jax": "0.4.23", "flax": "0.7.4", "brax": "0.10.1", "mujoco": "3.2.6", "numpy": "1.26.4"}
have = {m.__name__: m.__version__ for m in (jax, flax, brax, mujoco, numpy)}
assert have == want, f"versions {have} != {want}"
from envs.ant import Ant
env = Ant(backend="spring", exclude_current_positions_from_observation=False, terminate_when_unhealthy=True)
assert env.observation_size == 31 and env.action_size == 8, (env.observation_size, env.action_size)
print("provision-reference: ok:", have, "; ant obs", env.observation_size, "action", env.action_size)
EOF
)
