"""Multi-process teacher training on jax.distributed (loopback only, bounded in time): 2 processes x 1 CPU
device train exactly like 1 process x 2 devices, a killed 2-process run resumes, and a job that cannot form
is one sentence and a non-zero exit instead of a hang or a C++ abort."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from deepcrl import artifacts
from deepcrl.cli import main

TINY = ["--env", "point_maze", "--depth", "4", "--width", "16", "--num-envs", "8", "--batch-size", "32",
        "--unroll-length", "10", "--sgd-steps", "4", "--replay-capacity", "40", "--eval-every", "2",
        "--eval-episodes", "4", "--actor-random-goal-frac", "0.0"]
ITER_STEPS = 8 * 10
LIMIT_S = 600  # a hung job fails the test instead of hanging the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cpu_devices: int = 1) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(cpu_devices)}


# `deepcrl train` that SIGKILLs itself right after writing iteration 3's metrics row: after its first checkpoint
# (iteration 2) and before its next (iteration 4), however fast or slow the machine is. Only process 0 writes
# metrics.jsonl; process 1 cannot pass iteration 4's collectives without it.
DIES_AFTER_ITERATION_3 = textwrap.dedent("""
    import os, signal, sys
    from deepcrl.teacher.sinks import MetricsFile
    write = MetricsFile.__call__
    def write_then_die(self, record):
        write(self, record)
        if record["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGKILL)
    MetricsFile.__call__ = write_then_die
    from deepcrl.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _train_cmd(out, steps, *extra, dies_after_iteration_3: bool = False) -> list[str]:
    run = ["-c", DIES_AFTER_ITERATION_3] if dies_after_iteration_3 else ["-m", "deepcrl.cli"]
    return [sys.executable, *run, "train", *TINY, "--out", str(out), "--steps", str(steps), *extra]


def _job(out, steps, *extra, process_0_dies: bool = False) -> list[subprocess.Popen]:
    """Start the two processes of a loopback job (each in its own session, so it can be killed whole)."""
    job = ["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--join-timeout-s", "120"]
    return [subprocess.Popen(_train_cmd(out, steps, *job, "--process-id", str(i), *extra,
                                        dies_after_iteration_3=process_0_dies and i == 0), env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            for i in range(2)]


def _finish(procs, timeout=LIMIT_S) -> list[tuple[int, str, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            raise
        results.append((p.returncode, out, err))
    return results


def _rows(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("wall_s")
    return rows


def _flat(run) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(artifacts.load(run)[1])])


def test_a_cluster_is_detected_from_its_launchers_environment():
    from deepcrl.teacher.distributed import cluster_detected

    assert not cluster_detected({})
    assert not cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})  # one task: a plain run
    assert cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "2"})
    assert not cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"})
    assert cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"}) and not cluster_detected({"OMPI_COMM_WORLD_SIZE": "1"})
    assert cluster_detected({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})


def test_job_flags_are_checked_before_joining(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["train", "--out", out, "--coordinator", "127.0.0.1:1234"]) == 2
    assert "go together" in capsys.readouterr().err
    assert main(["train", "--out", out, "--coordinator", "127.0.0.1", "--num-processes", "2",
                 "--process-id", "0"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert main(["train", "--out", out, "--coordinator", "127.0.0.1:1234", "--num-processes", "2",
                 "--process-id", "2"]) == 2
    assert "0..1" in capsys.readouterr().err


@pytest.mark.slow  # two real processes that fail to join (~10 s)
def test_a_job_that_cannot_form_is_one_sentence_and_a_non_zero_exit(tmp_path):
    """Process 1 with nobody at the coordinator's address, and process 0 whose partner never arrives."""
    bad, lonely = (["--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", i,
                    "--join-timeout-s", "3"] for i in ("1", "0"))
    t0 = time.monotonic()
    procs = [subprocess.Popen(_train_cmd(tmp_path / name, ITER_STEPS, *flags), env=_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
             for name, flags in (("bad", bad), ("lonely", lonely))]
    for code, _, err in _finish(procs, timeout=120):
        assert code == 2, err[-2000:]
        assert "could not form the training job with the coordinator at 127.0.0.1:" in err
        assert "within 3 s" in err and "Traceback" not in err and "Check failure" not in err
    # the 3 s join wait plus process start-up (imports) on a busy 2-core machine; never jax's own 63 s deadline
    assert time.monotonic() - t0 < 60


@pytest.mark.slow  # three training processes, a kill and a resume (~90 s)
def test_two_processes_train_like_one_process_with_two_devices_and_resume_after_a_kill(tmp_path):
    """A 2-process job killed after its first checkpoint (process 0 dies by SIGKILL mid-run), resumed to 4
    iterations, ends with the parameters, losses and evaluations of an uninterrupted 1-process x 2-device run."""
    reference, killed = tmp_path / "one_process", tmp_path / "two_processes"
    ref = subprocess.Popen(_train_cmd(reference, 4 * ITER_STEPS), env=_env(cpu_devices=2), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    job = _job(killed, 1000 * ITER_STEPS, process_0_dies=True)
    try:
        job[0].wait(LIMIT_S)  # process 0 kills itself after iteration 3 (see DIES_AFTER_ITERATION_3)
    finally:
        for p in job:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # process 1, waiting for its partner in iteration 4
            except ProcessLookupError:
                pass
            p.wait()
    assert job[0].returncode == -signal.SIGKILL, job[0].communicate()[1][-3000:]
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 3
    assert artifacts.read_manifest(killed).step == 2 * ITER_STEPS  # killed after its checkpoint 2, before 4

    resumed = _finish(_job(killed, 4 * ITER_STEPS, "--resume") + [ref])
    for code, _, err in resumed:
        assert code == 0, err[-3000:]
    assert "trained 320 env steps" in resumed[0][1] and "trained" not in resumed[1][1]  # process 0 reports

    diff = np.abs(_flat(killed) - _flat(reference)).max()
    assert diff <= 1e-6, diff  # measured: 0.0 (the same collectives, on gloo instead of in-process)
    assert artifacts.read_manifest(killed).step == artifacts.read_manifest(reference).step == 4 * ITER_STEPS
    assert _rows(killed) == _rows(reference)  # losses and evaluations, iteration by iteration
    assert not (killed / "checkpoint" / "ocdbt.process_1").exists()  # the artifact is process 0's alone
    assert (killed / "train_state" / "ocdbt.process_1").is_dir()  # the train state: each process its shards
