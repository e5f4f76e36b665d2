"""`deepcrl import jaxgcrl`: a CRL agent trained with JaxGCRL becomes a deepcrl artifact of the student kind.

Facts (read in MichalBortkiewicz/JaxGCRL; two layouts share the networks):

- Files. Since 2025-03 (``run.py`` + ``jaxgcrl/agents/crl``): ``runs/run_{exp_name}_s_{seed}/args.pkl`` holds
  ``vars(config)`` = ``{"agent": CRL(...), "run": RunConfig(...)}`` (flax struct dataclasses of
  ``jaxgcrl.agents.crl.crl`` / ``jaxgcrl.utils.config``, ``agents.crl.crl`` / ``utils.config`` before the
  2025-03-21 package); ``step_{N}.pkl`` goes to ``--checkpoint_logdir`` after every evaluation and
  ``ckpt/final`` (brax's ``model.save_params``: a plain pickle, no extension) at the end. 2025-02 (``training.py``):
  ``args.pkl`` holds ``utils.Args`` (``env_name``, ...), and ``ckpt/step_{N}.pkl`` / ``ckpt/final.pkl``. Each
  checkpoint is ``pickle.dumps((alpha_params, actor_params, critic_params))`` of jax arrays, critic =
  ``{"sa_encoder": ..., "g_encoder": ...}``, each a flax linen ``{"params": ...}``. (Before 2025-02 JaxGCRL
  saved brax networks with an observation normaliser; that layout is refused.)
- Networks (flax linen, names in call order). ``Actor``: ``n_hidden`` (default 2) x ``Dense_i(h_dim=256)`` ->
  swish (ReLU with ``use_relu``), then ``Dense_n`` (mean) and ``Dense_{n+1}`` (log-std, tanh-squashed into
  [-5, 2]); it never has a LayerNorm (``use_ln`` is not passed to it). ``Encoder`` (sa: ``[state, action]``,
  g: ``goal``): the same hidden layers with ``LayerNorm_i`` after each Dense when ``use_ln``, then ``Dense_n``
  (``repr_dim=64``). ``skip_connections=k`` (default 4) adds the output of layer 0 (then of the last add) after
  layers k, 2k, ... < n_hidden: with the default n_hidden=2 no add ever happens.
- Critic energy (``energy_fn``, 2025-03+): ``norm`` (default) = -sqrt(||phi - psi||^2 + 1e-6); ``l2``, ``dot``,
  ``cosine``. 2025-02: -||phi - psi|| (no epsilon). Envs reacher / ant / ant_u_maze / ant_big_maze have the same
  observation layout as the paper's (both come from the same code), so they map onto deepcrl's ``*_ref`` tasks.

Against deepcrl: its teacher towers put a LayerNorm after every Dense and add residuals per block of 4 after an
input layer, so no JaxGCRL actor (no LayerNorm) fits them. deepcrl's *student* networks are JaxGCRL's exactly:
``StudentActor`` = Dense -> swish per hidden layer + a mean head; ``StudentCritic`` = two such towers
(LayerNorm per layer as an option, epsilon 1e-6 as flax linen's) with heads and energy -||phi - psi||. So a
checkpoint with no skip add and swish is renamed onto a student artifact (deterministic actor: JaxGCRL's
tanh-squashed log-std head is not kept, students clip theirs; the deterministic policy tanh(mean) is exact).
``norm`` energies differ from deepcrl's by the 1e-6 under the root (< 1e-5 once ||phi - psi|| > 0.05); a critic
with another energy is left out. Refused: ReLU, skip adds, layouts or sizes that are not these.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.errors import DeepcrlError
from deepcrl.interop import unpickle
from deepcrl.interop.config import check_finite, check_run, finite_log_alpha

FORMAT = "jaxgcrl"
ENERGY = "norm"  # the only energy deepcrl's critics compute (-||phi - psi||)


class JaxgcrlConfig:
    """Stand-in for a pickled JaxGCRL config object: unpickling fills ``__dict__``; `kind` names the class."""

    kind = ""

    def fields(self) -> dict[str, Any]:
        return unpickle.ReferenceArgs.fields(self)  # plain numbers, strings, booleans (numpy scalars too)


def _stand_in(kind: str) -> type:
    return type(f"Jaxgcrl{kind}", (JaxgcrlConfig,), {"kind": kind})


class _EarlyFormat:
    """brax's normaliser state, which only JaxGCRL's checkpoints from before 2025-02 hold: unpickling it refuses."""

    def __new__(cls, *_args, **_kwargs):
        raise DeepcrlError("this is an early JaxGCRL checkpoint (before 2025-02: brax networks with an observation "
                           "normaliser), whose layout deepcrl does not import; retrain with JaxGCRL 2025-02 or later.")


_CONFIGS = {kind: _stand_in(kind) for kind in ("CRL", "SAC", "TD3", "PPO", "RunConfig", "Args")}
ALLOWED = {**unpickle.ALLOWED,
           ("brax.training.acme.running_statistics", "RunningStatisticsState"): _EarlyFormat,
           ("utils", "Args"): _CONFIGS["Args"]}
for _prefix in ("jaxgcrl.", ""):
    ALLOWED[(f"{_prefix}utils.config", "RunConfig")] = _CONFIGS["RunConfig"]
    for _agent in ("CRL", "SAC", "TD3", "PPO"):
        ALLOWED[(f"{_prefix}agents.{_agent.lower()}.{_agent.lower()}", _agent)] = _CONFIGS[_agent]


def read_config(run: Path) -> dict[str, Any]:
    """The run's args.pkl as one flat dict (both layouts), with ``agent`` (class name) and ``env``."""
    path = run / "args.pkl"
    if not path.is_file():
        raise DeepcrlError(f"{run} has no args.pkl; give JaxGCRL's run directory (runs/run_NAME_s_SEED), where "
                           "it writes args.pkl when training starts.")
    obj = unpickle.load(path, "args file", allowed=ALLOWED, source=FORMAT)
    if isinstance(obj, unpickle.ReferenceArgs):
        raise DeepcrlError(f"{run} is a scaling-crl run (its args.pkl holds the paper's Args); import it with "
                           "`deepcrl import scaling-crl`.")
    if isinstance(obj, JaxgcrlConfig) and obj.kind == "Args":  # 2025-02: one Args, the CRL agent implied
        fields = obj.fields()
        return {**fields, "agent": "CRL", "env": fields.get("env_name"), "layout": "training.py (2025-02)"}
    if (isinstance(obj, dict) and isinstance(obj.get("agent"), JaxgcrlConfig)
            and isinstance(obj.get("run"), JaxgcrlConfig)):
        return {**obj["run"].fields(), **obj["agent"].fields(), "agent": obj["agent"].kind,
                "layout": "run.py (2025-03 or later)"}
    raise DeepcrlError(f"{path} does not hold JaxGCRL's run config.")


