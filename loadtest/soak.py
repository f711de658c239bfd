"""Soak: hold a steady load on the lab for a while and report errors, latency
percentiles and each container's memory over time (Docker SDK stats).

A benchmark, not a test: it prints a report and writes it to
results/soak-<time>.{json,md}; read the memory growth column to see that
nothing leaks. By default it drives the lab you started with
`docker compose up` (project "cachelab", Nginx on 127.0.0.1:8080):

    python -m loadtest.soak --duration 10m --users 8 --rate 50

``--start`` brings up a throw-away test stack instead (and removes it after).
Traffic goes only to 127.0.0.1 (Nginx's published port).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime

from .cliargs import parse_duration
from .stack import ROOT, Stack
from .traffic import Traffic, percentile

MiB = 1024 * 1024


def soak_duration(text: str) -> float:
    seconds = parse_duration(text)
    if not 5 <= seconds <= 24 * 3600:
        raise argparse.ArgumentTypeError("duration must be between 5 s and 24 h")
    return seconds


def memory_of(container) -> float | None:
    """Memory in use (MiB) as `docker stats` shows it: usage minus page cache."""
    try:
        stats = container.stats(stream=False, one_shot=True)
    except Exception:  # noqa: BLE001 - a container that went away has no stats
        return None
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    detail = mem.get("stats") or {}
    cache = detail.get("inactive_file", detail.get("total_inactive_file", detail.get("cache", 0)))
    return (usage - cache) / MiB


class MemorySampler(threading.Thread):
    def __init__(self, stack: Stack, interval: float) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.stack, self.interval = stack, interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def containers(self):
        found = self.stack.docker.containers.list(
            filters={"label": f"com.docker.compose.project={self.stack.project}"}
        )
        return sorted(found, key=lambda c: c.name)

    def sample_once(self) -> None:
        now = time.monotonic() - self.t0
        for container in self.containers():
            value = memory_of(container)
            if value is not None:
                self.samples.setdefault(container.name, []).append((now, value))

    def run(self) -> None:
        while True:
            self.sample_once()
            if self._halt.wait(self.interval):
                break

    def stop(self) -> None:
        self._halt.set()
        self.join(self.interval + 30)
        self.sample_once()


def memory_table(samples: dict[str, list[tuple[float, float]]]) -> list[dict]:
    rows = []
    for name, series in sorted(samples.items()):
        values = [v for _, v in series]
        n = max(1, len(values) // 5)
        # Compare the first and last fifth of the run (medians), not two noisy points.
        first = sorted(values[:n])[len(values[:n]) // 2]
        last = sorted(values[-n:])[len(values[-n:]) // 2]
        rows.append(
            {
                "container": name,
                "samples": len(values),
                "start_mib": round(first, 1),
                "end_mib": round(last, 1),
                "max_mib": round(max(values), 1),
                "growth_mib": round(last - first, 1),
                "growth_pct": round((last - first) / first * 100, 1) if first else 0.0,
            }
        )
    return rows


def render(report: dict) -> str:
    lines = [
        f"# Soak {report['started']}",
        "",
        f"- target: {report['base_url']} (project {report['project']})",
        f"- load: {report['users']} users, {report['rate']} req/s target, "
        f"{report['duration_s']:.0f} s, paths {', '.join(report['paths'])}",
        f"- requests: {report['requests']} ({report['achieved_rps']:.1f} req/s), "
        f"errors: {report['errors']} ({report['error_pct']:.3f} %), "
        f"statuses {report['statuses']}",
        f"- latency: p50 {report['p50_ms']:.1f} ms, p95 {report['p95_ms']:.1f} ms, "
        f"p99 {report['p99_ms']:.1f} ms, max {report['max_ms']:.1f} ms",
        f"- X-Cache: {report['x_cache']}",
        "",
        "| container | samples | start MiB | end MiB | max MiB | growth MiB | growth % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["memory"]:
        lines.append(
            f"| {row['container']} | {row['samples']} | {row['start_mib']} | "
            f"{row['end_mib']} | {row['max_mib']} | {row['growth_mib']} | "
            f"{row['growth_pct']} |"
        )
    lines += ["", "Start/end are medians of the first/last fifth of the samples."]
    return "\n".join(lines) + "\n"


def published_url(stack: Stack) -> str:
    """Nginx's published 127.0.0.1 port, read from Docker (no compose file needed)."""
    for container in stack.containers("nginx"):
        container.reload()
        for binding in (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp") or []:
            if binding["HostIp"] in ("127.0.0.1", "0.0.0.0"):
                return f"http://127.0.0.1:{binding['HostPort']}"
    raise SystemExit(f"no running nginx with a published port in project {stack.project!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--duration",
        type=soak_duration,
        default=soak_duration("10m"),
        help="how long to hold the load: 90s, 10m, 1h (default 10m)",
    )
    parser.add_argument("--users", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="target requests/s over all users (default 50)"
    )
    parser.add_argument(
        "--items", type=int, default=20, help="distinct items requested in turn (default 20)"
    )
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between memory samples (default 10)"
    )
    parser.add_argument(
        "--project", default=None, help="compose project to drive (default: the lab, 'cachelab')"
    )
    parser.add_argument(
        "--start",
        action="store_true",
        help="bring up a throw-away test stack instead, and remove it after",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 256 or not 0 < args.rate <= 5000 or not 1 <= args.items <= 10000:
        parser.error("--users 1..256, --rate 0..5000, --items 1..10000")

    if args.start:
        stack = Stack.create(kind="soak")
        print(f"starting {stack.project} ...", file=sys.stderr)
        stack.compose("build", "--quiet", timeout=1200)
        stack.up()
    else:
        stack = Stack.running_lab()
        if args.project:
            stack.project = args.project
    try:
        stack._base_url = published_url(stack)
        stack.wait_ready(timeout=60)
        paths = [f"/api/version?item={i}" for i in range(args.items)]
        sampler = MemorySampler(stack, args.interval)
        started = datetime.now(UTC)
        print(
            f"soak: {args.users} users, {args.rate} req/s, {args.duration:.0f} s against "
            f"{stack.base_url}",
            file=sys.stderr,
        )
        sampler.start()
        traffic = Traffic(
            stack.base_url,
            paths,
            threads=args.users,
            rate=args.rate,
            duration=args.duration,
            max_requests=int(args.rate * args.duration * 2),
            timeout=30,
        )
        traffic.start()
        while traffic.running:
            time.sleep(min(30.0, args.duration / 10))  # progress only; the load paces itself
            hits = traffic.hits
            print(
                f"  {time.monotonic() - traffic.t0:6.0f} s: {len(hits)} requests, "
                f"{len(hits.errors())} errors",
                file=sys.stderr,
            )
        hits = traffic.stop()
        sampler.stop()
        latencies = [hit.seconds * 1000 for hit in hits]
        elapsed = max((hit.ended for hit in hits), default=traffic.t0) - traffic.t0
        report = {
            "started": started.isoformat(timespec="seconds"),
            "project": stack.project,
            "base_url": stack.base_url,
            "users": args.users,
            "rate": args.rate,
            "duration_s": args.duration,
            "paths": [paths[0], "...", paths[-1]],
            "requests": len(hits),
            "achieved_rps": len(hits) / elapsed if elapsed else 0.0,
            "errors": len(hits.errors()),
            "error_pct": len(hits.errors()) / len(hits) * 100 if hits else 0.0,
            "statuses": {str(k): v for k, v in sorted(hits.statuses().items())},
            "x_cache": dict(hits.caches()),
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies, default=0.0),
            "memory": memory_table(sampler.samples),
        }
    finally:
        if args.start:
            stack.down()
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    stem = out / f"soak-{started.strftime('%Y%m%dT%H%M%SZ')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = render(report)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
