"""Teacher training: learns above random, writes a loadable artifact, resumes bit for bit, stops on NaN,
rejects bad configs before compiling, and runs data parallel over two devices."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deepcrl import artifacts
from deepcrl.cli import main
from deepcrl.evaluate import evaluate
from deepcrl.policy import RandomPolicy, load_policy

# The shape of the `tiny_teacher_dir` run (tests/conftest.py TINY_TEACHER): runs that differ from it only in
# steps, out, resume, evaluation or learning rate reuse its compiled iteration, so these tests compile nothing.
MICRO = ["--env", "point_maze", "--depth", "4", "--width", "64", "--num-envs", "32", "--batch-size", "256",
         "--unroll-length", "20", "--sgd-steps", "64", "--replay-capacity", "200", "--eval-every", "2",
         "--eval-episodes", "8", "--actor-random-goal-frac", "0.0"]
ITER_STEPS = 32 * 20


def test_tiny_run_learns_above_random_and_writes_a_loadable_artifact(tiny_teacher_run):
    summary, run = tiny_teacher_run
    policy = load_policy(run, kind="teacher")
    trained = evaluate("point_maze", policy, episodes=256, seed=7)
    rand = evaluate("point_maze", RandomPolicy(2, 2, 2, seed=0), episodes=256, seed=7)
    assert rand.success < 0.25  # the foundation's random baseline is 0.16
    assert trained.success > rand.success + 0.15, (trained, rand)
    manifest = artifacts.read_manifest(run, "teacher")
    assert manifest.step == summary["env_steps"] == 6400
    assert set(manifest.network) >= {"actor", "critic"}
    assert manifest.network["critic"]["repr_size"] == 64 and manifest.network["actor"]["depth"] == 4
    _, params = artifacts.load(run)
    assert set(params) == {"actor", "critic"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [640 * (i + 1) for i in range(10)]
    evals = [r["eval"] for r in rows if "eval" in r]
    assert len(evals) == 2 and evals[-1]["success"] == pytest.approx(summary["eval"]["success"])
    assert all(np.isfinite(r["critic_loss"]) and np.isfinite(r["actor_loss"]) for r in rows)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "train_state").is_dir()


def _train(out, steps, *extra):
    return main(["train", *MICRO, "--out", str(out), "--steps", str(steps), *extra])


def _rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("wall_s")
    return rows


@pytest.fixture(scope="module")
def half_run(tiny_teacher_dir, tmp_path_factory):  # after the fixture: its compile is reused
    out = tmp_path_factory.mktemp("resume") / "half"
    assert _train(out, 2 * ITER_STEPS) == 0
    return out


def test_resume_equals_an_uninterrupted_run(half_run, tmp_path, capsys):
    from deepcrl.teacher.iteration import iteration

    compiled = iteration._cache_size()
    resumed = tmp_path / "resumed"
    shutil.copytree(half_run, resumed)
    assert _train(resumed, 4 * ITER_STEPS, "--resume") == 0
    straight = tmp_path / "straight"
    capsys.readouterr()
    assert _train(straight, 4 * ITER_STEPS, "--json") == 0
    summary = json.loads(capsys.readouterr().out)  # --json: stdout is the summary alone, progress went to stderr
    assert summary["env_steps"] == 4 * ITER_STEPS and summary["run_dir"] == str(straight.absolute())
    assert iteration._cache_size() == compiled  # same shapes: JAX's cache serves both runs, nothing compiles
    (ma, pa), (mb, pb) = artifacts.load(resumed), artifacts.load(straight)
    assert ma.step == mb.step == 4 * ITER_STEPS
    flat_a, flat_b = (np.concatenate([np.ravel(x) for x in _leaves(p)]) for p in (pa, pb))
    np.testing.assert_array_equal(flat_a, flat_b)
    assert _rows(resumed) == _rows(straight)  # losses and evaluations too, step by step


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_non_finite_loss_stops_with_one_sentence_and_keeps_the_last_good_checkpoint(half_run, tmp_path, capsys):
    run = tmp_path / "nan"
    shutil.copytree(half_run, run)
    before = artifacts.hash_directory(run / "train_state"), (run / "manifest.json").read_text()
    from deepcrl.teacher.iteration import iteration

    compiled = iteration._cache_size()
    # an absurd learning rate blows the weights up within the first SGD steps after resuming
    assert _train(run, 4 * ITER_STEPS, "--resume", "--learning-rate", "1e38") == 2
    assert iteration._cache_size() == compiled  # the learning rate is traced: changing it compiles nothing
    err = capsys.readouterr().err
    assert "non-finite" in err and "last good checkpoint (env step 1,280)" in err and "Traceback" not in err
    assert (artifacts.hash_directory(run / "train_state"), (run / "manifest.json").read_text()) == before
    assert load_policy(run).manifest.step == 2 * ITER_STEPS


@pytest.mark.parametrize("args, words", [
    (["--env", "no_such_maze"], "unknown env id"),
    (["--depth", "6"], "multiple of 4"),
    (["--critic-depth", "2048"], "multiple of 4"),
    (["--batch-size", "100000", "--num-envs", "4", "--replay-capacity", "100"], "larger than the replay buffer"),
    (["--unroll-length", "500", "--replay-capacity", "100"], "exceeds --replay-capacity"),
    (["--actor-random-goal-frac", "1.5"], "must lie in [0, 1]"),
])
def test_bad_config_fails_before_compiling(args, words, tmp_path, capsys, monkeypatch):
    import deepcrl.teacher.train as train_mod

    def boom(*_, **__):
        raise AssertionError("compiled or initialised despite a bad config")

    monkeypatch.setattr(train_mod, "iteration", boom)
    monkeypatch.setattr(train_mod, "init_state", boom)
    assert main(["train", "--out", str(tmp_path / "x"), "--steps", "100", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") <= 3


def test_corrupt_checkpoint_is_one_sentence_and_keeps_its_cause(half_run, tmp_path, capsys):
    from deepcrl.errors import DeepcrlError

    run = tmp_path / "corrupt"
    shutil.copytree(half_run, run)
    for f in (run / "train_state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")
    assert _train(run, 4 * ITER_STEPS, "--resume") == 2
    err = capsys.readouterr().err
    assert "training checkpoint in" in err and "is corrupt or unreadable" in err and "Traceback" not in err
    with pytest.raises(DeepcrlError, match="is corrupt or unreadable") as info:  # --debug re-raises
        main(["--debug", "train", *MICRO, "--out", str(run), "--steps", str(4 * ITER_STEPS), "--resume"])
    assert info.value.__cause__ is not None  # Orbax's own error, for whoever debugs it


def test_resume_without_a_checkpoint_is_one_sentence(tmp_path, capsys):
    assert _train(tmp_path / "empty", ITER_STEPS, "--resume") == 2
    assert "holds no training checkpoint" in capsys.readouterr().err


DATA_PARALLEL = textwrap.dedent("""
    import json, jax, numpy as np
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.teacher import iteration as t
    assert jax.local_device_count() == 2
    cfg = TrainConfig(env="point_maze", depth=4, width=16, num_envs=8, batch_size=32, unroll_length=10,
                      sgd_steps=4, replay_capacity=40, steps=160, eval_every=2)
    out = {}
    for name, devices in (("one", jax.local_devices()[:1]), ("two", jax.local_devices())):
        setup = t.make_setup(cfg, devices)
        state = t.init_state(setup)
        for _ in range(2):
            state, metrics = t.iteration(setup, state, 3e-4)
        out[name] = np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(state.learner.critic))])
        out[name + "_devices"] = len(state.replay.obs.sharding.device_set)
        out[name + "_loss"] = float(metrics["critic_loss"])
        shard_shapes = {s.data.shape for s in state.replay.obs.addressable_shards}
        out[name + "_shard"] = sorted(shard_shapes)[0][1]
    print(json.dumps({"devices": [out["one_devices"], out["two_devices"]],
                      "shard_envs": [out["one_shard"], out["two_shard"]],
                      "max_diff": float(np.abs(out["one"] - out["two"]).max()),
                      "loss": [out["one_loss"], out["two_loss"]]}))
""")


@pytest.mark.slow  # a subprocess with two CPU devices compiles its own iteration (~30 s)
def test_data_parallel_on_two_devices_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", DATA_PARALLEL], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == [1, 2] and res["shard_envs"] == [8, 4]  # replay split over the env axis
    assert res["max_diff"] < 1e-4, res
    assert res["loss"][0] == pytest.approx(res["loss"][1], rel=1e-4)