def is_jaxgcrl_run(run: Path) -> bool:
    """Whether `run` holds a JaxGCRL args.pkl (for `deepcrl import scaling-crl`'s refusal)."""
    try:
        return Path(run, "args.pkl").is_file() and read_config(Path(run)) is not None
    except DeepcrlError:
        return False


WRONG_VERB = ("{run} is a JaxGCRL run, not a scaling-crl one (plain MLP networks without residual blocks, the "
              "actor without LayerNorm): import it with `deepcrl import jaxgcrl {run}`.")


def pick_checkpoint(run: Path, name: str | None) -> Path:
    """`name` in RUN_DIR/ckpt or RUN_DIR; else ckpt/final, ckpt/final.pkl, else the latest step_N.pkl."""
    if not run.is_dir():
        raise DeepcrlError(f"{run} is not a directory; give JaxGCRL's run directory (runs/run_NAME_s_SEED).")
    dirs = (run / "ckpt", run)
    if name is not None:
        for d in dirs:
            if (d / name).is_file():
                return d / name
        raise DeepcrlError(f"{run} has no checkpoint {name} (looked in ckpt/ and the directory itself).")
    for d in dirs:
        for final in ("final", "final.pkl"):
            if (d / final).is_file():
                return d / final
    steps = sorted((int(m.group(1)), p) for d in dirs for p in d.glob("step_*.pkl")
                   if (m := re.fullmatch(r"step_(\d+)\.pkl", p.name)))
    if not steps:
        raise DeepcrlError(f"{run} holds no checkpoint (ckpt/final or step_N.pkl); JaxGCRL writes step_N.pkl "
                           "into --checkpoint_logdir: copy one into RUN_DIR/ckpt.")
    return steps[-1][1]


