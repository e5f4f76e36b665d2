"""`deepcrl train --seeds`: seeds vmapped in one program, each seed's files as if it had been trained alone.

The two runs compile a vmapped and a plain iteration (~50 s together on the loaded 2-core machine), so the
comparison is behind `-m slow`; the config check runs by default.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from deepcrl import artifacts
from deepcrl.cli import main
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.train import train

TINY = dict(env="point_maze", depth=4, width=16, num_envs=16, batch_size=32, unroll_length=10, sgd_steps=4,
            replay_capacity=50, steps=16 * 10 * 3, eval_every=2, eval_episodes=8, actor_random_goal_frac=0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    multi = train(TrainConfig(out=root / "multi", seeds=(0, 1, 2), **TINY))
    single = train(TrainConfig(out=root / "single", seed=1, **TINY))
    return root, multi, single


def _rows(path):
    return [json.loads(line) for line in open(path / "metrics.jsonl")]


def _leaves(run_dir):
    return [np.asarray(x) for x in jax.tree.leaves(artifacts.load(run_dir, "teacher")[1])]


@pytest.mark.slow
def test_each_seed_writes_its_own_run_directory(runs):
    root, multi, _ = runs
    for seed in (0, 1, 2):
        d = root / "multi" / f"seed_{seed}"
        m = artifacts.read_manifest(d, "teacher")
        assert m.network["train"]["seed"] == seed and m.network["train"]["seeds"] is None
        assert m.step == 480 and len(_rows(d)) == 3 and (d / "train_state").is_dir() and (d / "curves.png").is_file()
    assert set(multi["seeds"]) == {0, 1, 2} and multi["env_steps"] == 480
    # the seeds are different runs: different initial weights, different results
    assert max(np.abs(a - b).max() for a, b in zip(_leaves(root / "multi/seed_0"), _leaves(root / "multi/seed_1"))) > 0.1


@pytest.mark.slow
def test_seed_1_of_three_equals_a_single_seed_run(runs):
    root, _, _ = runs
    multi, single = root / "multi" / "seed_1", root / "single"
    for a, b in zip(_rows(multi), _rows(single), strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if key == "wall_s":
                continue
            if key == "eval":  # the same policy up to rounding: the same episodes, distances up to rounding
                assert value == pytest.approx(b[key], abs=1e-5, rel=1e-5)
            elif isinstance(value, float):
                assert value == pytest.approx(b[key], abs=1e-5, rel=1e-5), key
            elif key != "norms":
                assert value == b[key], key
    for a, b in zip(_leaves(multi), _leaves(single), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    ma, mb = artifacts.read_manifest(multi), artifacts.read_manifest(single)
    differ = {k for k in ma.network["train"] if ma.network["train"][k] != mb.network["train"][k]}
    assert differ == {"out"}


def test_repeated_or_bad_seeds_are_one_sentence(tmp_path, capsys):
    assert main(["train", "--env", "point_maze", "--out", str(tmp_path / "x"), "--seeds", "1", "1"]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and err.count("\n") == 1
