"""`deepcrl export`: write a parity-checked ONNX (or Triton / SavedModel) file and print its report."""

from __future__ import annotations

from deepcrl.cli import print_json
from deepcrl.export.config import ExportConfig


def run(cfg: ExportConfig) -> int:
    from deepcrl.export.onnx import export, print_report

    if cfg.part == "critic":
        from deepcrl.export.critic import export_critic

        report = export_critic(cfg)
    else:
        report = export(cfg)
    if cfg.json:
        print_json(report)
    else:
        print_report(report)
    return 0
