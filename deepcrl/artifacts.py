"""The on-disk format shared by every stage: a run directory with a manifest and an Orbax checkpoint.

A run directory looks like::

    run/
      manifest.json     facts about the artifact (see `Manifest`)
      checkpoint/       Orbax checkpoint of the parameters (a nested dict of arrays)
      metrics.jsonl     one JSON object per logged step (written by the stage that trained it)
      curves.png        plots of those metrics
      train_state/      a teacher's whole training state, for `deepcrl train --resume`
      report.json       a student's comparison with its teacher (`deepcrl distill`)
      probe.png         a teacher critic's energy over the maze (`deepcrl eval --probe`, `deepcrl sweep --probe`)

These names are spelled here only (`MANIFEST`, `CHECKPOINT`, ...); every stage and the sweep take them from here.

A later stage reads only this directory, never the Python objects of the stage that wrote it, so each stage
can run on another machine at another time. Every loading problem raises `ArtifactError` with one sentence.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Literal

import pydantic

from deepcrl._io import read_jsonl, write_text_atomic
from deepcrl.errors import ArtifactError

FORMAT_VERSION = 1
# The files of a run directory (see the module docstring).
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint"
TRAIN_STATE = "train_state"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
REPORT = "report.json"
PROBE_PNG = "probe.png"
Kind = Literal["teacher", "student"]


class Manifest(pydantic.BaseModel):
    """Facts about one artifact; enough to rebuild its networks and check its inputs."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    """On-disk format version; a reader refuses a newer one."""
    kind: Kind
    """`teacher` (deep CRL agent) or `student` (distilled shallow policy)."""
    env_id: str
    """Registered environment id the artifact was trained on."""
    obs_size: int = pydantic.Field(gt=0)
    """Size of the observation without the goal (what the server calls `observation`)."""
    goal_size: int = pydantic.Field(gt=0)
    """Size of the goal vector."""
    action_size: int = pydantic.Field(gt=0)
    """Size of the action vector."""
    action_low: float = -1.0
    """Lower action bound (the same for every dimension)."""
    action_high: float = 1.0
    """Upper action bound."""
    network: dict[str, Any]
    """Network config: everything needed to rebuild the modules that own the checkpoint's parameters."""
    step: int = 0
    """Training progress (environment steps for a teacher, gradient steps for a student)."""
    metrics: dict[str, float] = {}
    """Final metrics (success rate, losses, ...)."""
    versions: dict[str, str] = {}
    """Versions of the libraries that wrote it."""
    checkpoint_hash: str = ""
    """sha256 of the checkpoint directory; set by `save`."""
    parent_hash: str | None = None
    """For a student: the checkpoint hash of the teacher it was distilled from."""
    created: str = ""
    """UTC time the artifact was written (ISO 8601)."""


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of deepcrl and the libraries whose numerics matter (plus `extra` distributions)."""
    from importlib import metadata

    out = {}
    for name in ("deepcrl", "jax", "jaxlib", "flax", "optax", "brax", "orbax-checkpoint", "numpy", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def hash_directory(path: Path) -> str:
    """sha256 over every file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def save(run_dir: str | Path, manifest: Manifest, params: Any) -> Manifest:
    """Write `params` (a pytree of arrays, e.g. a pure dict of nnx state) and the manifest.

    The checkpoint is written beside the old one and swapped in only once complete, so an interrupted save
    never destroys the previous artifact.

    Returns:
        The manifest as written, with `checkpoint_hash`, `versions` and `created` filled in.
    """
    run_dir = Path(run_dir).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"cannot create the run directory {run_dir}: {exc.strerror}.") from exc
    written: list[Manifest] = []

    def write_manifest() -> None:  # the new checkpoint is in place; the old one still exists until this is done
        written.append(manifest.model_copy(update={
            "checkpoint_hash": hash_directory(run_dir / CHECKPOINT),
            "versions": {**library_versions(), **manifest.versions},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }))
        write_text_atomic(run_dir / MANIFEST, written[0].model_dump_json(indent=2))

    write_checkpoint_swapped(run_dir / CHECKPOINT, params, after_swap=write_manifest)
    return written[0] if written else manifest  # other processes of a multi-process job write nothing


