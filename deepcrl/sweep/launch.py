"""Sweep cells beyond one machine: submitit (a SLURM job array, or submitit's local executor to try it out).

`deepcrl sweep --launcher slurm` submits every cell that needs training (new or resumable, decided exactly as
for local processes) as one task of a SLURM job array through submitit; each task runs the cell's
``python -m deepcrl.cli train ...`` command (the same command `--jobs` would run locally, ``--resume`` included)
and appends to the cell's train.log. This process waits for the array, then reads every cell's run directory
and writes sweep.json and sweep.png as usual. A sweep killed or timed out on the cluster is resumed by running
the same command again: finished cells are skipped, unfinished ones are resubmitted with ``--resume``.
submitit's own files (job scripts, stdout/stderr, pickled results) go to OUT/submitit/.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from deepcrl.errors import DeepcrlError

SUBMITIT_DIR = "submitit"


def run_cell_command(cmd: list[str], log_path: str, pythonpath: str) -> int:
    """A job array task: run one cell's `deepcrl train` command, appending its output to the cell's log."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    with open(log_path, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}  (submitit job {os.environ.get('SLURM_JOB_ID', 'local')})\n")
        fh.flush()
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode


def executor(cfg, folder: Path):
    """The submitit executor of a sweep's --launcher (slurm or local) with its resources."""
    try:
        import submitit
    except ImportError as exc:
        raise DeepcrlError("--launcher slurm|local needs submitit: pip install 'deepcrl[slurm]'.") from exc
    # the wall time a task may take: the cell's budget plus compile, last evaluation and checkpoint
    timeout_min = cfg.slurm_max_minutes or (int(cfg.max_minutes + max(5, cfg.max_minutes // 4))
                                            if cfg.max_minutes is not None else 24 * 60)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm" if cfg.launcher == "slurm" else "local")
    params = {"timeout_min": timeout_min, "name": "deepcrl-sweep"}
    if cfg.launcher == "slurm":
        params.update(slurm_array_parallelism=cfg.jobs, gpus_per_node=cfg.slurm_gpus, cpus_per_task=cfg.slurm_cpus,
                      slurm_partition=cfg.slurm_partition, slurm_additional_parameters=slurm_parameters(cfg.slurm_args))
        params = {k: v for k, v in params.items() if v is not None}
    ex.update_parameters(**params)
    return ex


def slurm_parameters(text: str) -> dict[str, str]:
    """--slurm-args "account=rl qos=high" -> {"account": "rl", "qos": "high"} (extra #SBATCH options)."""
    out = {}
    for token in shlex.split(text or ""):
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise DeepcrlError(f"--slurm-args takes KEY=VALUE pairs (e.g. account=rl qos=high), got {token!r}.")
        out[key.lstrip("-").replace("-", "_")] = value
    return out


def run_cells(cells: list, cfg, log, train_command, cell_state, train_log: str) -> dict[str, dict]:
    """Submit the cells that need training as one job array, wait, and return each cell's outcome
    (the shape `deepcrl.sweep.runner` builds its rows from)."""
    outcomes: dict[str, dict] = {}
    todo = []
    for cell in cells:
        cell.dir.mkdir(parents=True, exist_ok=True)
        state = cell_state(cell, cfg)
        outcomes[cell.name] = {"state_before": state, "ran": False, "error": None, "failed": False}
        if state in ("new", "partial"):
            todo.append((cell, train_command(cell, cfg, state)))
        else:
            log(f"{cell.name}: {state.replace('_', ' ')}, skipped")
    if not todo:
        return outcomes
    root = str(Path(__file__).resolve().parents[2])  # tasks import the same deepcrl as this process
    path = os.environ.get("PYTHONPATH", "")
    pythonpath = root + (os.pathsep + path if path else "")
    ex = executor(cfg, Path(cfg.out) / SUBMITIT_DIR)
    jobs = ex.map_array(run_cell_command, [cmd for _, cmd in todo],
                        [str(cell.dir / train_log) for cell, _ in todo], [pythonpath] * len(todo))
    log(f"submitted {len(jobs)} cells as {cfg.launcher} job(s) {jobs[0].job_id.split('_')[0]}; waiting")
    for (cell, _), job in zip(todo, jobs):
        outcome = outcomes[cell.name]
        outcome["ran"] = True
        try:
            code = job.result()
        except Exception as exc:  # submitit raises on a failed, cancelled or timed-out task
            code, message = None, f"job {job.job_id}: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"
        else:
            message = f"exit {code}" if code else None
        if code != 0:
            outcome.update(failed=True, error=message)
            log(f"{cell.name}: failed ({message})")
        else:
            log(f"{cell.name}: trained (job {job.job_id})")
    return outcomes
