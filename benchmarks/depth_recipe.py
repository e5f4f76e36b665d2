"""Does the deep recipe train? Depth x seeds on one env at one env-step budget, plus a very deep stress cell.

Each cell is a normal `deepcrl.teacher.train.train` run (the env's defaults unless a field below overrides
them) in ``<out>/d<depth>_w<width>_s<seed>``; its summary is cached there as ``cell.json``, so a killed
benchmark continues where it stopped and several processes may share one grid (``--depths``/``--seeds`` pick
their part, the last one writes the result). The last evaluation (``eval_episodes`` episodes) of each cell is
its score; mean, standard deviation, min and max over seeds are reported per depth for success and for
detour-pair success, with the entropy / alpha / critic-loss curves that show a collapse.

    python benchmarks/depth_recipe.py --env point_maze --depths 4 16 64 --seeds 0 1 2 \\
        --stress-depth 256 --stress-width 32 --stress-steps 16000
Writes benchmarks/results/<name>.json and .png.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from pathlib import Path

import tyro

from deepcrl.artifacts import read_metrics

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class DepthRecipeConfig:
    """Depth x seeds grid of teacher runs; JSON + PNG of success, detour success and training curves."""

    env: str = "point_maze"
    """Registered env id."""
    depths: tuple[int, ...] = (4, 16, 64)
    """Depths of the grid (actor and critic, unless --actor-depth is set)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the grid."""
    width: int | None = 128
    """Width of every grid cell (None: the env's default)."""
    steps: int | None = None
    """Env steps per cell (None: the env's default, 96k on point_maze)."""
    actor_depth: int | None = None
    """Actor depth of every cell (None: the cell's depth)."""
    residual_init: str = "scaled"
    """Initial scale of each block's last LayerNorm: scaled (the deep recipe), zero or reference."""
    num_envs: int | None = None
    """Override of the env's default (also batch_size, unroll_length, sgd_steps, replay_capacity, eval_every)."""
    batch_size: int | None = None
    unroll_length: int | None = None
    sgd_steps: int | None = None
    replay_capacity: int | None = None
    eval_every: int | None = None
    eval_episodes: int = 256
    """Episodes of every evaluation during training."""
    final_episodes: int = 1000
    """Episodes of the final evaluation of each cell's artifact (seed 1000 + seed), which scores the cell."""
    max_minutes: float | None = None
    """Wall-time bound per cell (a cell stopped by it reports the env steps it reached)."""
    stress_depth: int | None = None
    """Also train one cell this deep (e.g. 256) to check it stays finite and does not collapse."""
    stress_width: int = 32
    stress_steps: int = 16_000
    stress_seeds: tuple[int, ...] = (0,)
    out: Path = Path("runs/depth-recipe")
    """Parent of the cells' run directories."""
    name: str = "depth_recipe"
    """Result name: benchmarks/results/<name>.json and .png."""
    note: str = ""
    """Free text stored in the result (e.g. where cells came from)."""
    only_cells: bool = False
    """Run this process's cells and stop without writing the result (when several processes share a grid)."""


def _cell(cfg: DepthRecipeConfig, depth: int, width: int | None, seed: int, steps: int | None) -> dict:
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.train import train

    run_dir = cfg.out / f"d{depth}_w{width}_s{seed}"
    cached = run_dir / "cell.json"
    if cached.exists():
        return _final_eval(cfg, json.loads(cached.read_text()), run_dir)
    overrides = {k: getattr(cfg, k) for k in ("num_envs", "batch_size", "unroll_length", "sgd_steps",
                                              "replay_capacity", "eval_every") if getattr(cfg, k) is not None}
    summary = train(TrainConfig(env=cfg.env, out=run_dir, depth=depth, width=width, steps=steps, seed=seed,
                                actor_depth=cfg.actor_depth, residual_init=cfg.residual_init,
                                eval_episodes=cfg.eval_episodes, max_minutes=cfg.max_minutes, **overrides))
    rows = read_metrics(run_dir)
    curve = [{"env_steps": r["env_steps"], "wall_s": r["wall_s"], "entropy": r["entropy"], "alpha": r["alpha"],
              "critic_loss": r["critic_loss"], "energy": r["energy"],
              **({"success": r["eval"]["success"], "detour_success": r["eval"]["detour_success"]}
                 if "eval" in r else {})} for r in rows]
    cell = {"depth": depth, "actor_depth": summary["config"]["actor_depth"], "width": summary["config"]["width"],
            "seed": seed, "env_steps": summary["env_steps"], "wall_s": summary["wall_s"],
            "compile_s": summary["compile_s"], "last_train_eval": summary["eval"],
            "finite": all(all(v == v and abs(v) != float("inf") for k, v in r.items() if isinstance(v, float))
                          for r in curve),
            "min_entropy": min(r["entropy"] for r in curve), "config": summary["config"], "curve": curve}
    cached.write_text(json.dumps(cell))
    return _final_eval(cfg, cell, run_dir)


def _final_eval(cfg: DepthRecipeConfig, cell: dict, run_dir: Path) -> dict:
    """Score the cell's artifact on ``final_episodes`` episodes (once; the result is cached in cell.json)."""
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import load_policy

    if cell.get("final_episodes") != cfg.final_episodes:
        cell.setdefault("last_train_eval", cell.get("final_eval"))
        result = evaluate(cfg.env, load_policy(run_dir), episodes=cfg.final_episodes, seed=1000 + cell["seed"])
        cell.update(final_episodes=cfg.final_episodes, final_eval=result.as_dict(), success=result.success,
                    detour_success=result.detour_success)
        (run_dir / "cell.json").write_text(json.dumps(cell))
        print(json.dumps({k: cell[k] for k in ("depth", "width", "seed", "env_steps", "wall_s", "success",
                                               "detour_success", "min_entropy")}), flush=True)
    return cell


def _spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values)}


