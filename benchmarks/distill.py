"""Student size x distillation method against one deep teacher: success retained, parameter and latency ratios.

    python benchmarks/distill.py --teacher runs/teacher_d16 [--hidden 16,16 64,64 256,256] [--steps 3000]

Every student is distilled by `deepcrl.student.distill.distill` (the `deepcrl distill` verb) with the same
data budget and gradient steps; the variants are

    action     offline: states from (noisy) teacher rollouts, MSE on the squashed actions
    represent  the same plus representation matching (critic phi/psi MSE + energy-ordering InfoNCE) and
               actor-feature matching through a learned projection
    dagger     DAgger: the student drives with a decaying share of teacher actions, the teacher labels

Teacher and student are scored on the same evaluation episodes (same seed) and their single-action JAX
latencies are timed one after the other in the same process, so the ratios compare like with like even on a
shared machine. Writes benchmarks/results/distill.json and distill.png.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import tyro

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "action": {"method": "action", "represent": False},
    "represent": {"method": "action", "represent": True},
    "dagger": {"method": "dagger", "represent": False},
}


NOTE = ("2-core machine shared with other jobs while this ran: absolute times are noisy; compare the ratios, "
        "which were measured side by side in one process.")


@dataclasses.dataclass(frozen=True)
class DistillBench:
    """Student size x distillation method against one deep teacher."""

    teacher: Path
    """Teacher run directory (depth >= 16 for the table)."""
    hidden: tuple[str, ...] = ("16,16", "64,64", "256,256")
    """Student hidden sizes to try."""
    variants: tuple[Literal["action", "represent", "dagger"], ...] = ("action", "represent", "dagger")
    """Distillation variants to try."""
    steps: int = 3000
    """Gradient steps per student."""
    rounds: int = 4
    """Data-collection rounds."""
    num_envs: int = 64
    """Parallel environments per collection round."""
    eval_episodes: int = 256
    """Evaluation episodes (same seed for teacher, students and random)."""
    seed: int = 0
    """Seed of every student."""
    noise: float = 0.1
    """Std of the noise on the teacher's actions."""
    name: str = "distill"
    """Results file stem under benchmarks/results/."""


def run(teacher: Path, hiddens: tuple[str, ...], variants: tuple[str, ...], steps: int, rounds: int, num_envs: int,
        eval_episodes: int, seed: int, noise: float = 0.1) -> dict:
    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in hiddens:
            for variant in variants:
                t0 = time.perf_counter()
                cfg = DistillConfig(run=teacher, out=Path(tmp) / f"{hidden}_{variant}", hidden=hidden,
                                    distill_steps=steps, rounds=rounds, num_envs=num_envs, eval_episodes=eval_episodes,
                                    round_eval_episodes=0, seed=seed, noise=noise, **VARIANTS[variant])
                rep = distill(cfg)
                row = {
                    "hidden": hidden, "variant": variant,
                    "teacher_success": rep["teacher"]["eval"]["success"],
                    "student_success": rep["student"]["eval"]["success"],
                    "random_success": rep["random"]["eval"]["success"],
                    "success_retained": rep["ratios"]["success_retained"],
                    "teacher_time_at_goal": rep["teacher"]["eval"]["time_at_goal"],
                    "student_time_at_goal": rep["student"]["eval"]["time_at_goal"],
                    "time_at_goal_retained": rep["ratios"]["time_at_goal_retained"],
                    "student_detour_success": rep["student"]["eval"]["detour_success"],
                    "teacher_detour_success": rep["teacher"]["eval"]["detour_success"],
                    "teacher_params": rep["teacher"]["params"], "student_params": rep["student"]["params"],
                    "param_ratio": rep["ratios"]["params"], "flop_ratio": rep["ratios"]["flops"],
                    "teacher_latency_us": rep["teacher"]["latency_us"],
                    "student_latency_us": rep["student"]["latency_us"],
                    "latency_ratio": rep["ratios"]["latency"],
                    "heldout_action_mse": rep["action_error"]["heldout_mse_final"],
                    "wall_s": time.perf_counter() - t0,
                }
                rows.append(row)
                print(f"{hidden:>10} {variant:>9}: success {row['student_success']:.3f} / teacher "
                      f"{row['teacher_success']:.3f} (retained {row['success_retained']:.2f}), "
                      f"{row['param_ratio']:.0f}x fewer params, {row['latency_ratio']:.1f}x faster, "
                      f"mse {row['heldout_action_mse']:.1e}  [{row['wall_s']:.0f} s]", flush=True)
    return {"rows": rows}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = result["rows"]
    hiddens = list(dict.fromkeys(r["hidden"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(variants)
    x = np.arange(len(hiddens))
    for i, v in enumerate(variants):
        vals = [next((r["success_retained"] or 0.0 for r in rows if r["hidden"] == h and r["variant"] == v), 0.0)
                for h in hiddens]
        axes[0].bar(x + i * width, vals, width, label=v)
    axes[0].axhline(0.95, color="k", ls="--", lw=1, label="95% goal")
    ratios = [next(r["param_ratio"] for r in rows if r["hidden"] == h) for h in hiddens]
    axes[0].set_xticks(x + width * (len(variants) - 1) / 2,
                       [f"{h}\n({p:.0f}x fewer params)" for h, p in zip(hiddens, ratios)])
    axes[0].set(ylabel="student / teacher success", title=f"success retained (teacher {result['teacher']['depth']}"
                f" layers, success {rows[0]['teacher_success']:.2f})")
    axes[0].legend(fontsize=8)
    for v in variants:
        sel = [r for r in rows if r["variant"] == v]
        axes[1].plot([r["param_ratio"] for r in sel], [r["latency_ratio"] for r in sel], "o-", label=v)
    axes[1].set(xscale="log", xlabel="parameter ratio (teacher / student)",
                ylabel="latency ratio (teacher / student)", title="single-action JAX latency")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(cfg: DistillBench) -> int:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from deepcrl._logging import quiet
    from deepcrl.artifacts import read_manifest
    from deepcrl.bench.common import machine_facts, write_result

    manifest = read_manifest(cfg.teacher, kind="teacher")
    machine = {**machine_facts(), "note": NOTE}
    t0 = time.perf_counter()
    with quiet():
        result = run(cfg.teacher, cfg.hidden, cfg.variants, cfg.steps, cfg.rounds, cfg.num_envs,
                     cfg.eval_episodes, cfg.seed, cfg.noise)
    actor = manifest.network["actor"]
    result = {
        "benchmark": "distill",
        "teacher": {"dir": str(cfg.teacher.absolute()), "env_id": manifest.env_id,
                    "depth": actor.get("depth"), "width": actor.get("width"), "train_steps": manifest.step,
                    "metrics": manifest.metrics},
        "settings": {"steps": cfg.steps, "rounds": cfg.rounds, "num_envs": cfg.num_envs,
                     "eval_episodes": cfg.eval_episodes, "seed": cfg.seed, "noise": cfg.noise},
        **result,
        "wall_s": time.perf_counter() - t0,
        "machine": machine,
    }
    path = write_result(RESULTS / f"{cfg.name}.json", result)
    plot(result, RESULTS / f"{cfg.name}.png")
    print(f"wrote {path} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(DistillBench)))
