"""What a configuration of the lab costs on AWS, and what it costs per request.

``python -m loadtest.cost RUN_DIR [--target-ms 100]`` prints, for the
configuration a run was measured on (a run directory of the load generator
or of ``python -m loadtest.loadgen local|openloop``, read by
:mod:`loadtest.runs`; an open-loop run stands for the highest rate it held
within the target):

* $ per month of that configuration, item by item (**priced**: the dated
  table in loadtest/prices-aws.json, which names its source);
* $ per million requests at the run's throughput, if its p95 met the latency
  target (**measured** throughput and latency, **priced** cost), and the same
  for the alternatives a user weighs instead of a cache (**modelled**):

  - *no cache*: every request runs the database query, which holds one
    connection for ``slow_query_seconds``: the database serves at most
    (its connection budget) / (query time) requests a second, each taking at
    least the query time;
  - *a larger database class*: the smallest class of terraform/rds.tf's
    ``max_connections`` table whose budget serves the measured throughput;
  - *read replicas*: as many replicas of the deployed class as that takes.

The model is the lab's own workload (a slow query that waits rather than
computes), which is why a connection is the unit of database capacity. It is
printed with every figure it produced; nothing here is a benchmark of RDS.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .runs import Run, read_run  # read_run: python -m loadtest.cost RUN_DIR

ROOT = Path(__file__).resolve().parents[1]
PRICES = Path(__file__).with_name("prices-aws.json")
SECONDS_PER_MONTH = 730 * 3600
# connections kept free of max_connections (terraform/ec2.tf: db_connection_headroom)
DB_HEADROOM = 8


def load_prices(path: Path = PRICES) -> dict:
    return json.loads(path.read_text())


def db_class_max_connections() -> dict[str, int]:
    """terraform/rds.tf's table (one source of truth for the budget)."""
    text = (ROOT / "terraform" / "rds.tf").read_text()
    table = text[text.index("db_class_max_connections = {") :]
    table = table[: table.index("}")]
    return {k: int(v) for k, v in re.findall(r'"(db\.[a-z0-9.]+)"\s*=\s*(\d+)', table)}


def _price(table: dict, kind: str, key: str) -> float:
    try:
        return float(table[kind][key])
    except KeyError:
        raise ValueError(
            f"no {kind} price for {key} in {PRICES.name}: add it (with the same source)"
        ) from None


def monthly_cost(lab: dict, prices: dict) -> dict[str, float]:
    """$ per month of a configuration (terraform's lab_configuration output), per item."""
    region = prices["regions"].get(lab["region"])
    if region is None:
        raise ValueError(f"no prices for region {lab['region']} in {PRICES.name}")
    hours = prices["hours_per_month"]
    instances = int(lab["app_instances_min"])
    cache_kind = f"elasticache_{lab['cache_engine']}_hour"
    db_factor = region["rds_multi_az_factor"] if lab["db_multi_az"] else 1
    items = {
        f"EC2 {instances} x {lab['app_instance_type']}": instances
        * hours
        * _price(region, "ec2_hour", lab["app_instance_type"]),
        "EBS gp3 (app root volumes)": instances
        * lab["app_root_volume_gib"]
        * region["ebs_gp3_gib_month"],
        "public IPv4 addresses": (instances + (2 if lab["alb"] else 0))
        * hours
        * region["public_ipv4_hour"],
        f"ElastiCache {lab['cache_nodes']} x {lab['cache_node_type']} ({lab['cache_engine']})": (
            lab["cache_nodes"] * hours * _price(region, cache_kind, lab["cache_node_type"])
        ),
        f"RDS {lab['db_instance_class']}{' Multi-AZ' if lab['db_multi_az'] else ''}": db_factor
        * hours
        * _price(region, "rds_postgres_single_az_hour", lab["db_instance_class"]),
        "RDS gp3 storage": db_factor * lab["db_storage_gib"] * region["rds_gp3_gib_month"],
        "Secrets Manager (3 secrets + RDS master)": 4 * region["secret_month"],
        "CloudWatch (about 12 alarms, 7 custom metrics)": 12 * region["alarm_month"]
        + 7 * region["custom_metric_month"],
    }
    if lab["alb"]:
        items["ALB (hours + 1 LCU)"] = hours * (region["alb_hour"] + region["alb_lcu_hour"])
    return {k: round(v, 2) for k, v in items.items()}


def per_million(monthly: float, rps: float) -> float | None:
    if rps <= 0:
        return None
    return monthly / (rps * SECONDS_PER_MONTH) * 1_000_000


@dataclass
class Option:
    name: str
    monthly: float
    rps: float
    latency_ms: float
    meets_target: bool
    basis: str

    @property
    def per_million(self) -> float | None:
        return per_million(self.monthly, self.rps)


