"""The overload benchmark at a small scale (issue 20): open loop at twice the measured capacity against a server
with admission control and against the same server with the bound lifted, with either load generator.

No latency is asserted (the machine's speed is not the code's); what is: every request gets an answer (200 or
503, no connection error, no timeout), the bounded server refuses part of the overload with 503 while still
answering, the unbounded one refuses nothing, and the report has its phases, timeline, plot and machine facts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_overload.py"
SMALL = ["--capacity-s", "1", "--steady-s", "1", "--overload-s", "2", "--after-s", "1", "--max-in-flight", "4",
         "--capacity-concurrency", "4", "--fleet-connections", "40"]


@pytest.mark.parametrize("generator", ["python", "h2load"])
def test_overload_is_refused_with_503_and_every_request_is_answered(generator, tmp_path, missing_prerequisite):
    if generator == "h2load" and shutil.which("h2load") is None:
        missing_prerequisite("h2load (nghttp2-client) is not installed")
    out = tmp_path / "overload.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--generator", generator, "--out", str(out), *SMALL],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert report["machine"]["generator"] == generator and report["capacity"]["throughput_rps"] > 0
    bounded, unbounded = report["admission"], report["unbounded"]
    assert bounded["max_in_flight"] == 4 and unbounded["max_in_flight"] == 100_000
    over = bounded["phases"]["overload"]
    assert over["offered_rps"] == pytest.approx(2 * report["capacity"]["throughput_rps"], rel=1e-3)
    assert over["refused_503"] > 0 and over["answered_200"] > 0
    assert over["refusal_p99_us"] is not None and over["admitted_p99_us"] is not None
    for phase in bounded["phases"].values():  # nothing but answers and refusals
        assert set(phase["failures_by_kind"]) <= {"http_503"}, phase["failures_by_kind"]
        assert phase["requests"] == phase["answered_200"] + phase["refused_503"]
    assert bounded["server_counters"]['deepcrl_refused_total{reason="in_flight"}'] >= over["refused_503"]
    assert all(p["refused_503"] == 0 for p in unbounded["phases"].values())
    if generator == "python":
        assert set(bounded["errors_by_kind"]) <= {"http_503"}  # no connection error, no timeout
    else:
        assert all(" 0 errored, 0 timeout" in line for line in bounded["h2load_summaries"])
        # the extra robots start --steady-s (1 s) after the base ones; each h2load takes its own time to start
        assert 0.5 < bounded["overload_began_s"] < 2.5
        # the floor: the same fleet against a server that does nothing, every request answered
        floor = report["floor"]["phases"]
        assert all(p["answered_200"] == p["requests"] > 0 for p in floor.values()), floor
        assert floor["overload"]["admitted_p99_us"] is not None
    assert len(bounded["timeline"]) == 40  # 4 s in 100 ms windows
