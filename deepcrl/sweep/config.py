"""`deepcrl sweep`: the scaling study's config (plain data, no JAX import, so `--help` is quick)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Train one teacher per (depth, width, seed) cell and compare them: the depth-vs-width scaling study.

    Each cell is a normal `deepcrl train` run directory, OUT/d{depth}_w{width}_s{seed}/, trained in its own
    `python -m deepcrl.cli train` process (so cells are isolated and --jobs of them run at once). The sweep
    is resumable: a cell whose manifest reached its steps (or that spent its --max-minutes) is skipped, and
    an unfinished one (a killed sweep) continues with --resume. At the end it writes OUT/sweep.json (one row
    per cell) and OUT/sweep.png (success and detour success vs depth, vs parameter count, vs env steps and
    vs wall time).

        deepcrl sweep --env point_maze_big --depths 4 16 64 --widths 128 --seeds 0 1 2 --steps 500000 \\
            --max-minutes 30 --jobs 2 --train-args="--batch-size 512 --sgd-steps 32" --probe --out runs/sweep
    """

    env: str = "point_maze"
    """Registered env id (`deepcrl envs`)."""
    depths: tuple[int, ...] = (4, 16, 64)
    """Depths to train (multiples of 4, 4..1024); --train-args may still set --critic-depth / --actor-depth."""
    widths: tuple[int, ...] = (256,)
    """Hidden widths to train."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every (depth, width) pair: the spread between them is the error bar."""
    steps: int | None = None
    """Env steps per cell; the env's `deepcrl train` default if unset."""
    out: Path = Path("runs/sweep")
    """Directory of the cells' run directories, sweep.json and sweep.png."""
    max_minutes: float | None = None
    """Wall-time budget of each cell in minutes (kept across resumes); a cell that spent it counts as done."""
    jobs: int = 1
    """Cells trained at once, each in its own process (on a 2-core CPU, 1 or 2)."""
    train_args: str = ""
    """Any other `deepcrl train` flags, given to every cell. Write it with '=' since it starts with dashes:
    --train-args="--batch-size 512 --sgd-steps 32". (Library callers may pass a dict: {"batch_size": 512}.)"""
    probe: bool = False
    """Also run the representation probe on each cell (point mazes only): its critic's Spearman correlation
    with the geodesic and the straight-line distance, and OUT/CELL/probe.png."""
    seeds_together: bool = False
    """Train the seeds of each (depth, width) pair as one `deepcrl train --seeds` process (one vmapped program:
    on a GPU about the cost of one seed; on a busy CPU no cheaper than separate runs). The cells are then
    OUT/d{depth}_w{width}/seed_{seed}/; the pair resumes and is skipped as a whole."""
    dry_run: bool = False
    """Check the grid and print each cell's `deepcrl train` command and state without training anything."""
    json: bool = False
    """Print the result (sweep.json's rows; with --dry-run, each cell's state and command) as one JSON object on
    stdout (progress goes to stderr)."""
    launcher: Literal["process", "slurm", "local"] = "process"
    """Where cells train: "process" (local processes, --jobs at a time), "slurm" (one SLURM job array through
    submitit, --jobs tasks at a time; this process waits and gathers sweep.json) or "local" (submitit's local
    executor: the SLURM path on this machine, for trying it out)."""
    slurm_partition: str | None = None
    """With --launcher slurm: the partition to submit to."""
    slurm_gpus: int = 1
    """With --launcher slurm: GPUs per task."""
    slurm_cpus: int = 8
    """With --launcher slurm: CPUs per task."""
    slurm_max_minutes: int | None = None
    """With --launcher slurm|local: wall-time limit per task in minutes (default: --max-minutes plus a margin for
    compiling and the last checkpoint, else 24 h)."""
    slurm_args: str = ""
    """With --launcher slurm: more #SBATCH options as KEY=VALUE pairs, e.g. --slurm-args="account=rl qos=high"."""

    def __post_init__(self) -> None:
        """Check the grid (one `DeepcrlError` sentence for the first problem); `out` becomes a `Path`."""
        checks.paths(self, "out")
        if not self.depths or not self.widths or not self.seeds:
            raise DeepcrlError("give at least one value each for --depths, --widths and --seeds.")
        bad = [d for d in self.depths if d % 4 or not 4 <= d <= 1024]
        if bad:
            raise DeepcrlError(f"--depths must be multiples of 4 between 4 and 1024, got {bad[0]}.")
        if min(self.widths) < 1:
            raise DeepcrlError(f"--widths must be positive, got {min(self.widths)}.")
        checks.positive(self, "steps", "max_minutes")
        checks.at_least(self, 1, "jobs")
        if self.launcher == "process" and (self.slurm_partition or self.slurm_args):
            raise DeepcrlError("--slurm-partition and --slurm-args need --launcher slurm.")
