"""Does landmark planning over the critic's learned distances fix long detours? point_maze_big, 3 teachers.

For each teacher run directory (one per seed):

- the cutoff (`quantiles` of the landmark pairs' learned distances), the patience and the give-up count
  (`PlannedPolicy`) are chosen per teacher on *validation* episodes (seed 500 + teacher seed, `val_episodes`;
  the best overall success), never on the test episodes;
- the test: the same `episodes` episodes (seed 1000 + teacher seed, as benchmarks/depth_big_maze.py's final
  evaluation) without and with planning: overall, detour-pair and direct-pair success; the stateless
  planner (no patience) on `diag_episodes` other episodes;
- why it does or does not pay: the Spearman rank correlation of the landmarks' learned pair distances with the
  maze's shortest path, the graph edges that jump a wall (their cells' shortest path > 1.5 x the straight
  line), the waypoint reach rate (landmarks pursued that the agent came within the success radius of), and the
  planner's decisions (steps toward a waypoint / the goal / unreachable);
- latency (exported critic run by ONNX Runtime, one row, N = `latency_landmarks`): the planner's added time per
  step with the goal's costs cached, the goal's first step (its costs computed), beside the policy's own step;
  and /v1/distance's work for K = 4096 goals (cold: psi of every goal; cached: one phi and K norms) for the
  teacher's critic and a student-size one (width 64, depth 4).

    python benchmarks/plan_maze.py --runs /work/runs/pmb_s0 /work/runs/pmb_s1 /work/runs/pmb_s2
Writes benchmarks/results/plan_maze.json and plan_maze.png (a planned detour over the maze).

`--critic student` plans with the student's distance head instead (a student distilled with ``--represent`` in
``<teacher run><student_suffix>``), on the same test episodes and with the cutoff quantile, patience and give-up
that the teacher-critic study chose per teacher (read from `settings`; no validation run), and writes
``<name>_student.json`` (the teacher-critic results stay): the teacher's policy alone and planned with the
student's head, and with `student_policy` the student's policy alone and planned with its own head.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from deepcrl.bench.common import machine_facts, write_result

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class PlanMazeConfig:
    """Success with and without landmark planning on point_maze_big, per teacher, with diagnostics and latency."""

    runs: tuple[Path, ...] = (Path("/work/runs/pmb_s0"), Path("/work/runs/pmb_s1"), Path("/work/runs/pmb_s2"))
    """Teacher run directories (one per seed; the seed is read from the directory's metrics)."""
    episodes: int = 1000
    """Test episodes per teacher (the same starts and goals with and without planning)."""
    diag_episodes: int = 200
    """Episodes of the stateless planner (no patience; seed 2000 + teacher seed): why patience is needed."""
    val_episodes: int = 300
    """Validation episodes per (cutoff, patience, give-up) candidate."""
    landmarks: int = 500
    """Landmarks (env coverage: reset states)."""
    quantiles: tuple[float, ...] = (0.04, 0.07)
    """Cutoff candidates: quantiles of the landmark pairs' learned distances."""
    patiences: tuple[int, ...] = (5, 10, 20)
    """Patience candidates (steps an episode may pursue one landmark; `PlannedPolicy`)."""
    give_ups: tuple[int, ...] = (0, 8, 16)
    """Give-up candidates (landmarks an episode may exhaust before it pursues its goal directly; 0: never)."""
    latency_landmarks: int = 500
    """Landmarks of the latency measurement."""
    distance_goals: int = 4096
    """Goals per /v1/distance call in the latency measurement."""
    latency: bool = True
    """Also time the planner step and /v1/distance (exports each critic twice; benchmarks/plan_latency.py
    compares the planner step before and after on its own)."""
    smoke: bool = False
    """Tiny sizes, to check the script end to end."""
    name: str = "plan_maze"
    """Result file stem in benchmarks/results/ (`--critic student` appends ``_student``)."""
    critic: Literal["teacher", "student"] = "teacher"
    """Whose distance head plans: the teacher's critic, or the student's (``<run><student_suffix>``)."""
    student_suffix: str = "_student"
    """With `--critic student`: the student run directory of a teacher run is its path plus this suffix."""
    settings: Path = RESULTS / "plan_maze.json"
    """With `--critic student`: the teacher-critic result whose per-teacher cutoff quantile, patience and give-up
    are reused (so the two critics are compared under the same settings, on the same test episodes)."""
    student_policy: bool = True
    """With `--critic student`: also run the student's own policy, alone and planned with its head."""


def run_episodes(env, policy, episodes: int, seed: int, record=None):
    """Host loop as `deepcrl.evaluate` (same starts and goals for a seed): per-episode reached, detour flags,
    positions [T+1, K, 2] and, with `record` (a PlannedPolicy), the landmark pursued per step [T, K]."""
    import jax
    import jax.numpy as jnp

    from deepcrl import envs

    spec = env.goal_spec
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(seed), episodes))
    step = jax.jit(jax.vmap(env.step))
    detour = np.asarray(state.info["detour"]) > 0
    reached = np.zeros(episodes, bool)
    pos, idx = [np.asarray(state.pipeline_state)], []
    for _ in range(spec.episode_length):
        obs, goal = (np.asarray(x) for x in envs.split_obs(spec, state.obs))
        state = step(state, jnp.asarray(policy(obs, goal), jnp.float32))
        reached |= np.asarray(state.metrics["success"]) > 0
        pos.append(np.asarray(state.pipeline_state))
        if record is not None:
            idx.append(record.last_index.copy())
    goals = np.asarray(state.info["goal"])
    return {"reached": reached, "detour": detour, "pos": np.stack(pos), "goal": goals,
            "index": np.stack(idx) if idx else None}


