"""The serve benchmark's results: its summary against the targets and the baseline, the JSON + PNG it writes,
and the table it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.bench.common import write_result
from deepcrl.bench.config import BenchServeConfig

TARGETS = {"http_json_c1_p50_us": 500.0, "http_json_c1_p99_us": 2000.0, "ws_c1_p99_us": 1000.0,
           "throughput_ratio_c16_64": 3.0,
           # Not in the issue: the same 3x asked of server CPU per request, which a shared machine's load
           # barely moves (wall-clock throughput there also measures the neighbours).
           "server_cpu_efficiency_ratio_c16_64": 3.0}


def _cell(results, server, proto, mode="closed", **key):
    for c in results["cells"]:
        if c["server"] == server and c["protocol"] == proto and c["mode"] == mode and all(c.get(k) == v for k, v
                                                                                          in key.items()):
            return c
    return None


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Targets and ratios to the baseline (None where a cell was skipped)."""
    out: dict[str, Any] = {}
    j1, w1 = _cell(results, "deepcrl", "json", concurrency=1), _cell(results, "deepcrl", "ws", concurrency=1)
    b1 = _cell(results, "baseline", "json", concurrency=1)
    if j1:
        out["http_json_c1_p50_us"] = j1.get("p50_us")
        out["http_json_c1_p99_us"] = j1.get("p99_us")
    if w1:
        out["ws_c1_p99_us"] = w1.get("p99_us")
    # The transport floors at concurrency 1: a target the floor itself misses is the machine's, not the model's.
    for name in ("noop_http_json", "noop_ws"):
        if results["floors"].get(name):
            out[f"floor_{name}_c1_p50_us"] = results["floors"][name].get("p50_us")
            out[f"floor_{name}_c1_p99_us"] = results["floors"][name].get("p99_us")
    ratios = {}
    for c in results["cells"]:
        if c["server"] != "deepcrl" or c["mode"] != "closed":
            continue
        b = _cell(results, "baseline", "json", concurrency=c["concurrency"])
        if b and b.get("throughput_rps"):
            cpu, base_cpu = c.get("server_cpu_us_per_request"), b.get("server_cpu_us_per_request")
            ratios[f"{c['protocol']}_c{c['concurrency']}"] = {
                "throughput_x": round(c["throughput_rps"] / b["throughput_rps"], 2),
                "server_cpu_per_request_x": round(base_cpu / cpu, 2) if cpu and base_cpu else None,
                "p50_speedup_x": round(b["p50_us"] / c["p50_us"], 2) if c.get("p50_us") else None,
                "p99_speedup_x": round(b["p99_us"] / c["p99_us"], 2) if c.get("p99_us") else None}
    out["vs_baseline"] = ratios
    high = [v for k, v in ratios.items() if k.startswith("json_") and int(k.split("_c")[1]) >= 16]
    out["throughput_ratio_c16_64"] = min(v["throughput_x"] for v in high) if high else None
    cpu_high = [v["server_cpu_per_request_x"] for v in high if v["server_cpu_per_request_x"]]
    # Requests per CPU-second of the server, relative to the baseline: its capacity on a dedicated core.
    out["server_cpu_efficiency_ratio_c16_64"] = min(cpu_high) if cpu_high else None
    if b1 and j1:
        out["baseline_http_json_c1_p50_us"] = b1.get("p50_us")
    checks = {}
    for name, target in TARGETS.items():
        value = out.get(name)
        if value is not None:
            checks[name] = {"value": value, "target": target,
                            "met": bool(value >= target if "ratio" in name else value <= target
                                        if "p50" in name or "json_c1_p99" in name else value < target)}
    out["targets"] = checks
    return out


def write(cfg: BenchServeConfig, results: dict[str, Any]) -> None:
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = results.pop("_samples", {})
    results["json"], results["png"] = str(out.with_suffix(".json")), str(out.with_suffix(".png"))
    _plot(results, samples, out.with_suffix(".png"))
    write_result(out.with_suffix(".json"), results, jax_devices=False)


