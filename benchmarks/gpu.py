"""The GPU runs, ready to go: teacher throughput, compile time and peak memory by depth, bf16 / remat, and a
depth 4 vs 64 start on ant_big_maze, in about 8 minutes on one H100.

Cells, in this order (a later cell is skipped, and recorded as skipped, once the total budget is spent):

1. ``ant`` and ``humanoid`` at depth 4 / 64 / 256 / 1024 in the reference's shape (512 envs x unroll 62, batch
   256, width 256, float32) but fewer SGD steps per iteration (--sgd-steps, for timing): compile time (AOT
   lower + compile), steady seconds per iteration, env steps/s and SGD steps/s, XLA's memory account of the
   compiled iteration, and the device's peak memory (``memory_stats()["peak_bytes_in_use"]``).
2. ``ant`` at --precision-depth with bf16, remat, and both (the float32 / no-remat cell is in part 1).
3. ``ant_big_maze``: `deepcrl train` at depth 4 and 64 (the GPU defaults: the reference's shape and its 800
   SGD steps per iteration), the time left shared equally between the depths (at most --maze-minutes each,
   compile included), then its evaluation: success, detour success, time at goal and the eval curve.

Each cell runs in its own process (so its peak memory is its own, a crash or an out-of-memory error costs
that cell only, and a cell that runs past --cell-timeout-s is killed). This process never starts JAX, so the
GPU's memory is the cells'. Results are written after every cell to benchmarks/results/gpu.json (with the
machine's facts), so a run cut short keeps what it measured.

    python benchmarks/gpu.py                 # on the GPU machine (about 8 minutes)
    python benchmarks/gpu.py --smoke         # the same code paths, tiny, on a CPU (~2 CPU-minutes)
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class GpuBenchConfig:
    """Teacher throughput / compile / memory by depth, bf16 and remat, and a short deep-vs-shallow maze run."""

    envs: tuple[str, ...] = ("ant", "humanoid")
    """Envs of the throughput cells (the bf16 / remat cells use the first)."""
    depths: tuple[int, ...] = (4, 64, 256, 1024)
    """Depths of the throughput cells."""
    width: int = 256
    """Hidden width."""
    num_envs: int = 512
    """Parallel envs per iteration."""
    unroll_length: int = 62
    """Env steps per env per iteration."""
    batch_size: int = 256
    """SGD batch (and contrastive negatives)."""
    sgd_steps: int = 32
    """SGD steps per iteration in the throughput cells (the reference runs 800; fewer keep the timing short)."""
    replay_capacity: int = 1000
    """Replay steps per env in the throughput cells (enough for the timing; the reference keeps 10k)."""
    timed_iterations: int = 3
    """Timed iterations after the first (which also pays first-touch costs)."""
    precision_depth: int = 256
    """Depth of the bf16 / remat cells."""
    maze_env: str = "ant_big_maze"
    """Env of the deep-vs-shallow training run."""
    maze_depths: tuple[int, ...] = (4, 64)
    """Depths of the training run."""
    maze_minutes: float = 3.0
    """At most this many training minutes per maze depth (compile included), then one evaluation."""
    maze_overhead_s: float = 90.0
    """Seconds a maze run takes beyond its training minutes (start, final evaluation, checkpoint)."""
    maze_train_args: tuple[str, ...] = ("--eval-every", "10", "--eval-episodes", "128")
    """Extra `deepcrl train` flags of the maze runs."""
    minutes: float = 8.0
    """Total budget: cells that would start after it are skipped."""
    cell_timeout_s: float = 120.0
    """A throughput cell running longer than this is killed (recorded as timed out)."""
    smoke: bool = False
    """Tiny sizes on point mazes, for checking the script on a CPU (results go to a temporary
    deepcrl_gpu_smoke.json, not into the repository); other flags given with it still apply."""
    out: Path | None = None
    """Result JSON; default benchmarks/results/gpu.json."""


SMOKE = dict(envs=("point_maze", "point_maze_big"), depths=(4,), width=16, num_envs=8, unroll_length=10,
             batch_size=32, sgd_steps=2, replay_capacity=20, timed_iterations=2, precision_depth=4,
             maze_env="point_maze_big", maze_depths=(4, 8), maze_minutes=0.05,
             maze_train_args=("--steps", "400", "--num-envs", "8", "--unroll-length", "25", "--sgd-steps", "2",
                              "--batch-size", "32", "--replay-capacity", "50", "--eval-every", "1",
                              "--eval-episodes", "8"),
             maze_overhead_s=300.0, minutes=30.0, cell_timeout_s=600.0)


# ---- one throughput cell (run in its own process) ------------------------------------------------------------


def throughput_cell(spec: dict) -> dict:
    """Compile and time the training iteration of one (env, depth, bf16, remat) config."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from deepcrl._logging import quiet
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.iteration import init_state, iteration, make_setup

    with quiet():
        cfg = TrainConfig(env=spec["env"], depth=spec["depth"], width=spec["width"], num_envs=spec["num_envs"],
                          unroll_length=spec["unroll_length"], batch_size=spec["batch_size"],
                          sgd_steps=spec["sgd_steps"], replay_capacity=spec["replay_capacity"], steps=10**9,
                          bf16=spec["bf16"], remat=spec["remat"], out=Path(tempfile.gettempdir()) / "gpu_bench")
        setup = make_setup(cfg)
        state = init_state(setup)
        lr = jnp.asarray(3e-4, jnp.float32)
        t0 = time.perf_counter()
        compiled = iteration.lower(setup, state, lr).compile()  # the setup is static: compiled(state, lr)
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        times = []
        for _ in range(spec["timed_iterations"] + 1):
            t0 = time.perf_counter()
            state, metrics = compiled(state, lr)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
    steady = float(np.median(times[1:]))
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    n_params = sum(int(np.size(x)) for x in jax.tree.leaves((state.learner.actor, state.learner.critic)))
    return {
        "compile_s": compile_s, "first_iteration_s": times[0], "iteration_s": times[1:],
        "steady_iteration_s": steady, "env_steps_per_s": setup.steps_per_iteration / steady,
        "sgd_steps_per_s": cfg.sgd_steps / steady, "params": n_params,
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit"),
        "xla_temp_bytes": getattr(mem, "temp_size_in_bytes", None),
        "xla_argument_bytes": getattr(mem, "argument_size_in_bytes", None),
        "critic_loss": float(metrics["critic_loss"]), "finite": bool(np.isfinite(float(metrics["critic_loss"]))),
        "device": str(device), "device_kind": getattr(device, "device_kind", None), "backend": jax.default_backend(),
    }


