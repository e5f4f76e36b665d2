"""Learning parity with the paper's own code: the reference's `train.py` and `deepcrl train` on the same task.

The reference is the scaling-crl repository of "1000 Layer Networks for Self-Supervised RL" (Wang et al.),
run from a checkout in its own virtualenv with its pinned stack (python 3.10, jax 0.4.23, brax 0.10.1; CPU jax;
`scripts/provision-reference.sh` builds it). Both learners train on the paper's ant goal-reaching task
(reference `--env_id ant`, deepcrl `--env ant_ref`: same observation, goals 10 m away, success radius 0.5,
1000-step episodes) with the same config: depth, width, parallel envs, unroll length, batch, SGD steps per
iteration, replay steps per env, learning rate, discount, logsumexp penalty, target entropy. What cannot be the
same is named in the JSON's `differences` (physics backend; the reference fills `min_replay_size` steps per env
before its first SGD step, deepcrl trains from its first iteration).

Runs go one after another (never two at once), each a subprocess bounded by `timeout`, under `nice -n 15`;
every run's rows are appended to the JSON as soon as it ends, so a budget overrun keeps what finished.
Wall time is measured the same way for both: seconds from launching the process to the line that reports an
evaluation (imports, env construction and compilation included).

Usage:
    python benchmarks/vs_reference.py --reference-src PATH/scaling-crl --reference-venv PATH/venv
    python benchmarks/vs_reference.py --plot-only          # redraw the PNG from the JSON
Writes benchmarks/results/vs_reference.json (+ .png): machine facts, load, seeds, exact configs and commands,
per-run curves (success, time at goal, distance, losses vs env steps and wall time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import tyro

_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepcrl"


@dataclasses.dataclass(frozen=True)
class Config:
    """Train the reference and deepcrl on the paper's ant task with one config; compare their learning curves."""

    reference_src: Path = Path(os.environ.get("DEEPCRL_SCALING_CRL_SRC", _CACHE / "scaling-crl-src"))
    """Checkout of the reference repository (holds train.py)."""
    reference_venv: Path = Path(os.environ.get("DEEPCRL_SCALING_CRL_VENV", _CACHE / "venvs" / "scaling-crl"))
    """The reference's virtualenv (scripts/provision-reference.sh)."""
    systems: tuple[str, ...] = ("deepcrl", "reference")
    """Which learners to run (each seed runs both before the next seed starts)."""
    seeds: tuple[int, ...] = (1, 2)
    """Seeds of each learner."""
    depth: int = 4
    """Actor and critic depth (Dense layers in the residual blocks)."""
    width: int = 64
    """Hidden width of actor and critic."""
    num_envs: int = 16
    """Parallel training envs."""
    unroll_length: int = 62
    """Env steps per env per iteration."""
    batch_size: int = 256
    """Transitions per SGD step (also the contrastive negatives)."""
    sgd_steps: int = 16
    """SGD steps per iteration (the reference's --num_sgd_batches_per_training_step)."""
    replay: int = 2000
    """Replay steps kept per env (reference --max_replay_size, deepcrl --replay-capacity)."""
    min_replay: int = 1000
    """The reference's --min_replay_size: steps per env collected before its first SGD step. Its buffer samples
    windows of a whole episode (1000 steps); below that it reads rows never written, whose all-zero state, action
    and goal give identical representations, and the gradient of the distance at 0 is NaN."""
    episode_length: int = 1000
    """Episode length (ant_ref's is 1000; the reference's --episode_length)."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critic and alpha (both learners)."""
    discount: float = 0.99
    """Discount of the hindsight goal offsets."""
    epochs: int = 6
    """Evaluations after the prefill (the reference's --num_epochs)."""
    iterations_per_epoch: int = 16
    """Training iterations between evaluations."""
    eval_episodes: int = 16
    """Deterministic evaluation episodes per evaluation (the reference's --num_eval_envs)."""
    timeout_min: float = 13.0
    """Wall-time bound of each run (the process is killed after it; finished evaluations are kept)."""
    out: Path = Path("benchmarks/results/vs_reference.json")
    """JSON output; the plot goes beside it (.png)."""
    logs: Path = Path("runs/vs_reference")
    """Each run's full output (LEARNER_seedS.log) and deepcrl's run directories."""
    plot_only: bool = False
    """Only redraw the PNG from the JSON."""

    def prefill_iterations(self) -> int:
        return math.ceil(self.min_replay / self.unroll_length)

    def total_env_steps(self) -> int:
        """Env steps at the reference's last epoch (prefill + training); deepcrl trains for as many."""
        per_it = self.num_envs * self.unroll_length
        return (self.prefill_iterations() + self.epochs * self.iterations_per_epoch) * per_it