def _plot(results: dict[str, Any], samples: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3, ax4) = plt.subplots(1, 4, figsize=(22, 5))
    for label, lat in samples.items():
        if len(lat):
            x = np.sort(np.asarray(lat) / 1e3)
            ax1.plot(x, np.arange(1, len(x) + 1) / len(x), label=label, lw=1.4,
                     ls="--" if label.startswith(("noop", "baseline")) else "-")
    floor = results["floors"].get("ort_in_process")
    if floor:
        ax1.axvline(floor["p50_us"], color="grey", lw=1, ls=":", label=f"ORT in-process p50 {floor['p50_us']} µs")
    ax1.set(xscale="log", xlabel="latency (µs, log)", ylabel="fraction of requests",
            title="Latency CDF, closed loop, concurrency 1")
    ax1.grid(alpha=0.3, which="both")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    for server, proto in sorted({(c["server"], c["protocol"]) for c in results["cells"]}):
        rows = sorted((c["concurrency"], c["throughput_rps"], c.get("p99_us")) for c in results["cells"]
                      if c["server"] == server and c["protocol"] == proto and c["mode"] == "closed")
        if rows:
            cs, tp, p99 = zip(*rows)
            style = {"marker": "o", "label": f"{server} {proto}", "ls": "--" if server == "baseline" else "-"}
            ax2.plot(cs, tp, **style)
            ax3.plot(cs, p99, **style)
            cpu = [(c["concurrency"], c["server_cpu_us_per_request"]) for c in results["cells"]
                   if c["server"] == server and c["protocol"] == proto and c["mode"] == "closed"
                   and c.get("server_cpu_us_per_request")]
            if cpu:
                ax4.plot(*zip(*sorted(cpu)), **style)
    ax2.set(xscale="log", xlabel="concurrent connections", ylabel="requests / s", title="Closed-loop throughput")
    ax3.set(xscale="log", yscale="log", xlabel="concurrent connections", ylabel="p99 latency (µs)",
            title="Closed-loop p99 latency")
    ax4.set(xscale="log", xlabel="concurrent connections", ylabel="server CPU µs per request",
            title="Server CPU per request (steady under shared load)")
    ax4.set_ylim(bottom=0)
    for ax in (ax2, ax3, ax4):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"deepcrl serve on loopback ({results['machine']['cpu_count']} shared cores; "
                 f"{results['time']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(results: dict[str, Any]) -> None:
    """A rich table of the cells, the floors and the targets."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 130))
    table = Table(title="deepcrl bench serve (latency in µs)")
    for col in ("server", "protocol", "load", "p50", "p90", "p99", "p99.9", "max", "req/s", "errors"):
        table.add_column(col, justify="right" if col not in ("server", "protocol") else "left")
    rows = [("floor", "ORT call", "in-process", results["floors"].get("ort_in_process")),
            ("floor", "http+json", "/v1/noop c=1", results["floors"].get("noop_http_json")),
            ("floor", "ws", "ping c=1", results["floors"].get("noop_ws"))]
    rows += [(c["server"], c["protocol"], f"c={c['concurrency']}" if c["mode"] == "closed" else f"{c['rate']}/s", c)
             for c in results["cells"]]
    rows += [("client", name, "c=1", s) for name, s in results["clients"].items()]
    for server, proto, load, s in rows:
        if s:
            table.add_row(server, proto, load, *(str(s.get(k, "")) for k in ("p50_us", "p90_us", "p99_us", "p999_us",
                                                                             "max_us", "throughput_rps", "errors")))
    console.print(table)
    for name, check in results["summary"]["targets"].items():
        mark = "[green]met[/]" if check["met"] else "[red]missed[/]"
        console.print(f"{name}: {check['value']} (target {check['target']}) {mark}")
    console.print(f"wrote {results['json']} and {results['png']}")
