"""Does depth pay on a CPU task? Depth 4 vs 16 on point_maze_big, 3 seeds, at equal env steps and equal wall time.

Each study is a `deepcrl sweep` (resumable: finished cells are skipped, a killed one continues), so this script
only adds the comparison the issue asks for:

- at equal env steps: every cell's artifact at the study's step budget scored on 1000 episodes (``final``; one
  training evaluation of 256 episodes holds only ~70 detour-pair episodes), its last training evaluation
  (``at_steps``) and the mean of its last three (``late_mean``);
- at equal wall time: each cell's last evaluation finished within the shortest cell's training time (the
  shallow cells finish first, so this is what the deep cells had reached when the shallow ones were done);
  the cells ran one at a time but not on an idle machine, so this is also given at equal compute
  (``at_compute``): a deep cell's last evaluation within S / X env steps, X being its iteration's cost over
  the shallow one's, timed side by side at the end (`benchmarks/gpu.py`'s throughput cell, here on the CPU);
- the difference deep - shallow per seed (same seed, same env-step schedule) and its mean, against the seed
  spread: the larger of the two depths' standard deviations over seeds (population std, as `deepcrl sweep`
  reports it); "beats" needs the mean difference above it (and at least two seeds);
- the representation probe of every cell (Spearman rank correlation of the critic's energy with the geodesic
  and the straight-line distance).

Studies (all width 128, the env's other defaults unless named):

- ``low_utd``: 1024 envs x unroll 25 per iteration, 32 SGD steps of batch 512 (0.64 samples per env step),
  5M env steps: the data a learner-bound CPU can afford.
- ``reference_utd``: the env's default 128 envs x unroll 25, 64 SGD steps of batch 256 (5.1 samples per env
  step, about the reference's ratio), 800k env steps.

    python benchmarks/depth_big_maze.py --studies low_utd reference_utd --runs runs/depth_big_maze
Writes benchmarks/results/depth_big_maze.json and .png (success and detour success vs env steps and wall time).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from deepcrl.artifacts import read_metrics
from deepcrl.bench.common import machine_facts, write_result
from deepcrl.sweep.config import SweepConfig
from deepcrl.sweep.plots import _stats
from deepcrl.sweep.runner import run_sweep

RESULTS = Path(__file__).parent / "results"
STUDIES = {
    "low_utd": dict(steps=5_000_000, train_args="--num-envs 1024 --unroll-length 25 --sgd-steps 32 "
                                                "--batch-size 512 --eval-every 10",
                    shape=dict(num_envs=1024, unroll_length=25, batch_size=512, sgd_steps=32)),
    "reference_utd": dict(steps=800_000, train_args="--eval-every 10",  # the env's defaults: this shape
                          shape=dict(num_envs=128, unroll_length=25, batch_size=256, sgd_steps=64)),
}
KEYS = ("success", "detour_success")
PROBE = ("probe_spearman_geodesic", "probe_spearman_euclidean", "probe_spearman_geodesic_detour",
         "probe_spearman_euclidean_detour")


@dataclasses.dataclass(frozen=True)
class DepthBigMazeConfig:
    """Depth x seeds sweeps on point_maze_big and their equal-steps / equal-time comparison."""

    studies: tuple[str, ...] = ("low_utd", "reference_utd")
    """Which studies to run (or read, once trained): low_utd, reference_utd."""
    env: str = "point_maze_big"
    """Registered maze env id."""
    depths: tuple[int, ...] = (4, 16)
    """Depths; the first is the baseline the others are compared with."""
    width: int = 128
    """Width of every cell."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every depth."""
    max_minutes: float = 30.0
    """Wall-time bound of each cell (the issue's budget per run on 2 cores)."""
    runs: Path = Path("runs/depth_big_maze")
    """Parent of the studies' sweep directories (runs/depth_big_maze/<study>/d<depth>_w<width>_s<seed>)."""
    late_evals: int = 3
    """Evaluations averaged for the smoothed score at equal env steps."""
    final_episodes: int = 1000
    """Episodes of each cell's final evaluation of its artifact (seed 1000 + seed; cached in the run directory)."""
    time_iterations: bool = True
    """Time one training iteration per depth and study side by side, for the equal-compute comparison."""
    name: str = "depth_big_maze"
    """Result file stem in benchmarks/results/."""


