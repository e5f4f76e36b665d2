"""Runs INSIDE the reference virtualenv with a JaxGCRL checkout on sys.path (see test_jaxgcrl_stack.py).

    python jaxgcrl_stack_driver.py init  OUT   JaxGCRL's own Actor/Encoder, initialised as its crl.py does and
                                               perturbed, saved with run.py's statements (args.pkl, ckpt/final)
    python jaxgcrl_stack_driver.py train OUT   JaxGCRL's own run.main for one tiny ant epoch in OUT (its reacher
                                               cannot be evaluated at JaxGCRL's HEAD: the evaluator asks every env
                                               for success_easy and distance_from_origin, which reacher lacks)

Both then write OUT/outputs.npz: fixed inputs and JaxGCRL's deterministic actions and ``norm`` energies for
the checkpoint in OUT/runs/run_*/ckpt/final, computed by its own modules. Only JaxGCRL's code and its stack.
"""

import pickle
import sys
from pathlib import Path

import jax
import numpy as np

from jaxgcrl.agents.crl.crl import CRL, load_params
from jaxgcrl.agents.crl.losses import energy_fn
from jaxgcrl.agents.crl.networks import Actor, Encoder
from jaxgcrl.utils.config import Config, RunConfig

SIZES = {"reacher": (10, 3, 2), "ant": (29, 2, 8)}  # state_dim, goal size, action size
AGENT = dict(h_dim=32, n_hidden=2, repr_dim=16, use_ln=True, batch_size=32, unroll_length=8, min_replay_size=32,
             max_replay_size=64)
RUN = dict(seed=0, total_env_steps=160, num_envs=4, num_eval_envs=4, episode_length=17,
           num_evals=1, vis_length=2, log_wandb=False)


def networks(act: int):
    a = CRL(**AGENT)
    kw = dict(network_width=a.h_dim, network_depth=a.n_hidden, skip_connections=a.skip_connections,
              use_relu=a.use_relu)
    # as crl.py builds them: the actor without use_ln, the encoders with it
    return Actor(action_size=act, **kw), Encoder(repr_dim=a.repr_dim, use_ln=a.use_ln, **kw), a


def init(out: Path) -> None:
    """Parameters from JaxGCRL's modules (perturbed so LayerNorm scales/biases matter), saved as run.py does."""
    from brax.io import model

    obs, goal, act = SIZES["reacher"]
    actor, encoder, agent = networks(act)
    key = jax.random.PRNGKey(0)
    k_actor, k_sa, k_g, k_noise = jax.random.split(key, 4)
    actor_params = actor.init(k_actor, np.ones([1, obs + goal]))
    critic = {"sa_encoder": encoder.init(k_sa, np.ones([1, obs + act])),
              "g_encoder": encoder.init(k_g, np.ones([1, goal]))}
    leaves, tree = jax.tree_util.tree_flatten((actor_params, critic))
    keys = jax.random.split(k_noise, len(leaves))
    leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    actor_params, critic = jax.tree_util.tree_unflatten(tree, leaves)
    params = ({"log_alpha": jax.numpy.asarray(-0.5)}, actor_params, critic)
    run_dir = out / "runs" / "run_init_s_0"
    (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "args.pkl", "wb") as f:  # run.py: pickle.dump(vars(config), f)
        pickle.dump(vars(Config(agent=agent, run=RunConfig(env="reacher", exp_name="init", **RUN))), f)
    model.save_params(str(run_dir / "ckpt" / "final"), params)  # run.py's final save


def train(out: Path) -> None:
    import os

    import jaxgcrl.utils.env
    import run

    # its progress callback renders an HTML replay, which brax 0.10.1's html writer cannot (JaxGCRL pins 0.12.1);
    # a picture only: the parameters and files it saves do not depend on it
    jaxgcrl.utils.env.render = lambda *args, **kwargs: None
    (out / "ckpts").mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # run.main writes ./runs/run_{exp_name}_s_{seed}
    run.main(Config(agent=CRL(**AGENT), run=RunConfig(env="ant", exp_name="tiny", checkpoint_logdir=str(out / "ckpts"),
                                                      **RUN)))


def outputs(out: Path, env: str) -> None:
    obs, goal, act = SIZES[env]
    actor, encoder, _ = networks(act)
    (final,) = out.glob("runs/run_*/ckpt/final")
    _, actor_params, critic = load_params(str(final))
    rng = np.random.default_rng(1)
    s, g = rng.normal(0, 1, (64, obs)).astype(np.float32), rng.normal(0, 0.2, (64, goal)).astype(np.float32)
    a = rng.uniform(-1, 1, (64, act)).astype(np.float32)
    mean, _ = actor.apply(actor_params, np.concatenate([s, g], -1))
    phi = encoder.apply(critic["sa_encoder"], np.concatenate([s, a], -1))
    psi = encoder.apply(critic["g_encoder"], g)
    np.savez(out / "outputs.npz", s=s, g=g, a=a, action=np.asarray(jax.numpy.tanh(mean)),
             energy=np.asarray(energy_fn("norm", phi, psi)), final=str(final))


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    {"init": init, "train": train}[mode](where)
    outputs(where, "reacher" if mode == "init" else "ant")
