"""Environment throughput: env steps per second of every registered env at 256 and 1024 parallel envs, and
the random-policy success of the point mazes (the baseline every teacher must beat).

Each (env, batch) compiles one jitted `lax.scan` of `steps` random-action steps through
`deepcrl.envs.wrappers.wrap_for_training` (episode limit, vmap, fresh-goal auto-reset), so the figure
includes auto-resets, as training sees them. Compile time is reported apart; the timed run is the second
call. Random-policy success uses `deepcrl.evaluate.evaluate` with `RandomPolicy` over 1000 episodes.

Usage: python benchmarks/env_throughput.py [--envs point_maze reacher ...] [--sizes 256 1024] [--merge]
Writes benchmarks/results/env_throughput.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import tyro

from deepcrl.bench.common import machine_facts, write_result

# steps per timed scan: enough for ~1 s of work on CPU without making the slow models' runs long
STEPS = {"point_maze": 1000, "point_maze_open": 1000, "point_maze_big": 1000, "reacher": 100, "ant": 20,
         "ant_u_maze": 20, "ant_big_maze": 20, "humanoid": 10}


@dataclasses.dataclass(frozen=True)
class EnvThroughputBench:
    """Env steps/s of every registered env through the training wrappers, and the point mazes' random success."""

    envs: tuple[str, ...] = tuple(STEPS)
    """Environment ids to time."""
    sizes: tuple[int, ...] = (256, 1024)
    """Numbers of parallel envs."""
    random_envs: tuple[str, ...] = ("point_maze", "point_maze_open", "point_maze_big")
    """Envs whose random-policy success is measured."""
    eval_episodes: int = 1000
    """Episodes of the random-policy evaluation."""
    out: Path = Path("benchmarks/results/env_throughput.json")
    """Where the result JSON goes."""
    merge: bool = False
    """Keep the rows already in --out and measure only the (env, size) pairs it lacks."""


def throughput(env_id: str, n: int, steps: int, seed: int = 0) -> dict[str, Any]:
    """Steps/s of `n` parallel copies of `env_id` under random actions, through the training wrappers."""
    import jax

    from deepcrl import envs
    from deepcrl.envs.wrappers import wrap_for_training

    env = envs.make(env_id)
    wrapped = wrap_for_training(env)
    act = env.action_size

    @jax.jit
    def run(state, key):
        def body(s, k):
            return wrapped.step(s, jax.random.uniform(k, (n, act), minval=-1.0, maxval=1.0)), None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    key = jax.random.PRNGKey(seed)
    t0 = time.perf_counter()
    state = jax.block_until_ready(jax.jit(wrapped.reset)(jax.random.split(key, n)))
    reset_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(run(state, jax.random.fold_in(key, 1)))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(run(state, jax.random.fold_in(key, 2)))
    run_s = time.perf_counter() - t0
    return {"env": env_id, "num_envs": n, "steps": steps, "backend": envs.REGISTRY[env_id].backend,
            "steps_per_s": n * steps / run_s, "run_s": run_s, "compile_and_first_run_s": compile_s,
            "reset_compile_s": reset_s}


def random_success(env_id: str, episodes: int = 1000, seed: int = 0) -> dict[str, Any]:
    from deepcrl import envs
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import RandomPolicy

    env = envs.make(env_id)
    spec = env.goal_spec
    policy = RandomPolicy(spec.obs_size, spec.goal_size, env.action_size, seed=seed)
    return {"env": env_id, **evaluate(env, policy, episodes=episodes, seed=seed).as_dict()}


def main(cfg: EnvThroughputBench) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine_facts(), "throughput": [], "random_policy": []}
    if cfg.merge and cfg.out.exists():
        old = json.loads(cfg.out.read_text())
        results = {**old, "machine": {**old["machine"], "loadavg_resumed": list(os.getloadavg())}}

    def save(table: str, row: dict[str, Any], key: tuple[str, ...]) -> None:
        """Add a row (replacing an earlier one with the same key) and rewrite the file: a long run that is
        stopped keeps what it measured."""
        row["loadavg_1min"] = os.getloadavg()[0]
        results[table] = [r for r in results[table] if tuple(r[k] for k in key) != tuple(row[k] for k in key)]
        results[table].append(row)
        by_env = {r["env"]: r for r in results["throughput"] if r["num_envs"] == 1024}
        if "point_maze" in by_env:  # ratios are what survive the shared machine's noise
            base = by_env["point_maze"]["steps_per_s"]
            results["ratio_to_point_maze_at_1024"] = {k: v["steps_per_s"] / base for k, v in by_env.items()}
        write_result(cfg.out, results)
        print(json.dumps(row), flush=True)

    for env_id in cfg.random_envs:
        save("random_policy", random_success(env_id, cfg.eval_episodes), ("env",))
    for n in cfg.sizes:  # every env at the small size first: the slow models' big runs come last
        for env_id in cfg.envs:
            if any((r["env"], r["num_envs"]) == (env_id, n) for r in results["throughput"]):
                continue
            save("throughput", throughput(env_id, n, STEPS.get(env_id, 100)), ("env", "num_envs"))
    print(f"wrote {cfg.out}")
    return results


if __name__ == "__main__":
    main(tyro.cli(EnvThroughputBench))
