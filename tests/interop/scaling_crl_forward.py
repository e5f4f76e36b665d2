"""Run INSIDE the reference's own virtualenv (jax 0.4.23, flax 0.7.4): the reference networks' outputs.

    python scaling_crl_forward.py REFERENCE_CHECKOUT RUN_DIR OUT.npz

Loads RUN_DIR/final.pkl and args.pkl with plain pickle (our own files, made by the test), builds the
reference's Actor / SA_encoder / G_encoder from its train.py, and writes random inputs plus the deterministic
actions tanh(mean), the log-stds and the energies -||sa(s, a) - g(goal)|| to OUT.npz.
"""

import pickle
import sys
from pathlib import Path

import numpy as np

checkout, run, out = (Path(p) for p in sys.argv[1:4])
sys.path.insert(0, str(checkout))
import train as reference  # noqa: E402  (its training code is under `if __name__ == "__main__"`)


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
