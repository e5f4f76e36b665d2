"""The GPU runs, ready to go: teacher throughput, compile time and peak memory by depth, bf16 / remat, then a
depth 4 vs 64 start on ant_big_maze (and optionally the point_maze_big depth study) on one H100 / H200.

1. ``ant`` and ``humanoid`` at depth 4 / 64 / 256 / 1024 in the reference's shape (512 envs x unroll 62, batch
   256, width 256, float32) but fewer SGD steps per iteration (--sgd-steps, for timing): compile time (AOT
   lower + compile), steady seconds per iteration, env steps/s and SGD steps/s, XLA's memory account of the
   compiled iteration, and the device's peak memory (``memory_stats()["peak_bytes_in_use"]``).
2. ``ant`` at --precision-depth with bf16, remat, and both (the float32 / no-remat cell is in part 1).
   Parts 1 and 2 run one cell at a time, each in its own process (its peak memory is its own, a crash costs that
   cell only, a cell past --cell-timeout-s is killed), within what part 3 leaves of --minutes; a cell that would
   start with under 30 s left is recorded as skipped.
3. `deepcrl sweep`s side by side, every cell at once on the one device, each cell --maze-minutes long:
   ``ant_big_maze`` at depth 4 and 64 (GPU defaults) and, with ``--maze-env point_maze_big``, the depth study
   (depths 4 / 16 / 64 x 3 seeds, with the CPU study's flags, so the GPU carries the same curves further).
   Their sweep.json and sweep.png are copied beside the result JSON, with a tar.gz of each cell's
   metrics.jsonl, manifest and probe.
   The cells share the GPU, so their wall times say what one device did for all of them, not one run's speed.

This process never starts JAX, so the GPU's memory is the cells'. Results are written after every cell to
benchmarks/results/gpu.json (with the machine's facts), so a run cut short keeps what it measured.

On one H200 (benchmarks/results/gpu.json) a throughput cell took 50-60 s (ant: ~37-45 s of it compiling) and
humanoid's compile, depth 1024 and remat at depth 256 each ran past 60-90 s, so the default 8 minutes cover the
first ~4 cells and the maze runs; the whole table needs about 20 (``--minutes 20``).

    python benchmarks/gpu.py                 # on the GPU machine (about 8 minutes)
    python benchmarks/gpu.py --smoke         # the same code paths, tiny, on a CPU (a few CPU-minutes)
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

from deepcrl import artifacts
from deepcrl.sweep.runner import SWEEP_JSON, TRAIN_LOG

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class GpuBenchConfig:
    """Teacher throughput / compile / memory by depth, bf16 and remat, and a short deep-vs-shallow maze run."""

    envs: tuple[str, ...] = ("ant", "humanoid")
    """Envs of the throughput cells (the bf16 / remat cells use the first)."""
    depths: tuple[int, ...] = (4, 256, 1024, 64)
    """Depths of the throughput cells, in the order they run (each depth on every env before the next)."""
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
    maze_env: str = ""
    """Env of the depth study (e.g. point_maze_big): `deepcrl sweep` over --maze-depths x --maze-widths x
    --maze-seeds, all cells at once. Off by default: cells that share one GPU are time-sliced, so it is worth
    running only with a longer lease (--maze-minutes 30)."""
    maze_depths: tuple[int, ...] = (4, 16, 64)
    """Depths of the depth study."""
    maze_widths: tuple[int, ...] = (128,)
    """Widths of the depth study."""
    maze_seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the depth study (the spread between them is the error bar)."""
    maze_steps: int = 100_000_000
    """Env-step cap of a study cell (the minutes usually end it first)."""
    maze_train_args: str = ("--num-envs 1024 --unroll-length 25 --sgd-steps 32 --batch-size 512 "
                            "--replay-capacity 2000 --eval-every 10 --actor-random-goal-frac 0.75")
    """`deepcrl train` flags of the study cells (the CPU study's, so the two compare; on a GPU every unset flag
    would take the reference's GPU defaults)."""
    ant_env: str = "ant_big_maze"
    """Env of the deep-vs-shallow ant run, trained beside the study (empty: none)."""
    ant_depths: tuple[int, ...] = (4, 64)
    """Depths of the ant run."""
    ant_train_args: str = "--eval-every 10 --eval-episodes 128"
    """`deepcrl train` flags of the ant cells (the rest: the reference's GPU defaults)."""
    maze_minutes: float = 4.0
    """Training minutes of every study and ant cell (compile included); all cells train at once on the device."""
    maze_overhead_s: float = 120.0
    """Seconds the sweeps take beyond their training minutes (start, evaluation, probes, plots)."""
    minutes: float = 8.0
    """Total budget: cells that would start after it are skipped."""
    cell_timeout_s: float = 180.0
    """A throughput cell running longer than this is killed (recorded as timed out)."""
    smoke: bool = False
    """Tiny sizes on point mazes, for checking the script on a CPU (results go to a temporary
    deepcrl_gpu_smoke.json, not into the repository); other flags given with it still apply."""
    out: Path | None = None
    """Result JSON; default benchmarks/results/gpu.json."""


