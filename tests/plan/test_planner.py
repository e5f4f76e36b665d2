"""The landmark planner on hand-made distances (an encoder whose distance is the straight line)."""

from __future__ import annotations

import numpy as np
import pytest

from deepcrl.errors import DeepcrlError


class LineEncoder:
    """phi(s) = psi(s) = s: the learned distance is the straight line."""

    obs_size = goal_size = 2

    def phi(self, observation, action=None):
        return np.asarray(observation, np.float32)

    def psi(self, goal):
        return np.asarray(goal, np.float32)


# Landmarks along a U (a wall between x=0 and x=2 below y=2): the goal at (2, 0) is two away by the line
# but six by the landmarks.
U = np.array([[0, 0], [0, 1], [0, 2], [1, 2], [2, 2], [2, 1], [2, 0]], np.float32)


def planner(landmarks=U, cutoff=1.1):
    from deepcrl.plan.planner import Planner

    return Planner(LineEncoder(), landmarks, landmarks, cutoff=cutoff)


def test_all_shortest_paths_follow_the_landmarks():
    p = planner()
    assert p.edges == 12 and p.components == 1
    assert p.paths[0, 6] == pytest.approx(6.0)  # around the U, not the straight line (2)
    _, costs = p.goal_costs(np.array([[2.0, 0.0]]))
    np.testing.assert_allclose(costs[0], [6, 5, 4, 3, 2, 1, 0], atol=1e-6)


def test_waypoint_leads_around_the_wall_and_goes_direct_when_near():
    p = planner()
    target, index = p.waypoints(np.array([[0.0, 0.3], [2.0, 0.6]]), np.array([[2.0, 0.0], [2.0, 0.0]]))
    assert index.tolist() == [1, -1]  # the next landmark up the U; the second row's goal is within the cutoff
    np.testing.assert_allclose(target, [[0, 1], [2, 0]])
    assert (p.stats.waypoint_steps, p.stats.direct_steps, p.stats.unreachable_steps) == (1, 1, 0)


def test_goal_costs_are_cached_per_goal():
    p = planner()
    goal = np.array([[2.0, 0.0]])
    for y in (0.1, 0.5, 1.0):
        p.waypoints(np.array([[0.0, y]]), goal)
    assert p.stats.goals_encoded == 1 and p.stats.steps == 3


def test_unreachable_goal_falls_back_to_the_goal_and_is_counted():
    two_islands = np.array([[0, 0], [0, 1], [5, 0], [5, 1]], np.float32)
    p = planner(two_islands)
    assert p.components == 2
    target, index = p.waypoints(np.array([[0.0, 0.0]]), np.array([[5.0, 1.0]]))
    assert index.tolist() == [-1] and target.tolist() == [[5.0, 1.0]]
    assert p.stats.unreachable_steps == 1 and p.summary()["unreachable_landmark_pairs"] == 8


def test_bad_inputs_are_one_sentence():
    with pytest.raises(DeepcrlError, match="empty landmark set"):
        planner(np.zeros((0, 2), np.float32))
    with pytest.raises(DeepcrlError, match="cutoff must be a positive"):
        planner(cutoff=-1.0)
    with pytest.raises(DeepcrlError, match=r"observation has shape \(1, 3\)"):
        planner().waypoints(np.zeros((1, 3)), np.zeros((1, 2)))


def test_default_cutoff_is_the_quantile_of_pair_distances():
    from deepcrl.plan.planner import Planner

    p = Planner(LineEncoder(), U, U, cutoff_quantile=0.5)
    d = np.linalg.norm(U[:, None] - U[None], axis=-1)[~np.eye(len(U), dtype=bool)]
    assert p.cutoff == pytest.approx(np.quantile(d, 0.5))


def test_planned_policy_pursues_the_waypoint():
    from deepcrl.plan.planner import PlannedPolicy

    seen = []
    policy = PlannedPolicy(lambda o, g: seen.append(np.array(g)) or np.zeros((len(o), 2)), planner())
    policy(np.array([[0.0, 0.3]]), np.array([[2.0, 0.0]]))
    np.testing.assert_allclose(seen[0], [[0, 1]])
    assert policy.last_index.tolist() == [1]


def test_patience_gives_up_a_landmark_and_resets_on_a_new_goal():
    from deepcrl.plan.planner import PlannedPolicy

    policy = PlannedPolicy(lambda o, g: np.zeros((len(o), 2)), planner(), patience=3)
    s, g = np.array([[0.0, 0.3]]), np.array([[2.0, 0.0]])
    chosen = []
    for _ in range(4):  # the agent never moves: landmark 1 is pursued 3 times, then given up
        policy(s, g)
        chosen.append(int(policy.last_index[0]))
    assert chosen[:3] == [1, 1, 1] and chosen[3] == 0  # next best: the landmark it stands on
    policy(s, np.array([[2.0, 0.1]]))  # a new goal: a new episode, nothing banned
    assert int(policy.last_index[0]) == 1


def test_give_up_pursues_the_goal_after_enough_landmarks_ran_out_of_patience():
    from deepcrl.plan.planner import PlannedPolicy

    seen = []
    # cutoff 1.8: three landmarks lie within reach of s, the goal (2.02 away) does not
    policy = PlannedPolicy(lambda o, g: seen.append(np.array(g)) or np.zeros((len(o), 2)), planner(cutoff=1.8),
                           patience=1, give_up=2)
    s, g = np.array([[0.0, 0.3]]), np.array([[2.0, 0.0]])
    chosen = []
    for _ in range(4):  # stuck: landmark 1, then 0 run out of patience; then the episode stops planning
        policy(s, g)
        chosen.append(int(policy.last_index[0]))
    assert min(chosen[:2]) >= 0 and chosen[0] != chosen[1] and chosen[2:] == [-1, -1]
    np.testing.assert_allclose(seen[-1], g)
    stats = policy.planner.stats
    assert (stats.given_up_steps, stats.waypoint_steps, stats.direct_steps, stats.unreachable_steps) == (2, 2, 0, 0)
    policy(s, np.array([[2.0, 0.1]]))  # a new goal: a new episode, planning again
    assert int(policy.last_index[0]) == 1
    with pytest.raises(DeepcrlError, match="needs a patience"):
        PlannedPolicy(lambda o, g: o, planner(), patience=0, give_up=2)


def test_eval_plan_cli_on_a_teacher(fresh_teacher_dir, capsys):
    import json

    from deepcrl.cli import main

    code = main(["eval", "--run", str(fresh_teacher_dir), "--plan", "--plan-landmarks", "40", "--eval-episodes", "8",
                 "--episode-length", "10", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["plan"]["landmarks"] == 40 and out["plan"]["steps"] == 80
    decided = ("direct_steps", "waypoint_steps", "unreachable_steps", "given_up_steps")
    assert sum(out["plan"][k] for k in decided) == 80


def test_eval_plan_refuses_a_student_and_no_landmarks(fresh_student_dir, capsys):
    from deepcrl.cli import main

    assert main(["eval", "--run", str(fresh_student_dir), "--plan", "--eval-episodes", "2"]) == 2
    assert "no distance head" in capsys.readouterr().err
    assert main(["eval", "--run", str(fresh_student_dir), "--plan", "--plan-landmarks", "0"]) == 2
    assert "empty landmark set" in capsys.readouterr().err
