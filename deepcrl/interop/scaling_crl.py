"""`deepcrl import scaling-crl`: a teacher trained with the paper's code becomes a deepcrl teacher artifact.

The reference (`wang-kevin3290/scaling-crl`) saves ``runs/{env}_{seed}_{time}/final.pkl`` (and ``step_N.pkl``)
as a pickle of ``(alpha_params, actor_params, critic_params)`` and ``args.pkl`` (its ``Args``). Its networks
are flax linen modules whose layers are numbered in call order inside ``{"params": ...}``:

- a tower: ``Dense_0`` + ``LayerNorm_0`` (input), then ``depth // 4`` residual blocks of 4 Dense/LayerNorm
  pairs (``Dense_{1+4b+j}``, ``LayerNorm_{1+4b+j}``), each Dense -> LayerNorm -> swish, the block input added
  after the fourth;
- the actor (input ``[state, goal]``) ends in ``Dense_{L+1}`` (mean) and ``Dense_{L+2}`` (log-std, squashed by
  tanh into [-5, 2]), L = 4 x blocks; the critic's ``sa_encoder`` (input ``[state, action]``) and
  ``g_encoder`` (input ``goal``) end in one Dense (``Dense_{L+1}``, 64 wide, no LayerNorm).

deepcrl's `ResidualTower`, `Actor` and `Critic` have exactly this structure (same layer order, same LayerNorm
epsilon, same log-std squash, same energy -||phi - psi||), so the import is a renaming plus stacking the
blocks along deepcrl's leading block axis; no variant is needed. What deepcrl cannot represent is refused:
the ReLU variant (``use_relu``), a tower with no residual block, and a task without a ``*_ref`` env.
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

FORMAT = "scaling-crl"


def pick_checkpoint(run: Path, name: str | None) -> Path:
    """The checkpoint file of a reference run directory: `name` if given, else final.pkl, else the latest
    step_N.pkl."""
    if not run.is_dir():
        raise DeepcrlError(f"{run} is not a directory; give the reference's run directory (runs/ENV_SEED_TIME).")
    if name is not None:
        path = run / name
        if not path.is_file():
            raise DeepcrlError(f"{run} has no checkpoint {name}.")
        return path
    if (run / "final.pkl").is_file():
        return run / "final.pkl"
    steps = sorted((int(m.group(1)), p) for p in run.glob("step_*.pkl")
                   if (m := re.fullmatch(r"step_(\d+)\.pkl", p.name)))
    if not steps:
        raise DeepcrlError(f"{run} holds neither final.pkl nor step_N.pkl: it is not a scaling-crl run directory.")
    return steps[-1][1]


def read_args(run: Path) -> dict[str, Any]:
    """The fields of the run's args.pkl (env id, depths, widths, obs_dim, goal indices, use_relu, ...)."""
    path = run / "args.pkl"
    if not path.is_file():
        raise DeepcrlError(f"{run} has no args.pkl, which names the env and the activation; the reference writes "
                           "it when training ends (copy it from the run that wrote the checkpoint).")
    args = unpickle.load(path, "args file")
    if not isinstance(args, unpickle.ReferenceArgs):
        raise DeepcrlError(f"{path} does not hold the reference's Args.")
    return args.fields()


def _module_params(tree: Any, what: str) -> dict:
    """The ``params`` collection of one flax module's variables."""
    if not isinstance(tree, dict) or not isinstance(tree.get("params"), dict):
        raise DeepcrlError(f"the checkpoint's {what} is not a flax variables dict with a 'params' collection.")
    return tree["params"]


def _layer_counts(params: dict, what: str) -> tuple[int, int]:
    """(number of Dense layers, number of LayerNorm layers), checking the names are exactly Dense_0..,
    LayerNorm_0.. and every layer holds float arrays."""
    dense = sorted(int(k[6:]) for k in params if re.fullmatch(r"Dense_\d+", k))
    norms = sorted(int(k[10:]) for k in params if re.fullmatch(r"LayerNorm_\d+", k))
    if (len(dense) + len(norms) != len(params) or dense != list(range(len(dense)))
            or norms != list(range(len(norms)))):
        raise DeepcrlError(f"the checkpoint's {what} has an unknown layout (layers {', '.join(sorted(params))}); "
                           "expected Dense_0.. and LayerNorm_0.. as the reference's train.py names them.")
    for key, layer in params.items():
        want = ("bias", "kernel") if key.startswith("Dense") else ("bias", "scale")
        if not isinstance(layer, dict) or tuple(sorted(layer)) != want or not all(
                isinstance(layer[k], np.ndarray) and layer[k].dtype.kind == "f" for k in want):
            raise DeepcrlError(f"the checkpoint's {what} layer {key} is not a {' + '.join(want)} pair of arrays.")
    return len(dense), len(norms)