# ---- the parent: plan, run each cell in a process, write results -----------------------------------------------


def plan(cfg: GpuBenchConfig) -> list[dict]:
    """Every cell, in priority order."""
    base = {k: getattr(cfg, k) for k in ("width", "num_envs", "unroll_length", "batch_size", "sgd_steps",
                                          "replay_capacity", "timed_iterations")}
    cells = [{"part": "depth", "env": e, "depth": d, "bf16": False, "remat": False, **base}
             for e in cfg.envs for d in cfg.depths]
    cells += [{"part": "precision", "env": cfg.envs[0], "depth": cfg.precision_depth, "bf16": b, "remat": r, **base}
              for b, r in ((True, False), (False, True), (True, True))]
    cells += [{"part": "maze", "env": cfg.maze_env, "depth": d} for d in cfg.maze_depths]
    return cells


def _env() -> dict:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def run_throughput(spec: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cell.json"
        cmd = [sys.executable, __file__, "--cell-json", json.dumps(spec), str(out)]
        try:
            proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "timed_out", "error": f"killed after {timeout:.0f} s"}
        if proc.returncode != 0 or not out.exists():
            tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-3:]
            return {"status": "failed", "error": " | ".join(tail)[-600:]}
        return {"status": "ok", **json.loads(out.read_text())}


