"""Fresh-goal auto-reset: skipping the batched reset on steps where no episode ends, vs resetting every step.

Runs both variants side by side in one process (same env, same envs, same random actions) and writes
benchmarks/results/autoreset_skip.json. The "always" variant is the wrapper with its `lax.cond` forced to the
reset branch, which is what the wrapper did before the skip.

    python benchmarks/autoreset_skip.py            # point_maze and reacher
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path

import jax
import tyro

import deepcrl.envs.wrappers as W
from deepcrl import envs
from deepcrl.bench.common import machine_facts, write_result

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class AutoresetBench:
    """Steps/s of the auto-reset wrapper with and without skipping resets."""

    envs: tuple[str, ...] = ("point_maze", "reacher")
    """Environment ids."""
    steps: tuple[int, ...] = (1000, 200)
    """Steps per timed scan, one per env."""
    num_envs: int = 256
    """Parallel environments."""
    out: Path = RESULTS / "autoreset_skip.json"
    """Where the result JSON goes."""


def steps_per_s(env_id: str, steps: int, n: int) -> float:
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


def main(cfg: AutoresetBench) -> int:
    if len(cfg.steps) != len(cfg.envs):
        raise SystemExit("error: give one --steps value per --envs id.")
    machine = machine_facts()
    rows = []
    for env_id, steps in zip(cfg.envs, cfg.steps):
        skip = steps_per_s(env_id, steps, cfg.num_envs)
        real = W.jax
        W.jax = types.SimpleNamespace(vmap=jax.vmap, random=jax.random, eval_shape=jax.eval_shape, tree=jax.tree,
                                      lax=types.SimpleNamespace(cond=lambda pred, a, b: a()))
        try:
            always = steps_per_s(env_id, steps, cfg.num_envs)
        finally:
            W.jax = real
        rows.append({"env": env_id, "num_envs": cfg.num_envs, "steps": steps, "skip_steps_per_s": round(skip),
                     "always_steps_per_s": round(always), "speedup": round(skip / always, 2)})
        print(rows[-1])
    print(f"wrote {write_result(cfg.out, {'machine': machine, 'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(AutoresetBench)))