def rates(r: dict) -> dict:
    d, ok = r["detour"], r["reached"]
    return {"success": float(ok.mean()), "detour_success": float(ok[d].mean()) if d.any() else None,
            "direct_success": float(ok[~d].mean()) if (~d).any() else None, "detour_episodes": int(d.sum())}


def waypoint_reach(r: dict, landmark_goals: np.ndarray, radius: float) -> dict:
    """Landmarks pursued in an episode that the agent came within `radius` of, pooled over episodes."""
    pursued = reached = 0
    for k in range(r["index"].shape[1]):
        ids = np.unique(r["index"][:, k])
        ids = ids[ids >= 0]
        if not len(ids):
            continue
        d = np.linalg.norm(r["pos"][:, k, None, :] - landmark_goals[None, ids], axis=-1).min(axis=0)
        pursued += len(ids)
        reached += int((d <= radius).sum())
    return {"waypoints_pursued": pursued, "waypoint_reach_rate": reached / pursued if pursued else None}


def distance_quality(planner, walls) -> dict:
    """Learned pair distances vs the maze's shortest path, and graph edges that jump a wall."""
    from deepcrl.teacher.probe import maze_geometry, spearman

    geo = maze_geometry(walls)
    index = {tuple(rc): i for i, rc in enumerate(geo.cells)}
    cells = np.floor(planner.landmark_goals[:, ::-1]).astype(int)  # (x, y) -> (row, col)
    ci = np.array([index[tuple(c)] for c in cells])
    geod, eucl = geo.geodesic[ci[:, None], ci[None, :]], geo.euclidean[ci[:, None], ci[None, :]]
    off = ~np.eye(len(ci), dtype=bool) & (ci[:, None] != ci[None, :])
    edges = (planner.pairwise <= planner.cutoff) & ~np.eye(len(ci), dtype=bool)
    jump = edges & (geod > 1.5 * eucl + 1e-9)
    return {"spearman_learned_vs_geodesic": spearman(planner.pairwise[off], geod[off]),
            "spearman_learned_vs_straight_line": spearman(planner.pairwise[off], eucl[off]),
            "edges": int(edges.sum()), "wall_jumping_edges": int(jump.sum()),
            "wall_jumping_edge_frac": float(jump.sum() / max(1, edges.sum()))}


