"""Distillation: DAgger labelling, a tiny run that learns, the artifact it writes, and bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepcrl import artifacts
from deepcrl.cli import main
from deepcrl.envs.wrappers import wrap_for_training
from deepcrl.policy import load_policy
from deepcrl.student.collect import Teacher, make_collector
from deepcrl.student.networks import actor_from_config

POINT_MAZE_RANDOM_SUCCESS = 0.16  # measured baseline (issue 5)


def test_dagger_labels_come_from_the_teacher_on_student_visited_states(oracle_teacher_dir):
    teacher = Teacher(oracle_teacher_dir, need_critic=False)
    env = wrap_for_training(teacher.env)
    student = actor_from_config({"obs_size": 2, "goal_size": 2, "action_size": 2, "hidden": [16]}, seed=7)
    graphdef, student_state = nnx.split(student)
    length, n = 12, 8  # shorter than an episode: no auto-reset inside the rollout
    collect = make_collector(env, teacher.actor, None, graphdef, length, noise=0.0)
    start = jax.jit(env.reset)(jax.random.split(jax.random.PRNGKey(3), n))
    t_state = teacher.state()

    _, data = collect(t_state, student_state, start, jax.random.PRNGKey(4), 0.0)
    obs = np.asarray(data["obs"]).reshape(length, n, 2)
    acted = np.asarray(data["acted"]).reshape(length, n, 2)
    # the student drove: every executed action is the student's, and the states follow from them
    assert not np.asarray(data["teacher_acted"]).any()
    np.testing.assert_allclose(data["acted"], student.act(data["obs"], data["goal"]), atol=1e-6)
    moved = jax.vmap(jax.vmap(teacher.env.move))(jnp.asarray(obs[:-1]), jnp.asarray(acted[:-1]))
    np.testing.assert_allclose(obs[1:], moved, atol=1e-5)
    # ... and every visited state carries the teacher's deterministic action as its label
    mean, log_std = teacher.actor(jnp.concatenate([data["obs"], data["goal"]], -1))
    np.testing.assert_allclose(data["t_mean"], mean, atol=1e-5)
    np.testing.assert_allclose(data["t_log_std"], log_std, atol=1e-5)
    assert np.abs(np.tanh(data["t_mean"]) - data["acted"]).max() > 0.1  # the labels are not the student's

    # beta = 1: the teacher drives; beta = 0.5: about half the steps are the teacher's
    _, data = collect(t_state, student_state, start, jax.random.PRNGKey(4), 1.0)
    np.testing.assert_allclose(data["acted"], jnp.tanh(data["t_mean"]), atol=1e-6)
    _, data = collect(t_state, student_state, start, jax.random.PRNGKey(5), 0.5)
    assert 0.35 < float(np.mean(data["teacher_acted"])) < 0.65


def test_tiny_distillation_matches_the_teacher_and_beats_random(oracle_student_report):
    report, _ = oracle_student_report
    err = report["action_error"]
    assert err["heldout_mse_final"] * 20 < err["heldout_mse_initial"], err
    teacher, student = report["teacher"]["eval"], report["student"]["eval"]
    random = report["random"]["eval"]
    assert teacher["episodes"] == student["episodes"] == random["episodes"] == 128
    assert abs(random["success"] - POINT_MAZE_RANDOM_SUCCESS) < 0.1
    assert student["success"] > random["success"] + 0.25, (student, random)
    assert student["success"] >= 0.8 * teacher["success"], (student, teacher)
    # DAgger mixed in the student from round 1 on
    assert [r["beta"] for r in report["rounds"]] == [1.0, 0.5, 0.25]
    # sizes and costs are measured, not assumed
    assert report["student"]["params"] == 4 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    assert report["ratios"]["params"] == pytest.approx(report["teacher"]["params"] / report["student"]["params"])
    assert report["teacher"]["flops_per_action"] > report["student"]["flops_per_action"] > 0
    assert report["teacher"]["latency_us"] > 0 and report["student"]["latency_us"] > 0


def test_student_artifact_on_disk(oracle_student_report, oracle_teacher_dir, capsys):
    report, out = oracle_student_report
    manifest = artifacts.read_manifest(out, kind="student")
    assert manifest.parent_hash == artifacts.read_manifest(oracle_teacher_dir).checkpoint_hash
    assert manifest.network["actor"]["hidden"] == [32, 32]
    assert set(manifest.network) == {"actor", "critic"}  # --represent ships the distilled encoders too
    assert json.loads((out / "report.json").read_text())["student"]["eval"] == report["student"]["eval"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if "step" in line]
    assert steps == sorted(steps) and steps[-1] == 600
    assert {"loss", "action_mse", "repr_mse", "energy_nce", "feature_mse"} <= set(lines[0])
    assert lines[-2]["repr_mse"] < lines[0]["repr_mse"]  # the encoders learn the teacher's representations
    assert (out / "curves.png").stat().st_size > 10_000
    # the artifact rebuilds from disk alone and scores like the report says
    policy = load_policy(out)
    obs, goal = np.full((1, 2), 1.5, np.float32), np.full((1, 2), 3.5, np.float32)
    assert policy(obs, goal).shape == (1, 2)
    assert main(["eval", "--run", str(out), "--eval-episodes", "128", "--seed", str(report["eval"]["seed"]),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["success"] == report["student"]["eval"]["success"]
    assert printed["time_at_goal"] == pytest.approx(report["student"]["eval"]["time_at_goal"])


def test_tiny_student_dir_links_to_its_teacher(tiny_student_dir, tiny_teacher_dir):
    manifest = artifacts.read_manifest(tiny_student_dir, kind="student")
    assert manifest.parent_hash == artifacts.read_manifest(tiny_teacher_dir, kind="teacher").checkpoint_hash
    assert manifest.step > 0
    assert (tiny_student_dir / "report.json").is_file()


# ---- bad input: one sentence, exit code 2 -------------------------------------------------------------------


def _error(capsys, *argv) -> str:
    assert main(["distill", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("error:")
    return " ".join(err.split())


def test_missing_teacher(capsys, tmp_path):
    err = _error(capsys, "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "s"))
    assert "does not exist" in err


def test_student_is_not_a_teacher(capsys, tmp_path):
    from deepcrl.policy import init_artifact

    init_artifact(tmp_path / "s0", "student", "point_maze", {"hidden": [8]})
    err = _error(capsys, "--run", str(tmp_path / "s0"), "--out", str(tmp_path / "s"))
    assert "holds a student, but a teacher is needed" in err


def test_env_sizes_no_longer_match(capsys, tmp_path, oracle_teacher_dir):
    import shutil

    bad = tmp_path / "t"
    shutil.copytree(oracle_teacher_dir, bad)
    raw = json.loads((bad / "manifest.json").read_text())
    raw["obs_size"] = 3  # as if point_maze had changed since the teacher was trained
    (bad / "manifest.json").write_text(json.dumps(raw))
    err = _error(capsys, "--run", str(bad), "--out", str(tmp_path / "s"))
    assert "sizes 3/2/2" in err and "now has 2/2/2" in err


@pytest.mark.parametrize("hidden", ["256,abc", "", "64,0", "-3"])
def test_hidden_sizes_that_do_not_parse(capsys, tmp_path, hidden):
    err = _error(capsys, "--run", str(tmp_path), "--out", str(tmp_path / "s"), "--hidden", hidden)
    assert "--hidden must be comma-separated positive integers" in err


def test_out_must_not_be_the_teacher(capsys, oracle_teacher_dir):
    err = _error(capsys, "--run", str(oracle_teacher_dir), "--out", str(oracle_teacher_dir))
    assert "would overwrite its teacher" in err


def test_kl_objective_trains_a_gaussian_student():
    import optax

    from deepcrl.student.config import DistillConfig
    from deepcrl.student.update import Student, adam_steps, make_loss
    from deepcrl.student.losses import gaussian_kl

    cfg = DistillConfig(run=Path("t"), out=Path("s"), loss="kl")
    sizes = {"obs_size": 2, "goal_size": 2, "action_size": 2}
    model = Student({**sizes, "hidden": [32], "gaussian": True}, None, None, seed=0)
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    obs, goal = rng.uniform(0, 5, (512, 2)).astype(np.float32), rng.uniform(0, 5, (512, 2)).astype(np.float32)
    buffer = {"obs": obs, "goal": goal, "t_mean": 0.5 * (goal - obs), "t_log_std": np.full((512, 2), -1.0, np.float32)}
    loss_fn = make_loss(cfg, graphdef)
    _, first = loss_fn(params, buffer)
    mean, log_std = model.actor(np.concatenate([obs, goal], -1))
    assert float(first["action_kl"]) == pytest.approx(float(gaussian_kl(mean, log_std, buffer["t_mean"],
                                                                        buffer["t_log_std"])), rel=1e-5)
    assert float(first["loss"]) == pytest.approx(float(first["action_kl"]))
    optimizer = optax.adam(3e-3)
    params, _, _ = jax.jit(adam_steps, static_argnums=(0, 1, 2, 8))(
        loss_fn, optimizer, 128, params, optimizer.init(params), buffer, jnp.int32(512), jax.random.PRNGKey(0), 300)
    _, last = loss_fn(params, buffer)
    assert float(last["action_kl"]) * 10 < float(first["action_kl"])


@pytest.mark.parametrize("flag, value, words", [("--distill-steps", "0", "--distill-steps must be positive, got 0."),
                                                ("--beta-decay", "1.5", "--beta-decay must lie in [0, 1]"),
                                                ("--learning-rate", "-1", "--learning-rate must be positive")])
def test_bad_numbers(capsys, tmp_path, flag, value, words):
    err = _error(capsys, "--run", str(tmp_path), "--out", str(tmp_path / "s"), flag, value)
    assert words in err


@pytest.mark.slow  # two distillations of their own shape, each compiling (~30 s)
def test_progress_reaches_the_callback_and_the_cli_display(oracle_teacher_dir, tmp_path, capsys, monkeypatch):
    """distill() reports through `progress_fn`; `deepcrl distill` hands it a `Display`, which it leaves."""
    import sys
    import types

    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill

    calls = []
    small = {"hidden": "8", "distill_steps": 150, "rounds": 2, "num_envs": 4, "unroll_length": 10,
             "eval_episodes": 4, "round_eval_episodes": 0}
    distill(DistillConfig(run=oracle_teacher_dir, out=tmp_path / "a", **small), progress_fn=calls.append)
    # one record (a dict, as train's) per chunk of gradient steps, out of --distill-steps: the metrics.jsonl lines
    assert [r["step"] for r in calls] == [75, 150]
    assert [r["round"] for r in calls] == [0, 1]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["heldout_action_mse"]) for r in calls)
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in logged if "step" in r and "round_summary" not in r] == calls

    shown = []

    class Display:  # the interface of deepcrl.cli.progress.Display
        def __init__(self, title, total, unit="steps", min_interval_s=10.0):
            shown.append(("open", title, total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            shown.append(("close",))

        def update(self, completed, **fields):
            shown.append(("update", completed, sorted(fields)))

    monkeypatch.setitem(sys.modules, "deepcrl.cli.progress", types.SimpleNamespace(Display=Display))
    argv = ["distill", "--run", str(oracle_teacher_dir), "--out", str(tmp_path / "b")]
    for key, value in small.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    assert shown[0] == ("open", "distill", 150) and shown[-1] == ("close",)
    assert [s[1] for s in shown[1:-1]] == [75, 150]
    assert shown[1][2] == ["heldout_mse", "loss", "round"]  # what the display prints beside the count
    assert "student ->" in capsys.readouterr().out
