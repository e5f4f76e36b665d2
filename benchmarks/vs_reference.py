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

from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).absolute().parent))  # run as a script or loaded by path (tests)
from vs_reference_envs import baselines, patch_deepcrl_reacher_gear  # noqa: E402

_ENVS_SCRIPT = Path(__file__).absolute().with_name("vs_reference_envs.py")  # runs in the reference's venv

_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepcrl"


@dataclasses.dataclass(frozen=True)
class Config:
    """Train the reference and deepcrl on one of the paper's tasks with one config; compare their learning curves."""

    env: Literal["ant", "reacher"] = "ant"
    """The paper's task: reference `--env_id ENV`, deepcrl `--env ENV_ref`."""

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
    out: Path | None = None
    """JSON output; the plot goes beside it (.png). Default benchmarks/results/vs_reference.json for ant,
    vs_reference_ENV.json for another task."""
    logs: Path | None = None
    """Each run's full output (LEARNER_seedS.log) and deepcrl's run directories (default runs/vs_reference for
    ant, runs/vs_reference_ENV for another task)."""
    append: bool = False
    """Keep the runs already in the output JSON and add these (its config must equal this one but for seeds); a
    run of the same learner and seed replaces the stored one, which moves to `superseded_runs`."""
    plot_only: bool = False
    """Only redraw the PNG from the JSON."""
    deepcrl_reacher_gear: float | None = None
    """Diagnostic: give deepcrl's reacher_ref this actuator gear instead of its own (`ReacherRef.GEAR`, 50: the
    reference arm's speed under random actions; Brax's XML has 200, 3.9x faster). The gear used goes in the JSON."""
    baseline_only: bool = False
    """Only measure the baselines (uniform random and zero actions in deepcrl's ENV_ref) into the JSON, then redraw."""
    baseline_episodes: int = 64
    """Episodes of each baseline."""

    def out_path(self) -> Path:
        suffix = "" if self.env == "ant" else f"_{self.env}"
        return self.out or Path(f"benchmarks/results/vs_reference{suffix}.json")

    def logs_path(self) -> Path:
        return self.logs or Path("runs/vs_reference" + ("" if self.env == "ant" else f"_{self.env}"))

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
    # reacher: train.py through the dt fix (vs_reference_envs.patch_reference_reacher); ant: train.py as it is
    entry = ["train.py"] if cfg.env == "ant" else [str(_ENVS_SCRIPT), "--reference-reacher-dt-fix"]
    return [str(cfg.reference_venv / "bin" / "python"), *entry, "--env_id", cfg.env, "--seed", str(seed),
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
    return dict(env=f"{cfg.env}_ref", out=str(out), steps=cfg.total_env_steps(), depth=cfg.depth, width=cfg.width,
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
    child = {**kwargs, "_reacher_gear": cfg.deepcrl_reacher_gear} if cfg.deepcrl_reacher_gear else kwargs
    cmd = [sys.executable, str(Path(__file__).absolute()), "--deepcrl-child", json.dumps(child)]
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
    gear = kwargs.pop("_reacher_gear", None)
    if gear:
        patch_deepcrl_reacher_gear(gear)

    def progress(record: dict) -> None:
        if "eval" in record:
            slim = {k: v for k, v in record.items() if k != "norms"}
            print("VSREF " + json.dumps(slim), flush=True)

    summary = train(TrainConfig(**kwargs), progress_fn=progress)
    print("deepcrl summary:", json.dumps({k: summary[k] for k in ("env_steps", "wall_s", "compile_s")}), flush=True)


# -- output ----------------------------------------------------------------------------------------------------
def deepcrl_reacher_gear(cfg: Config) -> float:
    """The actuator gear deepcrl's reacher_ref runs with (the override, else `ReacherRef.GEAR`)."""
    from deepcrl.envs.scaling_crl import ReacherRef

    return float(cfg.deepcrl_reacher_gear or getattr(ReacherRef, "GEAR", 200.0))


def differences(cfg: Config) -> list[str]:
    physics = {
        "ant": "physics: the reference runs ant on Brax 'spring' (0.005 s x 10 frames); deepcrl on MJX with Brax's "
               "ant model (0.01 s x 5 frames): same control period, different contact dynamics",
        "reacher": "physics: the reference runs reacher on Brax 'spring' (0.005 s x 4 frames, gear 25); deepcrl on "
                   f"MJX with Brax's reacher model (0.01 s x 2 frames) at gear {deepcrl_reacher_gear(cfg):g}: same "
                   "control period, different dynamics. The "
                   "reference's reacher runs with sys.dt = 0.005 set the way Brax 0.10.1 reads it (its own code sets "
                   "opt.timestep, which spring ignores under its pin: dt stays 0.01 and the arm diverges to NaN within "
                   "a few steps even at zero action); see vs_reference_envs.patch_reference_reacher",
    }[cfg.env]
    out = [
        physics,
        f"the reference collects min_replay_size={cfg.min_replay} steps per env ({cfg.prefill_iterations()} "
        "unrolls) before its first SGD step; deepcrl has no prefill and runs its SGD steps from iteration 1, so at "
        f"equal env steps it has done {cfg.prefill_iterations() * cfg.sgd_steps} more SGD steps",
        "batches: the reference draws one whole-episode window per env per iteration and cuts SGD batches from "
        "those windows; deepcrl draws every batch uniformly over all stored transitions",
        "residual init: deepcrl runs with --residual-init reference (LayerNorm scale 1, as the reference)",
    ]
    if cfg.env == "ant":
        out.append("evaluation: the reference's time at goal stops counting when an ant falls (episode done), its "
                   "success is 'reached at some step'; deepcrl's success and time at goal are the same definitions "
                   "over 1000 steps")
    else:
        out.append("evaluation: both count success as 'tip within 0.05 of the target at some step' and time at goal "
                   "as the steps within 0.05, over 1000 steps without termination")
    return out


_LABELS = {"success": "success (reached the goal)", "time_at_goal": "time at goal (steps of 1000)",
           "critic_loss": "critic loss (InfoNCE + 0.1 logsumexp^2)"}


def curves(results: dict) -> dict:
    """Per learner, per evaluation index: env steps, mean wall s and mean / min / max over seeds of success, time at
    goal and critic loss (seeds that reached that evaluation; `seeds` says how many)."""
    out: dict = {}
    for system in dict.fromkeys(r["system"] for r in results["runs"]):
        runs = [r["rows"] for r in results["runs"] if r["system"] == system and r["rows"]]
        points = []
        for i in range(max((len(rows) for rows in runs), default=0)):
            at = [rows[i] for rows in runs if len(rows) > i]
            point = {"env_steps": at[0]["env_steps"], "seeds": len(at),
                     "wall_s": round(sum(r["wall_s"] for r in at) / len(at), 1)}
            for key in _LABELS:
                vals = [r[key] for r in at if r.get(key) is not None]
                if vals:
                    point[key] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
            points.append(point)
        out[system] = points
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(11, 10.5))
    colors = {"reference": "tab:orange", "deepcrl": "tab:blue"}
    for system, points in curves(results).items():
        n = max((p["seeds"] for p in points), default=0)
        for col, xkey in enumerate(("env_steps", "wall_s")):
            for row_i, ykey in enumerate(_LABELS):
                ax = axes[row_i][col]
                pts = [p for p in points if ykey in p]
                xs = [p[xkey] for p in pts]
                ax.fill_between(xs, [p[ykey]["min"] for p in pts], [p[ykey]["max"] for p in pts],
                                color=colors[system], alpha=0.2, lw=0)
                ax.plot(xs, [p[ykey]["mean"] for p in pts], "o-", ms=3, color=colors[system],
                        label=f"{system}: mean of {n} seeds, band min-max")
                ax.set_xlabel("env steps" if xkey == "env_steps" else "wall s (process launch to evaluation; "
                              "mean over seeds)")
                ax.set_ylabel(_LABELS[ykey])
                ax.grid(alpha=0.3)
    for system, bases in results.get("baselines", {}).items():
        base = bases["uniform_random"]
        for row_i, ykey in enumerate(("success", "time_at_goal")):
            for ax in axes[row_i]:
                ax.axhline(base[ykey], color=colors[system], ls="--", lw=1,
                           label=f"uniform random actions in {system}'s env ({base['episodes']} episodes)")
    axes[0][0].legend(fontsize=8)
    c = results["config"]
    gear = results["task"].get("deepcrl_reacher_gear")
    task = f"{c.get('env', 'ant')} (paper's task{f'; deepcrl arm gear {gear:g}' if gear else ''})"
    fig.suptitle(f"{task}: reference train.py vs deepcrl train, depth {c['depth']} "
                 f"width {c['width']}, {c['num_envs']} envs x {c['unroll_length']}, batch {c['batch_size']}, "
                 f"{c['sgd_steps']} SGD/iter", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_RUN_ONLY = ("seeds", "systems", "append", "plot_only", "baseline_only", "baseline_episodes", "out", "logs",
             "timeout_min", "reference_src", "reference_venv")


def main(cfg: Config) -> None:
    from deepcrl.bench.common import machine_facts, write_result

    out = cfg.out_path()
    if cfg.plot_only:
        plot(json.loads(out.read_text()), out.with_suffix(".png"))
        return
    if cfg.baseline_only:
        base = baselines(cfg.env, cfg.baseline_episodes, cfg.deepcrl_reacher_gear,
                         str(cfg.reference_venv / "bin" / "python"), str(cfg.reference_src))
        results = {**json.loads(out.read_text()), "baselines": base}
        write_result(out, results, jax_devices=False)
        plot(results, out.with_suffix(".png"))
        print(json.dumps(results["baselines"]))
        return
    if "reference" in cfg.systems and not (cfg.reference_src / "train.py").is_file():
        sys.exit(f"no reference checkout at {cfg.reference_src} (pass --reference-src)")
    if "reference" in cfg.systems and not (cfg.reference_venv / "bin" / "python").exists():
        sys.exit(f"no reference venv at {cfg.reference_venv} (scripts/provision-reference.sh)")
    logs = cfg.logs_path()
    logs.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    task = {"reference": cfg.env, "deepcrl": f"{cfg.env}_ref"}
    if cfg.env == "reacher":
        task["deepcrl_reacher_gear"] = deepcrl_reacher_gear(cfg)
    results = {"benchmark": "vs_reference", "task": task,
               "config": config, "differences": differences(cfg),
               "machine": {**machine_facts(jax_devices=False), "nice": 15}, "runs": []}
    if cfg.append and out.is_file():
        old = json.loads(out.read_text())
        changed = [k for k in config if k not in _RUN_ONLY and old["config"].get(k, config[k]) != config[k]]
        if changed:
            sys.exit(f"--append: {out} was run with another {', '.join(changed)}")
        planned = {(system, seed) for system in cfg.systems for seed in cfg.seeds}
        config["seeds"] = sorted({*old["config"]["seeds"], *cfg.seeds})
        config["systems"] = list(dict.fromkeys([*old["config"]["systems"], *cfg.systems]))
        results["runs"] = [r for r in old["runs"] if (r["system"], r["seed"]) not in planned]
        results["superseded_runs"] = old.get("superseded_runs", []) + [
            {**r, "superseded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            for r in old["runs"] if (r["system"], r["seed"]) in planned]
        if "baselines" in old:
            results["baselines"] = old["baselines"]
    for seed in cfg.seeds:
        for system in cfg.systems:
            load = list(os.getloadavg())
            run = (run_reference if system == "reference" else run_deepcrl)(cfg, seed, logs)
            run.update(loadavg_before=[round(x, 2) for x in load], loadavg_after=[round(x, 2) for x in os.getloadavg()])
            results["runs"].append(run)
            results["curves"] = curves(results)
            write_result(out, results, jax_devices=False)
            plot(results, out.with_suffix(".png"))
            last = run["rows"][-1] if run["rows"] else {}
            print(f"{system} seed {seed}: rc {run['returncode']}, {run['wall_s']} s, finite {run['finite_losses']}, "
                  f"last {last}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--deepcrl-child":
        _deepcrl_child(sys.argv[2])
    else:
        main(tyro.cli(Config))
