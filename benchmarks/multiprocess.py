"""Multi-process teacher training: env steps/s of 1 process x 2 CPU devices vs 2 processes x 1 CPU device.

Both layouts run the same global config and seed on one global 2-device mesh; the 2-process job exchanges its
gradients (and replay gathers) over gloo on loopback instead of inside one process, so the ratio is the price
of jax.distributed's CPU collectives on this machine. Each layout runs in fresh processes: compile + one warm-up
iteration untimed, then `iterations` timed ones; the parameters at the end are compared across layouts.

Usage: python benchmarks/multiprocess.py [--iterations 5] [--env point_maze] [--out PATH.json]
Writes benchmarks/results/multiprocess.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import tyro


@dataclasses.dataclass(frozen=True)
class MultiprocessBenchConfig:
    """Env steps/s of the teacher's training iteration: 1 process x 2 devices vs 2 processes x 1 device."""

    env: str = "point_maze"
    """Env id; the env's default training shape is used (point_maze: 64 envs x 25 steps, 64 SGD steps)."""
    iterations: int = 5
    """Timed training iterations per layout (after compile and one warm-up iteration)."""
    seed: int = 0
    """Seed of both layouts (the same run)."""
    out: Path = Path("benchmarks/results/multiprocess.json")
    """Result JSON."""
    worker: str = ""
    """Internal: 'one' or 'two:PORT:ID' runs one process of a layout and prints its JSON."""


def _worker(cfg: MultiprocessBenchConfig) -> None:
    layout, *job = cfg.worker.split(":")
    from deepcrl.teacher import distributed

    if layout == "two":
        distributed.join(f"127.0.0.1:{job[0]}", 2, int(job[1]), timeout_s=120)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.iteration import init_state, iteration, make_setup

    setup = make_setup(TrainConfig(env=cfg.env, seed=cfg.seed, steps=10**9))
    state = init_state(setup)
    lr = jnp.asarray(setup.cfg.learning_rate, jnp.float32)
    t0 = time.perf_counter()
    state, metrics = iteration(setup, state, lr)  # compile + first touch of the replay
    jax.block_until_ready(metrics)
    warmup_s = time.perf_counter() - t0
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(cfg.iterations):
        state, metrics = iteration(setup, state, lr)
    jax.block_until_ready((state, metrics))
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    critic = np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(jax.device_get(state.learner.critic))])
    print(json.dumps({
        "process": jax.process_index(), "devices": jax.device_count(), "local_devices": jax.local_device_count(),
        "warmup_s": warmup_s, "timed_s": wall, "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "env_steps": cfg.iterations * setup.steps_per_iteration, "critic_loss": float(metrics["critic_loss"]),
        "critic": critic.tolist() if jax.process_index() == 0 else None,
        "train_config": {k: v for k, v in dataclasses.asdict(setup.cfg).items() if isinstance(v, (int, float))},
    }))


def _run(cfg: MultiprocessBenchConfig, layouts: list[tuple[str, int]]) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, __file__, "--env", cfg.env, "--iterations", str(cfg.iterations),
                               "--seed", str(cfg.seed), "--worker", worker],
                              env={**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for worker, devices in layouts]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"benchmark worker failed: {stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main(cfg: MultiprocessBenchConfig) -> int:
    import numpy as np

    from deepcrl.bench.common import machine_facts, write_result

    if cfg.worker:
        _worker(cfg)
        return 0
    machine = machine_facts(jax_devices=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    one = _run(cfg, [("one", 2)])
    two = _run(cfg, [(f"two:{port}:0", 1), (f"two:{port}:1", 1)])
    rows = {}
    for name, procs in (("1_process_x_2_devices", one), ("2_processes_x_1_device", two)):
        timed = max(p["timed_s"] for p in procs)
        rows[name] = {"env_steps_per_s": procs[0]["env_steps"] / timed, "timed_s": timed,
                      "warmup_s": max(p["warmup_s"] for p in procs), "cpu_s": sum(p["cpu_s"] for p in procs),
                      "critic_loss": procs[0]["critic_loss"]}
    diff = float(np.abs(np.asarray(one[0]["critic"]) - np.asarray(two[0]["critic"])).max())
    ratio = rows["2_processes_x_1_device"]["env_steps_per_s"] / rows["1_process_x_2_devices"]["env_steps_per_s"]
    result = {"env": cfg.env, "iterations": cfg.iterations, "train_config": one[0]["train_config"],
              "layouts": rows, "two_over_one_throughput": ratio, "critic_max_abs_diff": diff,
              "note": "both layouts on the same 2-core machine, one after the other; cpu_s sums all processes",
              "machine": machine}
    path = write_result(cfg.out, result, jax_devices=False)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(MultiprocessBenchConfig)))
