"""The same run here and on AWS, side by side, with what each costs.

    python -m loadtest.loadgen local --url http://127.0.0.1:8080 -u 200 -r 20 -t 120s ZipfUser
        a headless Locust run against the local lab, written like the AWS
        load generator's ``loadgen run`` (results/loadgen/local/<id>/:
        Locust's CSVs, report.html, run.json)
    python -m loadtest.loadgen openloop --url http://127.0.0.1:8080 -t 30 100 200 400
        the open-loop benchmark (k6, loadtest/k6/openloop.js) against the
        local lab, one step per arrival rate, written like the AWS load
        generator's ``loadgen openloop`` (openloop.jsonl, run.json)
    python -m loadtest.loadgen fetch --region eu-west-1 --bucket <bucket> [--run <id>]
        brings the AWS load generator's latest run (or <id>) back from S3
        into results/loadgen/aws/<id>/ (the AWS CLI; AWS_ENDPOINT_URL works)
        and prints the report
    python -m loadtest.loadgen report AWS_RUN_DIR [--local LOCAL_RUN_DIR]
        the report alone

The report puts the AWS run beside the latest local run of the same kind
(or --local): the same scenario and users, or the same arrival rates,
measured in two places, with what differs named
(the network round trip to ElastiCache and RDS, TLS to both, the instance
classes, the load generator's own hosts), then the cost table of
loadtest/cost.py for the AWS configuration at the measured throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from loadtest import cloudwatch, cost, k6run, labload, runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "loadgen"


def _tool(name: str) -> str | None:
    """A command of this environment (beside the running Python first), else PATH's."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def run_local(
    url: str, users: int, spawn_rate: float, run_time: str, extra: list[str], out: Path
) -> Path:
    """One headless run against ``url`` with the installed Locust, written like the AWS
    load generator's (loadgen.sh run), into a new directory under ``out``."""
    locust = _tool("locust")
    if locust is None:
        raise RuntimeError("Locust is not installed here (scripts/test installs it into .venv)")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = out / run_id
    directory.mkdir(parents=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with labload.LabLoad(url) as load:
        proc = _locust(locust, url, users, spawn_rate, run_time, extra, directory)
    (directory / "locust.log").write_text(proc.stdout + proc.stderr)
    (directory / "run.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "started": started,
                "where": "local",
                "target": url,
                "users": users,
                "spawn_rate": spawn_rate,
                "duration": run_time,
                "locust_exit_code": proc.returncode,
                "locust_args": " ".join(extra),
                "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
                "lab": {},
                "load": load.figures,
            },
            indent=2,
        )
    )
    return directory


def _locust(
    locust: str,
    url: str,
    users: int,
    spawn_rate: float,
    run_time: str,
    extra: list[str],
    directory: Path,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            locust,
            "-f",
            str(ROOT / "loadtest" / "locustfile.py"),
            "--headless",
            "-u",
            str(users),
            "-r",
            str(spawn_rate),
            "-t",
            run_time,
            "--host",
            url,
            "--csv",
            str(directory / "locust"),
            "--csv-full-history",
            "--html",
            str(directory / "report.html"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=_seconds(run_time) + 300,
        check=False,
    )


def run_open_loop(
    url: str, seconds: int, rates: list[int], keys: dict[str, str], out: Path
) -> Path:
    """The open-loop steps of ``loadgen.sh openloop`` against ``url``, with the k6
    image of the benchmarks (K6_IMAGE), into a new directory under ``out``."""
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = out / run_id
    directory.mkdir(parents=True)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    k6 = k6run.DockerK6()
    with labload.LabLoad(url) as load, (directory / "openloop.jsonl").open("w") as steps:
        # Each step draws its keys from its own seed (as loadgen.sh's): with one,
        # every step replayed the first one's key sequence into a cache it had warmed.
        settings = {k.lower(): v for k, v in keys.items()}
        for seed, rate in enumerate(rates, 1):
            step = k6.run(url, rate, seconds, seed=seed, **settings)
            steps.write(json.dumps(step.summary) + "\n")
    (directory / "run.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "started": started,
                "where": "local",
                "kind": "openloop",
                "target": url,
                "duration": f"{seconds}s",
                "rates": rates,
                "keys": keys,
                "k6_image": k6.image,
                "machine": f"{platform.node()}, {os.cpu_count()} CPUs",
                "lab": {},
                "load": load.figures,
            },
            indent=2,
        )
    )
    return directory


def _seconds(run_time: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600}.get(run_time[-1:], 1)
    return int(float(run_time.rstrip("smh")) * unit)


