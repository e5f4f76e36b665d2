"""Shared, session-scoped fixtures: each trained or exported artifact is made once per test run.

Sections are owned by the stage that produces the artifact; later stages use those fixtures instead of
training their own, which keeps the suite within its CPU budget.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from deepcrl._logging import quiet  # noqa: E402


# ---- prerequisites of the slow checks (scripts/provision-slow-checks.sh) ------------------------------------

PROVISION = "scripts/provision-slow-checks.sh"
REQUIRE_PREREQS = "DEEPCRL_REQUIRE_SLOW_PREREQS"  # .ci/run sets it to 1: a missing prerequisite fails the test


def cache_dir() -> Path:
    """Where the provisioning script puts the slow checks' virtualenvs: $DEEPCRL_CACHE_DIR, else
    ${XDG_CACHE_HOME:-~/.cache}/deepcrl."""
    if os.environ.get("DEEPCRL_CACHE_DIR"):
        return Path(os.environ["DEEPCRL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deepcrl"


@pytest.fixture(scope="session")
def missing_prerequisite():
    """`missing_prerequisite(sentence)`: in the full run (DEEPCRL_REQUIRE_SLOW_PREREQS=1, as .ci/run sets) the
    test fails with that sentence, since a skipped check cannot fail; elsewhere it is skipped and says how to
    provision it."""

    def missing(sentence: str):
        if os.environ.get(REQUIRE_PREREQS) == "1":
            pytest.fail(f"{sentence}; run `{PROVISION}` (the full run requires every slow check's prerequisites).",
                        pytrace=False)
        pytest.skip(f"{sentence}; run `{PROVISION}` to provision it, then "
                    "`python -m pytest -q -m 'not gpu and not reference'` (the full run)")

    return missing


@pytest.fixture(scope="session")
def venvs_dir() -> Path:
    """The provisioned virtualenvs: cache_dir() / "venvs"."""
    return cache_dir() / "venvs"


@pytest.fixture(scope="session", autouse=True)
def _quiet_libraries():
    """The chatty libraries stay quiet for the whole run, as they do under the CLI."""
    with quiet():
        yield

# ---- running in parallel (the README's quick command: `-n auto`, pytest-xdist) ---------------------------------

# Each xdist worker builds the session fixtures it needs. Tests that share an expensive trained artifact are kept
# on one worker (`--dist loadgroup`, in the README's command), so it is trained once while the other workers run
# the rest; everything else is balanced freely. The serve tests' `policy_onnx` asks for `tiny_onnx` at run time,
# so it is named here too.
_GROUPS = {"tiny_teacher_run": "tiny_teacher", "policy_onnx": "tiny_teacher", "oracle_teacher_dir": "oracle_teacher"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in _GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                break


# ---- foundation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def point_maze():
    from deepcrl import envs

    return envs.make("point_maze")


# ---- teacher (tiny_teacher_dir) -----------------------------------------------------------------------------

# A few seconds of training on the U-maze: enough to beat the random policy clearly (see tests/teacher).
TINY_TEACHER = dict(env="point_maze", depth=4, width=64, num_envs=32, batch_size=256, unroll_length=20,
                    sgd_steps=64, replay_capacity=200, steps=6400, eval_every=5, eval_episodes=128, seed=0,
                    actor_random_goal_frac=0.0)


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory):
    """(summary, run dir) of a teacher trained for 10 iterations (6,400 env steps) on point_maze."""
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher.train import train

    out = tmp_path_factory.mktemp("teacher") / "tiny_teacher"
    summary = train(TrainConfig(out=out, **TINY_TEACHER))
    return summary, out


@pytest.fixture(scope="session")
def tiny_teacher_dir(tiny_teacher_run):
    """Run directory of a tiny trained teacher (artifact, metrics.jsonl, curves.png, train_state/)."""
    return tiny_teacher_run[1]


# ---- student (tiny_student_dir) -----------------------------------------------------------------------------


def _greedy_oracle(obs, goal):
    """Head for the goal at full speed: solves every point_maze pair whose straight line is free."""
    import jax.numpy as jnp

    return jnp.clip(3.0 * (goal - obs), -0.95, 0.95)


@pytest.fixture(scope="session")
def oracle_teacher_dir(tmp_path_factory):
    """A teacher artifact (teacher networks, depth 4, width 64) whose actor was regressed onto a greedy
    go-to-goal controller for ~2 s: a competent, deterministic teacher for distillation tests, independent of
    how well a few seconds of RL train one. Its critic is freshly initialised."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from deepcrl import artifacts
    from deepcrl.student.losses import action_mse
    from deepcrl.teacher.networks import actor_from_config, critic_from_config

    sizes = {"obs_size": 2, "goal_size": 2, "action_size": 2}
    actor_cfg = {**sizes, "depth": 4, "width": 64}
    critic_cfg = {**sizes, "depth": 4, "width": 32, "repr_size": 16}
    actor, critic = actor_from_config(actor_cfg, seed=0), critic_from_config(critic_cfg, seed=1)
    graphdef, params = nnx.split(actor)
    opt = optax.adam(3e-3)

    @jax.jit
    def fit(params, key):
        def step(carry, key):
            params, opt_state = carry
            sg = jax.random.uniform(key, (256, 4), minval=0.7, maxval=4.3)  # the U-maze's interior box
            target = jnp.arctanh(_greedy_oracle(sg[:, :2], sg[:, 2:]))

            def loss(p):
                return action_mse(nnx.merge(graphdef, p)(sg)[0], target)

            grads = jax.grad(loss)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 600))[0][0]

    nnx.update(actor, fit(params, jax.random.PRNGKey(0)))
    path = tmp_path_factory.mktemp("student") / "oracle_teacher"
    manifest = artifacts.Manifest(kind="teacher", env_id="point_maze", network={"actor": actor_cfg,
                                  "critic": critic_cfg}, **sizes)
    artifacts.save(path, manifest, {"actor": nnx.to_pure_dict(nnx.state(actor, nnx.Param)),
                                    "critic": nnx.to_pure_dict(nnx.state(critic, nnx.Param))})
    return path