def _evals(run_dir: Path) -> list[dict]:
    return [{"env_steps": r["env_steps"], "wall_s": r["wall_s"], **{k: r["eval"].get(k) for k in KEYS}}
            for r in read_metrics(run_dir) if r.get("eval")]


def iteration_costs(cfg: DepthBigMazeConfig, shape: dict) -> dict:
    """Steady seconds per training iteration of each depth in this shape, timed one after the other."""
    from gpu import run_throughput  # benchmarks/gpu.py: one compiled iteration, timed in its own process

    out = {}
    for d in cfg.depths:
        spec = {"env": cfg.env, "depth": d, "width": cfg.width, "replay_capacity": 200, "timed_iterations": 3,
                "bf16": False, "remat": False, **shape}
        row = run_throughput(spec, timeout=600)
        out[d] = row.get("steady_iteration_s")
    return out


def _final_eval(run_dir: Path, seed: int, env: str, episodes: int) -> dict:
    """The artifact's success on `episodes` episodes (cached as final_eval.json beside it)."""
    import json

    cached = run_dir / "final_eval.json"
    if cached.exists() and json.loads(cached.read_text()).get("episodes") == episodes:
        return json.loads(cached.read_text())
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import load_policy

    result = {"episodes": episodes, **evaluate(env, load_policy(run_dir), episodes=episodes,
                                                  seed=1000 + seed).as_dict()}
    cached.write_text(json.dumps(result))
    return result


def _compare(cells: list[dict], depths: tuple[int, ...], score: str) -> dict:
    """Per depth: mean / spread of `score` over seeds; deeper depths: paired difference with the first depth."""
    by = {d: {c["seed"]: c[score] for c in cells if c["depth"] == d and c.get(score) is not None} for d in depths}
    out = {"by_depth": {d: _stats(list(by[d].values())) for d in depths}}
    base = depths[0]
    for d in depths[1:]:
        seeds = sorted(set(by[d]) & set(by[base]))
        diffs = [by[d][s] - by[base][s] for s in seeds]
        spread = max((out["by_depth"][k] or {}).get("std", 0.0) for k in (base, d))
        mean = sum(diffs) / len(diffs) if diffs else None
        beats = mean > spread if len(diffs) >= 2 else None  # one seed has no spread to beat
        out[f"d{d}_minus_d{base}"] = {"per_seed": dict(zip(seeds, diffs)), "mean": mean, "spread": spread,
                                      "beats_by_more_than_spread": beats}
    return out


def analyse(study: str, rows: list[dict], sweep_dir: Path, cfg: DepthBigMazeConfig,
            costs: dict | None = None) -> dict:
    cells = []
    for row in rows:
        ev = _evals(sweep_dir / row["cell"])
        final = _final_eval(sweep_dir / row["cell"], row["seed"], cfg.env, cfg.final_episodes)
        cells.append({**{k: row.get(k) for k in ("cell", "depth", "width", "seed", "params", "env_steps",
                                                 "wall_s", *PROBE)}, "evals": ev,
                      **{f"{k}_final": final.get(k) for k in KEYS}})
    t_equal = min(c["evals"][-1]["wall_s"] for c in cells if c["evals"])
    s_equal = min(c["evals"][-1]["env_steps"] for c in cells if c["evals"])
    for c in cells:
        at_steps = [e for e in c["evals"] if e["env_steps"] <= s_equal]
        at_time = [e for e in c["evals"] if e["wall_s"] <= t_equal]
        for k in KEYS:
            c[f"{k}_at_steps"] = at_steps[-1][k] if at_steps else None
            late = [e[k] for e in at_steps[-cfg.late_evals:] if e[k] is not None]
            c[f"{k}_late_mean"] = sum(late) / len(late) if late else None
            c[f"{k}_at_time"] = at_time[-1][k] if at_time else None
        c["env_steps_at_time"] = at_time[-1]["env_steps"] if at_time else None
        ratio = (costs[c["depth"]] / costs[cfg.depths[0]]) if costs and all(costs.values()) else None
        if ratio is not None:
            at_compute = [e for e in c["evals"] if e["env_steps"] <= s_equal / ratio + 1]
            for k in KEYS:
                c[f"{k}_at_compute"] = at_compute[-1][k] if at_compute else None
            c["env_steps_at_compute"] = at_compute[-1]["env_steps"] if at_compute else None
    result = {"equal_env_steps": s_equal, "equal_wall_s": t_equal, "iteration_s": costs, "cells": cells}
    for k in KEYS:
        for when in ("final", "at_steps", "late_mean", "at_time", "at_compute"):
            result[f"{k}_{when}"] = _compare(cells, cfg.depths, f"{k}_{when}")
    for k in ("env_steps_at_time", "env_steps_at_compute"):
        result[k] = _compare(cells, cfg.depths, k)["by_depth"]
    result["probe"] = {p: _compare(cells, cfg.depths, p)["by_depth"] for p in PROBE}
    return result


