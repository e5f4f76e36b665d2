"""The representation probe: geodesic distances by hand, Spearman of hand-built critics, the heatmap, and the
one-sentence refusals (student artifact, non-maze env)."""

import numpy as np
import pytest

from deepcrl.envs.point_maze import LAYOUTS
from deepcrl.errors import DeepcrlError
from deepcrl.teacher.probe import maze_geometry, probe_energy, probe_run, spearman

PNG = b"\x89PNG\r\n\x1a\n"

# A U-shaped corridor (row 0 at the bottom): cells (1, 1) and (3, 1) are 2 apart in a straight line (through
# the wall at (2, 1)) but 4 apart by path: (1,1) -> (1,2) -> (2,2) -> (3,2) -> (3,1).
U = np.array([[ch == "#" for ch in row] for row in ("####", "#..#", "##.#", "#..#", "####")])


def _grid(layout):
    return np.array([[ch == "#" for ch in row] for row in LAYOUTS[layout]])


def test_geodesic_of_a_u_corridor_equals_the_hand_values():
    geo = maze_geometry(U)
    assert geo.cells.tolist() == [[1, 1], [1, 2], [2, 2], [3, 1], [3, 2]]
    # the corridor visits the cells in the order 0, 1, 2, 4, 3: the geodesic is the gap in that order
    hand = [[0, 1, 2, 4, 3],
            [1, 0, 1, 3, 2],
            [2, 1, 0, 2, 1],
            [4, 3, 2, 0, 1],
            [3, 2, 1, 1, 0]]
    np.testing.assert_array_equal(geo.geodesic, hand)
    assert geo.euclidean[0, 3] == 2.0 and geo.geodesic[0, 3] == 4.0
    np.testing.assert_allclose(geo.centres[3], [1.5, 3.5])  # (x, y) of cell (row 3, col 1)
    assert geo.euclidean[0, 4] == pytest.approx(np.sqrt(5.0))


def test_a_walled_off_cell_is_unreachable_and_left_out_of_the_pairs():
    walls = np.array([[ch == "#" for ch in row] for row in ("#####", "#..##", "####.", "#####")])
    geo = maze_geometry(walls)
    assert geo.cells.tolist() == [[1, 1], [1, 2], [2, 4]]
    assert geo.geodesic[0, 1] == 1.0 and np.isinf(geo.geodesic[0, 2]) and np.isinf(geo.geodesic[2, 1])
    out = probe_energy(walls, lambda s, g: -np.linalg.norm(s - g, axis=-1))
    assert out["pairs"] == 2  # only (0, 1) and (1, 0) are connected


def _cell_lookup(walls, table):
    """A hand-built 'critic': the energy of (s, g) is table[cell(s), cell(g)]."""
    geo = maze_geometry(walls)
    index = {tuple(rc): k for k, rc in enumerate(geo.cells)}

    def cell(p):
        return [index[(int(np.floor(y)), int(np.floor(x)))] for x, y in p]

    return lambda s, g: table[cell(s), cell(g)]


@pytest.mark.parametrize("layout", ["u_maze", "big_maze"])
def test_a_critic_that_is_minus_the_geodesic_ranks_it_perfectly(layout):
    walls = _grid(layout)
    geo = maze_geometry(walls)
    out = probe_energy(walls, _cell_lookup(walls, -geo.geodesic))
    n = len(geo.cells)
    assert out["pairs"] == n * (n - 1) and out["detour_pairs"] > 0
    assert out["spearman_geodesic"] == pytest.approx(1.0)
    assert out["spearman_geodesic_detour"] == pytest.approx(1.0)
    # ...and with the straight line exactly as well as the geodesic itself does (0.84 on the U, 0.95 on the
    # big maze, where most pairs' path is nearly straight: the gap between the two numbers is the signal)
    off = ~np.eye(n, dtype=bool)
    assert out["spearman_euclidean"] == pytest.approx(spearman(geo.geodesic[off], geo.euclidean[off]))
    assert out["spearman_euclidean"] < {"u_maze": 0.85, "big_maze": 0.96}[layout]
    assert out["png"] is None