def latency(run_dir: Path, env, cfg: PlanMazeConfig, tmp: Path) -> dict:
    """Planner step (ONNX critic, one row) vs the policy's own step, and /v1/distance's work for K goals."""
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic
    from deepcrl.plan.critic import OnnxCritic
    from deepcrl.export.onnx import export
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.plan.planner import Planner, coverage_landmarks
    from deepcrl.serve.distance import DistanceModel

    def median_us(fn, n=300):
        for _ in range(10):
            fn()
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return float(np.median(t) * 1e6)

    critic_path, policy_path = tmp / f"{run_dir.name}_critic.onnx", tmp / f"{run_dir.name}_policy.onnx"
    export_critic(ExportConfig(run=run_dir, out=critic_path, part="critic"))
    export(ExportConfig(run=run_dir, out=policy_path))
    critic, policy = OnnxCritic(critic_path), OnnxPolicy(policy_path)
    obs, goals = coverage_landmarks(env, cfg.latency_landmarks, seed=3)
    planner = Planner(critic, obs, goals, cutoff_quantile=0.05)
    rng = np.random.default_rng(0)
    s, g = obs[:1] + 0.05, goals[7:8]
    planner.waypoints(s, g)
    fresh = iter(rng.uniform(1, 8, (100_000, 1, 2)).astype(np.float32))
    out = {"landmarks": cfg.latency_landmarks,
           "planner_step_us": median_us(lambda: planner.waypoints(s, g)),
           "planner_new_goal_us": median_us(lambda: planner.waypoints(s, next(fresh)), n=100),
           "policy_step_us": median_us(lambda: policy(s, g)),
           "critic_phi_1_row_us": median_us(lambda: critic.phi(s))}
    k_goals = rng.uniform(1, 8, (cfg.distance_goals, 2)).astype(np.float32)
    sizes = {"teacher": critic}
    small = tmp / "student_size_critic.onnx"
    sizes["student_size_w64_d4"] = OnnxCritic(_student_size_critic(run_dir, small))
    for name, c in sizes.items():
        dm = DistanceModel(c)
        out[f"distance_{cfg.distance_goals}_goals_cold_us_{name}"] = median_us(
            lambda: dm.distances(s, rng.uniform(1, 8, (cfg.distance_goals, 2)).astype(np.float32)), n=30)
        dm.distances(s, k_goals)
        out[f"distance_{cfg.distance_goals}_goals_cached_us_{name}"] = median_us(lambda: dm.distances(s, k_goals))
    return out


def _student_size_critic(run_dir: Path, out: Path) -> Path:
    """A critic file of student size (width 64, depth 4, repr 64; untrained weights: latency only)."""
    from flax import nnx

    from deepcrl import artifacts
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic
    from deepcrl.policy import init_artifact
    from deepcrl.teacher.networks import critic_from_config

    manifest, params = artifacts.load(run_dir)
    sizes = {"obs_size": manifest.obs_size, "goal_size": manifest.goal_size, "action_size": manifest.action_size}
    cfg = {**sizes, "depth": 4, "width": 64, "repr_size": 64}
    src = out.parent / "student_size_src"
    init_artifact(src, "teacher", manifest.env_id, {"depth": 4, "width": 64})
    m, p = artifacts.load(src)
    critic = critic_from_config(cfg)
    m = m.model_copy(update={"network": {**m.network, "critic": cfg}})
    artifacts.save(src, m, {**p, "critic": nnx.to_pure_dict(nnx.state(critic, nnx.Param))})
    export_critic(ExportConfig(run=src, out=out, part="critic"))
    return out


def teacher_seed(run_dir: Path) -> int:
    """The seed in the run directory's name (``..._s<seed>``), as this study names its teachers."""
    return int(run_dir.name.rsplit("_s", 1)[-1])


