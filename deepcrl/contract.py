"""The ONNX contract of an exported deepcrl policy: tensor names, metadata keys, format version, checks.

Every writer (the ONNX export, the Triton repository, the SavedModel, the synthetic test policy) and every
reader (`OnnxPolicy`, hence `deepcrl eval --model` and the server, and the robot client) takes these names
from here, so the contract is spelled once. It lives outside `deepcrl.export` so that the server and the
client's wheel carry no export code, and it imports nothing heavy (no JAX, no ONNX Runtime, no numpy).

The file: inputs ``observation`` [batch, obs_size] and ``goal`` [batch, goal_size], output ``action``
[batch, action_size], all float32; ``metadata_props`` (strings) hold at least `REQUIRED_METADATA`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from deepcrl.errors import ArtifactError

OBSERVATION = "observation"
GOAL = "goal"
ACTION = "action"
INPUT_NAMES = (OBSERVATION, GOAL)
OUTPUT_NAME = ACTION
BATCH_DIM = "batch"

FORMAT_VERSION = 1
"""The format this deepcrl writes."""
READ_FORMAT_VERSION = 1
"""The newest format this deepcrl reads."""

# Metadata keys (values are strings). The sizes come last, in input order, then the output's.
DEEPCRL_VERSION, FORMAT_VERSION_KEY, KIND, ENV_ID = "deepcrl_version", "format_version", "kind", "env_id"
OBS_SIZE, GOAL_SIZE, ACTION_SIZE = "obs_size", "goal_size", "action_size"
ACTION_LOW, ACTION_HIGH = "action_low", "action_high"
PRECISION, SOURCE_HASH, PARITY_MAX_ABS_DIFF = "precision", "source_hash", "parity_max_abs_diff"
REQUIRED_METADATA = (DEEPCRL_VERSION, FORMAT_VERSION_KEY, KIND, ENV_ID, OBS_SIZE, GOAL_SIZE, ACTION_SIZE)


@dataclasses.dataclass(frozen=True)
class Signature:
    """What a reader needs to know of a checked policy file."""

    kind: str
    env_id: str
    obs_size: int
    goal_size: int
    action_size: int
    action_low: float
    action_high: float
    format_version: int


def metadata(*, kind: str, env_id: str, obs_size: int, goal_size: int, action_size: int, action_low: float = -1.0,
             action_high: float = 1.0, source: Mapping[str, Any] | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The `metadata_props` of a policy file (every value a string): the required keys, the action bounds,
    `source` (where it came from), the export time and the tensor names, then `extra` (which may override
    any of them)."""
    import deepcrl

    props = {
        DEEPCRL_VERSION: deepcrl.__version__,
        FORMAT_VERSION_KEY: str(FORMAT_VERSION),
        KIND: kind,
        ENV_ID: env_id,
        OBS_SIZE: str(int(obs_size)),
        GOAL_SIZE: str(int(goal_size)),
        ACTION_SIZE: str(int(action_size)),
        ACTION_LOW: repr(float(action_low)),
        ACTION_HIGH: repr(float(action_high)),
        **{k: str(v) for k, v in (source or {}).items()},
        "export_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input_names": ",".join(INPUT_NAMES),
        "output_name": OUTPUT_NAME,
    }
    props.update({k: str(v) for k, v in (extra or {}).items()})
    return props


def metadata_for(policy, extra: Mapping[str, Any]) -> dict[str, str]:
    """The `metadata_props` of an exported artifact policy (a `JaxPolicy`: its manifest's facts + `extra`)."""
    m = policy.manifest
    return metadata(kind=m.kind, env_id=m.env_id, obs_size=m.obs_size, goal_size=m.goal_size,
                    action_size=m.action_size, action_low=m.action_low, action_high=m.action_high,
                    source={SOURCE_HASH: m.checkpoint_hash, "source_step": m.step, "parent_hash": m.parent_hash or "",
                            "network": json.dumps(m.network.get("actor", {}), sort_keys=True)}, extra=extra)


def check(source: object, meta: Mapping[str, str], inputs: Iterable[str], outputs: Iterable[str]) -> Signature:
    """Check a loaded model against the contract; `source` names it in the error.

    Args:
        source: the file (or anything printable) the model came from.
        meta: its metadata_props.
        inputs, outputs: its graph's input and output names.

    Raises:
        ArtifactError: one sentence naming what is missing, malformed or too new.
    """
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ArtifactError(f"{source} is an ONNX model but not a deepcrl policy (its metadata lacks "
                            f"{', '.join(missing)}); export it with `deepcrl export`.")
    inputs, outputs = list(inputs), list(outputs)
    if sorted(inputs) != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
        raise ArtifactError(f"{source} does not have the deepcrl policy signature (inputs "
                            f"{', '.join(INPUT_NAMES)}; output {OUTPUT_NAME}); it has inputs {inputs} and "
                            f"outputs {outputs}.")
    try:
        version = int(meta[FORMAT_VERSION_KEY])
        sizes = [int(meta[k]) for k in (OBS_SIZE, GOAL_SIZE, ACTION_SIZE)]
        low, high = float(meta.get(ACTION_LOW, -1.0)), float(meta.get(ACTION_HIGH, 1.0))
    except ValueError as exc:
        raise ArtifactError(f"{source} is corrupt: its deepcrl metadata holds a non-numeric size, bound or "
                            f"format version ({exc}).") from exc
    if version > READ_FORMAT_VERSION:
        raise ArtifactError(f"{source} was exported in format {version}, newer than this deepcrl reads "
                            f"({READ_FORMAT_VERSION}); upgrade deepcrl.")
    return Signature(meta[KIND], meta[ENV_ID], *sizes, low, high, version)
