"""The planner's added latency per request (one row, 1 thread, N = 500 landmarks): before vs after, side by side.

A (before): the critic exported with its residual blocks in an ONNX ``Loop`` and the planner's batch path
(`Planner._batch`: [B, N] masks and copies) at one row. B (after): the critic exported unrolled (same
parameters; `deepcrl.export.critic.UNROLL_MAX_BLOCKS`) and the one-row path (`Planner._one`: only the
landmarks within the cutoff). Also each part alone: the phi session (Loop vs unrolled) and the numpy work.
Both are timed interleaved in one process (A, B, A, B, ...) over the same states and goals, so the machine's
load hits both alike: the ratio is the figure to trust, the microseconds are this machine's under its load
(recorded). The decisions of A and B are compared on `states` random states x goals.

    python benchmarks/plan_latency.py --runs /work/runs/pmb_s0 /work/runs/pmb_s1 /work/runs/pmb_s2
Writes benchmarks/results/plan_latency.json.

`--critic student`: the planner step (unrolled critic, one-row path) with the teacher's critic vs with the
student's distance head (``<run><student_suffix>``, distilled with ``--represent``), interleaved the same way,
with each phi session alone and the policy's step; writes ``<name>_student.json``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from deepcrl.bench.common import machine_facts, write_result

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class PlanLatencyConfig:
    """Planner step latency, before (Loop critic, batch path) vs after (unrolled critic, one-row path)."""

    runs: tuple[Path, ...] = (Path("/work/runs/pmb_s0"), Path("/work/runs/pmb_s1"), Path("/work/runs/pmb_s2"))
    """Teacher run directories (point_maze_big)."""
    landmarks: int = 500
    """Landmarks (env coverage)."""
    cutoff_quantile: float = 0.07
    """The planner's cutoff (the quantile of landmark pair distances)."""
    repeats: int = 3000
    """Timed calls per variant (interleaved)."""
    states: int = 2000
    """Random (state, goal) pairs whose decisions A and B must share."""
    smoke: bool = False
    """Tiny sizes, to check the script end to end."""
    name: str = "plan_latency"
    """Result file stem in benchmarks/results/ (`--critic student` appends ``_student``)."""
    critic: Literal["teacher", "student"] = "teacher"
    """`teacher`: before vs after (above); `student`: the teacher's critic vs the student's distance head."""
    student_suffix: str = "_student"
    """With `--critic student`: the student run directory of a teacher run is its path plus this suffix."""


def interleaved(fns: dict, repeats: int, args: list) -> dict:
    """Median and p90 microseconds of each function, called in turn on the same argument per round."""
    times = {k: [] for k in fns}
    for r in range(repeats + 50):
        a = args[r % len(args)]
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn(*a)
            dt = time.perf_counter() - t0
            if r >= 50:
                times[k].append(dt)
    return {k: {"median_us": float(np.median(v) * 1e6), "p90_us": float(np.quantile(v, 0.9) * 1e6)}
            for k, v in times.items()}


