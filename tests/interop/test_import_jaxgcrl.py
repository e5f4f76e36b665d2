"""`deepcrl import jaxgcrl`: run directories in JaxGCRL's exact pickle format -> deepcrl student-kind artifacts
with the same actions and critic energies as JaxGCRL's forward pass (a numpy oracle), and one-sentence
refusals; `deepcrl import scaling-crl` refuses a JaxGCRL run in one sentence."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import jaxgcrl_format as jg
import reference_format as ref
from deepcrl.cli import main

OBS, GOAL, ACT = 10, 3, 2  # JaxGCRL's reacher (state_dim 10, goal indices 4-6), as the paper's


@pytest.fixture(scope="module")
def jaxgcrl_run(tmp_path_factory):
    """run.py's layout: args.pkl = {agent: CRL, run: RunConfig}, ckpt/final; encoders with LayerNorm."""
    agent, cfg = jg.CRL(h_dim=32, repr_dim=16, use_ln=True), jg.RunConfig(env="reacher", total_env_steps=123_000)
    ckpt = jg.checkpoint(OBS, GOAL, ACT, width=32, hidden=2, repr_dim=16, use_ln=True)
    run = jg.write_run(tmp_path_factory.mktemp("jg") / "run_reacher_s_0", jg.dumps_run_config(agent, cfg), ckpt)
    return run, ckpt


@pytest.fixture(scope="module")
def imported(jaxgcrl_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "student"
    assert main(["import", "jaxgcrl", str(jaxgcrl_run[0]), "--out", str(out), "--json"]) == 0
    return out


def _inputs(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (n, OBS)).astype(np.float32), rng.normal(0, 0.2, (n, GOAL)).astype(np.float32),
            rng.uniform(-1, 1, (n, ACT)).astype(np.float32))


def test_files_are_jaxgcrls_format(jaxgcrl_run):
    run, _ = jaxgcrl_run
    raw, args = (run / "ckpt" / "final").read_bytes(), (run / "args.pkl").read_bytes()
    assert b"_reconstruct_array" in raw and b"numpy.core.multiarray" in raw
    assert b"jaxgcrl.agents.crl.crl" in args and b"jaxgcrl.utils.config" in args


def test_manifest_records_the_source(imported, jaxgcrl_run):
    from deepcrl import artifacts

    run, _ = jaxgcrl_run
    m = artifacts.read_manifest(imported)
    assert (m.kind, m.env_id, m.obs_size, m.goal_size, m.action_size) == ("student", "reacher_ref", OBS, GOAL, ACT)
    assert m.network["actor"]["hidden"] == [32, 32] and m.network["actor"]["gaussian"] is False
    assert m.network["critic"]["layer_norm"] is True and m.network["critic"]["repr_size"] == 16
    src = m.network["source"]
    assert src["format"] == "jaxgcrl" and src["checkpoint"] == "ckpt/final" and src["reference_env_id"] == "reacher"
    assert src["checkpoint_sha256"] == hashlib.sha256((run / "ckpt" / "final").read_bytes()).hexdigest()
    assert src["args"]["n_hidden"] == 2 and src["args"]["energy_fn"] == "norm" and src["args"]["agent"] == "CRL"
    assert m.step == 123_000 and m.metrics["log_alpha"] == pytest.approx(-0.75) and m.parent_hash is None


def test_actions_and_energies_match_jaxgcrls_forward_pass(imported, jaxgcrl_run):
    from deepcrl.policy import load_networks, load_policy

    _, (_, actor, critic) = jaxgcrl_run
    s, g, a = _inputs()
    want, _ = jg.actor_forward(actor, 2, s, g)
    assert np.abs(load_policy(imported)(s, g) - want).max() <= 1e-5 and np.abs(want).max() > 0.1
    crit = load_networks(imported, critic="the test needs").critic
    want_e = jg.energy_forward(critic, 2, s, a, g, use_ln=True)
    assert np.abs(np.asarray(crit.energy(s, a, g)) - want_e).max() <= 1e-5 and np.std(want_e) > 0.1