def fetch(bucket: str, region: str, run_id: str | None, out: Path) -> Path:
    """Copy s3://bucket/runs/<id>/ (the latest when ``run_id`` is None) into ``out``/<id>."""
    aws = _tool("aws")
    if aws is None:
        raise RuntimeError("the AWS CLI (aws) is needed to fetch the results")
    if run_id is None:
        listing = subprocess.run(
            [aws, "s3", "ls", f"s3://{bucket}/runs/", "--region", region],
            capture_output=True,
            text=True,
            check=False,
        )
        if listing.returncode != 0:
            raise RuntimeError(f"cannot list s3://{bucket}/runs/: {listing.stderr.strip()}")
        runs = sorted(
            line.split()[-1].rstrip("/") for line in listing.stdout.splitlines() if "PRE" in line
        )
        if not runs:
            raise RuntimeError(f"no run in s3://{bucket}/runs/ yet (loadgen_run_command)")
        run_id = runs[-1]
    destination = out / run_id
    copy = subprocess.run(
        [
            aws,
            "s3",
            "cp",
            "--recursive",
            "--only-show-errors",
            "--region",
            region,
            f"s3://{bucket}/runs/{run_id}/",
            str(destination),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if copy.returncode != 0 or not (destination / "run.json").is_file():
        raise RuntimeError(f"cannot fetch s3://{bucket}/runs/{run_id}/: {copy.stderr.strip()}")
    try:  # AWS's own figures for the run's window: the report works without them
        cloudwatch.measure(destination, cloudwatch.CloudWatch(aws, region))
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        print(f"loadgen: no CloudWatch figures for {run_id}: {exc}", file=sys.stderr)
    return destination


def kind(run_dir: Path) -> str:
    """``openloop`` (k6) or ``locust``, from a run's run.json."""
    return json.loads((run_dir / "run.json").read_text()).get("kind", "locust")


def latest(directory: Path, of_kind: str | None = None) -> Path | None:
    found = sorted(
        p
        for p in directory.glob("*")
        if (p / "run.json").is_file() and (of_kind is None or kind(p) == of_kind)
    )
    return found[-1] if found else None


DIFFERENCES = (
    "What differs between the two columns: on AWS every cache and database call "
    "crosses the network (ElastiCache and RDS in other subnets, often another AZ), "
    "both over TLS; the instance classes are AWS's burstable ones, not this machine; "
    "the load comes from the load generator's own hosts in the VPC (not the lab's "
    "CPUs), through the ALB when there is one. Same Locust image, scenario and users."
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _open_loop_rows(found: list[runs.Run], target_ms: float) -> list[tuple[str, list[str]]]:
    """One row per offered rate: what each run achieved at it."""
    rows = [
        ("duration per step", [str(r.meta.get("duration")) for r in found]),
        ("keys", [json.dumps(r.meta.get("keys") or {}) for r in found]),
        (
            f"highest rate held, p95 <= {target_ms:g} ms",
            [
                f"{r.rps:,.1f} req/s" if r.failures == 0 and r.p95_ms <= target_ms else "none"
                for r in found
            ],
        ),
    ]
    for rate in sorted({s.rate for r in found for s in r.steps}):
        cells = []
        for r in found:
            step = next((s for s in r.steps if s.rate == rate), None)
            cells.append(
                "not run"
                if step is None
                else f"{step.achieved_rps:,.1f} req/s; p50 {_ms(step.p50_ms)} / p95 "
                f"{_ms(step.p95_ms)} / p99 {_ms(step.p99_ms)} / p99.9 {_ms(step.p999_ms)} ms; "
                f"{step.dropped:,} dropped, {step.errors:,} errors"
                + (" (met)" if runs.met(step, target_ms) else "")
            )
        rows.append((f"offered {rate:g} req/s", cells))
    return rows


def report(aws_run: Path, local_run: Path | None, target_ms: float) -> str:
    found = [runs.read_run(aws_run, target_ms)]
    if local_run is not None:
        found.append(runs.read_run(local_run, target_ms))
    if len({r.open_loop for r in found}) > 1:
        raise ValueError(
            f"{aws_run} and {local_run} are not the same kind of run (open loop and Locust)"
        )
    header = "| | " + " | ".join(r.label for r in found) + " |"
    if found[0].open_loop:
        title = "## Open-loop runs (measured: k6, constant arrival rate)"
        rows = [
            ("where", [r.where for r in found]),
            ("run", [r.meta.get("run_id", r.directory.name) for r in found]),
            *_open_loop_rows(found, target_ms),
        ]
        return _report_text(title, header, rows, found, target_ms)
    title = "## Load generator runs (measured)"
    rows = [
        ("where", [r.where for r in found]),
        ("run", [r.meta.get("run_id", r.directory.name) for r in found]),
        ("scenario", [r.meta.get("locust_args", "") or "(all)" for r in found]),
        (
            "users / spawn rate",
            [f"{r.meta.get('users')} / {r.meta.get('spawn_rate')}" for r in found],
        ),
        ("duration", [str(r.meta.get("duration")) for r in found]),
        ("requests (failures)", [f"{r.requests:,} ({r.failures:,})" for r in found]),
        ("requests/s", [f"{r.rps:,.1f}" for r in found]),
        ("p50 / p95 / p99 (ms)", [f"{r.p50_ms:g} / {r.p95_ms:g} / {r.p99_ms:g}" for r in found]),
        ("max (ms)", [f"{r.max_ms:,.0f}" for r in found]),
    ]
    return _report_text(title, header, rows, found, target_ms)


def _load_rows(found: list[runs.Run], prices: dict) -> list[tuple[str, list[str]]]:
    """The target's own load per request over the whole run (measured, where it can be)."""

    def cell(figure: tuple[float, str] | None, unit: str) -> str:
        return "not measured" if figure is None else f"{figure[0]:,.2f}{unit} ({figure[1]})"

    db_cpu = [r.load.get("db_cpu_percent") for r in found]
    return [
        ("all requests of the run", [f"{r.total_requests:,}" for r in found]),
        (
            "slow queries per 1,000 requests",
            [cell(r.queries_per_thousand(), "") for r in found],
        ),
        (
            "app CPU-seconds per 1,000 requests",
            [cell(r.cpu_seconds_per_thousand(prices.get("ec2_vcpus", {})), " s") for r in found],
        ),
        (
            "database CPU, average",
            [
                "not measured" if c is None else f"{c:.1f} % (RDS CPUUtilization, CloudWatch)"
                for c in db_cpu
            ],
        ),
    ]


def _report_text(
    title: str,
    header: str,
    rows: list[tuple[str, list[str]]],
    found: list[runs.Run],
    target_ms: float,
) -> str:
    prices = cost.load_prices()
    rows = rows + _load_rows(found, prices)
    lines = [
        title,
        "",
        header,
        "|" + " --- |" * (len(found) + 1),
        *[f"| {name} | " + " | ".join(values) + " |" for name, values in rows],
        "",
        DIFFERENCES,
        "",
        cost.cost_table(found[0], prices, target_ms),
    ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.loadgen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    local = sub.add_parser("local", help="a headless run against a local URL")
    local.add_argument("--url", default="http://127.0.0.1:8080")
    local.add_argument("-u", "--users", type=int, default=50)
    local.add_argument("-r", "--spawn-rate", type=float, default=10)
    local.add_argument("-t", "--run-time", default="60s")
    local.add_argument("--out", type=Path, default=RESULTS / "local")
    local.add_argument("locust_args", nargs=argparse.REMAINDER, help="user classes, options")
    openloop = sub.add_parser("openloop", help="the open-loop steps against a local URL")
    openloop.add_argument("--url", default="http://127.0.0.1:8080")
    openloop.add_argument("-t", "--seconds", type=_positive, default=30, help="per step")
    openloop.add_argument("--path", default=None, help="LAB_PATH, e.g. /api/version?item={item}")
    openloop.add_argument("--keys", type=_positive, default=None, help="KEYS: the key space")
    openloop.add_argument("--skew", default=None, help="SKEW: uniform or a Zipf exponent")
    openloop.add_argument("--first-item", type=int, default=None, help="FIRST_ITEM: the first key")
    openloop.add_argument("--out", type=Path, default=RESULTS / "local")
    openloop.add_argument("rates", nargs="+", type=_positive, help="requests/s, one step each")
    get = sub.add_parser("fetch", help="bring an AWS run back and report it")
    get.add_argument("--bucket", required=True)
    get.add_argument("--region", required=True)
    get.add_argument("--run", default=None, help="a run id (default: the latest)")
    get.add_argument("--out", type=Path, default=RESULTS / "aws")
    openloop.add_argument("--target-ms", type=float, default=100.0, help="p95 latency target")
    for p in (get, sub.add_parser("report", help="report an AWS run beside a local one")):
        p.add_argument("--local", type=Path, default=None, help="a local run directory")
        p.add_argument("--target-ms", type=float, default=100.0, help="p95 latency target")
    sub.choices["report"].add_argument("aws_run", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "local":
            started = time.monotonic()
            directory = run_local(
                args.url, args.users, args.spawn_rate, args.run_time, args.locust_args, args.out
            )
            print(f"local run: {directory} ({time.monotonic() - started:.0f}s)")
            return 0
        if args.command == "openloop":
            keys = {"LAB_PATH": args.path, "KEYS": args.keys, "SKEW": args.skew}
            keys["FIRST_ITEM"] = args.first_item
            directory = run_open_loop(
                args.url,
                args.seconds,
                args.rates,
                {k: str(v) for k, v in keys.items() if v is not None},
                args.out,
            )
            print(f"local open-loop run: {directory}")
            print(report(directory, None, args.target_ms))
            return 0
        if args.command == "fetch":
            aws_run = fetch(args.bucket, args.region, args.run, args.out)
            print(f"fetched: {aws_run}")
        else:
            aws_run = args.aws_run
        local_run = args.local or latest(RESULTS / "local", kind(aws_run))
        print(report(aws_run, local_run, args.target_ms))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:  # BenchError too
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
