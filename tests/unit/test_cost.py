"""The cost report (loadtest/cost.py): priced items, measured throughput, modelled options."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from loadtest import cloudwatch, cost, loadgen, runs

STATS_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
)


def write_run(directory, where="aws", rps=250.0, p95=40, failures=0, lab=None, **meta):
    directory.mkdir(parents=True)
    (directory / "locust_stats.csv").write_text(
        STATS_HEADER
        + f"GET,/api/version,30000,{failures},8,12,2,900,300,{rps},0,8,10,12,14,20,{p95},60,80,"
        "400,800,900\n"
        + f",Aggregated,30000,{failures},8,12,2,900,300,{rps},0,8,10,12,14,20,{p95},60,80,"
        "400,800,900\n"
    )
    (directory / "run.json").write_text(
        json.dumps({"where": where, "users": 200, "spawn_rate": 20, "lab": lab or {}, **meta})
    )
    return directory


def test_the_price_table_is_dated_and_names_its_source():
    prices = cost.load_prices()
    assert date.fromisoformat(prices["date"] + "-01") <= date.today()
    assert "https://aws.amazon.com/" in prices["source"]
    for region in prices["regions"].values():
        # every class of the lab's defaults and of the rds.tf table it prices
        assert {"t3.small", "c6i.large"} <= set(region["ec2_hour"])
        assert "cache.t4g.micro" in region["elasticache_valkey_hour"]
        assert {"db.t4g.micro", "db.t4g.small", "db.t4g.medium"} <= set(
            region["rds_postgres_single_az_hour"]
        )


def test_the_default_deployment_costs_what_the_readme_says():
    items = cost.monthly_cost(runs.DEFAULT_LAB, cost.load_prices())
    total = sum(items.values())
    assert items["EC2 1 x t3.small"] == pytest.approx(16.64, abs=0.01)
    assert items["RDS db.t4g.micro"] == pytest.approx(13.14, abs=0.01)
    assert 45 < total < 60, items  # terraform/README.md: about $53 in eu-west-1


def test_per_million_requests_follow_the_measured_throughput(tmp_path):
    run = runs.read_run(write_run(tmp_path / "aws", rps=250.0, p95=40))
    rows = {o.name: o for o in cost.options(run, cost.load_prices(), target_ms=100)}
    cached = rows["the cache (as deployed)"]
    assert cached.rps == 250.0 and cached.meets_target
    total = sum(cost.monthly_cost(run.lab, cost.load_prices()).values())
    assert cached.per_million == pytest.approx(total / (250 * 730 * 3600) * 1e6)
    # no cache: 67 connections of a db.t4g.micro, each held 10 s by the slow query
    no_cache = rows["no cache"]
    assert no_cache.rps == pytest.approx(6.7) and not no_cache.meets_target
    assert no_cache.monthly < cached.monthly  # no ElastiCache node
    larger = next(o for name, o in rows.items() if name.startswith("no cache, db."))
    replicas = next(o for name, o in rows.items() if "read replica" in name)
    assert larger.monthly > no_cache.monthly and replicas.monthly > no_cache.monthly
    assert larger.rps > no_cache.rps and replicas.rps > no_cache.rps


def test_a_run_that_misses_the_target_is_not_priced_per_request(tmp_path):
    run = runs.read_run(write_run(tmp_path / "aws", p95=350))
    table = cost.cost_table(run, cost.load_prices(), target_ms=100)
    row = next(line for line in table.splitlines() if line.startswith("| the cache"))
    assert "| no |" in row and "not at this target" in row
    assert "Measured:" in table and "Priced:" in table and "Modelled:" in table


def test_the_report_puts_the_aws_run_beside_the_local_one(tmp_path):
    lab = {"region": "eu-west-1", "app_instances_min": 2, "alb": True, "cache_nodes": 2}
    aws = write_run(tmp_path / "aws" / "r1", rps=300.0, lab=lab, run_id="r1", duration="60s")
    local = write_run(tmp_path / "local" / "r2", where="local", rps=900.0, machine="lab, 2 CPUs")
    text = loadgen.report(aws, local, target_ms=100)
    header = text.splitlines()[2]
    assert "AWS eu-west-1: 2 x t3.small, 2 x cache.t4g.micro, db.t4g.micro" in header
    assert "local (lab, 2 CPUs)" in header
    assert re.search(r"\| requests/s \| 300\.0 \| 900\.0 \|", text)
    assert "ALB (hours + 1 LCU)" in text and "network" in text and "TLS" in text


def test_an_unknown_class_names_the_missing_price(tmp_path):
    run = runs.read_run(write_run(tmp_path / "aws", lab={"db_instance_class": "db.x9.huge"}))
    with pytest.raises(ValueError, match="db.x9.huge"):
        cost.monthly_cost(run.lab, cost.load_prices())


def write_open_loop(directory, steps, where="aws", lab=None):
    """A run directory as `loadgen.sh openloop` uploads it: one k6 summary per step."""
    directory.mkdir(parents=True)
    lines = []
    for rate, p95, dropped, errors in steps:
        latency = {"count": rate * 10, "med": p95 / 4, "p(90)": p95 / 2, "p(95)": p95}
        latency |= {"p(99)": p95 * 2, "p(99.9)": p95 * 3, "max": p95 * 4, "avg": p95 / 3}
        summary = {"rate": rate, "duration_s": 10, "vus": 20, "run_ms": 10500.0}
        summary |= {"requests": rate * 10 - dropped, "errors": errors, "dropped": dropped}
        lines.append(json.dumps(summary | {"latency_ms": latency}))
    (directory / "openloop.jsonl").write_text("\n".join(lines) + "\n")
    meta = {"where": where, "kind": "openloop", "duration": "10s", "lab": lab or {}}
    (directory / "run.json").write_text(json.dumps(meta | {"keys": {"KEYS": "20"}}))
    return directory


def test_an_open_loop_run_stands_for_the_highest_rate_it_held_within_the_target(tmp_path):
    # 400/s: p95 within the target; 800/s: too slow; 1600/s: dropped requests
    steps = [(1600, 20, 30, 0), (400, 30, 0, 0), (800, 150, 0, 0), (200, 10, 0, 0)]
    run = runs.read_run(write_open_loop(tmp_path / "aws", steps), target_ms=100)
    assert run.open_loop and [s.rate for s in run.steps] == [200, 400, 800, 1600]
    assert run.rps == 400 and run.p95_ms == 30 and run.failures == 0
    # a tighter target: only 200/s; an error at that rate: nothing met, the lowest step
    assert runs.read_run(tmp_path / "aws", target_ms=20).rps == 200
    failing = write_open_loop(tmp_path / "failing", [(200, 10, 0, 3), (400, 300, 0, 0)])
    run = runs.read_run(failing, target_ms=100)
    assert run.rps == 200 and run.failures == 3
    row = next(
        line
        for line in cost.cost_table(run, cost.load_prices(), 100).splitlines()
        if line.startswith("| the cache")
    )
    assert "not at this target" in row


def test_the_report_puts_open_loop_steps_beside_the_local_ones(tmp_path):
    aws = write_open_loop(tmp_path / "aws" / "r1", [(100, 40, 0, 0), (200, 90, 0, 0)])
    local = write_open_loop(
        tmp_path / "local" / "r2", [(100, 5, 0, 0), (200, 8, 0, 0), (400, 12, 0, 0)], "local"
    )
    text = loadgen.report(aws, local, target_ms=50)
    assert "## Open-loop runs" in text
    assert re.search(r"\| highest rate held, p95 <= 50 ms \| 100\.0 req/s \| 400\.0 req/s \|", text)
    row = next(line for line in text.splitlines() if line.startswith("| offered 400 req/s"))
    assert row.split("|")[2].strip() == "not run" and "(met)" in row.split("|")[3]
    assert "p99.9 120.0 ms" in text  # the AWS run's 100/s step: p99.9 is 3 x its p95 of 40
    assert "k6, open loop" in text and "| the cache (as deployed) |" in text
    # a Locust run is not put beside an open-loop one
    with pytest.raises(ValueError, match="not the same kind"):
        loadgen.report(aws, write_run(tmp_path / "locust"), target_ms=50)
    assert loadgen.latest(tmp_path / "local", "openloop") == local
    assert loadgen.latest(tmp_path / "local", "locust") is None


class FakeCloudWatch:
    """CloudWatch's answers for one run: what each metric held in the window asked for."""

    def __init__(self, series):
        self.series, self.asked = series, []

    def datapoints(self, namespace, metric, dimensions, statistic, start, end):
        self.asked.append((namespace, metric, dimensions, statistic, start, end))
        return self.series.get((namespace, metric), [])