TINY_DISTILL = {"hidden": "32,32", "distill_steps": 600, "rounds": 3, "num_envs": 16, "unroll_length": 50,
                "eval_episodes": 128, "round_eval_episodes": 0}


@pytest.fixture(scope="session")
def oracle_student_report(oracle_teacher_dir, tmp_path_factory):
    """A tiny DAgger + representation-matching distillation of the oracle teacher: (report, run dir)."""
    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill

    out = tmp_path_factory.mktemp("student") / "oracle_student"
    report = distill(DistillConfig(run=oracle_teacher_dir, out=out, method="dagger", represent=True,
                                   **TINY_DISTILL))
    return report, out


@pytest.fixture(scope="session")
def tiny_student_dir(tiny_teacher_dir, tmp_path_factory):
    """A student distilled in a few seconds from `tiny_teacher_dir`."""
    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill

    out = tmp_path_factory.mktemp("student") / "tiny_student"
    distill(DistillConfig(run=tiny_teacher_dir, out=out, **{**TINY_DISTILL, "eval_episodes": 32}))
    return out


# ---- export (tiny_onnx) -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_onnx_source(tiny_student_dir):
    """The artifact `tiny_onnx` is exported from: the tiny student."""
    return tiny_student_dir


@pytest.fixture(scope="session")
def tiny_onnx(tiny_student_dir, tmp_path_factory):
    """A verified `.onnx` export of `tiny_student_dir` (float32, parity-checked at batch 1, 2, 7, 256)."""
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export

    out = tmp_path_factory.mktemp("export") / "policy.onnx"
    export(ExportConfig(run=tiny_student_dir, out=out))
    return out
