"""`deepcrl export`: write a parity-checked ONNX (or Triton / SavedModel) file and print its report."""

from __future__ import annotations

import json

from deepcrl.export.config import ExportConfig


def run(cfg: ExportConfig) -> int:
    from deepcrl.export.onnx import export, print_report

    report = export(cfg)
    if cfg.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
