"""`deepcrl eval`: score any policy (teacher, student, .onnx, or a running server) in the simulator."""

from __future__ import annotations

import os

from deepcrl.cli import print_json
from deepcrl.config import EvalConfig


def run(cfg: EvalConfig) -> int:
    probe = None
    if cfg.probe:  # first: a student or a non-maze env is refused before anything is evaluated
        from deepcrl.artifacts import PROBE_PNG
        from deepcrl.teacher.probe import probe_run

        probe = probe_run(cfg.run, png=cfg.probe_png or cfg.run / PROBE_PNG, action=cfg.probe_action)
    policy, env_id, source = _policy(cfg)
    from deepcrl import envs
    from deepcrl.evaluate import evaluate

    env = envs.make(env_id)
    planner = None
    if cfg.plan:
        from deepcrl.plan.build import build_planner
        from deepcrl.plan.planner import PlannedPolicy

        planner = build_planner(cfg.plan_critic or cfg.run, env, cfg.plan_landmarks, cfg.plan_cutoff,
                                cfg.plan_cutoff_quantile, seed=cfg.seed + 1)
        policy = PlannedPolicy(policy, planner, cfg.plan_patience, cfg.plan_give_up)
    result = evaluate(env, policy, episodes=cfg.eval_episodes, seed=cfg.seed, episode_length=cfg.episode_length)
    out = {"source": source, "env": env_id, "seed": cfg.seed, **result.as_dict()}
    if planner is not None:
        out["plan"] = planner.summary()
    if cfg.render:
        from deepcrl.evaluate import render_episode

        out["render"] = str(render_episode(env, policy, cfg.render, seed=cfg.seed,
                                           episode_length=cfg.episode_length))
    if probe is not None:
        out["probe"] = probe
    if cfg.json:
        print_json(out)
    else:
        _print_table(out)
    return 0


def _policy(cfg: EvalConfig):
    from deepcrl.errors import DeepcrlError
    from deepcrl.policy import open_policy

    token = os.environ.get(cfg.token_env) if cfg.token_env else None
    if cfg.token_env and token is None:
        raise DeepcrlError(f"the environment variable {cfg.token_env} is not set.")
    tls = {"ca": cfg.tls_ca, "cert": cfg.tls_client_cert, "key": cfg.tls_client_key}
    opened = open_policy(run=cfg.run, model=cfg.model, url=cfg.url, token=token, model_name=cfg.model_name,
                         protocol=cfg.protocol, tls={k: v for k, v in tls.items() if v is not None})
    env_id = cfg.env or opened.env_id
    if not env_id:
        where = f"the server at {cfg.url}" if cfg.url else str(cfg.model)
        raise DeepcrlError(f"{where} names no env; pass --env ID.")
    return opened.policy, env_id, opened.source


def _print_table(out: dict) -> None:
    from rich.table import Table

    from deepcrl.cli import console

    table = Table(title=f"{out['source']} on {out['env']} ({out['episodes']} episodes, seed {out['seed']})")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    table.add_row("success (reached the goal)", pct(out["success"]))
    table.add_row("success at the last step", pct(out["final_success"]))
    table.add_row("time at goal", f"{out['time_at_goal']:.1f} / {out['episode_length']} steps")
    table.add_row("final distance", f"{out['final_distance']:.3f}")
    if out["detour_episodes"]:
        table.add_row(f"detour pairs ({out['detour_episodes']})", pct(out["detour_success"]))
        table.add_row(f"direct pairs ({out['episodes'] - out['detour_episodes']})", pct(out["direct_success"]))
    if out.get("render"):
        table.add_row("replay", out["render"])
    plan = out.get("plan")
    if plan:
        steps = max(1, plan["steps"])
        table.add_row(f"plan: landmarks / edges (cutoff {plan['cutoff']:.3g})", f"{plan['landmarks']} / {plan['edges']}")
        table.add_row("plan: steps toward a waypoint / the goal / unreachable",
                      f"{pct(plan['waypoint_steps'] / steps)} / {pct(plan['direct_steps'] / steps)} / "
                      f"{pct(plan['unreachable_steps'] / steps)}")
    probe = out.get("probe")
    if probe:
        def rho(v):
            return "n/a" if v is None else f"{v:+.3f}"  # None: too few pairs (no detours in an open arena)

        table.add_row(f"probe: Spearman, geodesic ({probe['pairs']} pairs)", rho(probe["spearman_geodesic"]))
        table.add_row("probe: Spearman, straight line", rho(probe["spearman_euclidean"]))
        table.add_row(f"probe: detour pairs ({probe['detour_pairs']}), geodesic / line",
                      f"{rho(probe['spearman_geodesic_detour'])} / {rho(probe['spearman_euclidean_detour'])}")
        table.add_row("probe: heatmap", str(probe["png"]))
    console().print(table)
