"""Evaluation metrics, the random baseline and the CLI's error handling."""

import numpy as np
import pytest

from deepcrl import envs
from deepcrl.cli import main
from deepcrl.evaluate import _summarise, evaluate
from deepcrl.policy import RandomPolicy


def test_summary_by_hand():
    # 3 steps x 2 episodes: episode 0 reaches at step 1 and stays, episode 1 never reaches.
    succ = np.array([[0, 0], [1, 0], [1, 0]], np.float32)
    dist = np.array([[2, 3], [0.1, 2.5], [0.2, 2.0]], np.float32)
    r = _summarise(succ, dist, detour=np.array([False, True]))
    assert r.success == 0.5 and r.final_success == 0.5
    assert r.time_at_goal == pytest.approx(1.0)  # (2 + 0) / 2
    assert r.final_distance == pytest.approx(1.1)
    assert r.detour_episodes == 1 and r.detour_success == 0.0 and r.direct_success == 1.0


class GreedyPolicy:
    """Straight at the goal: solves the open arena, fails most detour pairs of a maze."""

    obs_size = goal_size = action_size = 2

    def __call__(self, observation, goal):
        d = goal - observation
        return np.clip(d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6), -1, 1)


def test_greedy_beats_random_and_detours_are_hard():
    open_greedy = evaluate("point_maze_open", GreedyPolicy(), episodes=32, seed=1)
    open_random = evaluate("point_maze_open", RandomPolicy(2, 2, 2, seed=1), episodes=32, seed=1)
    assert open_greedy.success == 1.0 and open_greedy.time_at_goal > 50
    assert open_random.success < 0.5
    maze = evaluate("point_maze", GreedyPolicy(), episodes=64, seed=1)
    assert maze.detour_episodes > 0
    assert maze.direct_success == 1.0
    assert maze.detour_success < 0.5


def test_same_seed_same_episodes():
    a = evaluate("point_maze", RandomPolicy(2, 2, 2, seed=3), episodes=16, seed=5)
    b = evaluate("point_maze", RandomPolicy(2, 2, 2, seed=3), episodes=16, seed=5)
    assert a == b


def test_policy_of_wrong_size_is_refused():
    with pytest.raises(Exception, match="observation size is 3"):
        evaluate("point_maze", RandomPolicy(3, 2, 2), episodes=2)


def test_unknown_env_lists_closest_first():
    with pytest.raises(envs.UnknownEnvError) as err:
        envs.make("point_maz")
    message = str(err.value)
    assert message.startswith("unknown env id 'point_maz'; valid ids are: point_maze,")


def test_cli_envs_lists_every_id(capsys):
    assert main(["envs", "--json"]) == 0
    out = capsys.readouterr().out
    for env_id in envs.env_ids():
        assert f'"{env_id}"' in out


def test_cli_eval_needs_exactly_one_source(capsys):
    assert main(["eval"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_cli_eval_missing_artifact(tmp_path, capsys):
    assert main(["eval", "--ckpt", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