def _blocks(params: dict, heads: int, what: str) -> int:
    """The number of residual blocks of a tower with `heads` output Dense layers after it."""
    n_dense, n_norm = _layer_counts(params, what)
    blocks, rest = divmod(n_norm - 1, 4)
    if n_norm < 1 or rest or n_dense != n_norm + heads:
        raise DeepcrlError(f"the checkpoint's {what} has {n_dense} Dense and {n_norm} LayerNorm layers, which is "
                           f"not the reference's input layer + residual blocks of 4 + {heads} head(s).")
    if blocks < 1:
        raise DeepcrlError(f"the checkpoint's {what} has no residual block (depth < 4); deepcrl's networks start "
                           "at depth 4.")
    return blocks


def _tower(params: dict, blocks: int) -> dict:
    """deepcrl's ResidualTower pure dict: the input layer, then the blocks stacked on a leading axis."""
    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731

    def pair(i: int) -> dict:
        return {"dense": {"kernel": f32(params[f"Dense_{i}"]["kernel"]), "bias": f32(params[f"Dense_{i}"]["bias"])},
                "norm": {"scale": f32(params[f"LayerNorm_{i}"]["scale"]),
                         "bias": f32(params[f"LayerNorm_{i}"]["bias"])}}

    layers = {}
    for j in range(4):
        per_block = [pair(1 + 4 * b + j) for b in range(blocks)]
        layers[j] = {part: {name: np.stack([p[part][name] for p in per_block]) for name in per_block[0][part]}
                     for part in ("dense", "norm")}
    return {"input": pair(0), "blocks": {"layers": layers}}


def _head(params: dict, i: int) -> dict:
    return {"kernel": np.asarray(params[f"Dense_{i}"]["kernel"], np.float32),
            "bias": np.asarray(params[f"Dense_{i}"]["bias"], np.float32)}