def test_a_straight_line_critic_ranks_the_euclidean_distance_perfectly_and_the_geodesic_worse():
    walls = _grid("u_maze")
    out = probe_energy(walls, lambda s, g: -np.linalg.norm(s - g, axis=-1))
    assert out["spearman_euclidean"] == pytest.approx(1.0)
    assert out["spearman_geodesic"] < 0.9
    # on the U-maze's detour pairs (the two arms) the straight line gets the order backwards
    assert out["spearman_geodesic_detour"] < out["spearman_euclidean_detour"]


def test_numpy_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    ours = spearman(x, y, use_scipy=False)
    assert ours == pytest.approx(spearman(x, y, use_scipy=True), abs=1e-12)
    assert spearman(x, -2 * x, use_scipy=False) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_heatmap_png_is_written_for_the_chosen_goal(tmp_path):
    walls = _grid("u_maze")
    geo = maze_geometry(walls)
    png = tmp_path / "maps" / "probe.png"
    out = probe_energy(walls, _cell_lookup(walls, -geo.geodesic), png=png, goal_cell=(3, 1))
    assert out["png"] == str(png) and png.read_bytes()[:8] == PNG
    assert out["goal_cell"] == [3, 1]
    with pytest.raises(DeepcrlError, match="not a free cell"):
        probe_energy(walls, _cell_lookup(walls, -geo.geodesic), goal_cell=(2, 1))


def test_probe_of_a_teacher_artifact(oracle_teacher_dir, tmp_path):
    out = probe_run(oracle_teacher_dir, png=tmp_path / "probe.png")
    assert out["env"] == "point_maze" and out["action"] == "actor" and out["critic_depth"] == 4
    for key in ("spearman_geodesic", "spearman_euclidean"):
        assert -1.0 <= out[key] <= 1.0
    assert out["goal_cell"] == [1, 1]  # an end of the U (the longest shortest path)
    assert (tmp_path / "probe.png").read_bytes()[:8] == PNG
    zero = probe_run(oracle_teacher_dir, action="zero")
    assert zero["action"] == "zero" and zero["spearman_geodesic"] != out["spearman_geodesic"]


def test_student_artifacts_and_non_maze_envs_are_refused_in_one_sentence(tmp_path, oracle_teacher_dir):
    import shutil

    from deepcrl import artifacts
    from deepcrl.policy import init_artifact

    init_artifact(tmp_path / "student", "student", "point_maze", {"hidden": [8]})
    with pytest.raises(DeepcrlError, match="student artifact; the probe needs a teacher's critic"):
        probe_run(tmp_path / "student")
    # the same teacher relabelled as trained on a Brax env (only the manifest's env id differs)
    other = tmp_path / "reacher_teacher"
    shutil.copytree(oracle_teacher_dir, other)
    manifest = artifacts.read_manifest(other)
    (other / artifacts.MANIFEST).write_text(manifest.model_copy(update={"env_id": "reacher"}).model_dump_json())
    with pytest.raises(DeepcrlError, match="needs a maze of free cells .*reacher has none"):
        probe_run(other)


def test_an_open_arena_has_no_detour_pairs_and_says_so_with_none():
    out = probe_energy(_grid("open"), lambda s, g: -np.linalg.norm(s - g, axis=-1))
    assert out["detour_pairs"] == 0 and out["spearman_geodesic_detour"] is None
    assert out["spearman_euclidean"] == pytest.approx(1.0)


def test_eval_probe_on_the_command_line(oracle_teacher_dir, tmp_path, capsys):
    import json

    from deepcrl.cli import main
    from deepcrl.policy import init_artifact

    png = tmp_path / "heat.png"
    assert main(["eval", "--run", str(oracle_teacher_dir), "--probe", "--probe-png", str(png), "--json",
                 "--eval-episodes", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 4 and out["probe"]["png"] == str(png) and png.read_bytes()[:8] == PNG
    assert out["probe"]["pairs"] == 42 and -1.0 <= out["probe"]["spearman_geodesic"] <= 1.0  # 7 cells, 7 x 6
    init_artifact(tmp_path / "student", "student", "point_maze", {"hidden": [8]})
    assert main(["eval", "--run", str(tmp_path / "student"), "--probe"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "student artifact; the probe needs a teacher's critic" in err
    assert main(["eval", "--model", str(tmp_path / "x.onnx"), "--probe"]) == 2
    assert "--probe needs --run DIR" in " ".join(capsys.readouterr().err.split())
