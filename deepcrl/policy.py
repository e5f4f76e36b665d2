"""One policy signature for every stage: ``policy(observation[B, obs], goal[B, goal]) -> action[B, act]``.

Teacher and student artifacts, an exported ``.onnx`` (ONNX Runtime) and a remote server (HTTP client) all
implement it, so `deepcrl eval` can score any of them. A policy from an artifact is also a pure JAX function
(`JaxPolicy.apply_fn(params, observation, goal)`), so evaluation and distillation run it inside jitted loops.

Every artifact's checkpoint holds the policy module's parameters under the key ``"actor"`` (an nnx pure dict)
and its manifest's ``network["actor"]`` holds the config its builder needs. The module's
``act(observation, goal)`` returns the deterministic action in [-1, 1]; `JaxPolicy` maps it onto the
manifest's action bounds.
"""

from __future__ import annotations

import dataclasses
import pkgutil
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl import artifacts
from deepcrl.errors import ArtifactError, DeepcrlError

# kind -> "module:function(actor_config: dict) -> nnx.Module with .act(observation, goal)"
ACTOR_BUILDERS = {
    "teacher": "deepcrl.teacher.networks:actor_from_config",
    "student": "deepcrl.student.networks:actor_from_config",
}
# kind -> "module:function(critic_config: dict)": the teacher's CRL critic, a student's learned encoders
CRITIC_BUILDERS = {
    "teacher": "deepcrl.teacher.networks:critic_from_config",
    "student": "deepcrl.student.networks:critic_from_config",
}


def build_actor(kind: str, actor_config: dict[str, Any], seed: int = 0):
    """A freshly initialised policy module of an artifact kind (used to restore and to export)."""
    return pkgutil.resolve_name(ACTOR_BUILDERS[kind])(actor_config, seed=seed)


def restore_module(module, pure: dict, where: str | Path):
    """Load an nnx pure dict into a module, with one clear error on any mismatch."""
    from flax import nnx

    def shapes(tree):  # Orbax restores an nnx.List's int keys as strings ("0"): compare keys as strings
        if isinstance(tree, dict):
            return {str(k): shapes(v) for k, v in tree.items()}
        return tuple(np.shape(tree))

    state = nnx.state(module, nnx.Param)
    if shapes(nnx.to_pure_dict(state)) != shapes(pure):
        raise ArtifactError(f"{where} does not match its manifest: the checkpoint's parameter shapes differ "
                            "from the network it describes.")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    return module