def convert(checkpoint: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Map the reference's unpickled ``(alpha, actor, critic)`` onto deepcrl's networks.

    Returns:
        ``{"env_id", "actor_cfg", "critic_cfg", "params": {"actor", "critic"}, "log_alpha"}``; the configs are
        complete deepcrl network configs (sizes read from the parameters, checked against the env).
    Raises:
        DeepcrlError: a checkpoint deepcrl cannot represent exactly (one sentence).
    """
    from deepcrl import envs
    from deepcrl.envs.scaling_crl import REFERENCE_IDS

    ref_env = args.get("env_id")
    check_run(args.get("use_relu"), ref_env, checkpoint, REFERENCE_IDS, "the reference's")
    alpha, actor_vars, critic = checkpoint
    if not isinstance(critic, dict) or set(critic) != {"sa_encoder", "g_encoder"}:
        raise DeepcrlError("the checkpoint's critic is not {'sa_encoder': ..., 'g_encoder': ...}.")
    actor_p = _module_params(actor_vars, "actor")
    sa_p = _module_params(critic["sa_encoder"], "sa_encoder")
    g_p = _module_params(critic["g_encoder"], "g_encoder")
    a_blocks, sa_blocks, g_blocks = _blocks(actor_p, 2, "actor"), _blocks(sa_p, 1, "sa_encoder"), _blocks(
        g_p, 1, "g_encoder")
    if sa_blocks != g_blocks:
        raise DeepcrlError(f"the checkpoint's encoders differ in depth ({4 * sa_blocks} vs {4 * g_blocks}); "
                           "deepcrl's critic has one depth for both.")

    env_id = REFERENCE_IDS[ref_env]
    env = envs.make(env_id)
    spec = env.goal_spec
    obs, goal, act = spec.obs_size, spec.goal_size, env.action_size
    if (args.get("obs_dim"), args.get("goal_start_idx"), args.get("goal_end_idx")) != (
            obs, spec.goal_indices[0], spec.goal_indices[-1] + 1):
        raise DeepcrlError(f"args.pkl's obs_dim/goal indices ({args.get('obs_dim')}, {args.get('goal_start_idx')}"
                           f"-{args.get('goal_end_idx')}) are not those of the reference's {ref_env} "
                           f"({obs}, {spec.goal_indices[0]}-{spec.goal_indices[-1] + 1}).")
    a_width = actor_p["Dense_0"]["kernel"].shape[-1]
    c_width = sa_p["Dense_0"]["kernel"].shape[-1]
    repr_size = sa_p[f"Dense_{4 * sa_blocks + 1}"]["kernel"].shape[-1]
    actor_cfg = {"obs_size": obs, "goal_size": goal, "action_size": act, "depth": 4 * a_blocks, "width": a_width,
                 "remat": False, "dtype": "float32", "scan": True, "residual_init": "reference"}
    critic_cfg = {**actor_cfg, "depth": 4 * sa_blocks, "width": c_width, "repr_size": repr_size}
    params = {"actor": {"tower": _tower(actor_p, a_blocks), "mean": _head(actor_p, 4 * a_blocks + 1),
                        "log_std": _head(actor_p, 4 * a_blocks + 2)},
              "critic": {"sa_tower": _tower(sa_p, sa_blocks), "sa_head": _head(sa_p, 4 * sa_blocks + 1),
                         "g_tower": _tower(g_p, g_blocks), "g_head": _head(g_p, 4 * g_blocks + 1)}}
    _check_shapes(params, actor_cfg, critic_cfg, ref_env)
    check_finite(params, "the reference")
    return {"env_id": env_id, "reference_env_id": ref_env, "actor_cfg": actor_cfg, "critic_cfg": critic_cfg,
            "params": params, "log_alpha": finite_log_alpha(alpha)}


def _check_shapes(params: dict, actor_cfg: dict, critic_cfg: dict, ref_env: str) -> None:
    """Every converted array has the shape deepcrl's network of these configs holds (else one sentence)."""
    import jax
    from flax import nnx

    from deepcrl.teacher import networks

    def shapes(tree):
        return jax.tree.map(np.shape, tree)

    for name, build, cfg in (("actor", networks.actor_from_config, actor_cfg),
                             ("critic", networks.critic_from_config, critic_cfg)):
        want = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda b=build, c=cfg: b(c)), nnx.Param))
        if shapes(want) != shapes(params[name]):
            raise DeepcrlError(f"the checkpoint's {name} does not fit deepcrl's {ref_env} task (input, output or "
                               "layer sizes differ: another env, or another observation layout).")


def import_run(run: str | Path, out: str | Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Import a reference run directory into a deepcrl teacher artifact at `out`.

    Args:
        run: the reference's run directory (holding final.pkl or step_N.pkl, and args.pkl).
        out: the deepcrl run directory to write.
        checkpoint: a file name inside `run` (default: final.pkl, else the latest step_N.pkl).
    Returns:
        A summary: env ids, depths, widths, the source file and its sha256, the artifact path.
    """
    from deepcrl import artifacts

    run = Path(run)
    path = pick_checkpoint(run, checkpoint)
    args = read_args(run)
    raw = path.read_bytes()
    converted = convert(unpickle.load(path, "checkpoint"), args)
    match = re.fullmatch(r"step_(\d+)\.pkl", path.name)
    # step_N.pkl names its env steps; final.pkl is written after the run's total_env_steps
    step = int(match.group(1)) if match else int(args.get("total_env_steps", 0) or 0)
    source = {"format": FORMAT, "run": str(run.absolute()), "checkpoint": path.name,
              "checkpoint_sha256": hashlib.sha256(raw).hexdigest(),
              "reference_env_id": converted["reference_env_id"], "args": args}
    a, c = converted["actor_cfg"], converted["critic_cfg"]
    manifest = artifacts.Manifest(
        kind="teacher", env_id=converted["env_id"], obs_size=a["obs_size"], goal_size=a["goal_size"],
        action_size=a["action_size"], network={"actor": a, "critic": c, "source": source}, step=step,
        metrics={} if converted["log_alpha"] is None else {"log_alpha": converted["log_alpha"]})
    written = artifacts.save(out, manifest, converted["params"])
    return {"out": str(Path(out).absolute()), "env": converted["env_id"],
            "reference_env": converted["reference_env_id"], "checkpoint": str(path.absolute()),
            "checkpoint_sha256": source["checkpoint_sha256"], "step": step, "actor_depth": a["depth"],
            "actor_width": a["width"], "critic_depth": c["depth"], "critic_width": c["width"],
            "repr_size": c["repr_size"], "checkpoint_hash": written.checkpoint_hash}
