"""Does depth help on a maze? Train the teacher at several depths on the same env-step budget and compare
success and detour-pair success curves (the paper's claim: past a critical depth success jumps).

Every other setting is the env's default (`deepcrl.teacher.config.ENV_DEFAULTS`), the seed is shared, and
each depth gets the same number of env steps (and therefore of SGD steps); wall time is reported as well
since deeper networks cost more per step.

Usage: python benchmarks/depth_sweep.py [--env point_maze] [--depths 4 16] [--steps 128000] [--width 128]
Writes benchmarks/results/depth_sweep.json and .png.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import tyro


def sweep(env: str, depths: list[int], steps: int, width: int | None, eval_every: int, seed: int) -> list[dict]:
    from deepcrl.artifacts import read_metrics
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.train import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for depth in depths:
            out = Path(tmp) / f"depth{depth}"
            summary = train(TrainConfig(env=env, depth=depth, width=width, steps=steps, eval_every=eval_every,
                                        seed=seed, out=out))
            records = read_metrics(out)
            curve = [{"env_steps": r["env_steps"], "wall_s": r["wall_s"], "success": r["eval"]["success"],
                      "detour_success": r["eval"]["detour_success"], "direct_success": r["eval"]["direct_success"],
                      "time_at_goal": r["eval"]["time_at_goal"], "critic_loss": r["critic_loss"],
                      "entropy": r["entropy"]}
                     for r in records if "eval" in r]
            row = {"depth": depth, "width": summary["config"]["width"], "env_steps": summary["env_steps"],
                   "wall_s": summary["wall_s"], "compile_s": summary["compile_s"], "final": summary["eval"],
                   "config": summary["config"], "curve": curve}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}))
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in results["rows"]:
        steps = [c["env_steps"] for c in row["curve"]]
        axes[0].plot(steps, [c["success"] for c in row["curve"]], marker="o", label=f"depth {row['depth']}")
        axes[1].plot(steps, [c["detour_success"] for c in row["curve"]], marker="o", label=f"depth {row['depth']}")
    for ax, title in zip(axes, ("success, all pairs", "success, detour pairs")):
        ax.set(xlabel="env steps", ylabel="eval success", ylim=(-0.02, 1.02), title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"depth sweep on {results['env']} (same env-step budget, seed {results['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


@dataclasses.dataclass(frozen=True)
class Config:
    """Train the teacher at several depths on the same env-step budget and seed."""

    env: str = "point_maze"
    """Registered env id."""
    depths: tuple[int, ...] = (4, 16)
    """Depths to train (multiples of 4)."""
    steps: int = 128_000
    """Env steps per depth."""
    width: int | None = None
    """Hidden width (default: the env's default width)."""
    eval_every: int = 10
    """Evaluate every this many iterations."""
    seed: int = 0
    """Seed shared by every depth."""
    out: Path = Path("benchmarks/results/depth_sweep.json")
    """JSON output; the plot is written beside it with the suffix .png."""


def main(cfg: Config) -> None:
    from deepcrl._logging import quiet
    from deepcrl.bench.common import machine_facts, write_result

    with quiet():
        machine = machine_facts()
        rows = sweep(cfg.env, list(cfg.depths), cfg.steps, cfg.width, cfg.eval_every, cfg.seed)
        results = {"env": cfg.env, "seed": cfg.seed, "steps": cfg.steps, "machine": machine, "rows": rows}
        write_result(cfg.out, results)
        plot(results, cfg.out.with_suffix(".png"))


if __name__ == "__main__":
    main(tyro.cli(Config))