def one_teacher(run_dir: Path, cfg: PlanMazeConfig, tmp: Path) -> tuple[dict, dict]:
    from deepcrl import envs
    from deepcrl.plan.build import build_planner
    from deepcrl.plan.planner import PlannedPolicy
    from deepcrl.policy import load_policy

    env = envs.make("point_maze_big")
    seed = teacher_seed(run_dir)
    policy = load_policy(run_dir)
    out = {"run": str(run_dir), "seed": seed, "env_steps": json_step(run_dir), "validation": {}}
    candidates = [(q, p, g) for q in cfg.quantiles for p in cfg.patiences for g in cfg.give_ups]
    for q in (cfg.quantiles if len(candidates) > 1 else ()):  # one candidate: nothing to choose
        planner = build_planner(run_dir, env, cfg.landmarks, cutoff_quantile=q, seed=seed + 1)
        for p in cfg.patiences:
            for g in cfg.give_ups:
                r = run_episodes(env, PlannedPolicy(policy, planner, p, g), cfg.val_episodes, 500 + seed)
                out["validation"][f"q{q}_p{p}_g{g}"] = {**rates(r), "cutoff": planner.cutoff, "quantile": q,
                                                        "patience": p, "give_up": g}
    best = (max(out["validation"].values(), key=lambda v: v["success"]) if out["validation"] else
            dict(zip(("quantile", "patience", "give_up"), candidates[0])))
    base = run_episodes(env, policy, cfg.episodes, 1000 + seed)
    planner = build_planner(run_dir, env, cfg.landmarks, cutoff_quantile=best["quantile"], seed=seed + 1)
    # the same planner without patience: what the learned distances alone do (stateless, as /v1/plan serves)
    stateless = PlannedPolicy(policy, planner, 0)
    alone = run_episodes(env, stateless, cfg.diag_episodes, 2000 + seed, record=stateless)
    # the chosen patience without give-up (the method before give-up existed), on the test episodes
    no_give_up = (run_episodes(env, PlannedPolicy(policy, planner, best["patience"], 0), cfg.episodes, 1000 + seed)
                  if best["give_up"] else None)
    planner.stats = type(planner.stats)()
    planned = PlannedPolicy(policy, planner, best["patience"], best["give_up"])
    t0 = time.perf_counter()
    plan = run_episodes(env, planned, cfg.episodes, 1000 + seed, record=planned)
    radius = env.goal_spec.success_radius
    out.update(cutoff_quantile=best["quantile"], patience=best["patience"], give_up=best["give_up"],
               plan_eval_s=round(time.perf_counter() - t0, 1), base=rates(base),
               plan_no_patience={**rates(alone), **waypoint_reach(alone, planner.landmark_goals, radius)},
               plan={**rates(plan), **waypoint_reach(plan, planner.landmark_goals, radius)},
               plan_no_give_up=rates(no_give_up if no_give_up is not None else plan),
               planner=planner.summary(), distance_quality=distance_quality(planner, env.walls),
               latency=latency(run_dir, env, cfg, tmp) if cfg.latency else None)
    return out, {"base": base, "plan": plan, "planner": planner, "env": env}


def json_step(run_dir: Path) -> int:
    import json

    return int(json.loads((run_dir / "manifest.json").read_text()).get("step", 0))


def _stats(values: list) -> dict | None:
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "values": v} if v else None


