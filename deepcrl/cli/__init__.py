"""The `deepcrl` command: one verb per stage. Thin: parse a config, call a library function, print.

Each verb is a pair: a frozen config dataclass living beside its stage (documented field by field, which tyro
turns into `--help`; no JAX import, so `--help` is quick) and a `run(config) -> int` in `deepcrl/cli/<verb>.py`
that calls the library and prints. A `DeepcrlError` becomes one red sentence on stderr and exit code 2;
`deepcrl --debug VERB ...` prints the full traceback (with its causes) instead.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# verb -> ("module:ConfigClass", "module:run function")
VERBS: dict[str, tuple[str, str]] = {
    "envs": ("deepcrl.envs.config:EnvsConfig", "deepcrl.cli.envs:run"),
    "train": ("deepcrl.teacher.config:TrainConfig", "deepcrl.cli.train:run"),
    "eval": ("deepcrl.config:EvalConfig", "deepcrl.cli.eval:run"),
    "distill": ("deepcrl.student.config:DistillConfig", "deepcrl.cli.distill:run"),
    "export": ("deepcrl.export.config:ExportConfig", "deepcrl.cli.export:run"),
    "serve": ("deepcrl.serve.config:ServeConfig", "deepcrl.cli.serve:run"),
    "bench": ("deepcrl.bench.config:BenchConfig", "deepcrl.cli.bench:run"),
    "pipeline": ("deepcrl.config:PipelineConfig", "deepcrl.cli.pipeline:run"),
    "sweep": ("deepcrl.sweep.config:SweepConfig", "deepcrl.cli.sweep:run"),
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
    "  deepcrl pipeline --env point_maze --out runs/demo    all of the above on a CPU budget\n"
    "  deepcrl sweep --env point_maze --depths 4 16 64      depth x width x seed scaling study\n\n"
    "  deepcrl --debug VERB ...                             show the full traceback of an error"
)


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deepcrl` console script."""
    import tyro
    from rich.console import Console

    from deepcrl._logging import quiet
    from deepcrl.errors import DeepcrlError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[:1]
    if debug:
        args = args[1:]
    configs = {verb: _load(config) for verb, (config, _) in VERBS.items()}
    try:
        with quiet():
            # a config checks itself as tyro builds it (`__post_init__`): its errors are the user's too
            config = tyro.extras.subcommand_cli_from_dict(configs, prog="deepcrl", description=DESCRIPTION,
                                                          args=args)
            verb = next(v for v, cls in configs.items() if type(config) is cls)
            code = _load(VERBS[verb][1])(config)
    except DeepcrlError as exc:
        if debug:
            raise
        from rich.markup import escape  # messages hold brackets ("pip install deepcrl[tf]", "[batch, 2]")

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]")
        return 130
    return int(code or 0)


def console(**kwargs):
    """A rich Console for a verb's output: on a terminal as usual; elsewhere (a log file, a pipe) wide enough
    that tables keep their rows on one line each instead of folding them at 80 columns."""
    from rich.console import Console

    out = Console(**kwargs)
    if not out.is_terminal and "width" not in kwargs:
        out = Console(width=_PLAIN_WIDTH, **kwargs)
    return out


_PLAIN_WIDTH = 400  # rich pads nothing beyond a table's natural width, so this is only an upper bound
