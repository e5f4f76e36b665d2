"""Evaluation metrics, the random baseline and the CLI's error handling."""

import numpy as np
import pytest

from deepcrl import envs
from deepcrl.cli import main
from deepcrl.errors import DeepcrlError
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


def test_same_seed_same_episodes_another_seed_other_episodes():
    a = evaluate("point_maze", GreedyPolicy(), episodes=16, seed=5)
    b = evaluate("point_maze", GreedyPolicy(), episodes=16, seed=5)
    c = evaluate("point_maze", GreedyPolicy(), episodes=16, seed=6)
    assert a == b
    assert c.final_distance != a.final_distance  # the seed picks the starts and goals


def test_jax_and_numpy_policies_see_the_same_episodes(tmp_path):
    from deepcrl.policy import init_artifact, load_policy

    init_artifact(tmp_path / "s", "student", "point_maze", {"hidden": [8]}, seed=1)
    policy = load_policy(tmp_path / "s")
    scanned = evaluate("point_maze", policy, episodes=8, seed=2, episode_length=20)  # one jitted rollout
    looped = evaluate("point_maze", lambda obs, goal: policy(obs, goal), episodes=8, seed=2, episode_length=20)
    assert scanned.episode_length == looped.episode_length == 20
    assert scanned.success == looped.success
    assert scanned.final_distance == pytest.approx(looped.final_distance, abs=1e-5)


def test_policy_of_wrong_size_is_refused():
    with pytest.raises(DeepcrlError, match="observation size is 3"):
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
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [(["--eval-episodes", "0", "--run", "x"], "--eval-episodes must be at least 1"),
                                         (["--run", "x", "--model", "y.onnx"], "exactly one of")])
def test_cli_eval_config_errors_are_one_sentence(capsys, argv, words):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.startswith("error:")


def test_debug_shows_the_traceback_of_a_config_error():
    with pytest.raises(DeepcrlError, match="exactly one of"):
        main(["--debug", "eval"])


class _TracedGreedy:
    """A JAX policy (apply_fn + params) that counts how often JAX traces it; equal trace_keys trace the same."""

    obs_size = goal_size = action_size = 2
    traces = 0

    def __init__(self, gain: float):
        import jax.numpy as jnp

        self.params = {"gain": jnp.float32(gain)}
        self.trace_key = ("greedy-test",)

        def apply_fn(params, observation, goal):
            _TracedGreedy.traces += 1  # runs only while tracing
            d = goal - observation
            return jnp.clip(params["gain"] * d, -1.0, 1.0)

        self.apply_fn = apply_fn


def test_repeated_evaluations_compile_once_and_use_each_calls_parameters():
    env = envs.make("point_maze_open")
    _TracedGreedy.traces = 0
    fast = evaluate(env, _TracedGreedy(5.0), episodes=8, seed=3)
    still = evaluate(env, _TracedGreedy(0.0), episodes=8, seed=3)  # a new policy object, new parameters
    assert _TracedGreedy.traces == 1  # the second evaluation reused the compiled rollout
    assert fast.success == 1.0 and still.success < fast.success  # ... yet ran with its own parameters
    evaluate(env, _TracedGreedy(5.0), episodes=8, seed=3, episode_length=7)  # another length: a new program
    assert _TracedGreedy.traces == 2