def plot(trace: dict, path: Path) -> Path:
    """One test episode, a detour pair the plan solved (the base policy's failure, if there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base, plan, planner, env = trace["base"], trace["plan"], trace["planner"], trace["env"]
    pick = np.nonzero(plan["detour"] & plan["reached"] & ~base["reached"])[0]
    pick = pick if len(pick) else np.nonzero(plan["detour"])[0]
    k = int(pick[0]) if len(pick) else 0
    walls = env.walls
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(walls, origin="lower", cmap="Greys", extent=(0, walls.shape[1], 0, walls.shape[0]), alpha=0.8)
    lg = planner.landmark_goals
    i, j = np.nonzero((planner.pairwise <= planner.cutoff) & ~np.eye(len(lg), dtype=bool))
    sel = np.random.default_rng(0).choice(len(i), size=min(len(i), 1500), replace=False)
    for a, b in zip(i[sel], j[sel]):
        ax.plot(*zip(lg[a], lg[b]), color="tab:blue", lw=0.3, alpha=0.25)
    ax.scatter(*lg.T, s=6, color="tab:blue", label=f"landmarks ({len(lg)}; {len(sel)} of {len(i)} edges drawn)")
    ax.plot(*base["pos"][:, k].T, color="tab:red", lw=1.5, label="without planning")
    ax.plot(*plan["pos"][:, k].T, color="tab:green", lw=2, label="with planning")
    ids = [x for x in dict.fromkeys(plan["index"][:, k].tolist()) if x >= 0]
    if ids:
        ax.scatter(*lg[ids].T, s=40, marker="D", color="orange", edgecolor="k", zorder=5,
                   label=f"waypoints pursued ({len(ids)})")
    ax.plot(*plan["pos"][0, k], "o", color="k", ms=9, label="start")
    ax.plot(*plan["goal"][k], "*", color="gold", ms=18, markeredgecolor="k", label="goal")
    ax.set(xlim=(0, walls.shape[1]), ylim=(0, walls.shape[0]), title=f"point_maze_big: episode {k} (a detour pair)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summarise(cfg: PlanMazeConfig, teachers: list[dict], load_start) -> dict:
    """Mean and spread over the teachers so far, and the targets."""
    table = {}
    for cond in ("base", "plan_no_patience", "plan_no_give_up", "plan"):
        for k in ("success", "detour_success", "direct_success"):
            table[f"{cond}_{k}"] = _stats([t[cond][k] for t in teachers])
    table["detour_success_ratio"] = _stats([t["plan"]["detour_success"] / t["base"]["detour_success"]
                                            for t in teachers if t["base"]["detour_success"]])
    for k in ("planner_step_us", "planner_new_goal_us", "policy_step_us"):
        table[k] = _stats([t["latency"][k] for t in teachers if t["latency"]])
    ratio = table["detour_success_ratio"]
    return {"config": {k: (list(map(str, v)) if k == "runs" else v) for k, v in dataclasses.asdict(cfg).items()},
            "machine": {**machine_facts(), "loadavg_start": list(load_start)}, "table": table,
            "teachers": teachers, "png": str(RESULTS / f"{cfg.name}.png"),
            "targets": {"detour_success_doubled": bool(ratio and ratio["mean"] >= 2.0),
                        "overall_success_at_least_0.85": table["plan_success"]["mean"] >= 0.85,
                        "planner_step_at_most_100_us": (table["planner_step_us"]["mean"] <= 100
                                                        if table["planner_step_us"] else None)}}


def critic_params(run_dir: Path) -> int:
    """Parameters of a run directory's critic (a teacher's phi and psi encoders, or a student's distance head)."""
    import jax

    from deepcrl import artifacts

    _, params = artifacts.load(run_dir)
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params["critic"])))


def one_student(run_dir: Path, cfg: PlanMazeConfig, chosen: dict) -> tuple[dict, dict]:
    """The teacher's policy planned with the student's distance head (and the student's policy), `chosen`
    settings (the teacher-critic study's cutoff quantile, patience and give-up), the same test episodes."""
    from deepcrl import envs
    from deepcrl.plan.build import build_planner
    from deepcrl.plan.planner import PlannedPolicy
    from deepcrl.policy import load_policy

    env = envs.make("point_maze_big")
    seed = teacher_seed(run_dir)
    student_dir = Path(f"{run_dir}{cfg.student_suffix}")
    q, p, g = chosen["cutoff_quantile"], chosen["patience"], chosen["give_up"]
    radius = env.goal_spec.success_radius
    out = {"run": str(run_dir), "student": str(student_dir), "seed": seed, "cutoff_quantile": q, "patience": p,
           "give_up": g, "critic_params_teacher": critic_params(run_dir),
           "critic_params_student": critic_params(student_dir),
           "teacher_critic_plan": chosen["plan"], "teacher_critic_base": chosen["base"]}
    planner = build_planner(student_dir, env, cfg.landmarks, cutoff_quantile=q, seed=seed + 1)
    policies = {"": load_policy(run_dir)}
    if cfg.student_policy:
        policies["student_policy_"] = load_policy(student_dir)
    trace = {"planner": planner, "env": env}
    for prefix, policy in policies.items():
        base = run_episodes(env, policy, cfg.episodes, 1000 + seed)
        planner.stats = type(planner.stats)()
        planned = PlannedPolicy(policy, planner, p, g)
        t0 = time.perf_counter()
        plan = run_episodes(env, planned, cfg.episodes, 1000 + seed, record=planned)
        out[f"{prefix}base"] = rates(base)
        out[f"{prefix}plan"] = {**rates(plan), **waypoint_reach(plan, planner.landmark_goals, radius),
                                "eval_s": round(time.perf_counter() - t0, 1), "planner": planner.summary()}
        if not prefix:
            trace.update(base=base, plan=plan)
    out.update(cutoff=planner.cutoff, distance_quality=distance_quality(planner, env.walls))
    return out, trace


