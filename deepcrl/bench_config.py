"""`deepcrl bench teacher|serve`: the benchmarks that prove the numbers in the README."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Annotated, Union

import tyro

# sub-benchmark -> "module:ConfigClass"; one whose module is absent from this install is left out.
BENCHES = {
    "teacher": "deepcrl.teacher.config:BenchTeacherConfig",
    "serve": "deepcrl.serve.config:BenchServeConfig",
}


def _available() -> list:
    out = []
    for name, target in BENCHES.items():
        module, _, cls = target.partition(":")
        try:
            config = getattr(importlib.import_module(module), cls)
        except (ModuleNotFoundError, AttributeError):
            continue
        out.append(Annotated[config, tyro.conf.subcommand(name)])
    return out


_CHOICES = _available()

if _CHOICES:  # without any benchmark module the verb is left out of the CLI

    @dataclasses.dataclass(frozen=True)
    class BenchConfig:
        """Run a benchmark: `teacher` (compile time, step time and memory vs depth) or `serve` (latency).

        Results are written as JSON (+ PNG) with the machine's facts; compare ratios measured in one run.
        """

        what: tyro.conf.OmitSubcommandPrefixes[Union[tuple(_CHOICES)]]  # type: ignore[valid-type]
        """Which benchmark."""

        def run(self) -> int:
            return self.what.run()
