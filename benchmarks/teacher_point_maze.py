"""The point_maze target of the teacher: default `deepcrl train --env point_maze`, then 1000 evaluation episodes.

For each seed: train with the env's defaults (wall time recorded), evaluate the deterministic policy on 1000
episodes (all pairs, detour pairs, direct pairs) beside the random policy on the same episodes. Writes
benchmarks/results/teacher_point_maze.json.

    python benchmarks/teacher_point_maze.py [--seeds 0 1] [--out runs/teacher-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from deepcrl.artifacts import library_versions
from deepcrl.evaluate import evaluate
from deepcrl.policy import RandomPolicy, load_policy
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.train import train

OUT = Path(__file__).parent / "results" / "teacher_point_maze.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/teacher-bench"))
    args = parser.parse_args()
    rows = []
    load_start = os.getloadavg()
    for seed in args.seeds:
        run_dir = args.out / f"seed{seed}"
        summary = train(TrainConfig(env="point_maze", out=run_dir, seed=seed))
        teacher = evaluate("point_maze", load_policy(run_dir), episodes=args.episodes, seed=1000 + seed)
        random = evaluate("point_maze", RandomPolicy(2, 2, 2, seed=seed), episodes=args.episodes, seed=1000 + seed)
        rows.append({"seed": seed, "env_steps": summary["env_steps"], "train_wall_s": summary["wall_s"],
                     "teacher": teacher.as_dict(), "random": random.as_dict()})
        print(json.dumps({"seed": seed, "wall_s": round(summary["wall_s"], 1), "success": teacher.success,
                          "detour": teacher.detour_success, "random": random.success}))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "versions": library_versions(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "target": "success >= 0.9 within 10 minutes of training on 2 CPU cores",
        "rows": rows,
    }, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
