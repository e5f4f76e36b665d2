"""Run a sweep: plan the cells (every check runs before anything trains), train each in its own
``python -m deepcrl.cli train`` process, then count parameters and run the probe here (this process's JAX stays on
the CPU). Everything is read back from the cells' run directories, so a re-run after a kill skips finished cells,
resumes unfinished ones and refuses a cell still trained by a killed sweep's orphan process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from deepcrl import artifacts
from deepcrl._gpu import gpu_likely
from deepcrl._io import write_json_atomic
from deepcrl.errors import ArtifactError, DeepcrlError
from deepcrl.sweep.cellinfo import PROBE_PNG, cached_cell_info, read_cell_info
from deepcrl.sweep.config import SweepConfig
from deepcrl.sweep.groups import expand, group_command, group_state, make_groups, seed_cell_dir

SWEEP_JSON, SWEEP_PNG, TRAIN_LOG = "sweep.json", "sweep.png", "train.log"
PID_FILE = ".sweep.pid"  # the process training a cell right now (left behind if the sweep was killed)
# Flags the sweep sets per cell; --train-args may not set them.
OWNED = {"env": "--env", "depth": "--depths", "width": "--widths", "seed": "--seeds", "steps": "--steps",
         "out": "--out", "resume": "(automatic)", "max_minutes": "--max-minutes"}
# Ignored when checking that an existing cell was trained with this sweep's settings.
_BOOKKEEPING = {"out", "resume", "steps", "max_minutes", "eval_every", "eval_episodes", "json"}

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (depth, width, seed) run of the grid."""

    depth: int
    width: int
    seed: int
    dir: Path
    train: Any
    """The cell's TrainConfig as parsed (None fields are the env's defaults, resolved by `deepcrl train`)."""

    @property
    def name(self) -> str:
        return cell_name(self.depth, self.width, self.seed)


def cell_name(depth: int, width: int, seed: int) -> str:
    return f"d{depth}_w{width}_s{seed}"


def train_flags(train_args: str | Mapping[str, Any]) -> list[str]:
    """`deepcrl train` flags from a string ("--batch-size 512") or a dict ({"batch_size": 512}; True is a bare
    flag, False/None leave it out)."""
    if isinstance(train_args, Mapping):
        flags: list[str] = []
        for key, value in train_args.items():
            flag = "--" + str(key).replace("_", "-")
            if value is True:
                flags.append(flag)
            elif value is not None and value is not False:
                flags += [flag, str(value)]
        return flags
    try:
        return shlex.split(train_args or "")
    except ValueError as exc:
        raise DeepcrlError(f"--train-args {train_args!r} cannot be split into flags ({exc}).") from exc


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def plan(cfg: SweepConfig) -> list[Cell]:
    """Check the env, the train flags and every cell's training config (the grid checks itself on
    construction); raise `DeepcrlError` before anything runs.

    Returns:
        The cells in order depth, width, seed.
    """
    import tyro

    from deepcrl import envs
    from deepcrl.teacher.config import TrainConfig

    depths, widths, seeds = _unique(cfg.depths), _unique(cfg.widths), _unique(cfg.seeds)  # checked by cfg
    envs.check_env_id(cfg.env)
    if cfg.probe:
        from deepcrl.teacher.probe import check_maze_env

        check_maze_env(cfg.env)
    extra = train_flags(cfg.train_args)
    for token in extra:
        name = token[2:].split("=")[0].replace("-", "_") if token.startswith("--") else None
        if name in OWNED:
            raise DeepcrlError(f"--train-args may not set --{name.replace('_', '-')}: the sweep sets it "
                               f"per cell ({OWNED[name]}).")
    try:
        base = tyro.cli(TrainConfig, args=["--env", cfg.env, *extra])
    except SystemExit as exc:  # tyro has printed what is wrong with the flags
        raise DeepcrlError(f"--train-args {' '.join(extra)!r} are not valid `deepcrl train` flags "
                           "(see `deepcrl train --help`).") from exc
    on_gpu = gpu_likely()  # the cells' `deepcrl train` processes, not this one, use the GPU
    cells = []
    for depth in depths:
        for width in widths:
            for seed in seeds:
                out = (seed_cell_dir(cfg.out, depth, width, seed) if cfg.seeds_together
                       else cfg.out / cell_name(depth, width, seed))
                train = dataclasses.replace(base, depth=depth, width=width, seed=seed, steps=cfg.steps,
                                            max_minutes=cfg.max_minutes, out=out)
                train.resolved(on_gpu=on_gpu).validate()
                cells.append(Cell(depth, width, seed, Path(train.out), train))
            if cfg.seeds_together:  # the group's own command line must pass `deepcrl train`'s checks too
                dataclasses.replace(base, depth=depth, width=width, seeds=tuple(seeds)).resolved(
                    on_gpu=on_gpu).validate()
    units = make_groups(cells, cfg.out) if cfg.seeds_together else cells
    for cell in cells:
        _check_same_run(cell)
    for unit in units:
        pid = _busy(unit)
        if pid is not None:
            raise DeepcrlError(f"{unit.dir} is being trained by process {pid} (a sweep that is still running?); "
                               "wait for it or end it first.")
    return cells