def write_checkpoint_swapped(path: Path, tree: Any, after_swap=None) -> None:
    """Save an Orbax checkpoint at `path`: written beside it, swapped in only once complete.

    The previous checkpoint is removed last, so an interrupted save never destroys it. In a multi-process JAX
    job every process calls this (Orbax writes each process's shards of sharded arrays; replicated and numpy
    leaves are written by process 0 alone) and process 0 alone swaps directories and calls `after_swap`.

    Args:
        path: the checkpoint directory (absolute or relative).
        tree: a pytree of arrays.
        after_swap: called once the new checkpoint is in place, before the old one is removed.
    """
    import jax
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils

    primary = jax.process_index() == 0
    sync = multihost_utils.sync_global_devices if jax.process_count() > 1 else (lambda name: None)
    path = Path(path).absolute()
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    if primary and tmp.exists():
        shutil.rmtree(tmp)
    sync(f"deepcrl checkpoint {path}: cleaned")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp, tree)
        ckptr.wait_until_finished()
    if primary:
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        if after_swap is not None:
            after_swap()
        if old.exists():
            shutil.rmtree(old)
    sync(f"deepcrl checkpoint {path}: swapped")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, shortened: enough to name the problem in one sentence."""
    text = (str(exc).strip().splitlines() or ["no message"])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_manifest(run_dir: str | Path, kind: Kind | None = None) -> Manifest:
    """Read and validate a run directory's manifest without touching the checkpoint.

    Args:
        run_dir: the run directory.
        kind: if given, the kind the caller needs; another kind is an error.
    """
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise ArtifactError(f"no artifact at {run_dir}: the directory does not exist.")
    if not path.is_file():
        raise ArtifactError(f"{run_dir} is not a deepcrl artifact: it has no {MANIFEST}.")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is corrupt: it is not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} is corrupt: it does not hold a JSON object.")
    version = raw.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{run_dir} was written in artifact format {version}, newer than this deepcrl reads "
            f"({FORMAT_VERSION}); upgrade deepcrl."
        )
    try:
        manifest = Manifest.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise ArtifactError(f"{path} is corrupt: field '{where}': {err['msg']}.") from exc
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{run_dir} holds a {manifest.kind}, but a {kind} is needed here.")
    return manifest


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records, in order (none if the file does not exist yet)."""
    return read_jsonl(Path(run_dir) / METRICS)


def load(run_dir: str | Path, kind: Kind | None = None, verify: bool = True) -> tuple[Manifest, Any]:
    """Load a run directory: its manifest and its parameters (a nested dict of numpy arrays).

    Args:
        run_dir: the run directory.
        kind: if given, the kind the caller needs.
        verify: check the checkpoint's hash against the manifest before restoring.

    Raises:
        ArtifactError: missing, corrupt, wrong kind or newer format; one sentence.
    """
    import orbax.checkpoint as ocp

    manifest = read_manifest(run_dir, kind)
    ckpt = Path(run_dir).absolute() / CHECKPOINT
    if not ckpt.is_dir():
        raise ArtifactError(f"{run_dir} is incomplete: its checkpoint directory is missing.")
    if verify and manifest.checkpoint_hash and hash_directory(ckpt) != manifest.checkpoint_hash:
        raise ArtifactError(
            f"{run_dir} is corrupt: its checkpoint does not match the hash in {MANIFEST}."
        )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(ckpt)
    except Exception as exc:  # orbax raises many types; the sentence names the problem, the cause is kept
        raise ArtifactError(f"{run_dir} is corrupt: its checkpoint cannot be restored "
                            f"({type(exc).__name__}: {_first_line(exc)}).") from exc
    return manifest, params