def plot(results: dict, path: Path, depths: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(results)
    fig, axes = plt.subplots(len(studies), 3, figsize=(15, 4 * len(studies)), squeeze=False)
    colors = dict(zip(depths, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for row, study in zip(axes, studies):
        cells = results[study]["cells"]
        for ax, key, x in zip(row, ("success", "detour_success", "detour_success"), ("env_steps", "env_steps",
                                                                                    "wall_s")):
            for d in depths:
                group = [c["evals"] for c in cells if c["depth"] == d and c["evals"]]
                for ev in group:
                    ax.plot([e[x] for e in ev], [e[key] for e in ev], color=colors[d], alpha=0.25, lw=1)
                n = min(len(ev) for ev in group) if group else 0
                if n:
                    xs = [sum(ev[i][x] for ev in group) / len(group) for i in range(n)]
                    ys = [sum(ev[i][key] for ev in group) / len(group) for i in range(n)]
                    ax.plot(xs, ys, color=colors[d], lw=2, label=f"depth {d} (mean of {len(group)} seeds)")
            if x == "wall_s":
                ax.axvline(results[study]["equal_wall_s"], color="gray", ls="--", lw=1)
            ax.set_xlabel("env steps" if x == "env_steps" else "wall s (2-core CPU, one cell at a time)")
            ax.set_title(f"{study}: {key.replace('_', ' ')}")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(cfg: DepthBigMazeConfig) -> int:
    results, costs = {}, {}
    for study in cfg.studies:
        spec = STUDIES[study]
        sweep = SweepConfig(env=cfg.env, depths=cfg.depths, widths=(cfg.width,), seeds=cfg.seeds,
                            steps=spec["steps"], max_minutes=cfg.max_minutes, train_args=spec["train_args"],
                            probe=True, out=cfg.runs / study)
        for seed in cfg.seeds[:-1]:  # seed by seed, so a study cut short still has every depth of its first seeds
            run_sweep(dataclasses.replace(sweep, seeds=(seed,)), log=print)
        summary = run_sweep(sweep, log=print)
        results[study] = summary["rows"]
    for study in cfg.studies:  # timed after all training, one after the other, on an otherwise idle machine
        costs[study] = iteration_costs(cfg, STUDIES[study]["shape"]) if cfg.time_iterations else None
    for study in cfg.studies:
        spec = STUDIES[study]
        results[study] = {"steps": spec["steps"], "train_args": spec["train_args"],
                          **analyse(study, results[study], cfg.runs / study, cfg, costs[study])}
    out = RESULTS / f"{cfg.name}.json"
    write_result(out, {"config": {k: (str(v) if isinstance(v, Path) else v)
                                  for k, v in dataclasses.asdict(cfg).items()},
                       "machine": machine_facts(), "studies": results})
    plot(results, out.with_suffix(".png"), cfg.depths)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(tyro.cli(DepthBigMazeConfig)))
