"""Teacher training throughput on `ant` in the reference's shape, at depth 4, 16 and 64 (width 256).

One iteration = 32 envs x unroll 62 (1,984 env steps) + 124 SGD steps (critic + actor + alpha), batch 256,
replay 10k steps per env, 1000-step episodes: the exact `deepcrl.teacher.iteration` of training. Compile time
(AOT lower + compile) and steady time per iteration are measured apart, then env steps/s (SGD included).
Reference figures (jaxgcrl on this machine kind, one core): compile ~1 min / ~2 min / ~1 hour, then
~180 / 87 / 40 env steps/s at depth 4 / 16 / 64.

Usage: python benchmarks/teacher_throughput.py [--depths 4 16 64] [--iterations 2] [--env ant]
Writes benchmarks/results/teacher_throughput.json and .png.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import tyro

REFERENCE = {4: {"compile_s": 60.0, "env_steps_per_s": 180.0}, 16: {"compile_s": 120.0, "env_steps_per_s": 87.0},
             64: {"compile_s": 3600.0, "env_steps_per_s": 40.0}}


def measure(env: str, depth: int, iterations: int, width: int = 256) -> dict:
    import jax
    import jax.numpy as jnp

    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.iteration import init_state, iteration, make_setup

    cfg = TrainConfig(env=env, depth=depth, width=width, num_envs=32, unroll_length=62, replay_capacity=10_000,
                      batch_size=256, sgd_steps=124, steps=10**9)
    setup = make_setup(cfg)
    state = init_state(setup)
    lr = jnp.asarray(3e-4, jnp.float32)
    t0 = time.perf_counter()
    compiled = iteration.lower(setup, state, lr).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(iterations + 1):  # the first call also pays the first-touch of the replay buffer
        t0 = time.perf_counter()
        state, metrics = compiled(state, lr)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    steady = min(times[1:]) if len(times) > 1 else times[0]
    steps = setup.steps_per_iteration
    return {"depth": depth, "width": width, "env": env, "env_steps_per_iteration": steps,
            "sgd_steps_per_iteration": cfg.sgd_steps, "compile_s": compile_s, "first_iteration_s": times[0],
            "iteration_s": times[1:], "steady_iteration_s": steady, "env_steps_per_s": steps / steady,
            "critic_loss": float(metrics["critic_loss"])}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    depths = [r["depth"] for r in rows]
    x = range(len(depths))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar([i - 0.2 for i in x], [r["env_steps_per_s"] for r in rows], 0.4, label="deepcrl")
    axes[0].bar([i + 0.2 for i in x], [REFERENCE[d]["env_steps_per_s"] for d in depths], 0.4, label="reference")
    axes[0].set(xticks=list(x), xticklabels=depths, xlabel="depth", ylabel="env steps/s (SGD included)")
    axes[1].bar([i - 0.2 for i in x], [r["compile_s"] for r in rows], 0.4, label="deepcrl")
    axes[1].bar([i + 0.2 for i in x], [REFERENCE[d]["compile_s"] for d in depths], 0.4, label="reference")
    axes[1].set(xticks=list(x), xticklabels=depths, xlabel="depth", ylabel="compile s", yscale="log")
    for a in axes:
        a.legend()
    fig.suptitle(f"teacher throughput on {rows[0]['env']} (32 envs x 62, 124 SGD steps, batch 256, width 256)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


@dataclasses.dataclass(frozen=True)
class Config:
    """Teacher training throughput in the reference's shape."""

    env: str = "ant"
    """Registered env id."""
    depths: tuple[int, ...] = (4, 16, 64)
    """Depths to measure (actor and critic)."""
    iterations: int = 2
    """Timed iterations after the first."""
    out: Path = Path("benchmarks/results/teacher_throughput.json")
    """JSON output; the plot is written beside it with the suffix .png."""


def main(cfg: Config) -> None:
    from deepcrl._logging import quiet
    from deepcrl.bench.common import machine_facts, write_result

    with quiet():
        results = {"machine": machine_facts(), "reference": REFERENCE, "rows": []}
        for depth in cfg.depths:
            row = measure(cfg.env, depth, cfg.iterations)
            ref = REFERENCE.get(depth)
            if ref:
                row["speedup_vs_reference"] = row["env_steps_per_s"] / ref["env_steps_per_s"]
                row["compile_ratio_vs_reference"] = row["compile_s"] / ref["compile_s"]
            results["rows"].append(row)
            print(json.dumps(row))
            write_result(cfg.out, results)  # after every depth: a partial result survives
            plot(results, cfg.out.with_suffix(".png"))


if __name__ == "__main__":
    main(tyro.cli(Config))
