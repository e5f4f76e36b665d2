"""The point_maze target of the teacher: default `deepcrl train --env point_maze`, then 1000 evaluation episodes.

For each seed: train with the env's defaults (wall time recorded), evaluate the deterministic policy on 1000
episodes (all pairs, detour pairs, direct pairs) beside the random policy on the same episodes. Writes
benchmarks/results/teacher_point_maze.json.

    python benchmarks/teacher_point_maze.py [--seeds 0 1] [--eval-episodes 1000] [--out runs/teacher-bench]
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro

from deepcrl.bench.common import machine_facts, write_result
from deepcrl.evaluate import evaluate
from deepcrl.policy import RandomPolicy, load_policy
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.train import train

OUT = Path(__file__).parent / "results" / "teacher_point_maze.json"


@dataclasses.dataclass(frozen=True)
class Config:
    """Train point_maze teachers with the defaults and evaluate each on many episodes."""

    seeds: tuple[int, ...] = (0, 1)
    """Training seeds (evaluation uses 1000 + seed)."""
    eval_episodes: int = 1000
    """Evaluation episodes per seed."""
    out: Path = Path("runs/teacher-bench")
    """Directory for the run directories (seed0/, seed1/, ...)."""


def main(cfg: Config) -> None:
    machine = machine_facts()
    rows = []
    for seed in cfg.seeds:
        run_dir = cfg.out / f"seed{seed}"
        summary = train(TrainConfig(env="point_maze", out=run_dir, seed=seed))
        teacher = evaluate("point_maze", load_policy(run_dir), episodes=cfg.eval_episodes, seed=1000 + seed)
        random = evaluate("point_maze", RandomPolicy(2, 2, 2, seed=seed), episodes=cfg.eval_episodes, seed=1000 + seed)
        rows.append({"seed": seed, "env_steps": summary["env_steps"], "train_wall_s": summary["wall_s"],
                     "teacher": teacher.as_dict(), "random": random.as_dict()})
        print(json.dumps({"seed": seed, "wall_s": round(summary["wall_s"], 1), "success": teacher.success,
                          "detour": teacher.detour_success, "random": random.success}))
    write_result(OUT, {"machine": machine, "target": "success >= 0.9 within 10 minutes of training on 2 CPU cores",
                       "rows": rows})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(tyro.cli(Config))