def reference_command(cfg: Config, seed: int) -> list[str]:
    per_it = cfg.num_envs * cfg.unroll_length
    # train.py computes its training steps per epoch as (total - min_replay * num_envs) // (epochs * per_it).
    total = cfg.min_replay * cfg.num_envs + cfg.epochs * cfg.iterations_per_epoch * per_it
    return [str(cfg.reference_venv / "bin" / "python"), "train.py", "--env_id", "ant", "--seed", str(seed),
            "--total_env_steps", str(total), "--num_epochs", str(cfg.epochs), "--num_envs", str(cfg.num_envs),
            "--num_eval_envs", str(cfg.eval_episodes), "--episode_length", str(cfg.episode_length),
            "--min_replay_size", str(cfg.min_replay), "--max_replay_size", str(cfg.replay),
            "--unroll_length", str(cfg.unroll_length), "--batch_size", str(cfg.batch_size),
            "--num_sgd_batches_per_training_step", str(cfg.sgd_steps),
            "--actor_depth", str(cfg.depth), "--critic_depth", str(cfg.depth),
            "--actor_network_width", str(cfg.width), "--critic_network_width", str(cfg.width),
            "--actor_lr", str(cfg.learning_rate), "--critic_lr", str(cfg.learning_rate),
            "--alpha_lr", str(cfg.learning_rate), "--gamma", str(cfg.discount), "--logsumexp_penalty_coeff", "0.1",
            "--entropy_param", "0.5", "--no-track", "--no-capture_vis"]


def deepcrl_config(cfg: Config, seed: int, out: Path) -> dict:
    """Keyword arguments of deepcrl's TrainConfig (also what the JSON records)."""
    return dict(env="ant_ref", out=str(out), steps=cfg.total_env_steps(), depth=cfg.depth, width=cfg.width,
                num_envs=cfg.num_envs, batch_size=cfg.batch_size, unroll_length=cfg.unroll_length,
                sgd_steps=cfg.sgd_steps, replay_capacity=cfg.replay, eval_every=cfg.iterations_per_epoch,
                eval_episodes=cfg.eval_episodes, seed=seed, learning_rate=cfg.learning_rate, discount=cfg.discount,
                logsumexp_coef=0.1, target_entropy_scale=-0.5, actor_random_goal_frac=0.0,
                residual_init="reference", repr_size=64)


# -- the reference's printed metrics ---------------------------------------------------------------------------
_EPOCH = re.compile(r"^epoch (\d+) out of \d+ complete\. metrics: (\{.*\})\s*$")
_ARRAY = re.compile(r"(?:Array|np\.float\d+|np\.int\d+)\(([^,()]+)(?:, dtype=\w+)?\)")
_PAIR = re.compile(r"'([^']+)': ([^,}]+)")


def parse_reference_line(line: str) -> dict | None:
    """The metrics dict of one `epoch N out of M complete. metrics: {...}` line of train.py (None otherwise)."""
    match = _EPOCH.match(line.strip())
    if not match:
        return None
    values = {}
    for key, raw in _PAIR.findall(_ARRAY.sub(r"\1", match.group(2))):
        try:
            values[key] = float(raw.strip())
        except ValueError:
            continue
    return {"epoch": int(match.group(1)), **values}


def reference_row(metrics: dict, wall_s: float) -> dict:
    length = metrics.get("eval/avg_episode_length", float("nan"))
    return {"env_steps": int(metrics["training/envsteps"]), "wall_s": round(wall_s, 2),
            "success": metrics.get("eval/episode_success_any"), "time_at_goal": metrics.get("eval/episode_success"),
            "mean_distance": metrics.get("eval/episode_dist", float("nan")) / length if length else None,
            "episode_length": length, "critic_loss": metrics.get("training/critic_loss"),
            "actor_loss": metrics.get("training/actor_loss"), "log_alpha": metrics.get("training/log_alpha")}


