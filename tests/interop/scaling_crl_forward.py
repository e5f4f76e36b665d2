"""Run INSIDE the reference's own virtualenv (jax 0.4.23, flax 0.7.4): the reference networks' outputs.

    python scaling_crl_forward.py REFERENCE_CHECKOUT RUN_DIR OUT.npz
    python scaling_crl_forward.py REFERENCE_CHECKOUT RUN_DIR --init ENV_ID OBS_DIM GOAL_START GOAL_END ACTION DEPTH WIDTH

The --init form writes RUN_DIR/final.pkl and args.pkl as the reference's train.py saves them (its Actor,
SA_encoder and G_encoder initialised by flax, every parameter then perturbed so LayerNorm scales and biases
matter; pickled by jax 0.4.23; its Args dataclass pickled from __main__), without training.

Loads RUN_DIR/final.pkl and args.pkl with plain pickle (our own files, made by the test), builds the
reference's Actor / SA_encoder / G_encoder from its train.py, and writes random inputs plus the deterministic
actions tanh(mean), the log-stds and the energies -||sa(s, a) - g(goal)|| to OUT.npz.
"""

import pickle
import sys
from pathlib import Path

import numpy as np

checkout, run = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(checkout))
import train as reference  # noqa: E402  (its training code is under `if __name__ == "__main__"`)

if sys.argv[3] == "--init":
    import jax

    env_id = sys.argv[4]
    obs_dim, g_start, g_end, act, depth, width = (int(x) for x in sys.argv[5:11])
    args = reference.Args(env_id=env_id, obs_dim=obs_dim, goal_start_idx=g_start, goal_end_idx=g_end,
                          actor_depth=depth, critic_depth=depth, actor_network_width=width,
                          critic_network_width=width)
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    actor = reference.Actor(action_size=act, network_width=width, network_depth=depth).init(
        k[0], np.ones([1, obs_dim + g_end - g_start]))
    sa = reference.SA_encoder(network_width=width, network_depth=depth).init(k[1], np.ones([1, obs_dim]),
                                                                              np.ones([1, act]))
    g = reference.G_encoder(network_width=width, network_depth=depth).init(k[2], np.ones([1, g_end - g_start]))
    leaves, tree = jax.tree_util.tree_flatten((actor, {"sa_encoder": sa, "g_encoder": g}))
    noise = jax.random.split(k[3], len(leaves))
    leaves = [x + 0.2 * jax.random.normal(n, x.shape) for x, n in zip(leaves, noise)]
    actor, critic = jax.tree_util.tree_unflatten(tree, leaves)
    run.mkdir(parents=True, exist_ok=True)
    reference.save_params(str(run / "final.pkl"), ({"log_alpha": jax.numpy.asarray(0.0)}, actor, critic))
    reference.Args.__module__ = "__main__"  # as train.py run as a script pickles it
    sys.modules["__main__"].Args = reference.Args
    with open(run / "args.pkl", "wb") as fh:
        pickle.dump(args, fh)
    print("wrote", run)
    sys.exit(0)

out = Path(sys.argv[3])


class _Args:
    pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "__main__" and name == "Args":
            return _Args
        return super().find_class(module, name)


args = vars(_Unpickler(open(run / "args.pkl", "rb")).load())
_, actor_params, critic_params = pickle.loads((run / "final.pkl").read_bytes())
obs, g0, g1 = args["obs_dim"], args["goal_start_idx"], args["goal_end_idx"]
act = actor_params["params"][f"Dense_{4 * (args['actor_depth'] // 4) + 1}"]["kernel"].shape[-1]
rng = np.random.default_rng(0)
s = rng.normal(0, 1, (64, obs)).astype(np.float32)
g = rng.normal(0, 1, (64, g1 - g0)).astype(np.float32)
a = rng.uniform(-1, 1, (64, act)).astype(np.float32)
actor = reference.Actor(action_size=act, network_width=args["actor_network_width"],
                        network_depth=args["actor_depth"], use_relu=args["use_relu"])
mean, log_std = actor.apply(actor_params, np.concatenate([s, g], -1))
kw = dict(network_width=args["critic_network_width"], network_depth=args["critic_depth"], use_relu=args["use_relu"])
phi = reference.SA_encoder(**kw).apply(critic_params["sa_encoder"], s, a)
psi = reference.G_encoder(**kw).apply(critic_params["g_encoder"], g)
energy = -np.sqrt(np.sum((np.asarray(phi) - np.asarray(psi)) ** 2, axis=-1))
np.savez(out, s=s, g=g, a=a, action=np.tanh(np.asarray(mean)), log_std=np.asarray(log_std), energy=energy)
print("wrote", out)
