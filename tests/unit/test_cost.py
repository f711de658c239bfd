"""The cost report (loadtest/cost.py): priced items, measured throughput, modelled options."""

from __future__ import annotations

import json
import re
from datetime import date

import pytest

from loadtest import cost, loadgen

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
    items = cost.monthly_cost(cost.DEFAULT_LAB, cost.load_prices())
    total = sum(items.values())
    assert items["EC2 1 x t3.small"] == pytest.approx(16.64, abs=0.01)
    assert items["RDS db.t4g.micro"] == pytest.approx(13.14, abs=0.01)
    assert 45 < total < 60, items  # terraform/README.md: about $53 in eu-west-1


def test_per_million_requests_follow_the_measured_throughput(tmp_path):
    run = cost.read_run(write_run(tmp_path / "aws", rps=250.0, p95=40))
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
    run = cost.read_run(write_run(tmp_path / "aws", p95=350))
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
    run = cost.read_run(write_run(tmp_path / "aws", lab={"db_instance_class": "db.x9.huge"}))
    with pytest.raises(ValueError, match="db.x9.huge"):
        cost.monthly_cost(run.lab, cost.load_prices())