def _busy(cell) -> int | None:
    """The id of a live process still training this cell (a killed sweep's orphan), else None."""
    try:
        pid = int((cell.dir / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None  # gone (or no /proc): nothing to wait for
    return pid if str(cell.dir) in cmdline else None


def _manifest(run_dir: Path) -> artifacts.Manifest | None:
    """The cell's manifest, or None before its first artifact is written."""
    if not (run_dir / artifacts.MANIFEST).exists():
        return None
    try:
        return artifacts.read_manifest(run_dir, "teacher")
    except ArtifactError as exc:
        raise DeepcrlError(f"{str(exc).rstrip('.')}; remove the cell to retrain it.") from exc


def _trained_with(manifest: artifacts.Manifest | None) -> dict[str, Any]:
    """The `deepcrl train` settings a teacher's manifest records (empty before its first artifact)."""
    return dict(manifest.network.get("train", {})) if manifest is not None else {}


def _check_same_run(cell: Cell) -> None:
    """An existing cell must have been trained with this sweep's settings (steps and bookkeeping may differ)."""
    manifest = _manifest(cell.dir)
    if manifest is None:
        return
    recorded = _trained_with(manifest)
    wanted = {k: v for k, v in dataclasses.asdict(cell.train).items() if k not in _BOOKKEEPING and v is not None}
    wanted.setdefault("critic_depth", cell.depth)
    wanted.setdefault("actor_depth", cell.depth)
    for key, value in wanted.items():
        if key in recorded and recorded[key] != value:
            raise DeepcrlError(f"{cell.dir} holds a run with {key.replace('_', ' ')} {recorded[key]!r}, not "
                               f"{value!r} as this sweep asks; use another --out or remove that cell.")


# ---- the state of a cell -----------------------------------------------------------------------------------


def _evals(run_dir: Path) -> tuple[list[dict], dict]:
    rows = artifacts.read_metrics(run_dir)
    return rows, next((r["eval"] for r in reversed(rows) if r.get("eval")), {})


def cell_state(cell: Cell, cfg: SweepConfig) -> str:
    """``"new"``, ``"partial"`` (a checkpoint to resume), ``"done"`` (reached its steps) or ``"out_of_time"``
    (spent its --max-minutes)."""
    manifest = _manifest(cell.dir)
    if manifest is not None:
        target = cfg.steps or _trained_with(manifest).get("steps") or 0
        if manifest.step >= target:
            return "done"
        if cfg.max_minutes is not None and _spent_s(cell) >= 60 * cfg.max_minutes:
            return "out_of_time"
    return "partial" if (cell.dir / artifacts.TRAIN_STATE).is_dir() else "new"


def _spent_s(cell: Cell) -> float:
    """Wall seconds the cell has trained, up to its last checkpoint (what a resume continues from)."""
    rows, _ = _evals(cell.dir)
    return max((r.get("wall_s", 0.0) for r in rows if r.get("eval")), default=0.0)


def train_command(cell: Cell, cfg: SweepConfig, state: str) -> list[str]:
    """The `deepcrl train` command line of a cell (``--resume`` when it has a checkpoint)."""
    cmd = [sys.executable, "-m", "deepcrl.cli", "train", "--env", cfg.env, "--depth", str(cell.depth),
           "--width", str(cell.width), "--seed", str(cell.seed), "--out", str(cell.dir)]
    if cfg.steps is not None:
        cmd += ["--steps", str(cfg.steps)]
    if cfg.max_minutes is not None:
        left = cfg.max_minutes - (_spent_s(cell) / 60 if state == "partial" else 0.0)
        cmd += ["--max-minutes", f"{max(left, 0.05):.4g}"]
    if state == "partial":
        cmd.append("--resume")
    return cmd + train_flags(cfg.train_args)


# ---- running --------------------------------------------------------------------------------------------------


class _Runner:
    """Runs the cells' processes, at most `jobs` at a time; terminates them if the sweep is interrupted."""

    def __init__(self, cfg: SweepConfig, log: Log, state_fn=None, command_fn=None):
        self.cfg, self.log = cfg, log
        # what trains: a cell, or with --seeds-together a `deepcrl.sweep.groups.SeedGroup` of cells
        self.state_fn, self.command_fn = state_fn or cell_state, command_fn or train_command
        self.live: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        # children import the same deepcrl as this process, wherever it was imported from
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH", "")
        self.env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}

    def run(self, cmd: list[str], log_path: Path, timeout: float | None) -> int | None:
        """Exit code of `cmd` (output appended to `log_path`), or None if it ran past `timeout` and was killed.
        While it runs, its id is in PID_FILE beside the log."""
        pid_file = log_path.parent / PID_FILE
        with open(log_path, "a") as fh:
            fh.write(f"\n$ {shlex.join(cmd)}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env)
            with self.lock:
                self.live[proc.pid] = proc
            pid_file.write_text(f"{proc.pid}\n")
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return None
            finally:
                pid_file.unlink(missing_ok=True)
                with self.lock:
                    self.live.pop(proc.pid, None)

    def stop_all(self) -> None:
        with self.lock:
            procs = list(self.live.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cell(self, cell: Cell) -> dict:
        """Train the cell if it needs it; returns what happened."""
        cfg = self.cfg
        cell.dir.mkdir(parents=True, exist_ok=True)
        state = self.state_fn(cell, cfg)
        outcome = {"state_before": state, "ran": False, "error": None, "failed": False}
        if state in ("new", "partial"):
            cmd = self.command_fn(cell, cfg, state)
            # bounded: the budget, plus time for compiling, the last evaluation and the checkpoint
            timeout = None if cfg.max_minutes is None else 60 * cfg.max_minutes + max(300.0, 15 * cfg.max_minutes)
            self.log(f"{cell.name}: {'resuming' if state == 'partial' else 'training'}")
            t0 = time.perf_counter()
            code = self.run(cmd, cell.dir / TRAIN_LOG, timeout)
            outcome["ran"] = True
            if code != 0:
                outcome["failed"] = True
                outcome["error"] = (f"killed after {timeout:.0f} s" if code is None else
                                    f"exit {code}: {_last_line(cell.dir / TRAIN_LOG)}")
                self.log(f"{cell.name}: failed ({outcome['error']})")
                return outcome
            self.log(f"{cell.name}: trained in {time.perf_counter() - t0:.0f} s")
        else:
            self.log(f"{cell.name}: {state.replace('_', ' ')}, skipped")
        return outcome


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def cell_row(cell: Cell, cfg: SweepConfig, outcome: dict) -> dict:
    """The cell's sweep.json row, read from its run directory."""
    manifest = _manifest(cell.dir)
    train = _trained_with(manifest)
    rows, last = _evals(cell.dir)
    info = read_cell_info(cell.dir)
    state = cell_state(cell, cfg)
    row = {
        "cell": cell.name, "depth": cell.depth, "width": cell.width, "seed": cell.seed,
        "critic_depth": train.get("critic_depth"), "actor_depth": train.get("actor_depth"),
        "params": (info["params_actor"] + info["params_critic"]) if "params_actor" in info else None,
        "params_critic": info.get("params_critic"), "params_actor": info.get("params_actor"),
        "env_steps": manifest.step if manifest is not None else None,
        "target_steps": cfg.steps or train.get("steps"),
        "wall_s": rows[-1]["wall_s"] if rows else None,
        "success": last.get("success"), "detour_success": last.get("detour_success"),
        "direct_success": last.get("direct_success"), "time_at_goal": last.get("time_at_goal"),
        "status": "failed" if outcome.get("failed") else state, "ran": outcome.get("ran", False),
        "error": outcome.get("error"),
    }
    if cfg.probe and "probe" in info:
        p = info["probe"]
        row.update({f"probe_{k}": p[k] for k in ("spearman_geodesic", "spearman_euclidean",
                                                 "spearman_geodesic_detour", "spearman_euclidean_detour")})
        row["probe_png"] = str(cell.dir / PROBE_PNG)
    return row


def training_units(cells: list[Cell], cfg: SweepConfig) -> tuple[list, Callable, Callable]:
    """What trains, with its state and command functions: the cells themselves, or with --seeds-together one
    `deepcrl.sweep.groups.SeedGroup` per (depth, width) (a `deepcrl train --seeds` process)."""
    if not cfg.seeds_together:
        return cells, cell_state, train_command
    return (make_groups(cells, cfg.out), functools.partial(group_state, cell_state=cell_state),
            functools.partial(group_command, train_command=train_command, spent_s=_spent_s))


def _run_local(cells: list, cfg: SweepConfig, log: Log, state_fn=None, command_fn=None) -> dict[str, dict]:
    """Train the cells (or seed groups) in local processes, `jobs` at a time; each one's outcome by name."""
    runner = _Runner(cfg, log, state_fn, command_fn)
    outcomes: dict[str, dict] = {}
    pool = ThreadPoolExecutor(max_workers=cfg.jobs)
    try:
        futures = {pool.submit(runner.cell, cell): cell for cell in cells}
        for future in as_completed(futures):
            outcomes[futures[future].name] = future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        runner.stop_all()
        raise
    pool.shutdown()
    return outcomes


def run_sweep(cfg: SweepConfig, log: Log | None = None) -> dict:
    """Train every cell that needs it (`jobs` at a time), then write OUT/sweep.json and OUT/sweep.png.

    Args:
        cfg: the sweep; ``cfg.train_args`` may also be a dict of train flags ({"batch_size": 512}).
        log: called with one line per cell event (start, end, failure); silent if None.
    Returns:
        The sweep.json content: ``config``, ``rows`` (one per cell), ``groups`` (seed mean and spread per
        depth and width), ``json`` and ``png`` paths.
    Raises:
        DeepcrlError: a bad grid, env or train flag, or an existing cell of other settings (before anything runs).
    """
    from deepcrl.sweep.plots import group_rows, plot_sweep

    log = log or (lambda line: None)
    cells = plan(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    units, state_fn, command_fn = training_units(cells, cfg)
    for unit in units:  # a seed group in states one `--seeds` run cannot continue from: refused before training
        state_fn(unit, cfg)
    if cfg.launcher != "process":  # a SLURM job array (or submitit's local executor) through submitit
        from deepcrl.sweep.launch import run_cells

        outcomes = run_cells(units, cfg, log, command_fn, state_fn, TRAIN_LOG)
    else:
        outcomes = _run_local(units, cfg, log, state_fn, command_fn)
    if cfg.seeds_together:
        outcomes = expand(units, outcomes)
    for cell in cells:  # parameter counts and probes, here, one cell after another (cached per step)
        manifest = _manifest(cell.dir)
        if manifest is not None:
            try:
                cached_cell_info(cell.dir, manifest.step, cfg.probe)
            except DeepcrlError as exc:
                outcomes[cell.name]["error"] = f"probe: {exc}"
    rows = [cell_row(cell, cfg, outcomes[cell.name]) for cell in cells]
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    result = {"env": cfg.env, "config": config, "rows": rows, "groups": group_rows(rows),
              "json": str(out / SWEEP_JSON), "png": str(out / SWEEP_PNG)}
    plot_sweep(rows, [artifacts.read_metrics(c.dir) for c in cells], out / SWEEP_PNG,
               title=f"{cfg.env}: {len(cells)} cells")
    write_json_atomic(out / SWEEP_JSON, result)
    return result
