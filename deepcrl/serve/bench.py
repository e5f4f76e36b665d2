"""Moved: the serve benchmark lives in `deepcrl.bench.serve` (load generator `deepcrl.bench.load`, report
`deepcrl.bench.serve_report`). This alias keeps `deepcrl.pipeline`'s import working until it imports
`deepcrl.bench.serve` itself; delete it then."""

from deepcrl.bench.serve import run

__all__ = ["run"]