class JaxPolicy:
    """The deterministic policy of a teacher or student artifact, as numpy callable and pure JAX function."""

    def __init__(self, manifest: artifacts.Manifest, module):
        import jax
        from flax import nnx

        self.manifest = manifest
        self.module = module
        self.obs_size, self.goal_size = manifest.obs_size, manifest.goal_size
        self.action_size = manifest.action_size
        self.graphdef, self.params = nnx.split(module)
        low, high = manifest.action_low, manifest.action_high
        graphdef = self.graphdef

        def apply_fn(params, observation, goal):
            unit = nnx.merge(graphdef, params).act(observation, goal)
            return low + (unit + 1.0) * (0.5 * (high - low))

        self.apply_fn = apply_fn
        # Two policies with the same graph and action bounds trace to the same program: `evaluate` keys its
        # compiled rollout on this, so a training run's periodic evaluations compile once, not once each.
        self.trace_key = (graphdef, float(low), float(high))
        self._jit = jax.jit(apply_fn)

    def __call__(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        return np.asarray(self._jit(self.params, np.asarray(observation, np.float32), np.asarray(goal, np.float32)))


# A teacher trained with bfloat16 compute or per-block remat is deployed in plain float32: remat only matters
# for gradients, and bf16 would cost the exported file its 1e-5 parity with JAX.
DEPLOY_OVERRIDES = {"teacher": {"dtype": "float32", "remat": False}}


@dataclasses.dataclass(frozen=True)
class Networks:
    """An artifact's networks rebuilt from disk: its manifest, its actor and (when asked for) its critic."""

    manifest: artifacts.Manifest
    actor: Any
    critic: Any = None


def load_networks(run_dir: str | Path, kind: artifacts.Kind | None = None, critic: str | None = None,
                  deploy: bool = False) -> Networks:
    """Rebuild a teacher or student run directory's networks from disk alone: the one loader of artifacts.

    Args:
        run_dir: the run directory.
        kind: if given, the kind the caller needs.
        critic: also rebuild the critic (a teacher's CRL critic, a student's learned encoders); the text says
            who needs it, for the error when there is none ("--represent needs").
        deploy: build the float32, no-remat form of the networks (same parameters), as export does.

    Raises:
        ArtifactError: missing, corrupt, wrong kind, or without the parameters asked for (one sentence).
    """
    manifest, params = artifacts.load(run_dir, kind)
    overrides = DEPLOY_OVERRIDES.get(manifest.kind, {}) if deploy else {}

    def rebuild(part: str, builders: dict[str, str]):
        module = pkgutil.resolve_name(builders[manifest.kind])({**manifest.network[part], **overrides})
        return restore_module(module, params[part], run_dir)

    if "actor" not in params or "actor" not in manifest.network:
        raise ArtifactError(f"{run_dir} is corrupt: it holds no policy ('actor') parameters.")
    if critic is not None and ("critic" not in params or "critic" not in manifest.network):
        raise ArtifactError(f"{run_dir} holds no critic parameters, which {critic}.")
    return Networks(manifest, rebuild("actor", ACTOR_BUILDERS),
                    rebuild("critic", CRITIC_BUILDERS) if critic is not None else None)


def load_policy(run_dir: str | Path, kind: artifacts.Kind | None = None, deploy: bool = False) -> JaxPolicy:
    """Rebuild the policy of a teacher or student run directory from disk alone.

    Args:
        run_dir: the run directory.
        kind: if given, the kind the caller needs.
        deploy: build the float32, no-remat form of the network (same parameters), as export does.
    """
    nets = load_networks(run_dir, kind, deploy=deploy)
    return JaxPolicy(nets.manifest, nets.actor)


@dataclasses.dataclass(frozen=True)
class OpenedPolicy:
    """A policy picked by `open_policy`, with the env it acts in (None when it names none) and its source."""

    policy: Any
    env_id: str | None
    source: str


def open_policy(*, run: str | Path | None = None, model: str | Path | None = None, url: str | None = None,
                token: str | None = None, model_name: str | None = None, protocol: str = "v1",
                onnx_options: dict[str, Any] | None = None, tls: dict[str, Any] | None = None) -> OpenedPolicy:
    """The policy behind exactly one of a run directory, an exported .onnx file or a server's URL.

    Every kind implements ``policy(observation[B, obs], goal[B, goal]) -> action[B, act]``, so a caller scores
    or serves any of them alike. The env is the one the source names (its manifest, the file's metadata, the
    server's metadata).

    Args:
        run: a teacher or student run directory (`JaxPolicy`).
        model: an exported .onnx file (`deepcrl.onnx_policy.OnnxPolicy`, with `onnx_options` such as
            ``providers`` and ``intra_op_threads``).
        url: a running `deepcrl serve` or any Open Inference Protocol server (`deepcrl.serve.client.PolicyClient`,
            with `token`, `model_name`, `protocol` and, for an https:// URL, `tls`: its ``ca``, ``cert`` and
            ``key`` options).
    """
    if sum(source is not None for source in (run, model, url)) != 1:
        raise DeepcrlError("give exactly one of --run DIR, --model FILE.onnx or --url URL.")
    if run is not None:
        policy = load_policy(run)
        return OpenedPolicy(policy, policy.manifest.env_id, f"{policy.manifest.kind} {run}")
    if model is not None:
        from deepcrl.onnx_policy import OnnxPolicy

        policy = OnnxPolicy(model, **(onnx_options or {}))
        return OpenedPolicy(policy, policy.metadata.get("env_id") or None, f"onnx {model}")
    from deepcrl.serve.client import PolicyClient

    policy = PolicyClient(url, token=token, model_name=model_name, protocol=protocol, **(tls or {}))
    served = policy.metadata()  # the server's facts; the model's own metadata_props under "metadata"
    return OpenedPolicy(policy, served.get("metadata", {}).get("env_id") or None, f"server {url}")


class RandomPolicy:
    """Uniform random actions in [low, high]: the baseline every trained policy must beat."""

    def __init__(self, obs_size: int, goal_size: int, action_size: int, seed: int = 0,
                 low: float = -1.0, high: float = 1.0):
        self.obs_size, self.goal_size, self.action_size = obs_size, goal_size, action_size
        self._rng = np.random.default_rng(seed)
        self._low, self._high = low, high

    def __call__(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        n = np.shape(observation)[0]
        return self._rng.uniform(self._low, self._high, (n, self.action_size)).astype(np.float32)


def init_artifact(out: str | Path, kind: artifacts.Kind, env_id: str, actor_config: dict[str, Any],
                  seed: int = 0) -> artifacts.Manifest:
    """Write a freshly initialised (untrained) policy artifact: lets export and serve work before training.

    Args:
        out: run directory to write.
        kind: "teacher" or "student".
        env_id: a registered env; its sizes are written into the manifest and `actor_config`.
        actor_config: the builder's config without sizes (e.g. ``{"depth": 4, "width": 32}`` for a teacher,
            ``{"hidden": [64, 64]}`` for a student).
    """
    from flax import nnx

    from deepcrl import envs

    env = envs.make(env_id)
    spec = env.goal_spec
    sizes = {"obs_size": spec.obs_size, "goal_size": spec.goal_size, "action_size": env.action_size}
    config = {**actor_config, **sizes}
    module = build_actor(kind, config, seed=seed)
    manifest = artifacts.Manifest(kind=kind, env_id=env_id, network={"actor": config}, **sizes)
    return artifacts.save(out, manifest, {"actor": nnx.to_pure_dict(nnx.state(module, nnx.Param))})
