"""Teacher depth benchmark: compile time, step time and peak memory for depth 4..1024 (width 256).

Usage: python benchmarks/teacher_depth.py [--depths 4 16 ...] [--no-unrolled] [--out PATH.json]
(the same as `deepcrl bench teacher`). Writes benchmarks/results/teacher_depth.json and .png.
"""

from __future__ import annotations

import sys

import tyro

from deepcrl.errors import DeepcrlError
from deepcrl.bench.config import BenchTeacherConfig
from deepcrl.cli.bench import run_teacher

if __name__ == "__main__":
    try:
        sys.exit(run_teacher(tyro.cli(BenchTeacherConfig)))
    except DeepcrlError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
