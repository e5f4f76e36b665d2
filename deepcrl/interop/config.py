"""`deepcrl import`'s config (plain data, no JAX import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Turn an agent trained with other code into a deepcrl artifact (eval, export, serve; a teacher: distill).

    deepcrl import scaling-crl RUN_DIR --out runs/imported: RUN_DIR is a run directory of the paper's code
    (wang-kevin3290/scaling-crl: runs/ENV_SEED_TIME with final.pkl or step_N.pkl, and args.pkl). The networks
    are mapped layer for layer onto deepcrl's (same actions and critic energies); the task becomes the
    matching reference-compatible env (reacher, ant, ant_u_maze, ant_big_maze -> the same id + _ref). The manifest records the
    source (path, file, sha256, the reference's args). A checkpoint deepcrl cannot represent exactly (ReLU
    variant, another task or layout, a corrupt file) is refused with one sentence.

    deepcrl import jaxgcrl RUN_DIR --out runs/imported: RUN_DIR is a JaxGCRL run directory (runs/run_NAME_s_SEED
    with args.pkl, and ckpt/final, ckpt/final.pkl or step_N.pkl copied from --checkpoint_logdir). Its CRL agent's
    plain MLP networks are deepcrl's student networks renamed, so it becomes a student-kind artifact (eval,
    export, serve; not a distillation teacher) on the same reference-compatible env. Refused: ReLU, skip
    connections that add (n_hidden > skip_connections), another agent, an early (pre-2025-02) checkpoint.

    Security: the pickles are read with a restricted Unpickler that resolves only numpy arrays and dtypes,
    flax's FrozenDict, jax's array rebuilder and the reference's (or JaxGCRL's) config classes; a file naming
    any other code is refused, never run.
    """

    source: Annotated[Literal["scaling-crl", "jaxgcrl"], tyro.conf.Positional]
    """Which code wrote the checkpoint: scaling-crl (the paper's train.py) or jaxgcrl (JaxGCRL's CRL agent)."""
    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The run directory (scaling-crl: final.pkl or step_N.pkl, and args.pkl; jaxgcrl: args.pkl and ckpt/)."""
    out: Path = Path("runs/imported")
    """The deepcrl run directory to write (a teacher from scaling-crl, a student-kind artifact from jaxgcrl)."""
    file: str | None = None
    """Checkpoint file inside RUN_DIR (jaxgcrl: or RUN_DIR/ckpt) to import, e.g. step_5000000.pkl
    (default: final.pkl, JaxGCRL's ckpt/final, else the latest step_N.pkl)."""
    json: bool = False
    """Print one JSON object instead of a summary line."""

    def __post_init__(self) -> None:
        """Paths become `Path`s; --file must be a plain file name inside RUN_DIR (JaxGCRL's is also `final`)."""
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "out", Path(self.out))
        named_ok = self.file is not None and (self.file.endswith(".pkl") or (
            self.source == "jaxgcrl" and self.file == "final"))
        if self.file is not None and (Path(self.file).name != self.file or not named_ok):
            raise DeepcrlError(f"--file must be a .pkl file name inside RUN_DIR, got {self.file!r}.")


def check_run(use_relu, env_id, checkpoint, reference_ids, who: str) -> None:
    """The checks every importer shares, each failing in one sentence: swish networks, a task deepcrl has under a
    `_ref` id (`reference_ids`), the ``(alpha_params, actor_params, critic_params)`` tuple. `who` names the
    source in the sentences ("the reference's", "JaxGCRL's")."""
    if use_relu:
        raise DeepcrlError("the checkpoint was trained with use_relu (ReLU activations); deepcrl's networks use "
                           "swish, so it cannot be imported exactly.")
    if env_id not in reference_ids:
        raise DeepcrlError(f"the checkpoint was trained on {who} {env_id!r}, which has no deepcrl task with its "
                           f"observation layout yet (supported: {', '.join(reference_ids)}).")
    if not isinstance(checkpoint, tuple) or len(checkpoint) != 3:
        raise DeepcrlError(f"the checkpoint is not {who} (alpha_params, actor_params, critic_params) tuple.")


def check_finite(params: dict, who: str) -> None:
    """One sentence for a diverged checkpoint: `params` is {"actor": tree, "critic": tree} of numpy arrays."""
    import numpy as np

    def arrays(tree):
        for value in tree.values():
            yield from (arrays(value) if isinstance(value, dict) else [value])

    for name, tree in params.items():
        bad = sum(int(np.size(x) - np.isfinite(x).sum()) for x in arrays(tree))
        if bad:
            raise DeepcrlError(f"the checkpoint's {name} holds {bad} non-finite parameters ({who} run diverged "
                               "before it saved this file); import an earlier step_N.pkl.")


def finite_log_alpha(alpha) -> float | None:
    """The entropy temperature's log from the checkpoint's alpha parameters (None when absent or not finite)."""
    import numpy as np

    value = alpha.get("log_alpha") if isinstance(alpha, dict) else None
    value = None if value is None else float(np.asarray(value))
    return value if value is not None and np.isfinite(value) else None
