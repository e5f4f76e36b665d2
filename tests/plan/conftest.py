"""A teacher artifact with an untrained critic (seconds to make): what export and the planner read."""

from __future__ import annotations

import pytest


def _save_fresh(path, kind: str, networks, actor_cfg: dict, critic_cfg: dict):
    """Save freshly initialised actor and critic of `networks` (a networks module) as a `kind` artifact."""
    from flax import nnx

    from deepcrl import artifacts

    sizes = {k: actor_cfg[k] for k in ("obs_size", "goal_size", "action_size")}
    actor, critic = networks.actor_from_config(actor_cfg, seed=0), networks.critic_from_config(critic_cfg, seed=1)
    manifest = artifacts.Manifest(kind=kind, env_id="point_maze", network={"actor": actor_cfg, "critic": critic_cfg},
                                  **sizes)
    artifacts.save(path, manifest, {"actor": nnx.to_pure_dict(nnx.state(actor, nnx.Param)),
                                    "critic": nnx.to_pure_dict(nnx.state(critic, nnx.Param))})
    return path


@pytest.fixture(scope="session")
def fresh_teacher_dir(tmp_path_factory):
    """A point_maze teacher artifact (depth 4, width 32 actor and critic, repr 16), freshly initialised."""
    from deepcrl.teacher import networks

    sizes = {"obs_size": 2, "goal_size": 2, "action_size": 2}
    return _save_fresh(tmp_path_factory.mktemp("plan") / "fresh_teacher", "teacher", networks,
                       {**sizes, "depth": 4, "width": 32}, {**sizes, "depth": 4, "width": 32, "repr_size": 16})


@pytest.fixture(scope="session")
def fresh_student_dir(tmp_path_factory):
    """A student artifact: a policy only, no critic (no distance head)."""
    from deepcrl.policy import init_artifact

    path = tmp_path_factory.mktemp("plan") / "fresh_student"
    init_artifact(path, "student", "point_maze", {"hidden": [16, 16]})
    return path


@pytest.fixture(scope="session")
def critic_onnx(fresh_teacher_dir, tmp_path_factory):
    """`deepcrl export --part critic` of the fresh teacher: (report, path)."""
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.critic import export_critic

    out = tmp_path_factory.mktemp("plan") / "critic.onnx"
    return export_critic(ExportConfig(run=fresh_teacher_dir, out=out, part="critic")), out


@pytest.fixture(scope="session")
def student_with_head_dir(tmp_path_factory):
    """A student artifact with a distance head (as `distill --represent` saves it): actor and shallow encoders."""
    from deepcrl.student import networks

    sizes = {"obs_size": 2, "goal_size": 2, "action_size": 2}
    return _save_fresh(tmp_path_factory.mktemp("plan") / "student_with_head", "student", networks,
                       {**sizes, "hidden": [16, 16]},
                       {**sizes, "hidden": [16, 16], "layer_norm": False, "repr_size": 8})
