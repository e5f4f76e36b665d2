"""Fresh-goal auto-reset: skipping the batched reset on steps where no episode ends, vs resetting every step.

Runs both variants side by side in one process (same env, same 256 envs, same random actions) and writes
benchmarks/results/autoreset_skip.json. The "always" variant is the wrapper with its `lax.cond` forced to the
reset branch, which is what the wrapper did before the skip.

    python benchmarks/autoreset_skip.py            # point_maze and reacher
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import types
from pathlib import Path

import jax

import deepcrl.envs.wrappers as W
from deepcrl import envs

OUT = Path(__file__).parent / "results" / "autoreset_skip.json"


def steps_per_s(env_id: str, steps: int, n: int = 256) -> float:
    w = W.wrap_for_training(envs.make(env_id))
    state = jax.jit(w.reset)(jax.random.split(jax.random.PRNGKey(0), n))

    @jax.jit
    def roll(s, key):
        def body(c, k):
            return w.step(c, jax.random.uniform(k, (n, w.action_size), minval=-1, maxval=1)), ()

        return jax.lax.scan(body, s, jax.random.split(key, steps))[0]

    jax.block_until_ready(roll(state, jax.random.PRNGKey(1)).obs)
    t = time.perf_counter()
    jax.block_until_ready(roll(state, jax.random.PRNGKey(2)).obs)
    return n * steps / (time.perf_counter() - t)


def main(argv: list[str]) -> None:
    cases = {"point_maze": 1000, "reacher": 200}
    rows = []
    for env_id, steps in cases.items():
        skip = steps_per_s(env_id, steps)
        real = W.jax
        W.jax = types.SimpleNamespace(vmap=jax.vmap, random=jax.random, eval_shape=jax.eval_shape, tree=jax.tree,
                                      lax=types.SimpleNamespace(cond=lambda pred, a, b: a()))
        try:
            always = steps_per_s(env_id, steps)
        finally:
            W.jax = real
        rows.append({"env": env_id, "num_envs": 256, "steps": steps, "skip_steps_per_s": round(skip),
                     "always_steps_per_s": round(always), "speedup": round(skip / always, 2)})
        print(rows[-1])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                           "jax": jax.__version__, "loadavg": os.getloadavg()},
                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
