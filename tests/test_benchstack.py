"""Issue 20: the benchmarks on their own stack -- `hits` (closed loop) and `capacity`
(open loop) -- one short run each, on one stack (`hits --keep`, then `capacity --reuse`).

They check each report's shape, that its numbers are sane and carry their
spread, and that every system runs under the same CPU limits -- never how
fast anything is: speed is the benchmarks' business.
"""

from __future__ import annotations

import json
import math

import docker

from loadtest import bench, benchstack, hitbench
from loadtest.stack import project_name

HIT_SYSTEMS = hitbench.systems_of("single")  # the default (single-node) topology's systems
CAPACITY_SYSTEMS = ["two-tier", "flask-caching"]


def test_every_system_has_the_labs_cpu_limit_in_the_same_cfs_period(docker_available):
    """Equal CPU: the apps, the Nginxes, the baseline and the ceiling alike -- on the
    single node and, with the cluster's files (`hits --topology both`), on the cluster."""

    def services(cluster: bool) -> dict:
        stack = benchstack.make_stack("cachelab-config-check", 1, "valkey", cluster)
        return json.loads(stack.compose("config", "--format", "json").stdout)["services"]

    def cpu(config: dict, name: str) -> tuple:
        service = config[name]
        limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if limits.get("cpus"):
            return (float(limits["cpus"]), 100_000)  # the kernel's default CFS period
        return (service["cpu_quota"] / service["cpu_period"], service["cpu_period"])

    single, both = services(False), services(True)
    lab = cpu(single, "app")
    for topology, config in (("single", single), ("both", both)):
        for name in hitbench.systems_of(topology):
            for service in benchstack.BY_NAME[name].cpu_services:
                assert cpu(config, service) == lab, (topology, name, service)
    assert cpu(single, "nginx") == cpu(single, "nginx-baseline") == lab
    assert {"two-tier@cluster", "flask-caching"} <= set(hitbench.systems_of("both"))