def options(run: Run, prices: dict, target_ms: float) -> list[Option]:
    """The deployed cache (measured) beside the cache-less alternatives (modelled)."""
    lab = run.lab
    region = prices["regions"][lab["region"]]
    hours = prices["hours_per_month"]
    base = monthly_cost(lab, prices)
    total = sum(base.values())
    cache_items = sum(v for k, v in base.items() if k.startswith("ElastiCache"))
    query_ms = float(lab["slow_query_seconds"]) * 1000
    per_conn_rps = 1000 / query_ms if query_ms > 0 else math.inf
    budget = int(lab["db_connections_app"])
    db_factor = region["rds_multi_az_factor"] if lab["db_multi_az"] else 1
    no_cache_rps = budget * per_conn_rps
    rows = [
        Option(
            "the cache (as deployed)",
            total,
            run.rps,
            run.p95_ms,
            run.p95_ms <= target_ms and run.failures == 0,
            "measured throughput and p95; priced",
        ),
        Option(
            "no cache",
            total - cache_items,
            no_cache_rps,
            query_ms,
            query_ms <= target_ms,
            f"modelled: {budget} connections / {query_ms / 1000:g} s query",
        ),
    ]
    # the smallest larger class whose budget serves the measured throughput
    table = db_class_max_connections()
    prices_db = region["rds_postgres_single_az_hour"]
    current = _price(region, "rds_postgres_single_az_hour", lab["db_instance_class"])
    candidates = sorted(
        (
            (prices_db[c], c, (m - DB_HEADROOM) * per_conn_rps)
            for c, m in table.items()
            if c in prices_db and prices_db[c] > current
        ),
    )
    enough = [c for c in candidates if c[2] >= run.rps] or candidates[-1:]
    if enough:
        price, name, rps = enough[0]
        rows.append(
            Option(
                f"no cache, {name}",
                total - cache_items + db_factor * hours * (price - current),
                rps,
                query_ms,
                query_ms <= target_ms,
                f"modelled: {table[name] - DB_HEADROOM} connections / {query_ms / 1000:g} s query",
            )
        )
    replicas = max(1, math.ceil(run.rps / no_cache_rps) - 1) if no_cache_rps > 0 else 1
    replicas = min(replicas, 15)  # RDS allows 15 read replicas
    rows.append(
        Option(
            f"no cache, {replicas} read replica{'s' if replicas > 1 else ''}",
            total - cache_items + replicas * hours * current,
            (1 + replicas) * no_cache_rps,
            query_ms,
            query_ms <= target_ms,
            f"modelled: (1 + {replicas}) x {budget} connections / {query_ms / 1000:g} s query",
        )
    )
    return rows


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def cost_table(run: Run, prices: dict, target_ms: float) -> str:
    lab = run.lab
    lines = [
        f"### Cost of the configuration ({lab['region']}; prices of {prices['date']}, "
        "loadtest/prices-aws.json)",
        "",
        "| item | $ per month (priced) |",
        "| --- | ---: |",
    ]
    items = monthly_cost(lab, prices)
    lines += [f"| {k} | {_money(v)} |" for k, v in items.items()]
    lines += [f"| **total** | **{_money(sum(items.values()))}** |", ""]
    lines += [
        f"### $ per million requests at a p95 target of {target_ms:g} ms",
        "",
        "| option | $ per month | requests/s | p95 (ms) | meets the target | $ per million "
        "requests | basis |",
        "| --- | ---: | ---: | ---: | :---: | ---: | --- |",
    ]
    for option in options(run, prices, target_ms):
        lines.append(
            f"| {option.name} | {_money(option.monthly)} | {option.rps:,.1f} | "
            f"{option.latency_ms:,.0f} | {'yes' if option.meets_target else 'no'} | "
            f"{_money(option.per_million) if option.meets_target else 'not at this target'} | "
            f"{option.basis} |"
        )
    measured = (
        "the highest arrival rate the run held with p95 within the target (k6, open "
        "loop: no request dropped or failed)"
        if run.open_loop
        else "the run's requests/s and p95 (Locust, closed loop; the rate a run "
        "reached, not the knee of the curve)"
    )
    lines += [
        "",
        f"Measured: {measured}. Priced: every $ figure. Modelled: the "
        "cache-less rows' throughput and latency.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cost", description=__doc__)
    parser.add_argument(
        "run", type=Path, help="a run directory (run.json; locust_stats.csv or openloop.jsonl)"
    )
    parser.add_argument("--target-ms", type=float, default=100.0, help="p95 latency target")
    args = parser.parse_args(argv)
    try:
        run = read_run(args.run, args.target_ms)
        print(cost_table(run, load_prices(), args.target_ms))
    except (OSError, ValueError, KeyError) as exc:
        print(f"cost: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
