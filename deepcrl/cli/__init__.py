"""The `deepcrl` command: one verb per stage. Thin: parse a config, call a library function, print.

Each verb is a pair: a frozen config dataclass living beside its stage (documented field by field, which tyro
turns into `--help`; no JAX import, so `--help` is quick) and a `run(config) -> int` in `deepcrl/cli/<verb>.py`
that calls the library and prints. A `DeepcrlError` becomes one red sentence on stderr and exit code 2;
`deepcrl --debug VERB ...` prints the full traceback (with its causes) instead.

Every verb that prints a result takes `--json`: one JSON object on stdout, everything else (progress) on stderr.
Flags renamed by the one-vocabulary change (`DEPRECATED`) keep working for one release: `main` rewrites them to
their new names before parsing and prints one warning line per old flag on stderr.
"""

from __future__ import annotations

import contextlib
import json as _json
import pkgutil
import sys
from typing import Any, Callable, Iterator, Sequence

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
    "import": ("deepcrl.interop.config:ImportConfig", "deepcrl.cli.import_:run"),
}

DESCRIPTION = (
    "deepcrl: train a deep contrastive-RL teacher, distil it into a shallow student, export the student "
    "to ONNX and serve it to a robot.\n\n"
    "  deepcrl envs                                         list environments\n"
    "  deepcrl train --env point_maze --out runs/teacher    train a teacher\n"
    "  deepcrl eval --run runs/teacher                      score any artifact in the simulator\n"
    "  deepcrl distill --run runs/teacher --out runs/student\n"
    "  deepcrl export --run runs/student --out policy.onnx\n"
    "  deepcrl serve --model policy.onnx                    HTTP + WebSocket policy server\n"
    "  deepcrl pipeline --env point_maze --out runs/demo    all of the above on a CPU budget\n"
    "  deepcrl sweep --env point_maze --depths 4 16 64      depth x width x seed scaling study\n"
    "  deepcrl import scaling-crl RUN_DIR --out runs/t      a teacher trained with the paper's code\n"
    "  deepcrl import jaxgcrl RUN_DIR --out runs/s          a JaxGCRL CRL agent, as a student-kind artifact\n\n"
    "  deepcrl --debug VERB ...                             show the full traceback of an error"
)


def _minutes(seconds: str) -> str:
    """`bench serve --time-limit-s S` becomes `--max-minutes S/60`."""
    try:
        return repr(float(seconds) / 60.0)
    except ValueError:
        return seconds  # tyro reports the bad value under the new flag's name


# verb (or "verb subcommand") -> {old flag: (new flag, value converter or None)}; one release, then removed
DEPRECATED: dict[str, dict[str, tuple[str, Callable[[str], str] | None]]] = {
    "eval": {"--ckpt": ("--run", None), "--episodes": ("--eval-episodes", None)},
    "export": {"--ckpt": ("--run", None), "--name": ("--model-name", None)},
    "distill": {"--teacher": ("--run", None), "--steps": ("--distill-steps", None),
                "--rollout-length": ("--unroll-length", None)},
    "serve": {"--max-batch": ("--max-batch-size", None), "--max-delay-us": ("--max-queue-delay-us", None),
              "--default-model": ("--model-name", None)},
    "bench serve": {"--max-batch": ("--max-batch-size", None), "--max-delay-us": ("--max-queue-delay-us", None),
                    "--time-limit-s": ("--max-minutes", _minutes)},
    "pipeline": {"--teacher-minutes": ("--teacher-max-minutes", None),
                 "--bench-seconds": ("--bench-duration-s", None)},
}


def rename_deprecated(args: list[str], warn: Callable[[str], None]) -> list[str]:
    """`args` (after the program name) with the old flags of `DEPRECATED` replaced by their new names.

    Handles `--old VALUE` and `--old=VALUE` (and tyro's underscore spelling `--old_name`); calls `warn` with one
    line per old flag used. Values are never rewritten unless the flag's converter says so (seconds to minutes).
    """
    if not args:
        return args
    table = dict(DEPRECATED.get(args[0], {}))
    if len(args) > 1:
        table.update(DEPRECATED.get(f"{args[0]} {args[1]}", {}))
    if not table:
        return args
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, value = arg.partition("=")
        old = flag.replace("_", "-") if flag.startswith("--") else None
        if old in table:
            new, convert = table[old]
            warn(f"warning: {old} is deprecated; use {new}")
            if eq:
                out.append(f"{new}={convert(value) if convert else value}")
            else:
                out.append(new)
                if convert and i + 1 < len(args):
                    i += 1
                    out.append(convert(args[i]))
        else:
            out.append(arg)
        i += 1
    return out


def _load(target: str):
    return pkgutil.resolve_name(target)


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
    args = rename_deprecated(args, warn=lambda line: print(line, file=sys.stderr, flush=True))
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


@contextlib.contextmanager
def json_output(enabled: bool) -> Iterator[None]:
    """With --json, whatever the verb prints while it runs (progress, tables) goes to stderr, so that stdout
    carries only the one JSON object printed by `print_json` afterwards."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def print_json(result: Any) -> None:
    """The verb's result as one JSON object on one line of stdout (paths and other objects as strings)."""
    print(_json.dumps(result, default=str), flush=True)