def _layers(tree: Any, what: str, hidden: int, norms: bool, heads: int) -> dict:
    """A module's ``params`` after checking it is exactly Dense_0..Dense_{hidden+heads-1} (+ LayerNorm_i)."""
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
        raise DeepcrlError(f"the checkpoint's {what} is not a flax variables dict with a 'params' collection.")
    params = tree["params"]
    want = {f"Dense_{i}": ("bias", "kernel") for i in range(hidden + heads)}
    want.update({f"LayerNorm_{i}": ("bias", "scale") for i in range(hidden if norms else 0)})
    if set(params) != set(want):
        raise DeepcrlError(f"the checkpoint's {what} has layers {', '.join(sorted(params))}, not JaxGCRL's "
                           f"{hidden} hidden Dense layers{' with LayerNorm' if norms else ''} and {heads} head(s).")
    for key, names in want.items():
        layer = params[key]
        if not isinstance(layer, dict) or tuple(sorted(layer)) != names or not all(
                isinstance(layer[k], np.ndarray) and layer[k].dtype.kind == "f" for k in names):
            raise DeepcrlError(f"the checkpoint's {what} layer {key} is not a {' + '.join(names)} pair of arrays.")
    return params


def _torso(params: dict, hidden: int, norms: bool) -> dict:
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    out = {}
    for i in range(hidden):
        out[f"layer{i}"] = {k: f32(v) for k, v in params[f"Dense_{i}"].items()}
        if norms:
            out[f"norm{i}"] = {k: f32(v) for k, v in params[f"LayerNorm_{i}"].items()}
    return out


def _head(params: dict, i: int) -> dict:
    return {k: np.asarray(v, np.float32) for k, v in params[f"Dense_{i}"].items()}


def convert(checkpoint: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Map JaxGCRL's unpickled ``(alpha, actor, critic)`` onto deepcrl's student networks.

    Returns:
        ``{"env_id", "reference_env_id", "actor_cfg", "critic_cfg" (None when left out), "params",
        "log_alpha", "critic_note"}``.
    Raises:
        DeepcrlError: a checkpoint deepcrl cannot represent exactly (one sentence).
    """
    from deepcrl.envs.scaling_crl import REFERENCE_IDS

    if cfg.get("agent") != "CRL":
        raise DeepcrlError(f"args.pkl says this run trained JaxGCRL's {cfg.get('agent')} agent; deepcrl imports "
                           "its CRL agents only.")
    ref_env = cfg.get("env")
    check_run(cfg.get("use_relu"), ref_env, checkpoint, REFERENCE_IDS, "JaxGCRL's")
    alpha, actor_vars, critic = checkpoint
    if not isinstance(critic, dict) or set(critic) != {"sa_encoder", "g_encoder"}:
        raise DeepcrlError("the checkpoint's critic is not {'sa_encoder': ..., 'g_encoder': ...}.")
    hidden, skip, norms = int(cfg.get("n_hidden", 0)), int(cfg.get("skip_connections", 0) or 0), bool(
        cfg.get("use_ln"))
    if hidden < 1:
        raise DeepcrlError(f"args.pkl's n_hidden is {cfg.get('n_hidden')!r}, not a number of hidden layers.")
    if skip and hidden - 1 >= skip:
        raise DeepcrlError(f"the checkpoint's networks add a skip connection every {skip} layers ({hidden} hidden "
                           "layers, the actor without LayerNorm), which neither deepcrl's teachers (LayerNorm after "
                           "every layer) nor its students (no skips) can represent.")
    actor_p = _layers(actor_vars, "actor", hidden, False, 2)
    sa_p = _layers(critic["sa_encoder"], "sa_encoder", hidden, norms, 1)
    g_p = _layers(critic["g_encoder"], "g_encoder", hidden, norms, 1)

    env_id = REFERENCE_IDS[ref_env]
    sizes = _task_sizes(env_id)
    widths = [actor_p[f"Dense_{i}"]["kernel"].shape[-1] for i in range(hidden)]
    c_widths = [sa_p[f"Dense_{i}"]["kernel"].shape[-1] for i in range(hidden)]
    actor_cfg = {**sizes, "hidden": widths, "layer_norm": False, "gaussian": False}
    params = {"actor": {"torso": _torso(actor_p, hidden, False), "mean": _head(actor_p, hidden)}}
    energy = cfg.get("energy_fn", ENERGY)
    critic_cfg, note = None, f"not imported: energy_fn {energy!r} is not deepcrl's -||phi - psi||"
    if energy == ENERGY:
        critic_cfg = {**sizes, "hidden": c_widths, "layer_norm": norms,
                      "repr_size": sa_p[f"Dense_{hidden}"]["kernel"].shape[-1]}
        params["critic"] = {"sa_torso": _torso(sa_p, hidden, norms), "sa_head": _head(sa_p, hidden),
                            "g_torso": _torso(g_p, hidden, norms), "g_head": _head(g_p, hidden)}
        note = "imported" + (" (JaxGCRL's norm energy adds 1e-6 under the root)" if "energy_fn" in cfg else "")
    _check_shapes(params, actor_cfg, critic_cfg, ref_env)
    check_finite(params, "the JaxGCRL")
    return {"env_id": env_id, "reference_env_id": ref_env, "actor_cfg": actor_cfg, "critic_cfg": critic_cfg,
            "params": params, "critic_note": note, "log_alpha": finite_log_alpha(alpha)}


def _task_sizes(env_id: str) -> dict[str, int]:
    from deepcrl import envs

    env = envs.make(env_id)
    return {"obs_size": env.goal_spec.obs_size, "goal_size": env.goal_spec.goal_size,
            "action_size": env.action_size}


def _check_shapes(params: dict, actor_cfg: dict, critic_cfg: dict | None, ref_env: str) -> None:
    """Every converted array has the shape deepcrl's student network of these configs holds."""
    import jax
    from flax import nnx

    from deepcrl.student import networks

    for name, build, cfg in (("actor", networks.actor_from_config, actor_cfg),
                             ("critic", networks.critic_from_config, critic_cfg)):
        if cfg is None:
            continue
        want = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda b=build, c=cfg: b(c)), nnx.Param))
        if jax.tree.map(np.shape, want) != jax.tree.map(np.shape, params[name]):
            raise DeepcrlError(f"the checkpoint's {name} does not fit deepcrl's {ref_env} task (input, output or "
                               "layer sizes differ: another env, or another observation layout).")