def one_teacher(run_dir: Path, cfg: PlanLatencyConfig, tmp: Path) -> dict:
    from deepcrl import envs
    from deepcrl.export.critic import build
    from deepcrl.export.onnx import export
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.plan.critic import OnnxCritic
    from deepcrl.plan.planner import Planner, coverage_landmarks

    env = envs.make("point_maze_big")
    paths = {}
    for name, unroll in (("loop", False), ("unrolled", True)):
        data, _ = build(run_dir, unroll=unroll)
        paths[name] = tmp / f"{run_dir.name}_{name}.onnx"
        paths[name].write_bytes(data)
    critics = {k: OnnxCritic(p) for k, p in paths.items()}
    policy_path = tmp / f"{run_dir.name}_policy.onnx"
    export(ExportConfig(run=run_dir, out=policy_path))
    policy = OnnxPolicy(policy_path)
    obs, goals = coverage_landmarks(env, cfg.landmarks, seed=3)
    a = Planner(critics["loop"], obs, goals, cutoff_quantile=cfg.cutoff_quantile)
    b = Planner(critics["unrolled"], obs, goals, cutoff_quantile=cfg.cutoff_quantile)
    rng = np.random.default_rng(0)
    # decisions on random free-space-ish states and goals (both planners see the same cache of goals)
    ss = rng.uniform(1, 8, (cfg.states, 1, 2)).astype(np.float32)
    gs = goals[rng.integers(0, len(goals), cfg.states)][:, None, :]
    same = sum(int(a._batch(s, g, None)[1][0] == b.waypoints(s, g)[1][0]) for s, g in zip(ss, gs))
    # timing: 64 (state, goal) pairs whose goals are cached, cycled
    pairs = [(ss[i], gs[i]) for i in range(64)]
    for s, g in pairs:
        a.waypoints(s, g), b.waypoints(s, g)
    zero = np.zeros((1, 2), np.float32)
    timing = interleaved({
        "A_step_loop_critic_batch_path": lambda s, g: a._batch(s, g, None),
        "B_step_unrolled_critic_one_row_path": lambda s, g: b.waypoints(s, g),
        "phi_session_loop": lambda s, g: critics["loop"]._phi.run(None, {"observation": s, "action": zero}),
        "phi_session_unrolled": lambda s, g: critics["unrolled"]._phi.run(None, {"observation": s, "action": zero}),
        "policy_step": lambda s, g: policy(s, g),
    }, cfg.repeats, pairs)
    ta, tb = (timing[k]["median_us"] for k in ("A_step_loop_critic_batch_path", "B_step_unrolled_critic_one_row_path"))
    return {"run": str(run_dir), "landmarks": cfg.landmarks, "cutoff": b.cutoff, "timing": timing,
            "speedup_A_over_B": ta / tb, "same_decision_frac": same / cfg.states,
            "numpy_work_A_us": ta - timing["phi_session_loop"]["median_us"],
            "numpy_work_B_us": tb - timing["phi_session_unrolled"]["median_us"]}


def one_student(run_dir: Path, cfg: PlanLatencyConfig, tmp: Path) -> dict:
    """Planner step with the teacher's critic (T) vs the student's distance head (S), both one-row, interleaved."""
    from deepcrl import envs
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import build
    from deepcrl.export.onnx import export
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.plan.critic import OnnxCritic
    from deepcrl.plan.planner import Planner, coverage_landmarks

    env = envs.make("point_maze_big")
    dirs = {"teacher": run_dir, "student": Path(f"{run_dir}{cfg.student_suffix}")}
    critics, sizes = {}, {}
    for name, d in dirs.items():
        data, _ = build(d, unroll=True)
        path = tmp / f"{run_dir.name}_{name}_critic.onnx"
        path.write_bytes(data)
        critics[name], sizes[name] = OnnxCritic(path), len(data)
    policy_path = tmp / f"{run_dir.name}_policy.onnx"
    export(ExportConfig(run=run_dir, out=policy_path))
    policy = OnnxPolicy(policy_path)
    obs, goals = coverage_landmarks(env, cfg.landmarks, seed=3)
    planners = {k: Planner(c, obs, goals, cutoff_quantile=cfg.cutoff_quantile) for k, c in critics.items()}
    rng = np.random.default_rng(0)
    ss = rng.uniform(1, 8, (cfg.states, 1, 2)).astype(np.float32)
    gs = goals[rng.integers(0, len(goals), cfg.states)][:, None, :]
    same = sum(int(planners["teacher"].waypoints(s, g)[1][0] == planners["student"].waypoints(s, g)[1][0])
               for s, g in zip(ss, gs))
    pairs = [(ss[i], gs[i]) for i in range(64)]
    zero = np.zeros((1, 2), np.float32)
    timing = interleaved({
        "step_teacher_critic": lambda s, g: planners["teacher"].waypoints(s, g),
        "step_student_head": lambda s, g: planners["student"].waypoints(s, g),
        "phi_session_teacher_critic": lambda s, g: critics["teacher"]._phi.run(None, {"observation": s, "action": zero}),
        "phi_session_student_head": lambda s, g: critics["student"]._phi.run(None, {"observation": s, "action": zero}),
        "policy_step": lambda s, g: policy(s, g),
    }, cfg.repeats, pairs)
    tt, ts = (timing[k]["median_us"] for k in ("step_teacher_critic", "step_student_head"))
    return {"run": str(run_dir), "student": str(dirs["student"]), "landmarks": cfg.landmarks,
            "cutoff_teacher": planners["teacher"].cutoff, "cutoff_student": planners["student"].cutoff,
            "onnx_bytes": sizes, "timing": timing, "speedup_teacher_over_student": tt / ts,
            "same_waypoint_frac": same / cfg.states}