def test_training_py_layout_with_step_files(tmp_path):
    """2025-02's training.py: args.pkl = utils.Args, ckpt/step_N.pkl (the latest is taken), no LayerNorm."""
    from deepcrl import artifacts
    from deepcrl.policy import load_policy

    args = jg.Args(h_dim=16, n_hidden=3, skip_connections=4)
    ckpt = jg.checkpoint(OBS, GOAL, ACT, width=16, hidden=3, seed=2)
    run = jg.write_run(tmp_path / "run", jg.dumps_args(args), ckpt, name="ckpt/step_2048.pkl")
    (run / "ckpt" / "step_1024.pkl").write_bytes(b"older, never read")
    out = tmp_path / "out"
    assert main(["import", "jaxgcrl", str(run), "--out", str(out)]) == 0
    m = artifacts.read_manifest(out)
    assert m.step == 2048 and m.network["source"]["layout"].startswith("training.py")
    assert m.network["critic"]["layer_norm"] is False and m.network["actor"]["hidden"] == [16, 16, 16]
    s, g, _ = _inputs(16)
    want, _ = jg.actor_forward(ckpt[1], 3, s, g)
    assert np.abs(load_policy(out)(s, g) - want).max() <= 1e-5


def test_another_energy_leaves_the_critic_out(tmp_path):
    from deepcrl import artifacts

    run = jg.write_run(tmp_path / "run", jg.dumps_run_config(jg.CRL(h_dim=8, energy_fn="dot"), jg.RunConfig()),
                       jg.checkpoint(OBS, GOAL, ACT, width=8))
    assert main(["import", "jaxgcrl", str(run), "--out", str(tmp_path / "out")]) == 0
    m, params = artifacts.load(tmp_path / "out")
    assert "critic" not in m.network and "critic" not in params and "'dot'" in m.network["source"]["critic"]


