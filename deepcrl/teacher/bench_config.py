"""`deepcrl bench teacher`: the depth benchmark's config (light: no JAX import until `run()`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class BenchTeacherConfig:
    """Compile time, step time and memory of one critic + actor gradient step from depth 4 to 1024,
    scanned vs unrolled blocks, remat on/off; writes JSON + PNG."""

    depths: tuple[int, ...] = (4, 16, 64, 256, 1024)
    """Depths to measure (multiples of 4, 4..1024), for actor and critic alike."""
    width: int = 256
    """Hidden width of every layer."""
    batch_size: int = 256
    """Batch of the gradient step (also the number of contrastive negatives)."""
    remat: tuple[bool, ...] = (False, True)
    """Remat settings measured for the scanned networks."""
    unrolled: bool = True
    """Also measure the unrolled networks (the reference's form; remat off)."""
    unrolled_budget_s: float = 180.0
    """Skip an unrolled depth whose compile time, extrapolated from the previous depth, exceeds this."""
    bf16: bool = False
    """Compute in bfloat16 (parameters stay float32); for GPUs."""
    max_reps: int = 10
    """Most timed steps per configuration (fewer when a step is slow; at least 2)."""
    out: Path = Path("benchmarks/results/teacher_depth.json")
    """JSON output; the plot is written beside it with the suffix .png."""

    def run(self) -> int:
        if self.batch_size < 2:
            raise DeepcrlError(f"--batch-size must be at least 2 (contrastive negatives), got {self.batch_size}.")
        if self.max_reps < 2:
            raise DeepcrlError(f"--max-reps must be at least 2, got {self.max_reps}.")
        from deepcrl.teacher import bench

        results = bench.run(depths=tuple(self.depths), width=self.width, batch_size=self.batch_size,
                            remat=tuple(self.remat), unrolled=self.unrolled,
                            unrolled_budget_s=self.unrolled_budget_s, dtype="bfloat16" if self.bf16 else "float32",
                            max_reps=self.max_reps, out=self.out)
        for key, value in results["summary"].items():
            print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
        print(f"wrote {self.out} and {Path(self.out).with_suffix('.png')}")
        return 0