def main_student(cfg: PlanLatencyConfig) -> dict:
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in cfg.runs:
            rows.append(one_student(Path(run_dir), cfg, Path(tmp)))
            r = rows[-1]["timing"]
            print(f"{run_dir}: teacher critic {r['step_teacher_critic']['median_us']:.1f} us, student head "
                  f"{r['step_student_head']['median_us']:.1f} us", flush=True)
    s = [r["timing"]["step_student_head"]["median_us"] for r in rows]
    t = [r["timing"]["step_teacher_critic"]["median_us"] for r in rows]
    result = {"config": {k: (list(map(str, v)) if k == "runs" else v) for k, v in dataclasses.asdict(cfg).items()},
              "machine": {**machine_facts(), "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
              "teachers": rows,
              "summary": {"step_student_head_median_us": {"mean": float(np.mean(s)), "std": float(np.std(s)),
                                                          "values": s},
                          "step_teacher_critic_median_us": {"mean": float(np.mean(t)), "std": float(np.std(t)),
                                                            "values": t},
                          "speedup_teacher_over_student": [r["speedup_teacher_over_student"] for r in rows]}}
    write_result(RESULTS / f"{cfg.name}_student.json", result)
    return result


def main(cfg: PlanLatencyConfig) -> dict:
    if cfg.critic == "student":
        if cfg.smoke:
            cfg = dataclasses.replace(cfg, runs=cfg.runs[:1], landmarks=60, repeats=200, states=100,
                                      name=f"{cfg.name}_smoke")
        return main_student(cfg)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, runs=cfg.runs[:1], landmarks=60, repeats=200, states=100,
                                  name=f"{cfg.name}_smoke")
    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in cfg.runs:
            rows.append(one_teacher(Path(run_dir), cfg, Path(tmp)))
            r = rows[-1]
            print(f"{run_dir}: A {r['timing']['A_step_loop_critic_batch_path']['median_us']:.1f} us, "
                  f"B {r['timing']['B_step_unrolled_critic_one_row_path']['median_us']:.1f} us "
                  f"(x{r['speedup_A_over_B']:.2f}); same decisions {r['same_decision_frac']:.4f}", flush=True)
    b = [r["timing"]["B_step_unrolled_critic_one_row_path"]["median_us"] for r in rows]
    result = {"config": {k: (list(map(str, v)) if k == "runs" else v) for k, v in dataclasses.asdict(cfg).items()},
              "machine": {**machine_facts(), "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
              "teachers": rows,
              "summary": {"B_step_median_us": {"mean": float(np.mean(b)), "std": float(np.std(b)), "values": b},
                          "speedup_A_over_B": [r["speedup_A_over_B"] for r in rows],
                          "target_at_most_100_us": bool(np.mean(b) <= 100)}}
    write_result(RESULTS / f"{cfg.name}.json", result)
    return result


if __name__ == "__main__":
    main(tyro.cli(PlanLatencyConfig))
