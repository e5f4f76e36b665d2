"""The `deepcrl` command: one verb per stage. Thin: parse a config, call its `run()`, print.

Each verb is a frozen dataclass (documented field by field, which tyro turns into `--help`) living in a light
`config` module of its stage; the heavy work is imported only when the verb runs, so `--help` is quick.
A `DeepcrlError` becomes one red sentence on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# verb -> "module:ConfigClass". A verb whose module is absent from this install is left out.
VERBS: dict[str, str] = {
    "envs": "deepcrl.envs.config:EnvsConfig",
    "train": "deepcrl.teacher.config:TrainConfig",
    "eval": "deepcrl.eval_config:EvalConfig",
    "distill": "deepcrl.student.config:DistillConfig",
    "export": "deepcrl.export.config:ExportConfig",
    "serve": "deepcrl.serve.config:ServeConfig",
    "bench": "deepcrl.bench_config:BenchConfig",
    "pipeline": "deepcrl.pipeline_config:PipelineConfig",
}

DESCRIPTION = (
    "deepcrl: train a deep contrastive-RL teacher, distil it into a shallow student, export the student "
    "to ONNX and serve it to a robot.\n\n"
    "  deepcrl envs                                         list environments\n"
    "  deepcrl train --env point_maze --out runs/teacher    train a teacher\n"
    "  deepcrl eval --ckpt runs/teacher                     score any artifact in the simulator\n"
    "  deepcrl distill --teacher runs/teacher --out runs/student\n"
    "  deepcrl export --ckpt runs/student --out policy.onnx\n"
    "  deepcrl serve --model policy.onnx                    HTTP + WebSocket policy server\n"
    "  deepcrl pipeline --env point_maze --out runs/demo    all of the above on a CPU budget"
)


def _verbs() -> dict[str, type]:
    out = {}
    for verb, target in VERBS.items():
        module, _, name = target.partition(":")
        try:
            out[verb] = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
        except AttributeError:  # the module leaves the verb out (e.g. bench with no benchmark installed)
            continue
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deepcrl` console script."""
    import tyro
    from rich.console import Console

    from deepcrl._logging import quiet
    from deepcrl.errors import DeepcrlError

    quiet()
    args = list(sys.argv[1:] if argv is None else argv)
    config = tyro.extras.subcommand_cli_from_dict(_verbs(), prog="deepcrl", description=DESCRIPTION, args=args)
    try:
        code = config.run()
    except DeepcrlError as exc:
        from rich.markup import escape  # messages hold brackets ("pip install deepcrl[tf]", "[batch, 2]")

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