SMOKE = dict(envs=("point_maze", "point_maze_big"), depths=(4,), width=16, num_envs=8, unroll_length=10,
             batch_size=32, sgd_steps=2, replay_capacity=20, timed_iterations=2, precision_depth=4,
             maze_depths=(4, 8), maze_widths=(16,), maze_seeds=(0,), maze_steps=400,
             maze_train_args=("--num-envs 8 --unroll-length 25 --sgd-steps 2 --batch-size 32 --replay-capacity 50 "
                              "--eval-every 1 --eval-episodes 8 --actor-random-goal-frac 0.75"),
             ant_env="", maze_minutes=0.5, maze_overhead_s=300.0, minutes=30.0, cell_timeout_s=600.0)


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
    """Every throughput cell, in priority order."""
    base = {k: getattr(cfg, k) for k in ("width", "num_envs", "unroll_length", "batch_size", "sgd_steps",
                                          "replay_capacity", "timed_iterations")}
    cells = [{"part": "depth", "env": e, "depth": d, "bf16": False, "remat": False, **base}
             for d in cfg.depths for e in cfg.envs]
    cells += [{"part": "precision", "env": cfg.envs[0], "depth": cfg.precision_depth, "bf16": b, "remat": r, **base}
              for b, r in ((True, False), (False, True), (True, True))]
    return cells


