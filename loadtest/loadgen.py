"""The same Locust run here and on AWS, side by side, with what each costs.

    python -m loadtest.loadgen local --url http://127.0.0.1:8080 -u 200 -r 20 -t 120s ZipfUser
        a headless run against the local lab, written like the AWS load
        generator's (results/loadgen/local/<id>/: Locust's CSVs, report.html,
        run.json)
    python -m loadtest.loadgen fetch --region eu-west-1 --bucket <bucket> [--run <id>]
        brings the AWS load generator's latest run (or <id>) back from S3
        into results/loadgen/aws/<id>/ (the AWS CLI; AWS_ENDPOINT_URL works)
        and prints the report
    python -m loadtest.loadgen report AWS_RUN_DIR [--local LOCAL_RUN_DIR]
        the report alone

The report puts the AWS run beside the latest local run (or --local): the
same scenario and users, measured in two places, with what differs named
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

from loadtest import cost

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
    proc = subprocess.run(
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
    return destination


def latest(directory: Path) -> Path | None:
    runs = sorted(p for p in directory.glob("*") if (p / "run.json").is_file())
    return runs[-1] if runs else None


DIFFERENCES = (
    "What differs between the two columns: on AWS every cache and database call "
    "crosses the network (ElastiCache and RDS in other subnets, often another AZ), "
    "both over TLS; the instance classes are AWS's burstable ones, not this machine; "
    "the load comes from the load generator's own hosts in the VPC (not the lab's "
    "CPUs), through the ALB when there is one. Same Locust image, scenario and users."
)


def report(aws_run: Path, local_run: Path | None, target_ms: float) -> str:
    runs = [cost.read_run(aws_run)]
    if local_run is not None:
        runs.append(cost.read_run(local_run))
    header = "| | " + " | ".join(r.label for r in runs) + " |"
    rows = [
        ("where", [r.where for r in runs]),
        ("run", [r.meta.get("run_id", r.directory.name) for r in runs]),
        ("scenario", [r.meta.get("locust_args", "") or "(all)" for r in runs]),
        (
            "users / spawn rate",
            [f"{r.meta.get('users')} / {r.meta.get('spawn_rate')}" for r in runs],
        ),
        ("duration", [str(r.meta.get("duration")) for r in runs]),
        ("requests (failures)", [f"{r.requests:,} ({r.failures:,})" for r in runs]),
        ("requests/s", [f"{r.rps:,.1f}" for r in runs]),
        ("p50 / p95 / p99 (ms)", [f"{r.p50_ms:g} / {r.p95_ms:g} / {r.p99_ms:g}" for r in runs]),
        ("max (ms)", [f"{r.max_ms:,.0f}" for r in runs]),
    ]
    lines = [
        "## Load generator runs (measured)",
        "",
        header,
        "|" + " --- |" * (len(runs) + 1),
        *[f"| {name} | " + " | ".join(values) + " |" for name, values in rows],
        "",
        DIFFERENCES,
        "",
        cost.cost_table(runs[0], cost.load_prices(), target_ms),
    ]
    return "\n".join(lines)


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
    get = sub.add_parser("fetch", help="bring an AWS run back and report it")
    get.add_argument("--bucket", required=True)
    get.add_argument("--region", required=True)
    get.add_argument("--run", default=None, help="a run id (default: the latest)")
    get.add_argument("--out", type=Path, default=RESULTS / "aws")
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
        if args.command == "fetch":
            aws_run = fetch(args.bucket, args.region, args.run, args.out)
            print(f"fetched: {aws_run}")
        else:
            aws_run = args.aws_run
        local_run = args.local or latest(RESULTS / "local")
        print(report(aws_run, local_run, args.target_ms))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
