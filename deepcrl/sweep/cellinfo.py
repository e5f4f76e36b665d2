"""What the sweep needs from a trained cell beyond its metrics: parameter counts and (optionally) the probe.

Cached in RUN_DIR/cellinfo.json (with the manifest's step, so a cell trained further is measured again) and
RUN_DIR/probe.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from deepcrl._io import write_json_atomic
from deepcrl.artifacts import PROBE_PNG

CELLINFO = "cellinfo.json"  # the sweep's own cache beside the artifact


def cell_info(run_dir: str | Path, probe: bool = False) -> dict:
    """``step``, ``params_actor``, ``params_critic`` (counted from the checkpoint) and, with `probe`, the
    representation probe's result (`deepcrl.teacher.probe.probe_run`, heatmap in RUN_DIR/probe.png)."""
    import numpy as np

    from deepcrl import artifacts

    manifest, params = artifacts.load(run_dir, "teacher")

    def count(tree) -> int:
        if isinstance(tree, dict):
            return sum(count(v) for v in tree.values())
        return int(np.size(tree))

    info = {"step": manifest.step, "params_actor": count(params.get("actor", {})),
            "params_critic": count(params.get("critic", {}))}
    if probe:
        from deepcrl.teacher.probe import probe_run

        info["probe"] = probe_run(run_dir, png=Path(run_dir) / PROBE_PNG)
    return info


def read_cell_info(run_dir: str | Path) -> dict:
    """The cached cellinfo.json of a run directory ({} when there is none or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / CELLINFO).read_text())
    except (OSError, ValueError):
        return {}


def cached_cell_info(run_dir: str | Path, step: int, probe: bool = False) -> dict:
    """`cell_info`, recomputed (and cached) only when the cache is of another step or lacks a wanted probe."""
    info = read_cell_info(run_dir)
    if info.get("step") != step or (probe and "probe" not in info):
        info = cell_info(run_dir, probe)
        write_json_atomic(Path(run_dir) / CELLINFO, info)
    return info
