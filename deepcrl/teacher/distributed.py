"""Multi-process training on JAX's own runtime (`jax.distributed`): join the job, agree, wait.

The training iteration is written for one global mesh over every device of every process (envs, replay and
batches split on its ``data`` axis, parameters replicated; XLA inserts the gradient all-reduce), so going from
one process to many changes no maths: 2 processes x 1 CPU device give bit-identical parameters to 1 process x
2 devices. Every process runs the same host loop in lockstep, calls every collective (iteration, Orbax
checkpoint save) in the same order and evaluates the same replicated actor; only process 0 writes the
artifact, metrics.jsonl, plots and progress.

On CPU the collectives run over gloo (jax's default CPU collectives since 0.5.1); gloo's ``psum_scatter``
has wrong-result bugs above ~256 KiB (jax-ml/jax#40830), and the compiled iteration uses only all-reduce and
all-gather (checked in its HLO), never reduce-scatter.

A process that cannot reach the coordinator, or a job whose processes never all arrive, makes
`jax.distributed.initialize` end the process from C++ (``LOG(FATAL)``, exit 134, a page of stack) once its
``initialization_timeout`` passes. `join` therefore waits in a daemon thread with its own, shorter deadline
and raises one sentence when it passes.
"""

from __future__ import annotations

import os
import threading

from deepcrl.errors import DeepcrlError

# Seconds jax's own deadline trails ours, so that ours (one sentence) always fires first.
_JAX_DEADLINE_MARGIN_S = 60


def cluster_detected(environ: dict | None = None) -> bool:
    """True inside a job launcher that JAX reads by itself: JAX_COORDINATOR_ADDRESS, SLURM (srun, >1 task)
    or Open MPI (mpirun, >1 rank)."""
    env = os.environ if environ is None else environ
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))) > 1:
        return True
    return int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def join(coordinator: str | None, num_processes: int | None, process_id: int | None,
         timeout_s: float = 120.0) -> bool:
    """Join (process 0: start) the multi-process job, if one is asked for; call before any JAX computation.

    Args:
        coordinator: ``HOST:PORT`` of process 0 (None: from the cluster's environment).
        num_processes: processes in the job (None: from the cluster's environment).
        process_id: this process's index, 0..num_processes-1 (None: from the cluster's environment).
        timeout_s: how long to wait for every process to arrive.
    Returns:
        Whether this run is multi-process (False, and nothing done, when no flag is set and no cluster found).
    Raises:
        DeepcrlError: the job could not be formed within `timeout_s`, or JAX refused to join it.
    """
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if coordinator is None and num_processes is None and process_id is None and not cluster_detected():
        return False
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            jax.distributed.initialize(coordinator, num_processes, process_id,
                                       initialization_timeout=int(timeout_s) + _JAX_DEADLINE_MARGIN_S)
        except Exception as exc:  # any refusal (bad argument, JAX already running) is re-raised with its cause
            failure.append(exc)

    thread = threading.Thread(target=connect, name="deepcrl-join", daemon=True)
    thread.start()
    thread.join(timeout_s)
    where = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the cluster's coordinator"
    who = "this process" if process_id is None else f"process {process_id} of {num_processes}"
    if thread.is_alive():
        raise DeepcrlError(
            f"{who} could not form the training job with the coordinator at {where} within {timeout_s:g} s: "
            "check that process 0 runs there and is reachable from every process, and that every process was "
            "started with the same --coordinator and --num-processes.")
    if failure:
        raise DeepcrlError(f"{who} could not join the training job at {where}: {failure[0]}.") from failure[0]
    return jax.process_count() > 1


def is_primary() -> bool:
    """True on process 0 (and in a single-process run): the process that writes files and reports."""
    import jax

    return jax.process_index() == 0


def agree(flag: bool) -> bool:
    """Process 0's value of `flag` on every process (for decisions each host would take from its own clock)."""
    import jax

    if jax.process_count() == 1:
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing to wait for in a single-process run)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