def _env() -> dict:
    """The cells' environment: this checkout on the path; no preallocation (cells that share the GPU need it)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
            "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


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


def plot(cells: list[dict], path: Path, title: str = "") -> Path:
    """Env steps/s, compile time and peak device memory vs depth, one line per (env, bf16, remat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    lines: dict[str, list[dict]] = {}
    for c in cells:
        if c.get("status") == "ok":
            label = c["env"] + (" bf16" if c["bf16"] else "") + (" remat" if c["remat"] else "")
            lines.setdefault(label, []).append(c)
    for label, rows in sorted(lines.items()):
        rows = sorted(rows, key=lambda c: c["depth"])
        depths = [c["depth"] for c in rows]
        for ax, key, scale in zip(axes, ("env_steps_per_s", "compile_s", "peak_bytes_in_use"), (1, 1, 2**-30)):
            ax.plot(depths, [(c.get(key) or float("nan")) * scale for c in rows], "o-", label=label)
    for ax, name in zip(axes, ("env steps / s (training)", "compile s", "peak device memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"teacher iteration by depth {title}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweeps(cfg: GpuBenchConfig) -> dict[str, list[str]]:
    """The `deepcrl sweep` command line of the depth study and of the ant run (all their cells train at once)."""
    common = ["--max-minutes", f"{cfg.maze_minutes:.3g}"]
    grids = {}
    if cfg.maze_env:
        grids["study"] = [cfg.maze_env, cfg.maze_depths, cfg.maze_widths, cfg.maze_seeds, cfg.maze_train_args,
                          ["--steps", str(cfg.maze_steps), "--probe"]]
    if cfg.ant_env:
        grids["ant"] = [cfg.ant_env, cfg.ant_depths, (cfg.width,), (0,), cfg.ant_train_args, []]
    out = {}
    for name, (env, depths, widths, seeds, train_args, extra) in grids.items():
        jobs = len(depths) * len(widths) * len(seeds)
        out[name] = [sys.executable, "-m", "deepcrl.cli", "sweep", "--env", env,
                     "--depths", *map(str, depths), "--widths", *map(str, widths), "--seeds", *map(str, seeds),
                     "--jobs", str(jobs), f"--train-args={train_args}", *common, *extra]
    return out


def run_sweeps(cfg: GpuBenchConfig, runs: Path, out: Path) -> dict:
    """Run the sweeps side by side; copy each one's sweep.json / sweep.png and its cells' logs beside `out`."""
    import shutil
    import tarfile

    procs = {}
    for name, cmd in sweeps(cfg).items():
        log = open(runs / f"{name}.log", "w")  # noqa: SIM115 (closed below)
        procs[name] = (subprocess.Popen([*cmd, "--out", str(runs / name)], env=_env(), stdout=log,
                                        stderr=subprocess.STDOUT), log)
    deadline = time.monotonic() + 60 * cfg.maze_minutes + cfg.maze_overhead_s
    results = {}
    for name, (proc, log) in procs.items():
        try:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed"
        log.close()
        sweep_dir = runs / name
        row: dict = {"command": " ".join(sweeps(cfg)[name][1:]), "rc": rc}
        if (sweep_dir / SWEEP_JSON).exists():
            row.update(json.loads((sweep_dir / SWEEP_JSON).read_text()))
            for suffix in ("json", "png"):
                shutil.copy(sweep_dir / f"sweep.{suffix}", out.with_name(f"{out.stem}_{name}.{suffix}"))
        else:
            row["log_tail"] = (runs / f"{name}.log").read_text()[-1500:]
        with tarfile.open(out.with_name(f"{out.stem}_{name}_cells.tar.gz"), "w:gz") as tar:
            tar.add(runs / f"{name}.log", arcname=f"{name}.log")
            for path in sorted(sweep_dir.glob("*/*")) if sweep_dir.exists() else []:
                if path.name in (artifacts.METRICS, artifacts.MANIFEST, TRAIN_LOG, artifacts.PROBE_PNG, "probe.json",
                                 artifacts.CURVES):
                    tar.add(path, arcname=f"{name}/{path.parent.name}/{path.name}")
        results[name] = row
        print(json.dumps({"sweep": name, "rc": rc, "groups": row.get("groups")}), flush=True)
    return results


def main(cfg: GpuBenchConfig) -> int:
    from deepcrl.bench.common import machine_facts, write_result

    out = cfg.out or (Path(tempfile.gettempdir()) / "deepcrl_gpu_smoke.json" if cfg.smoke else RESULTS / "gpu.json")
    # the throughput cells get what the sweeps (which run last, with a fixed time) leave of the budget
    deadline = time.monotonic() + 60 * (cfg.minutes - cfg.maze_minutes) - cfg.maze_overhead_s
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
               "machine": machine_facts(jax_devices=False), "cells": []}
    for spec in plan(cfg):
        left = deadline - time.monotonic()
        label = f"{spec['part']} {spec['env']} depth {spec['depth']} bf16={spec['bf16']} remat={spec['remat']}"
        t0 = time.perf_counter()
        if left < 30.0:
            row = {"status": "skipped", "error": f"{max(left, 0):.0f} s of the throughput budget left"}
        else:
            row = run_throughput(spec, timeout=min(left, cfg.cell_timeout_s))
        row = {**spec, **row, "cell_wall_s": round(time.perf_counter() - t0, 2)}
        results["cells"].append(row)
        if "device_kind" in row:
            results["machine"].setdefault("device_kind", row["device_kind"])
            results["machine"].setdefault("backend", row["backend"])
        print(json.dumps({k: row.get(k) for k in ("status", "compile_s", "env_steps_per_s", "peak_bytes_in_use",
                                                  "error")} | {"cell": label}), flush=True)
        write_result(out, results, jax_devices=False)
        if row["status"] == "failed" and len(results["cells"]) == 1:
            break  # the first cell failed (a broken install or API, most likely): nothing else would run either
    results["sweeps"] = {}
    if results["cells"][0]["status"] != "failed":
        with tempfile.TemporaryDirectory() as runs:
            results["sweeps"] = run_sweeps(cfg, Path(runs), out)
    write_result(out, results, jax_devices=False)
    plot(results["cells"], out.with_suffix(".png"), title=results["machine"].get("device_kind") or "")
    print(f"wrote {out}")
    ok = all(c["status"] in ("ok", "skipped") for c in results["cells"])
    return 0 if ok and all(s["rc"] == 0 for s in results["sweeps"].values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--cell-json":  # one throughput cell, in its own process
        from deepcrl._io import write_json_atomic

        write_json_atomic(sys.argv[3], throughput_cell(json.loads(sys.argv[2])))
        sys.exit(0)
    smoke = "--smoke" in sys.argv[1:]  # --smoke sets the defaults; flags given beside it still win
    sys.exit(main(tyro.cli(GpuBenchConfig, default=GpuBenchConfig(smoke=True, **SMOKE) if smoke else None)))