# -- runs ------------------------------------------------------------------------------------------------------
def _stream(cmd: list[str], cwd: Path, env: dict, timeout_s: float, log: Path, on_line) -> dict:
    """Run `cmd` under nice/timeout; call on_line(line, seconds since launch) for each stdout line."""
    niceness = max(0, 15 - os.nice(0))  # nice 15 in all (not more: nice 19 starves beside other nice-15 work)
    full = ["timeout", "--kill-after=10", str(int(timeout_s)), "nice", "-n", str(niceness), *cmd]
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(full, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            on_line(line, time.time() - t0)
        rc = proc.wait()
    return {"returncode": rc, "timed_out": rc in (124, 137), "wall_s": round(time.time() - t0, 2)}


def run_reference(cfg: Config, seed: int, logs: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    cmd = reference_command(cfg, seed)
    rows: list[dict] = []

    def on_line(line: str, wall: float) -> None:
        metrics = parse_reference_line(line)
        if metrics is not None:
            rows.append(reference_row(metrics, wall))

    status = _stream(cmd, cfg.reference_src, env, cfg.timeout_min * 60, logs / f"reference_seed{seed}.log", on_line)
    losses = [r[k] for r in rows for k in ("critic_loss", "actor_loss")]
    return {"system": "reference", "seed": seed, "command": " ".join(cmd[1:]), "cwd": str(cfg.reference_src),
            "log": str(logs / f"reference_seed{seed}.log"),
            **status, "finite_losses": bool(losses) and all(x is not None and math.isfinite(x) for x in losses),
            "rows": rows}


def run_deepcrl(cfg: Config, seed: int, logs: Path) -> dict:
    kwargs = deepcrl_config(cfg, seed, logs / f"deepcrl_seed{seed}")
    cmd = [sys.executable, str(Path(__file__).absolute()), "--deepcrl-child", json.dumps(kwargs)]
    rows: list[dict] = []

    def on_line(line: str, wall: float) -> None:
        if line.startswith("VSREF "):
            record = json.loads(line[6:])
            ev = record["eval"]
            rows.append({"env_steps": record["env_steps"], "wall_s": round(wall, 2), "success": ev["success"],
                         "time_at_goal": ev["time_at_goal"], "final_distance": ev["final_distance"],
                         "episode_length": ev["episode_length"], "critic_loss": record.get("critic_loss"),
                         "actor_loss": record.get("actor_loss"),
                         "log_alpha": math.log(record["alpha"]) if record.get("alpha") else None})

    # JAX's persistent compilation cache: deepcrl's evaluation jits its rollout afresh on every call, so without
    # it each evaluation compiles again (minutes under load); the second seed also reuses the first one's programs.
    cache = logs / "jax_cache"
    warm = cache.is_dir() and any(cache.iterdir())
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache.absolute()),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    status = _stream(cmd, Path.cwd(), env, cfg.timeout_min * 60, logs / f"deepcrl_seed{seed}.log", on_line)
    status["compilation_cache"] = "warm" if warm else "cold"
    losses = [r[k] for r in rows for k in ("critic_loss", "actor_loss") if r.get(k) is not None]
    return {"system": "deepcrl", "seed": seed, "train_config": kwargs, "command": "deepcrl train " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in kwargs.items()), "log": str(logs / f"deepcrl_seed{seed}.log"),
        **status,
        "finite_losses": bool(losses) and all(math.isfinite(x) for x in losses), "rows": rows}


def _deepcrl_child(kwargs_json: str) -> None:
    """In the subprocess: train with deepcrl and print each evaluation record as one `VSREF {json}` line."""
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.train import train

    kwargs = json.loads(kwargs_json)

    def progress(record: dict) -> None:
        if "eval" in record:
            slim = {k: v for k, v in record.items() if k != "norms"}
            print("VSREF " + json.dumps(slim), flush=True)

    summary = train(TrainConfig(**kwargs), progress_fn=progress)
    print("deepcrl summary:", json.dumps({k: summary[k] for k in ("env_steps", "wall_s", "compile_s")}), flush=True)