def test_hits_then_capacity_on_one_bench_stack(docker_available, tmp_path, capsys):
    hits_out, capacity_out, docs = tmp_path / "hits", tmp_path / "capacity", tmp_path / "docs"
    project = project_name("bench")
    common = ["--project", project, "--machine", "test"]
    try:
        code = bench.main(
            [
                "hits",
                "--rounds",
                "1",
                "--duration",
                "2s",
                "--warmup",
                "0s",
                "--delay",
                "1",
                "--lag-writes",
                "3",
                "--modes",
                "pure-hit",  # expiry mode is the same code with a TTL of the query's length
                "--keep",
                "--results",
                str(hits_out),
                "--publish",
                str(docs),
                *common,
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed[-3000:]
        check_hits(hits_out, docs, printed)

        code = bench.main(
            [
                "capacity",
                "--reuse",
                "--systems",
                ",".join(CAPACITY_SYSTEMS),
                "--fractions",
                "0.3,0.9",
                "--repeats",
                "2",
                "--step",
                "2s",
                "--probe",
                "2s",
                "--refine",
                "1",
                "--descents",
                "1",
                "--delay",
                "1",
                "--p99-ms",
                "25",
                "--cache-requests",
                "20000",
                "--results",
                str(capacity_out),
                "--publish",
                str(docs),
                *common,
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0, printed[-3000:]
        check_capacity(capacity_out, docs, printed)
    finally:
        benchstack.down(benchstack.make_stack(project, 1, "valkey"))
    # The stack is gone.
    assert (
        docker.from_env().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        == []
    )


def check_hits(out, docs, printed):
    data = json.loads((out / "hits.json").read_text())
    assert data["modes"]["pure-hit"]["ttl_s"] >= 3600 and list(data["modes"]) == ["pure-hit"]
    for mode in ("pure-hit",):
        rows = data["modes"][mode]["rows"]
        assert list(rows) == HIT_SYSTEMS
        for name, row in rows.items():
            assert row["rounds"] == 1 and row["requests"] > 0 and row["errors"] == 0, (mode, name)
            rps, p50, p99 = row["rps"]["mean"], row["p50_ms"]["mean"], row["p99_ms"]["mean"]
            assert rps > 0 and 0 < p50 <= p99 <= row["max_ms"]
            assert 0 < row["cpu_s_per_1k"]["mean"] < 100
            assert row["throttled"] is None or 0 <= row["throttled"] <= 1
            base = rows["flask-caching"]["rps"]["mean"]
            assert math.isclose(row["x_flask_caching"]["mean"] * base, rps)
            assert 0 < row["of_ceiling"]["mean"]
        assert rows["flask-caching"]["x_flask_caching"]["mean"] == 1
        for name, check in data["checks"][mode].items():
            assert check["status"] == 200 and check["version"].startswith("PostgreSQL"), name
        assert data["checks"][mode]["edge"]["strategy"] == "edge"
        assert data["checks"][mode]["flask-caching"]["item"] == 0
    samples = data["samples"]
    assert len(samples) == len(HIT_SYSTEMS)
    nginx = next(s for s in samples if s["system"] == "two-tier")
    assert set(nginx["cpu_by_container_s"]) == {"nginx", "app", "redis"}
    assert all(s["redis_cpu_s_per_1k"] >= 0 for s in samples)
    assert data["meta"]["topology"] == "single" and "lag_cluster" not in data
    assert all("disturbed" in s["load"] for s in samples)
    lag = data["lag"]
    assert lag["writes"] == 3 and 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"] < 2000
    report = (out / "hits.md").read_text()
    assert "## Pure hits" in report
    assert "Tier-1 invalidation lag" in report and "python -m loadtest.bench hits" in report
    assert "**Machine load**" in report and "95 % confidence interval" in report
    for label in data["meta"]["labels"].values():
        assert report.count(f"| {label} |") == 1, label
    assert (docs / "hits.md").read_text() == report
    assert (docs / "hits.png").read_bytes() == (out / "hits.png").read_bytes()
    assert "Flask-Caching" in printed and "report:" in printed


def check_capacity(out, docs, printed):
    data = json.loads((out / "capacity.json").read_text())
    assert list(data["systems"]) == CAPACITY_SYSTEMS
    for name, system in data["systems"].items():
        assert system["closed_rps"] > 0, name
        ladder = [lv for lv in system["levels"] if lv["kind"] == "ladder"]
        assert ladder and ladder[0]["rate"] == max(1, round(system["closed_rps"] * 0.3))
        for level in system["levels"]:
            assert len(level["steps"]) == 2  # the repeats
            assert level["verdict"] in ("met", "missed", "errors", "dropped", "generator")
            for step in level["steps"]:
                assert step["requests"] > 0 and "disturbed" in step["load"]
                assert step["p50_ms"] <= step["p99_ms"] <= step["p999_ms"] <= step["max_ms"]
                assert step["generator_cores"] >= 0
            cell = level["p99_ms"]
            assert cell["n"] == 2 and cell["low"] <= cell["mean"] <= cell["high"]
        summary = system["summary"]
        if summary["knee_rps"] is not None:
            knee = next(lv for lv in system["levels"] if lv["rate"] == summary["knee_rps"])
            assert knee["verdict"] == "met" and knee["p99_ms"]["mean"] <= 25
            halves = [lv for lv in system["levels"] if lv["kind"] == "half-knee"]
            assert [lv["rate"] for lv in halves] == [max(1, round(summary["knee_rps"] / 2))]
    ceiling = data["cache_ceiling"]
    assert ceiling["loop"] == "closed" and ceiling["rps"]["mean"] > 0
    report = (out / "capacity.md").read_text()
    assert "open loop" in report and "closed loop" in report
    assert "p99 ≤ 25 ms" in report and "± " in report and "## Every step" in report
    assert (docs / "capacity.json").read_text() == (out / "capacity.json").read_text()
    assert (docs / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bench capacity:" in printed
