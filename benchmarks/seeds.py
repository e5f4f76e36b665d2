"""The cost of S seeds in one program (`deepcrl train --seeds`) against one seed, iteration for iteration.

For each env and depth, one training iteration (collect an unroll with every env, then the SGD steps) is
compiled twice: the single-seed `deepcrl.teacher.iteration.iteration` and the vmapped
`deepcrl.teacher.seeds.seeds_iteration` over S seeds. Their steady times are measured alternately (1 seed,
S seeds, 1 seed, ...) so both see the same machine load; the ratio t_S / t_1 is the price of S seeds (S would
be S separate runs). On a latency-bound GPU the ratio should stay near 1; on a busy 2-core CPU, which is
compute-bound, near S.

Usage:
    python benchmarks/seeds.py --smoke                               # CPU, minutes: ant and point_maze, depth 4
    python benchmarks/seeds.py --depths 4 64 --out benchmarks/results/seeds_gpu.json   # GPU (ant)
Writes the JSON (machine facts and load included) and a PNG beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class Config:
    """Wall time per training iteration: S seeds in one program vs one seed."""

    envs: tuple[str, ...] = ("ant",)
    """Registered env ids to measure."""
    depths: tuple[int, ...] = (4, 64)
    """Actor and critic depths."""
    seeds: int = 3
    """Seeds in the vmapped program."""
    width: int = 256
    """Hidden width."""
    num_envs: int = 256
    """Parallel envs per seed."""
    unroll_length: int = 62
    """Env steps per env per iteration."""
    sgd_steps: int = 50
    """SGD steps per iteration (the reference does 800; fewer keeps a GPU lease short, the ratio is the point)."""
    batch_size: int = 256
    """Transitions per SGD step."""
    replay_capacity: int = 1000
    """Replay steps kept per env."""
    iterations: int = 2
    """Timed iterations of each program (after one warm-up call each)."""
    smoke: bool = False
    """CPU-sized: envs ant and point_maze, depth 4, width 64, 16 envs x unroll 10, 16 SGD steps, replay 50."""
    out: Path = Path("benchmarks/results/seeds.json")
    """JSON output; the plot goes beside it (.png)."""

    def sized(self) -> "Config":
        if not self.smoke:
            return self
        return dataclasses.replace(self, envs=("point_maze", "ant"), depths=(4,), width=64, num_envs=16,
                                   unroll_length=10, sgd_steps=16, replay_capacity=50, iterations=3)


def measure(cfg: Config, env: str, depth: int) -> dict:
    import jax
    import jax.numpy as jnp

    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.iteration import init_state, iteration, make_setup
    from deepcrl.teacher.seeds import SEED_DIR, _stack, seed_setup, seeds_iteration

    train_cfg = TrainConfig(env=env, depth=depth, width=cfg.width, num_envs=cfg.num_envs,
                            unroll_length=cfg.unroll_length, sgd_steps=cfg.sgd_steps, batch_size=cfg.batch_size,
                            replay_capacity=cfg.replay_capacity, steps=10**9, actor_random_goal_frac=0.0,
                            seeds=tuple(range(cfg.seeds)))
    base = make_setup(dataclasses.replace(train_cfg, seed=0))
    single_setup = make_setup(dataclasses.replace(train_cfg, seeds=None))
    lr = jnp.asarray(3e-4, jnp.float32)
    one = init_state(single_setup)
    many = _stack([init_state(seed_setup(base, s, Path(SEED_DIR.format(s)))) for s in range(cfg.seeds)])

    t0 = time.perf_counter()
    run_one = iteration.lower(single_setup, one, lr).compile()
    compile_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_many = seeds_iteration.lower(base, many, lr).compile()
    compile_many = time.perf_counter() - t0

    times: dict[str, list[float]] = {"one": [], "many": []}
    for i in range(cfg.iterations + 1):  # call 0 of each is a warm-up (first touch of the replay)
        for name in ("one", "many"):
            t0 = time.perf_counter()
            if name == "one":
                one, metrics = run_one(one, lr)
            else:
                many, metrics = run_many(many, lr)
            jax.block_until_ready(metrics)
            if i:
                times[name].append(time.perf_counter() - t0)
    t1, ts = min(times["one"]), min(times["many"])
    steps = single_setup.steps_per_iteration
    return {"env": env, "depth": depth, "width": cfg.width, "seeds": cfg.seeds, "num_envs": cfg.num_envs,
            "unroll_length": cfg.unroll_length, "sgd_steps": cfg.sgd_steps, "batch_size": cfg.batch_size,
            "compile_s": {"1": compile_one, str(cfg.seeds): compile_many},
            "iteration_s": {"1": times["one"], str(cfg.seeds): times["many"]},
            "steady_iteration_s": {"1": t1, str(cfg.seeds): ts},
            "ratio": ts / t1, "cost_per_seed_vs_alone": ts / t1 / cfg.seeds,
            "env_steps_per_s": {"1": steps / t1, str(cfg.seeds): cfg.seeds * steps / ts},
            "sgd_steps_per_s": {"1": cfg.sgd_steps / t1, str(cfg.seeds): cfg.seeds * cfg.sgd_steps / ts},
            "loadavg_1min": os.getloadavg()[0]}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    s = str(rows[0]["seeds"])
    labels = [f"{r['env']}\ndepth {r['depth']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(4, 2 * len(rows)), 4))
    ax.bar([i - 0.2 for i in x], [r["steady_iteration_s"]["1"] for r in rows], 0.4, label="1 seed")
    ax.bar([i + 0.2 for i in x], [r["steady_iteration_s"][s] for r in rows], 0.4, label=f"{s} seeds, one program")
    for i, r in enumerate(rows):
        ax.annotate(f"x{r['ratio']:.2f}", (i + 0.2, r["steady_iteration_s"][s]), ha="center", va="bottom")
    ax.set(xticks=list(x), xticklabels=labels, ylabel="s per training iteration")
    ax.legend()
    fig.suptitle(f"{s} seeds vmapped vs 1 seed ({results['machine'].get('processor', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(cfg: Config) -> None:
    from deepcrl._logging import quiet
    from deepcrl.bench.common import machine_facts, write_result

    cfg = cfg.sized()
    with quiet():
        results = {"machine": {**machine_facts(), "loadavg_start": list(os.getloadavg())},
                   "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
                   "rows": []}
        for env in cfg.envs:
            for depth in cfg.depths:
                row = measure(cfg, env, depth)
                results["rows"].append(row)
                print(json.dumps({k: row[k] for k in ("env", "depth", "steady_iteration_s", "ratio")}), flush=True)
                write_result(cfg.out, results)  # after every row: a partial result survives
                plot(results, cfg.out.with_suffix(".png"))


if __name__ == "__main__":
    main(tyro.cli(Config))