# -- output ----------------------------------------------------------------------------------------------------
def differences(cfg: Config) -> list[str]:
    return [
        "physics: the reference runs ant on Brax 'spring' (0.005 s x 10 frames); deepcrl on MJX with Brax's ant "
        "model (0.01 s x 5 frames): same control period, different contact dynamics",
        f"the reference collects min_replay_size={cfg.min_replay} steps per env ({cfg.prefill_iterations()} "
        "unrolls) before its first SGD step; deepcrl has no prefill and runs its SGD steps from iteration 1, so at "
        f"equal env steps it has done {cfg.prefill_iterations() * cfg.sgd_steps} more SGD steps",
        "batches: the reference draws one whole-episode window per env per iteration and cuts SGD batches from "
        "those windows; deepcrl draws every batch uniformly over all stored transitions",
        "evaluation: the reference's time at goal stops counting when an ant falls (episode done), its success is "
        "'reached at some step'; deepcrl's success and time at goal are the same definitions over 1000 steps",
        "residual init: deepcrl runs with --residual-init reference (LayerNorm scale 1, as the reference)",
    ]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(11, 10.5))
    colors = {"reference": "tab:orange", "deepcrl": "tab:blue"}
    for run in results["runs"]:
        rows = run["rows"]
        if not rows:
            continue
        for col, xkey in enumerate(("env_steps", "wall_s")):
            for row_i, ykey in enumerate(("success", "time_at_goal", "critic_loss")):
                ax = axes[row_i][col]
                ax.plot([r[xkey] for r in rows], [r[ykey] for r in rows], "o-", color=colors[run["system"]],
                        alpha=0.8, label=f"{run['system']} seed {run['seed']}")
                ax.set_xlabel("env steps" if xkey == "env_steps" else "wall s (process launch to evaluation)")
                ax.set_ylabel({"success": "success (reached within 0.5 m)",
                               "time_at_goal": "time at goal (steps of 1000)",
                               "critic_loss": "critic loss (InfoNCE + 0.1 logsumexp^2)"}[ykey])
                ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    c = results["config"]
    fig.suptitle(f"ant (paper's task): reference train.py vs deepcrl train, depth {c['depth']} width {c['width']}, "
                 f"{c['num_envs']} envs x {c['unroll_length']}, batch {c['batch_size']}, {c['sgd_steps']} SGD/iter",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(cfg: Config) -> None:
    from deepcrl.bench.common import machine_facts, write_result

    if cfg.plot_only:
        plot(json.loads(cfg.out.read_text()), cfg.out.with_suffix(".png"))
        return
    if "reference" in cfg.systems and not (cfg.reference_src / "train.py").is_file():
        sys.exit(f"no reference checkout at {cfg.reference_src} (pass --reference-src)")
    if "reference" in cfg.systems and not (cfg.reference_venv / "bin" / "python").exists():
        sys.exit(f"no reference venv at {cfg.reference_venv} (scripts/provision-reference.sh)")
    logs = cfg.logs
    logs.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": "vs_reference", "task": {"reference": "ant", "deepcrl": "ant_ref"},
               "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
               "differences": differences(cfg),
               "machine": {**machine_facts(jax_devices=False), "nice": 15}, "runs": []}
    for seed in cfg.seeds:
        for system in cfg.systems:
            load = list(os.getloadavg())
            run = (run_reference if system == "reference" else run_deepcrl)(cfg, seed, logs)
            run.update(loadavg_before=[round(x, 2) for x in load], loadavg_after=[round(x, 2) for x in os.getloadavg()])
            results["runs"].append(run)
            write_result(cfg.out, results, jax_devices=False)
            plot(results, cfg.out.with_suffix(".png"))
            last = run["rows"][-1] if run["rows"] else {}
            print(f"{system} seed {seed}: rc {run['returncode']}, {run['wall_s']} s, finite {run['finite_losses']}, "
                  f"last {last}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--deepcrl-child":
        _deepcrl_child(sys.argv[2])
    else:
        main(tyro.cli(Config))
