"""Do deeper critics learn the maze's topology? The representation probe over a grid of teacher runs.

For every run directory given (e.g. the cells of `benchmarks/depth_recipe.py` or `deepcrl sweep`), the critic's
energy over every pair of free cells is rank-correlated (Spearman) with the shortest-path (geodesic) and the
straight-line distance (`deepcrl.teacher.probe.probe_run`, the same as `deepcrl eval --probe`); results are
grouped by critic depth with mean and spread over the runs (seeds).

    python benchmarks/probe_depth.py --runs /tmp/depth/grid48_scaled/d*_w128_s* --name probe_depth
Writes benchmarks/results/<name>.json (+ one heatmap PNG per depth, from its first run).
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import tyro

from deepcrl.artifacts import read_manifest
from deepcrl.bench.common import machine_facts, write_result
from deepcrl.teacher.probe import probe_run

RESULTS = Path(__file__).parent / "results"
KEYS = ("spearman_geodesic", "spearman_euclidean", "spearman_geodesic_detour", "spearman_euclidean_detour")


@dataclasses.dataclass(frozen=True)
class ProbeDepthConfig:
    """The probe over teacher run directories, grouped by critic depth."""

    runs: tuple[Path, ...]
    """Teacher run directories (point-maze envs)."""
    name: str = "probe_depth"
    """Results file stem under benchmarks/results/."""
    action: str = "actor"
    """The action in phi(s, a): the actor's deterministic action, or zero."""


def main(cfg: ProbeDepthConfig) -> dict:
    machine = machine_facts()
    rows, by_depth = [], {}
    for run in cfg.runs:
        depth = read_manifest(run).network["critic"]["depth"]
        png = RESULTS / f"{cfg.name}_d{depth}.png" if depth not in by_depth else None  # one heatmap per depth
        probe = probe_run(run, png=png, action=cfg.action)
        row = {"run": str(run), **{k: probe.get(k) for k in ("env", "step", "critic_depth", "pairs", "detour_pairs", *KEYS)}}
        rows.append(row)
        by_depth.setdefault(row["critic_depth"], []).append(row)
        print({k: row[k] for k in ("run", "critic_depth", *KEYS)})
    summary = {}
    for depth, items in sorted(by_depth.items()):
        stats = {}
        for k in KEYS:
            xs = [r[k] for r in items if r[k] is not None]
            stats[k] = {"mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "n": len(xs)} if xs else None
        summary[str(depth)] = stats
    result = {"benchmark": "probe_depth", "action": cfg.action, "rows": rows, "summary": summary, "machine": machine}
    write_result(RESULTS / f"{cfg.name}.json", result)
    return result


if __name__ == "__main__":
    main(tyro.cli(ProbeDepthConfig))