def test_aws_load_per_request_comes_from_cloudwatch_over_the_runs_window(tmp_path):
    metrics = {"namespace": "cachelab", "app_group": "cachelab-app", "db_instance": "cachelab-db"}
    lab = {"app_instances_min": 2, "app_instance_type": "t3.small", "metrics": metrics}
    aws = write_open_loop(tmp_path / "aws", [(100, 40, 0, 0), (200, 60, 0, 0)], lab=lab)
    meta = json.loads((aws / "run.json").read_text())
    (aws / "run.json").write_text(json.dumps(meta | {"started": "2026-12-05T10:00:30Z"}))
    fake = FakeCloudWatch(
        {
            ("AWS/EC2", "CPUUtilization"): [20.0, 30.0],  # 25 % of 2 x 2 vCPUs
            ("AWS/RDS", "CPUUtilization"): [4.0],
            ("cachelab", "CacheMiss"): [3.0, 3.0],
            ("cachelab", "CacheHit"): [2000.0, 994.0],
        }
    )
    cloudwatch.measure(aws, fake)
    # two steps of 10 s from 10:00:30 to 10:00:50, widened to whole minutes
    start, end = fake.asked[0][4:]
    assert (start.minute, end.minute, start.second, end.second) == (0, 1, 0, 0)
    assert fake.asked[0][2] == {"AutoScalingGroupName": "cachelab-app"}
    assert ("AWS/RDS", "CPUUtilization", {"DBInstanceIdentifier": "cachelab-db"}) in [
        a[:3] for a in fake.asked
    ]
    run = runs.read_run(aws)
    assert run.total_requests == 3000
    assert run.queries_per_thousand() == (2.0, "the app's CacheMiss, CloudWatch")
    # 25 % x 2 vCPUs x 2 instances x 60 s = 60 CPU-s over 3,000 requests
    vcpus = cost.load_prices()["ec2_vcpus"]
    cpu = run.cpu_seconds_per_thousand(vcpus)
    assert cpu is not None and cpu[0] == pytest.approx(20.0)
    assert run.load["cache_results"]["stale"] is None  # no data point: missing, not 0
    text = loadgen.report(aws, None, target_ms=100)
    assert "| slow queries per 1,000 requests | 2.00 (the app's CacheMiss" in text
    assert "| database CPU, average | 4.0 %" in text


def test_local_load_per_request_is_what_the_lab_measured(tmp_path):
    local = write_open_loop(tmp_path / "local", [(100, 40, 0, 0)], where="local")
    meta = json.loads((local / "run.json").read_text())
    load = {"app_cpu_seconds": 5.0, "db_queries": 20}
    (local / "run.json").write_text(json.dumps(meta | {"load": load}))
    run = runs.read_run(local)
    assert run.queries_per_thousand() == (20.0, "PostgreSQL")
    assert run.cpu_seconds_per_thousand({}) == (5.0, "app containers' cgroups")
    # a run without figures says so
    bare = runs.read_run(write_open_loop(tmp_path / "bare", [(100, 40, 0, 0)], where="local"))
    assert bare.queries_per_thousand() is None
    assert "| app CPU-seconds per 1,000 requests | not measured |" in loadgen.report(
        bare.directory, None, target_ms=100
    )