def _refused(tmp_path, capsys, agent=None, cfg=None, ckpt=None, args_bytes=None, raw=None, verb="jaxgcrl"):
    agent = agent or jg.CRL(h_dim=8)
    run = jg.write_run(tmp_path / "run", args_bytes or jg.dumps_run_config(agent, cfg or jg.RunConfig()),
                       ckpt or jg.checkpoint(OBS, GOAL, ACT, width=8))
    if raw is not None:
        (run / "ckpt" / "final").write_bytes(raw)
    code = main(["import", verb, str(run), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "manifest.json").exists()
    return err


def test_scaling_crl_verb_refuses_a_jaxgcrl_run_in_one_sentence(tmp_path, capsys):
    err = _refused(tmp_path, capsys, verb="scaling-crl")
    assert "JaxGCRL run" in err and "deepcrl import jaxgcrl" in err and "without residual blocks" in err


def test_jaxgcrl_verb_refuses_a_scaling_crl_run(tmp_path, capsys):
    args = ref.Args(actor_depth=4)
    run = ref.write_run(tmp_path / "run", args, ref.reference_checkpoint(args, OBS, GOAL, ACT))
    assert main(["import", "jaxgcrl", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "deepcrl import scaling-crl" in capsys.readouterr().err


def test_skip_connections_that_add_are_refused(tmp_path, capsys):
    """n_hidden=6 with skip_connections=4 adds after layer 4: neither deepcrl's teachers nor students fit."""
    err = _refused(tmp_path, capsys, agent=jg.CRL(h_dim=8, n_hidden=6),
                   ckpt=jg.checkpoint(OBS, GOAL, ACT, width=8, hidden=6))
    assert "skip connection every 4 layers" in err


def test_relu_other_agent_and_env_are_refused(tmp_path, capsys):
    assert "use_relu" in _refused(tmp_path / "a", capsys, agent=jg.CRL(h_dim=8, use_relu=True))
    assert "SAC" in _refused(tmp_path / "b", capsys, agent=jg.SAC())
    assert "'pusher_hard'" in _refused(tmp_path / "c", capsys, cfg=jg.RunConfig(env="pusher_hard"))


def test_layout_and_size_mismatches_are_refused(tmp_path, capsys):
    # args say 2 hidden layers, the file has 3
    assert "hidden Dense layers" in _refused(tmp_path / "a", capsys, ckpt=jg.checkpoint(OBS, GOAL, ACT, width=8,
                                                                                       hidden=3))
    # a 20-number state claiming reacher
    assert "does not fit" in _refused(tmp_path / "b", capsys, ckpt=jg.checkpoint(20, GOAL, ACT, width=8))
    alpha, actor, critic = jg.checkpoint(OBS, GOAL, ACT, width=8)
    actor["params"]["Dense_0"]["kernel"][0, 0] = np.nan
    assert "non-finite" in _refused(tmp_path / "c", capsys, ckpt=(alpha, actor, critic))


def test_corrupt_hostile_and_early_pickles_are_refused(tmp_path, capsys):
    good = ref.dumps_reference(jg.checkpoint(OBS, GOAL, ACT, width=8))
    assert "corrupt" in _refused(tmp_path / "a", capsys, raw=good[: len(good) // 2])
    early = ref.Global("brax.training.acme.running_statistics", "RunningStatisticsState")

    class Normaliser:  # pickled as NEWOBJ of brax's class, as a pre-2025-02 checkpoint's first element
        def __reduce__(self):
            return early, ()

    early_raw = ref.dumps_reference((Normaliser(), {}, {}))
    assert "early JaxGCRL checkpoint" in _refused(tmp_path / "b", capsys, raw=early_raw)
    assert "JaxGCRL's run config" in _refused(tmp_path / "c", capsys, args_bytes=__import__("pickle").dumps([1]))


def test_missing_args_and_checkpoint_are_one_sentence(tmp_path, capsys):
    run = jg.write_run(tmp_path / "run", jg.dumps_run_config(jg.CRL(h_dim=8), jg.RunConfig()),
                       jg.checkpoint(OBS, GOAL, ACT, width=8))
    (run / "ckpt" / "final").unlink()
    assert main(["import", "jaxgcrl", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "checkpoint_logdir" in capsys.readouterr().err
    (run / "args.pkl").unlink()
    assert main(["import", "jaxgcrl", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "args.pkl" in capsys.readouterr().err


def test_file_option_accepts_final_only_for_jaxgcrl(jaxgcrl_run, tmp_path, capsys):
    run, _ = jaxgcrl_run
    assert main(["import", "jaxgcrl", str(run), "--file", "final", "--out", str(tmp_path / "o")]) == 0
    assert main(["import", "scaling-crl", str(run), "--file", "final", "--out", str(tmp_path / "p")]) == 2
    assert "--file" in capsys.readouterr().err


@pytest.mark.slow  # compiles reacher_ref's physics for an evaluation, and an ONNX export
def test_eval_and_export_accept_the_import(imported, tmp_path, capsys):
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.policy import load_policy

    assert main(["eval", "--run", str(imported), "--eval-episodes", "4", "--episode-length", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == "reacher_ref" and 0.0 <= out["success"] <= 1.0
    model = tmp_path / "policy.onnx"
    assert main(["export", "--run", str(imported), "--out", str(model)]) == 0
    s, g, _ = _inputs(16)
    assert np.abs(OnnxPolicy(model)(s, g) - load_policy(imported)(s, g)).max() <= 1e-5


def test_distill_refuses_the_import_in_one_sentence(imported, tmp_path, capsys):
    """A JaxGCRL agent is already shallow: it imports as a student, which is not a distillation teacher."""
    assert main(["distill", "--run", str(imported), "--out", str(tmp_path / "s"), "--distill-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds a student, but a teacher is needed" in err and err.count("\n") == 1
