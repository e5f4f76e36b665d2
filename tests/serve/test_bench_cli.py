"""`deepcrl bench serve` (bounded, tiny) and the `deepcrl serve` command as a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from deepcrl.errors import DeepcrlError
from deepcrl.bench.serve import run
from deepcrl.bench.config import BenchServeConfig


@pytest.mark.slow  # a benchmark: 6 cells, floors and clients against a real server
def test_bench_against_a_running_server_writes_json_and_png(server, tmp_path):
    cfg = BenchServeConfig(url=server.url, out=tmp_path / "lat", duration_s=0.25, concurrency=(1, 4), rates=(200,),
                           max_minutes=1)
    results = run(cfg)
    saved = json.loads((tmp_path / "lat.json").read_text())
    assert (tmp_path / "lat.png").stat().st_size > 10_000
    assert saved["summary"] == results["summary"]
    assert saved["machine"]["cpu_count"] == os.cpu_count() and "shared" in saved["machine"]["shared_machine"]
    cells = saved["cells"]
    assert {(c["protocol"], c["mode"]) for c in cells} == {(p, m) for p in ("json", "msgpack", "ws")
                                                          for m in ("closed", "open")}
    for cell in cells:
        assert cell["errors"] == 0 and cell["requests"] > 0
        assert 0 < cell["p50_us"] <= cell["p90_us"] <= cell["p99_us"] <= cell["p999_us"] <= cell["max_us"]
    open_cell = next(c for c in cells if c["mode"] == "open")
    # an open loop sends its whole schedule (200/s in `rounds` slices of 0.25 s / rounds), late or on time,
    # however busy the machine is
    rounds = max(1, cfg.rounds)
    assert open_cell["offered_rps"] == 200 and open_cell["requests"] == rounds * int(200 * 0.25 / rounds)
    assert "server_cpu_us_per_request" not in open_cell  # an external server's CPU time is not ours to read
    assert saved["floors"]["noop_http_json"]["requests"] > 0 and saved["floors"]["noop_ws"]["requests"] > 0
    assert saved["clients"]["PolicyClient_msgpack_c1"]["errors"] == 0
    assert {"http_json_c1_p50_us", "http_json_c1_p99_us", "ws_c1_p99_us"} <= set(saved["summary"]["targets"])


def test_bench_time_limit_skips_cells(server, tmp_path):
    results = run(BenchServeConfig(url=server.url, out=tmp_path / "lat", duration_s=0.2, concurrency=(1,),
                                   rates=(), protocols=("json",), max_minutes=0.1 / 60))
    assert results["cells"] == [] and "closed c=1" in results["skipped"]


def test_bench_refuses_non_loopback_and_bad_arguments(tmp_path):
    with pytest.raises(DeepcrlError, match="not a loopback address"):
        run(BenchServeConfig(url="http://10.1.2.3:8000", out=tmp_path / "x"))
    with pytest.raises(DeepcrlError, match="exactly one of --model"):
        run(BenchServeConfig(out=tmp_path / "x"))
    with pytest.raises(DeepcrlError, match="unknown protocol"):
        run(BenchServeConfig(url="http://127.0.0.1:1", protocols=("smtp",), out=tmp_path / "x"))
    with pytest.raises(DeepcrlError, match="needs the running server's --grpc-port"):
        run(BenchServeConfig(url="http://127.0.0.1:1", protocols=("grpc",), out=tmp_path / "x"))


def test_bench_grpc_protocol_measures_closed_loop_c1_with_the_token(policy_onnx, tmp_path, monkeypatch):
    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(policy_onnx, warmup=1, token="tok", grpc_port=0)
    monkeypatch.setenv("DEEPCRL_BENCH_TOKEN", "tok")
    with RunningServer(app) as running:
        results = run(BenchServeConfig(url=running.url, grpc_port=app.state.grpc_port, token_env="DEEPCRL_BENCH_TOKEN",
                                       out=tmp_path / "lat", duration_s=0.2, concurrency=(1, 2), rates=(100,),
                                       protocols=("json", "grpc"), max_minutes=1))
    grpc_cells = [c for c in results["cells"] if c["protocol"] == "grpc"]
    # gRPC is measured at concurrency 1 in the closed loop only, beside every json cell
    assert [(c["mode"], c.get("concurrency")) for c in grpc_cells] == [("closed", 1)]
    assert {(c["mode"], c.get("concurrency"), c.get("rate")) for c in results["cells"] if c["protocol"] == "json"} \
        == {("closed", 1, None), ("closed", 2, None), ("open", None, 100)}
    (cell,) = grpc_cells
    assert cell["errors"] == 0 and cell["requests"] > 0 and 0 < cell["p50_us"] <= cell["p99_us"]
    assert json.loads((tmp_path / "lat.json").read_text())["cells"] == results["cells"]


@pytest.mark.slow
def test_bench_starts_its_own_servers_and_the_baseline(policy_onnx, tmp_path):
    results = run(BenchServeConfig(model=policy_onnx, out=tmp_path / "lat", duration_s=0.3, concurrency=(1, 16),
                                   rates=(200,), max_minutes=2))
    assert results["floors"]["ort_in_process"]["p50_us"] > 0
    assert {c["server"] for c in results["cells"]} == {"deepcrl", "baseline"}
    ratio = results["summary"]["vs_baseline"]["json_c16"]
    assert ratio["throughput_x"] > 0 and ratio["server_cpu_per_request_x"] > 0
    assert all(c["errors"] == 0 for c in results["cells"])


@pytest.mark.slow  # a real `deepcrl serve` process
def test_serve_command_runs_answers_and_stops_on_sigterm(policy_onnx):
    env = {**os.environ, "DEEPCRL_TEST_TOKEN": "tok"}
    proc = subprocess.Popen([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(policy_onnx), "--port", "0",
                             "--token-env", "DEEPCRL_TEST_TOKEN", "--warmup", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"ready at (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        url = match.group(1)
        assert httpx.get(url + "/readyz").json()["ready"] is True
        assert httpx.get(url + "/v1/metadata").status_code == 401
        assert httpx.get(url + "/v1/metadata", headers={"authorization": "Bearer tok"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    # uvicorn drains, then re-raises the signal it caught, so a clean stop reads as "terminated by SIGTERM".
    assert code in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.stdout.read()


def test_serve_command_errors_are_one_sentence(tmp_path, monkeypatch, capsys):
    from deepcrl.cli import main

    out = subprocess.run([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(tmp_path / "none.onnx")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    monkeypatch.delenv("DEEPCRL_SURELY_UNSET", raising=False)
    assert main(["serve", "--model", str(tmp_path), "--token-env", "DEEPCRL_SURELY_UNSET"]) == 2
    assert "DEEPCRL_SURELY_UNSET" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "none.onnx")]) == 2


def test_bench_timeout_us_gives_every_request_its_deadline_on_every_protocol(policy_onnx, tmp_path):
    """`--timeout-us`: a deadline that has passed on arrival is a 504 (counted by kind) on /v1 JSON and msgpack,
    the WebSocket and gRPC alike; a generous one changes nothing."""
    from deepcrl.bench.grpc_load import GRPC_ERROR
    from deepcrl.serve.app import RunningServer, create_app

    app = create_app(policy_onnx, warmup=1, grpc_port=0)
    protocols = ("json", "msgpack", "ws", "grpc")
    with RunningServer(app) as running:
        common = dict(url=running.url, grpc_port=app.state.grpc_port, duration_s=0.1, concurrency=(1,), rates=(),
                      max_minutes=1)
        late = run(BenchServeConfig(**common, protocols=protocols, out=tmp_path / "late", timeout_us=1))
        easy = run(BenchServeConfig(**common, protocols=("json",), out=tmp_path / "easy", timeout_us=1_000_000))
    assert sorted(c["protocol"] for c in late["cells"]) == sorted(protocols)
    deadline_kinds = {"http_504", f"http_{GRPC_ERROR + 4}"}  # gRPC's DEADLINE_EXCEEDED is code 4
    for cell in late["cells"]:
        assert cell["requests"] > 0 and cell["errors"] == cell["requests"], cell
        assert set(cell["errors_by_kind"]) <= deadline_kinds and len(cell["errors_by_kind"]) == 1, cell
    assert all(c["errors"] == 0 and c["requests"] > 0 for c in easy["cells"])
    assert json.loads((tmp_path / "late.json").read_text())["config"]["timeout_us"] == 1
    with pytest.raises(DeepcrlError, match="--timeout-us must be positive"):
        BenchServeConfig(url=running.url, timeout_us=0)