def summarise(cells: list[dict]) -> list[dict]:
    """Per (depth, width): mean / std / min / max over seeds of success, detour success, wall and env steps."""
    out = []
    for key in sorted({(c["depth"], c["width"]) for c in cells}):
        group = [c for c in cells if (c["depth"], c["width"]) == key]
        out.append({"depth": key[0], "width": key[1], "seeds": [c["seed"] for c in group],
                    **{m: _spread([c[m] for c in group]) for m in ("success", "detour_success", "wall_s",
                                                                  "env_steps", "min_entropy")}})
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [s for s in results["summary"] if s["width"] == results["width"] or results["width"] is None]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, metric in zip(axes[:2], ("success", "detour_success")):
        depths = [s["depth"] for s in grid]
        ax.errorbar(depths, [s[metric]["mean"] for s in grid], yerr=[s[metric]["std"] for s in grid],
                    marker="o", capsize=4, label="mean ± std over seeds")
        for c in results["cells"]:
            if c["width"] == results["width"] or results["width"] is None:  # the stress cell has its own budget
                ax.scatter(c["depth"], c[metric], color="grey", s=12, zorder=3)
        ax.set(xscale="log", xlabel="depth", ylabel=metric.replace("_", " "), ylim=(-0.02, 1.02),
               title=f"{metric.replace('_', ' ')} at the last eval")
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({c["depth"] for c in results["cells"]})
    for c in results["cells"]:
        col = colors[depths.index(c["depth"]) % len(colors)]
        axes[2].plot([r["env_steps"] for r in c["curve"]], [r["entropy"] for r in c["curve"]], color=col,
                     alpha=0.7, label=f"depth {c['depth']} w{c['width']}" if c["seed"] == min(
                         x["seed"] for x in results["cells"] if x["depth"] == c["depth"]) else None)
    axes[2].set(xlabel="env steps", ylabel="policy entropy (train batch)", title="entropy (every seed)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{results['env']}: residual_init={results['residual_init']}, "
                 f"{results['steps'] or 'default'} env steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(cfg: DepthRecipeConfig) -> int:
    from deepcrl.bench.common import write_result

    cells = [_cell(cfg, d, cfg.width, s, cfg.steps) for d in cfg.depths for s in cfg.seeds]
    if cfg.stress_depth is not None:
        cells += [_cell(cfg, cfg.stress_depth, cfg.stress_width, s, cfg.stress_steps) for s in cfg.stress_seeds]
    if cfg.only_cells:
        return 0
    results = {"note": cfg.note, "env": cfg.env, "width": cfg.width, "steps": cfg.steps, "residual_init": cfg.residual_init,
               "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
               "summary": summarise(cells), "cells": cells}
    path = write_result(RESULTS / f"{cfg.name}.json", results)
    plot(results, RESULTS / f"{cfg.name}.png")
    for s in results["summary"]:
        print(f"depth {s['depth']:4d} width {s['width']}: success {s['success']['mean']:.3f} ± "
              f"{s['success']['std']:.3f}, detour {s['detour_success']['mean']:.3f} ± "
              f"{s['detour_success']['std']:.3f} (seeds {s['seeds']})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(DepthRecipeConfig)))