def summarise_student(cfg: PlanMazeConfig, rows: list[dict], load_start) -> dict:
    import os

    table = {}
    conds = ["teacher_critic_base", "teacher_critic_plan", "base", "plan"]
    conds += ["student_policy_base", "student_policy_plan"] if cfg.student_policy else []
    for cond in conds:
        for k in ("success", "detour_success", "direct_success"):
            table[f"{cond}_{k}"] = _stats([r[cond][k] for r in rows])
    for k in ("critic_params_teacher", "critic_params_student"):
        table[k] = _stats([r[k] for r in rows])
    for k in ("spearman_learned_vs_geodesic", "wall_jumping_edges"):
        table[f"student_head_{k}"] = _stats([r["distance_quality"][k] for r in rows])
    return {"config": {k: (list(map(str, v)) if k == "runs" else str(v) if isinstance(v, Path) else v)
                       for k, v in dataclasses.asdict(cfg).items()},
            "machine": {**machine_facts(), "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
            "table": table, "teachers": rows, "png": str(RESULTS / f"{cfg.name}_student.png")}


def main_student(cfg: PlanMazeConfig) -> dict:
    import json
    import os

    load_start = os.getloadavg()
    chosen = {t["run"]: t for t in json.loads(Path(cfg.settings).read_text())["teachers"]}
    rows, result = [], {}
    for run_dir in cfg.runs:
        if str(run_dir) not in chosen:
            raise SystemExit(f"{cfg.settings} has no settings for {run_dir}; run the teacher-critic study first.")
        row, trace = one_student(Path(run_dir), cfg, chosen[str(run_dir)])
        rows.append(row)
        print(f"{run_dir}: student head: base {row['base']['success']:.3f} plan {row['plan']['success']:.3f} "
              f"(teacher critic {row['teacher_critic_plan']['success']:.3f}) q={row['cutoff_quantile']} "
              f"p={row['patience']} g={row['give_up']}", flush=True)
        if len(rows) == 1:
            plot(trace, RESULTS / f"{cfg.name}_student.png")
        result = summarise_student(cfg, rows, load_start)
        write_result(RESULTS / f"{cfg.name}_student.json", result)
    return result


def main(cfg: PlanMazeConfig) -> dict:
    import os
    import tempfile

    if cfg.critic == "student":
        if cfg.smoke:
            cfg = dataclasses.replace(cfg, episodes=32, landmarks=60, name=f"{cfg.name}_smoke")
        return main_student(cfg)
    if cfg.smoke:
        cfg = dataclasses.replace(cfg, episodes=32, val_episodes=16, diag_episodes=16, landmarks=60, quantiles=(0.05,),
                                  patiences=(5, 10), give_ups=(0, 4), latency_landmarks=60, distance_goals=64)
    load_start = os.getloadavg()
    teachers, result = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in cfg.runs:
            row, trace = one_teacher(Path(run_dir), cfg, Path(tmp))
            teachers.append(row)
            print(f"{run_dir}: base {row['base']} plan {row['plan']} q={row['cutoff_quantile']} "
                  f"p={row['patience']} g={row['give_up']}", flush=True)
            if len(teachers) == 1:
                plot(trace, RESULTS / f"{cfg.name}.png")
            result = summarise(cfg, teachers, load_start)  # written after every teacher: a partial study counts
            write_result(RESULTS / f"{cfg.name}.json", result)
    return result


if __name__ == "__main__":
    main(tyro.cli(PlanMazeConfig))
