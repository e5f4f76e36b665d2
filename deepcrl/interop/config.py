"""`deepcrl import`'s config (plain data, no JAX import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Turn a teacher trained with other code into a deepcrl teacher artifact (eval, distill, export, serve).

    deepcrl import scaling-crl RUN_DIR --out runs/imported: RUN_DIR is a run directory of the paper's code
    (wang-kevin3290/scaling-crl: runs/ENV_SEED_TIME with final.pkl or step_N.pkl, and args.pkl). The networks
    are mapped layer for layer onto deepcrl's (same actions and critic energies); the task becomes the
    matching reference-compatible env (reacher, ant, ant_u_maze, ant_big_maze -> the same id + _ref). The manifest records the
    source (path, file, sha256, the reference's args). A checkpoint deepcrl cannot represent exactly (ReLU
    variant, another task or layout, a corrupt file) is refused with one sentence.

    Security: the pickles are read with a restricted Unpickler that resolves only numpy arrays and dtypes,
    flax's FrozenDict, jax's array rebuilder and the reference's Args; a file naming any other code is
    refused, never run.
    """

    source: Annotated[Literal["scaling-crl"], tyro.conf.Positional]
    """Which code wrote the checkpoint: scaling-crl (the paper's train.py)."""
    run: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """The reference's run directory (final.pkl or step_N.pkl, and args.pkl)."""
    out: Path = Path("runs/imported")
    """The deepcrl teacher run directory to write."""
    file: str | None = None
    """Checkpoint file inside RUN_DIR to import, e.g. step_5000000.pkl (default: final.pkl, else the latest
    step_N.pkl)."""
    json: bool = False
    """Print one JSON object instead of a summary line."""

    def __post_init__(self) -> None:
        """Paths become `Path`s; --file must be a plain file name inside RUN_DIR."""
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "out", Path(self.out))
        if self.file is not None and (Path(self.file).name != self.file or not self.file.endswith(".pkl")):
            raise DeepcrlError(f"--file must be a .pkl file name inside RUN_DIR, got {self.file!r}.")