def run_maze(spec: dict, cfg: GpuBenchConfig, minutes: float) -> dict:
    """`deepcrl train` on the maze for `minutes`, then its last evaluation and eval curve."""
    timeout = 60 * minutes + 2 * cfg.maze_overhead_s
    from deepcrl._io import read_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / f"maze_d{spec['depth']}"
        cmd = [sys.executable, "-m", "deepcrl.cli", "train", "--env", spec["env"], "--depth", str(spec["depth"]),
               "--out", str(run_dir), "--max-minutes", f"{minutes:.3g}", *cfg.maze_train_args]
        if "--steps" not in cfg.maze_train_args:
            cmd += ["--steps", str(10**9)]
        try:
            proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "timed_out", "error": f"killed after {timeout:.0f} s"}
        rows = read_jsonl(run_dir / "metrics.jsonl")
        evals = [{"env_steps": r["env_steps"], "wall_s": r["wall_s"], **{k: r["eval"].get(k) for k in (
            "success", "detour_success", "time_at_goal")}} for r in rows if r.get("eval")]
        if proc.returncode != 0 or not rows:
            tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-3:]
            return {"status": "failed", "error": " | ".join(tail)[-600:], "evals": evals}
        last = rows[-1]
        return {"status": "ok", "train_minutes": minutes, "env_steps": last["env_steps"], "wall_s": last["wall_s"],
                "env_steps_per_s": last["env_steps"] / max(last["wall_s"], 1e-9),
                "entropy": last.get("entropy"), "critic_loss": last.get("critic_loss"),
                "final": evals[-1] if evals else None, "evals": evals}


def main(cfg: GpuBenchConfig) -> int:
    from deepcrl.bench.common import machine_facts, write_result

    out = cfg.out or (Path(tempfile.gettempdir()) / "deepcrl_gpu_smoke.json" if cfg.smoke else RESULTS / "gpu.json")
    deadline = time.monotonic() + 60 * cfg.minutes
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
               "machine": machine_facts(jax_devices=False), "cells": []}
    cells = plan(cfg)
    for i, spec in enumerate(cells):
        left = deadline - time.monotonic()
        maze = spec["part"] == "maze"
        mazes_left = sum(c["part"] == "maze" for c in cells[i:])
        # the maze runs share what is left; each needs its overhead plus at least a quarter of a minute
        minutes = min(cfg.maze_minutes, (left / max(mazes_left, 1) - cfg.maze_overhead_s) / 60)
        enough = minutes >= min(0.25, cfg.maze_minutes)
        need = (60 * minutes + cfg.maze_overhead_s if enough else float("inf")) if maze else 30.0
        label = f"{spec['part']} {spec['env']} depth {spec['depth']}" + (
            "" if maze else f" bf16={spec['bf16']} remat={spec['remat']}")
        t0 = time.perf_counter()
        if left < need:
            row = {"status": "skipped", "error": f"{max(left, 0):.0f} s of the {cfg.minutes} min budget left"}
        elif maze:
            row = run_maze(spec, cfg, minutes)
        else:
            row = run_throughput(spec, timeout=min(left, cfg.cell_timeout_s))
        row = {**spec, **row, "cell_wall_s": round(time.perf_counter() - t0, 2)}
        results["cells"].append(row)
        if "device_kind" in row:
            results["machine"].setdefault("device_kind", row["device_kind"])
            results["machine"].setdefault("backend", row["backend"])
        print(json.dumps({k: row.get(k) for k in ("status", "compile_s", "env_steps_per_s", "peak_bytes_in_use",
                                                  "env_steps", "final", "error")}
                         | {"cell": label}), flush=True)
        write_result(out, results, jax_devices=False)
    print(f"wrote {out}")
    return 0 if all(c["status"] in ("ok", "skipped") for c in results["cells"]) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cell-json":  # one throughput cell, in its own process
        from deepcrl._io import write_json_atomic

        write_json_atomic(sys.argv[3], throughput_cell(json.loads(sys.argv[2])))
        sys.exit(0)
    smoke = "--smoke" in sys.argv[1:]  # --smoke sets the defaults; flags given beside it still win
    sys.exit(main(tyro.cli(GpuBenchConfig, default=GpuBenchConfig(smoke=True, **SMOKE) if smoke else None)))