def import_run(run: str | Path, out: str | Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Import a JaxGCRL run directory into a deepcrl student-kind artifact at `out`.

    Args:
        run: JaxGCRL's run directory (args.pkl, and ckpt/final, ckpt/final.pkl or step_N.pkl).
        out: the deepcrl run directory to write.
        checkpoint: a file name in RUN_DIR/ckpt or RUN_DIR (default: final, else the latest step_N.pkl).
    Returns:
        A summary: env ids, hidden sizes, whether the critic came along, the source file and its sha256.
    """
    from deepcrl import artifacts

    run = Path(run)
    cfg = read_config(run)
    path = pick_checkpoint(run, checkpoint)
    raw = path.read_bytes()
    converted = convert(unpickle.load(path, "checkpoint", allowed=ALLOWED, source=FORMAT), cfg)
    match = re.fullmatch(r"step_(\d+)\.pkl", path.name)
    step = int(match.group(1)) if match else int(cfg.get("total_env_steps", 0) or 0)
    source = {"format": FORMAT, "layout": cfg["layout"], "run": str(run.absolute()),
              "checkpoint": str(path.relative_to(run)), "checkpoint_sha256": hashlib.sha256(raw).hexdigest(),
              "reference_env_id": converted["reference_env_id"], "critic": converted["critic_note"],
              "actor_log_std": "not imported (deterministic student; JaxGCRL tanh-squashes it into [-5, 2])",
              "args": {k: v for k, v in cfg.items() if k not in ("layout", "env")}}
    a, c = converted["actor_cfg"], converted["critic_cfg"]
    network = {"actor": a, **({"critic": c} if c is not None else {}), "source": source}
    manifest = artifacts.Manifest(
        kind="student", env_id=converted["env_id"], obs_size=a["obs_size"], goal_size=a["goal_size"],
        action_size=a["action_size"], network=network, step=step,
        metrics={} if converted["log_alpha"] is None else {"log_alpha": converted["log_alpha"]})
    written = artifacts.save(out, manifest, converted["params"])
    return {"out": str(Path(out).absolute()), "kind": "student", "env": converted["env_id"],
            "reference_env": converted["reference_env_id"], "checkpoint": str(path.absolute()),
            "checkpoint_sha256": source["checkpoint_sha256"], "step": step, "actor_hidden": a["hidden"],
            "critic_hidden": None if c is None else c["hidden"], "critic_layer_norm": None if c is None else
            c["layer_norm"], "repr_size": None if c is None else c["repr_size"], "critic": converted["critic_note"],
            "checkpoint_hash": written.checkpoint_hash}
