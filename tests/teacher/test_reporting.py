"""How a run reports: plain complete progress lines when stdout is not a terminal, TensorBoard scalars that read
back as written."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from deepcrl.cli.progress import Display

# A run of its own shape (compiles in a few seconds): 3 iterations of 8 envs x 10 steps, evaluated on the last.
TINY = ["--env", "point_maze", "--depth", "4", "--width", "16", "--num-envs", "8", "--batch-size", "32",
        "--unroll-length", "10", "--sgd-steps", "4", "--replay-capacity", "40", "--eval-every", "3",
        "--eval-episodes", "4", "--steps", "240"]
LINE = re.compile(r"^train (\d[\d,]*)/240 env steps( \| [\d,]+ env steps/s)? \| critic_loss \S+ actor_loss \S+ "
                  r"alpha \S+ success \S+ detour \S+$")


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event files: tag -> [(step, value)] (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """`python -m deepcrl.cli train ... --tensorboard` with stdout to a pipe, as under nohup or SLURM."""
    out = tmp_path_factory.mktemp("piped") / ("a_run_directory_with_a_long_name_" * 2)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "deepcrl.cli", "train", *TINY, "--tensorboard", "--out", str(out)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


@pytest.mark.slow  # a real `deepcrl train` process with its own compile (~25 s)
def test_piped_progress_is_complete_plain_lines(piped_run):
    stdout, out = piped_run
    lines = stdout.splitlines()
    progress = [line for line in lines if line.startswith("train ")]
    assert progress and all(LINE.match(line) for line in progress), stdout
    assert progress[-1].startswith("train 240/240 env steps")  # the last update is always printed
    assert all(len(line) > 80 for line in progress)  # longer than the old 80-column cut, and intact
    assert "\x1b[" not in stdout and "…" not in stdout  # no terminal codes, nothing elided
    summary = next(line for line in lines if line.startswith("trained "))
    assert summary.endswith(str(out))  # the summary's long path is not wrapped onto another line


@pytest.mark.slow  # a real `deepcrl train` process with its own compile (~25 s)
def test_tensorboard_scalars_read_back_as_written(piped_run):
    import json

    _, out = piped_run
    scalars = read_scalars(out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in scalars["train/critic_loss"]] == [r["env_steps"] for r in rows] == [80, 160, 240]
    assert [v for _, v in scalars["train/critic_loss"]] == pytest.approx([r["critic_loss"] for r in rows])
    assert scalars["eval/success"] == [(240, pytest.approx(rows[-1]["eval"]["success"]))]


def test_display_off_a_terminal_prints_at_most_every_interval_and_always_the_last(capsys):
    with Display("distill", total=300, unit="steps", min_interval_s=3600) as display:
        for done in (100, 200, 300):
            display.update(done, loss=0.123456, stage="dagger", ratio=None, episodes=1234)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == "distill 100/300 steps | loss 0.1235 stage dagger ratio n/a episodes 1,234"
    assert re.fullmatch(r"distill 300/300 steps \| [\d,]+ steps/s \| loss 0.1235 stage dagger ratio n/a "
                        r"episodes 1,234", lines[1])


def test_display_prints_the_pending_update_when_a_run_stops_early(capsys):
    with Display("train", total=1000, min_interval_s=3600) as display:
        display.update(10, loss=1.0)
        display.update(20, loss=0.5)
    assert [line.split(" |")[0] for line in capsys.readouterr().out.splitlines()] == ["train 10/1,000 steps",
                                                                                      "train 20/1,000 steps"]


def test_run_clock_continues_a_resumed_runs_wall_time_and_keeps_the_budget_per_process(monkeypatch):
    from deepcrl.teacher import sinks

    now = [100.0]
    monkeypatch.setattr("time.perf_counter", lambda: now[0])
    clock = sinks.RunClock([{"wall_s": 50.0}], max_minutes=1.0)  # resumed after 50 s of earlier training
    clock.start_iteration()
    now[0] = 130.0
    clock.end_iteration()  # the first iteration (compile included) took 30 s
    now[0] = 140.0
    clock.start_iteration()
    now[0] = 145.0
    clock.end_iteration()
    assert clock.compile_s == 30.0 and clock.wall_s() == 95.0 and clock.elapsed_s() == 45.0
    assert not clock.out_of_time()
    now[0] = 160.5  # 60.5 s in this process: over the minute, though the run's wall time is 110.5 s
    assert clock.out_of_time()
    assert not sinks.RunClock([], max_minutes=None).out_of_time() and sinks.RunClock([], None).wall_s() == 0.0
