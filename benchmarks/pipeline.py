"""The README's main job, timed: `deepcrl pipeline` on point_maze with its defaults.

Runs train -> distill -> export -> serve benchmark into a temporary directory and writes its summary, with the
machine's facts and load, to benchmarks/results/pipeline.json (plots stay in the run directory).

    python benchmarks/pipeline.py [--env point_maze] [--out runs/pipeline-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from deepcrl.artifacts import library_versions
from deepcrl.pipeline import run_pipeline
from deepcrl.config import PipelineConfig

OUT = Path(__file__).parent / "results" / "pipeline.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="point_maze")
    parser.add_argument("--out", type=Path, default=Path("runs/pipeline-bench"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    started = time.perf_counter()
    summary = run_pipeline(PipelineConfig(env=args.env, out=args.out))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "versions": library_versions(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "wall_s": time.perf_counter() - started,
        "summary": summary,
    }, indent=2, default=str))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
