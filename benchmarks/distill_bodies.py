"""Why distillation lost a body's skill, and whether the new defaults keep it: one teacher, old vs new method.

    python benchmarks/distill_bodies.py --run /work/runs/reacher_t0 [--seeds 0 1 2] [--eval-episodes 1000]

Part 1, diagnosis (teacher-driven states, the data distillation's first round sees): per-input mean and std of
[observation, goal], the share of teacher actions near +-1 (|tanh(mean)| > 0.95) and of pre-tanh means beyond
+-3, and the teacher's action std near the goal vs far from it.

Part 2, the table: each variant is `deepcrl.student.distill.distill` on the same teacher, scored on the same
``--eval-episodes`` episodes (same seed) as the teacher; success and time at goal retained, parameters,
mean and spread over the distillation seeds. Variants:

    old_default   the former defaults: 256,256, offline action matching, raw inputs
    old_dagger    64,64 DAgger, raw inputs (the issue's best old result)
    new           the current `deepcrl distill` defaults (the DistillConfig field defaults)

Writes benchmarks/results/distill_<env>.json (the machine's load recorded: timings are not compared here).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tyro

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "old_default": {"hidden": "256,256", "method": "action", "normalize": False, "loss": "mse"},
    "old_dagger": {"hidden": "64,64", "method": "dagger", "normalize": False, "loss": "mse"},
    "new": {},
}


@dataclasses.dataclass(frozen=True)
class DistillBodies:
    """Diagnose a teacher's distillation and compare old and new settings over seeds."""

    run: Path
    """Teacher run directory."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Distillation seeds (the new variant runs every seed; the old ones run the first unless --all-seeds)."""
    variants: tuple[str, ...] = ("new", "old_default", "old_dagger")
    """Variants to run, in order (results are written after each)."""
    all_seeds: bool = False
    """Run every variant on every seed."""
    eval_episodes: int = 1000
    """Evaluation episodes (the same episodes for teacher and every student)."""
    distill_steps: int | None = None
    """Override the gradient steps (None: the verb's default)."""
    smoke: bool = False
    """Tiny budget (CPU check of the script only)."""
    out: Path | None = None
    """Result file (default benchmarks/results/distill_<env>.json)."""


def diagnose(run: Path, num_envs: int = 64) -> dict:
    """Statistics of teacher-driven states and the teacher's actions on them."""
    import jax

    from deepcrl.envs.wrappers import wrap_for_training
    from deepcrl.student.collect import Teacher, make_collector
    from deepcrl.student.networks import actor_from_config
    from flax import nnx

    teacher = Teacher(run, need_critic=False)
    m = teacher.manifest
    spec = teacher.env.goal_spec
    probe = actor_from_config({"obs_size": m.obs_size, "goal_size": m.goal_size, "action_size": m.action_size,
                               "hidden": [4]})
    benv = wrap_for_training(teacher.env)
    collect = make_collector(benv, teacher.actor, None, nnx.split(probe)[0], spec.episode_length, 0.0,
                             m.action_low, m.action_high)
    key = jax.random.PRNGKey(7)
    _, data = collect(teacher.state(), nnx.state(probe), jax.jit(benv.reset)(jax.random.split(key, num_envs)),
                      key, 1.0)
    x = np.concatenate([np.asarray(data["obs"]), np.asarray(data["goal"])], -1)
    mean = np.asarray(data["t_mean"])
    act = np.tanh(mean)
    achieved = np.asarray(data["obs"])[:, list(spec.goal_indices)]
    near = np.linalg.norm(achieved - np.asarray(data["goal"]), axis=-1) < spec.success_radius
    return {
        "states": int(x.shape[0]),
        "input_mean": x.mean(0).round(4).tolist(), "input_std": x.std(0).round(4).tolist(),
        "input_std_ratio_max_min": float(x.std(0).max() / max(x.std(0).min(), 1e-12)),
        "saturated_action_frac": float((np.abs(act) > 0.95).mean()),
        "pre_tanh_beyond_3_frac": float((np.abs(mean) > 3).mean()),
        "near_goal_state_frac": float(near.mean()),
        "action_abs_mean_near_goal": float(np.abs(act[near]).mean()) if near.any() else None,
        "action_abs_mean_far": float(np.abs(act[~near]).mean()) if (~near).any() else None,
        "action_std_near_goal": float(act[near].std()) if near.any() else None,
    }


def main(cfg: DistillBodies) -> dict:
    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill

    result = {"teacher": str(cfg.run), "eval_episodes": cfg.eval_episodes, "diagnosis": diagnose(cfg.run),
              "runs": [], "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "python": sys.version.split()[0]}
    extra = {"distill_steps": cfg.distill_steps} if cfg.distill_steps else {}
    if cfg.smoke:
        extra = {"distill_steps": 100, "rounds": 2, "num_envs": 8, "round_eval_episodes": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cfg.variants:
            for seed in (cfg.seeds if (name == "new" or cfg.all_seeds) else cfg.seeds[:1]):
                t0, load0 = time.perf_counter(), os.getloadavg()[0]
                rep = distill(DistillConfig(run=cfg.run, out=Path(tmp) / f"{name}_{seed}", seed=seed,
                                            eval_episodes=cfg.eval_episodes, **{**VARIANTS[name], **extra}))
                env_id = rep["env_id"]
                t, s = rep["teacher"], rep["student"]
                result["runs"].append({
                    "variant": name, "seed": seed, "settings": {k: rep["config"][k] for k in (
                        "hidden", "method", "loss", "normalize", "distill_steps", "rounds", "num_envs")},
                    "teacher_success": t["eval"]["success"], "teacher_time_at_goal": t["eval"]["time_at_goal"],
                    "student_success": s["eval"]["success"], "student_time_at_goal": s["eval"]["time_at_goal"],
                    "success_retained": rep["ratios"]["success_retained"],
                    "time_at_goal_retained": rep["ratios"]["time_at_goal_retained"],
                    "teacher_params": t["params"], "student_params": s["params"], "params_ratio": rep["ratios"]["params"],
                    "heldout_action_mse": rep["action_error"]["heldout_mse_final"],
                    "wall_s": time.perf_counter() - t0, "load": [load0, os.getloadavg()[0]]})
                result["summary"] = summarise(result["runs"])
                out = cfg.out or RESULTS / f"distill_{env_id}.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2, default=str))
                print(json.dumps(result["runs"][-1]), flush=True)
    return result


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds of each variant's retained success / time at goal."""
    out = {}
    for name in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == name]
        out[name] = {"seeds": len(rows), "student_params": rows[0]["student_params"],
                     "params_ratio": rows[0]["params_ratio"]}
        for key in ("student_success", "student_time_at_goal", "success_retained", "time_at_goal_retained"):
            vals = np.array([r[key] for r in rows], float)
            out[name][key] = {"mean": float(vals.mean()), "std": float(vals.std()), "min": float(vals.min())}
    return out


if __name__ == "__main__":
    main(tyro.cli(DistillBodies))
