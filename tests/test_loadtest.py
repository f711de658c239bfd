"""Issues 4 and 20: the Locust scenarios, thresholds, Compose services, and the
benchmarks that run on the lab itself (latency, staleness, sweep, --target)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from loadtest import bench, loadgen, stats
from loadtest import lab as bench_lab
from loadtest.stack import ROOT, metric, wait_until
from tests.helpers import require_tool, serving

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
DELAY_MS = 1000  # SLOW_QUERY_SECONDS of the test stack
SCENARIO_NAMES = {
    "HotKeyUser": ["hot: /api/version?item=0", "hot: /?item=0"],
    "UncachedUser": ["uncached: /api/version?cache=bypass"],
    "ZipfUser": ["zipf: /api/version?item=[1..N]"],
    "ColdStartUser": ["cold: /api/version?item=[cold]"],
}


@pytest.fixture(scope="module")
def locust_installed() -> None:
    require_tool(
        all(importlib.util.find_spec(name) for name in ("locust", "matplotlib")),
        "locust and matplotlib (scripts/test installs them from app/uv.lock)",
    )


def run_locust(
    host: str, workdir: Path, seconds: int, *extra: str, classes: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Headless Locust, bounded by -t and a subprocess timeout; CSVs under workdir/run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env["PYTHONPATH"] = str(ROOT)  # the locustfile imports loadtest.checks and loadtest.ledger
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-H",
        host,
        "-t",
        f"{seconds}s",
        "--csv",
        str(workdir / "run"),
        "--only-summary",
        *extra,
        *classes,
    ]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=seconds + 60
    )


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


# -- the locustfile against the real stack ------------------------------------------
def test_every_scenario_runs_against_the_stack_with_zero_failures(locust_installed, lab, tmp_path):
    before = lab.app_metrics()
    result = run_locust(
        lab.base_url,
        tmp_path,
        15,
        "-u",
        "8",
        "-r",
        "8",
        "--wait-min",
        "0.05",
        "--wait-max",
        "0.2",
        "--zipf-keys",
        "20",
        "--cold-period",
        "4",
        "--max-fail-ratio",
        "0",
        classes=tuple(SCENARIO_NAMES),
    )
    output = result.stdout + result.stderr
    # Default --exit-code-on-error is 1: exit 0 means no failure and no threshold breach.
    assert result.returncode == 0, output[-3000:]
    assert "thresholds met" in output
    assert re.search(
        r"All users spawned: .*ColdStartUser.*HotKeyUser.*UncachedUser.*ZipfUser", output
    ), output[-2000:]
    rows = stats_rows(tmp_path / "run_stats.csv")
    for names in SCENARIO_NAMES.values():
        for name in names:
            assert name in rows, f"{name} missing from {sorted(rows)}"
            assert int(rows[name]["Request Count"]) > 0
            assert rows[name]["Failure Count"] == "0"
    aggregated = rows["Aggregated"]
    assert int(aggregated["Request Count"]) >= 50 and aggregated["Failure Count"] == "0"
    with (tmp_path / "run_failures.csv").open() as handle:
        assert len(handle.read().strip().splitlines()) == 1  # the header only
    # The scenarios behave as designed: the baseline waits for the slow query,
    # the hot key is served from Redis.
    assert float(rows["uncached: /api/version?cache=bypass"]["50%"]) >= DELAY_MS * 0.9
    assert float(rows["hot: /api/version?item=0"]["50%"]) < DELAY_MS / 10
    after = lab.app_metrics()

    def delta(result_label: str) -> float:
        return metric(after, "cachelab_cache_requests_total", result=result_label) - metric(
            before, "cachelab_cache_requests_total", result=result_label
        )

    assert delta("hit") > 0 and delta("miss") >= 3  # cold keys and Zipf keys missed
    assert delta("bypass") >= int(rows["uncached: /api/version?cache=bypass"]["Request Count"])


# -- response checks and thresholds, against a stand-in server (no stack needed) ---
class FakeServer(ThreadingHTTPServer):
    mode = "good"  # good, slow, wrong-version


class FakeLab(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        item = int(query.get("item", ["0"])[0])
        mode = cast(FakeServer, self.server).mode
        if mode == "slow":
            time.sleep(0.03)
        version = "MySQL 8.0" if mode == "wrong-version" else "PostgreSQL 15.8"
        if urlsplit(self.path).path == "/":
            body, ctype = f"<html><body>{version}</body></html>".encode(), "text/html"
        else:
            body = json.dumps(
                {
                    "version": version,
                    "item": item,
                    "cache": "HIT",
                    "source": "redis",
                    "detail": None,
                    "strategy": "swr",
                    "key": f"lab:v1:item:{item}",
                    "ttl_remaining_s": 5.0,
                    "timings_ms": {},
                }
            ).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("X-Cache", "HIT")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def fake_lab(mode: str) -> FakeServer:
    server = FakeServer(("127.0.0.1", 0), FakeLab)
    server.mode = mode
    return server


def url_of(server: FakeServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


TWO_USERS_FOR_ONE_SECOND = ("-u", "2", "-r", "2")


def run_against_wrong_bodies(host: str, workdir: Path) -> subprocess.CompletedProcess:
    return run_locust(
        host,
        workdir,
        1,
        *TWO_USERS_FOR_ONE_SECOND,
        *("--exit-code-on-error", "0", "--wait-min", "0.005", "--wait-max", "0.01"),
        *("--max-fail-ratio", "0.1"),
        classes=("HotKeyUser",),
    )


def run_with_p95_limit(host: str, workdir: Path, limit_ms: str) -> subprocess.CompletedProcess:
    return run_locust(
        host,
        workdir,
        1,
        *TWO_USERS_FOR_ONE_SECOND,
        *("--max-p95-ms", limit_ms, "--max-fail-ratio", "0"),
        classes=("ZipfUser",),
    )


@pytest.fixture(scope="module")
def threshold_runs(locust_installed, tmp_path_factory) -> Iterator[dict]:
    """The threshold tests' three Locust runs, started at once: each is one
    second of load after a second or two of start-up. Two stand-in servers:
    one answers 200 with a MySQL version (every check must fail), one answers
    correct bodies in 30 ms (a p95 limit of 5 ms must fail, 5,000 ms pass).
    Each value: (the run's future, its folder)."""
    base = tmp_path_factory.mktemp("thresholds")
    folders = {name: base / name for name in ("wrong-body", "p95-5", "p95-5000")}
    for folder in folders.values():
        folder.mkdir()
    with (
        serving(fake_lab("wrong-version")) as wrong,
        serving(fake_lab("slow")) as slow,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        yield {
            "wrong-body": (
                pool.submit(run_against_wrong_bodies, url_of(wrong), folders["wrong-body"]),
                folders["wrong-body"],
            ),
            **{
                f"p95-{limit}": (
                    pool.submit(run_with_p95_limit, url_of(slow), folders[f"p95-{limit}"], limit),
                    folders[f"p95-{limit}"],
                )
                for limit in ("5", "5000")
            },
        }


@pytest.mark.unit
def test_a_200_with_the_wrong_body_is_a_failure_and_breaks_the_threshold(threshold_runs):
    future, folder = threshold_runs["wrong-body"]
    result = future.result()
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "threshold exceeded: failure ratio 1.0000 > 0.1" in output
    rows = stats_rows(folder / "run_stats.csv")
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert rows["Aggregated"]["Failure Count"] == rows["Aggregated"]["Request Count"]
    failures = (folder / "run_failures.csv").read_text()
    assert "version is not a PostgreSQL version string: 'MySQL 8.0'" in failures
    assert "page does not show the PostgreSQL version" in failures


@pytest.mark.unit
def test_p95_threshold_fails_the_run_and_a_good_run_exits_zero(threshold_runs):
    slow = threshold_runs["p95-5"][0].result()
    ok_future, ok_folder = threshold_runs["p95-5000"]
    ok = ok_future.result()
    output = slow.stdout + slow.stderr
    assert slow.returncode == 1, output[-2000:]
    assert re.search(r"threshold exceeded: p95 \d+ ms > 5 ms", output)
    assert "failure ratio" not in output.split("threshold exceeded:")[1].splitlines()[0]
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-2000:]
    assert stats_rows(ok_folder / "run_stats.csv")["Aggregated"]["Failure Count"] == "0"


# -- Compose: the Locust UI and a worker, as `docker compose up` starts them --------
def test_compose_serves_the_locust_ui_with_workers_ready_to_swarm(stack):
    # tests/compose.test.yaml puts the Locust services behind a profile; the real
    # compose.yaml starts them with everything else. Two workers prove --scale.
    stack.compose(
        "--profile",
        "locust",
        "up",
        "-d",
        "--build",
        "--wait",
        "--wait-timeout",
        "120",
        "--scale",
        "locust-worker=2",
        "locust-master",
        "locust-worker",
        timeout=600,
    )
    try:
        master = stack.container("locust-master")
        assert master.attrs["Config"]["User"] == "locust"
        binding = master.attrs["HostConfig"]["PortBindings"]["8089/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        assert len(stack.containers("locust-worker")) == 2
        ui = f"http://127.0.0.1:{stack.port('locust-master', 8089)}"
        page = requests.get(ui + "/", timeout=10)
        assert page.status_code == 200 and "Locust" in page.text
        assert "http://nginx:8080" in page.text  # the host is preset to the Nginx service

        def workers_connected():
            stats = requests.get(ui + "/stats/requests", timeout=5).json()
            return len(stats.get("workers", [])) >= 2

        wait_until(workers_connected, timeout=30, message="two Locust workers to connect")
        swarm = requests.post(
            ui + "/swarm",
            timeout=10,
            data={
                "user_count": 2,
                "spawn_rate": 2,
                "host": "http://nginx:8080",
                "user_classes": ["HotKeyUser"],
            },
        )
        assert swarm.json()["success"] is True
        try:

            def requests_made():
                stats = requests.get(ui + "/stats/requests", timeout=5).json()
                total = next(s for s in stats["stats"] if s["name"] == "Aggregated")
                return total if total["num_requests"] >= 10 else None

            total = wait_until(
                requests_made, timeout=30, interval=0.5, message="the swarm to make 10 requests"
            )
            assert total["num_failures"] == 0
        finally:
            requests.post(ui + "/stop", timeout=10)
    finally:
        # Removed, not left stopped: other tests expect every container running.
        stack.compose(
            "--profile",
            "locust",
            "rm",
            "-sfv",
            "locust-worker",
            "locust-master",
            check=False,
            timeout=120,
        )


def test_compose_file_defines_master_and_scalable_worker():
    require_tool(shutil.which("docker") is not None, "the docker CLI")
    # No password or other variable needed: compose.yaml works bare.
    env = {k: v for k, v in os.environ.items() if "PASSWORD" not in k}
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose.yaml"), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["build"]["dockerfile"] == "loadtest/Dockerfile"
    assert "PYTHON_IMAGE" in master["build"]["args"]
    assert (
        master["ports"][0]["published"] == "8089" and master["ports"][0]["host_ip"] == "127.0.0.1"
    )
    assert "--master" in master["command"] and "http://nginx:8080" in master["command"]
    assert master["depends_on"]["nginx"]["condition"] == "service_healthy"
    assert "--worker" in worker["command"] and "locust-master" in worker["command"]
    assert worker["depends_on"]["locust-master"]["condition"] == "service_healthy"
    assert "ports" not in worker  # so `--scale locust-worker=N` cannot collide on a port
    for service in (master, worker):
        assert service["image"] == "cachelab/locust:local"
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["healthcheck"]["test"]


# -- the benchmark command ------------------------------------------------------------
def _table(markdown: str) -> dict[str, dict[str, str]]:
    """The first Markdown table (the summary) as {strategy: {column: cell}}."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    lines = [line for line in lines if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells, strict=False))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])
    }


def _number(cell: str) -> float:
    """A cell's figure (without the interval that follows it in parentheses)."""
    return float(cell.split(" (")[0].replace(",", "").rstrip("%"))


def test_latency_benchmark_writes_summary_and_charts_with_edge_hits_counted(
    locust_installed, lab, tmp_path, capsys
):
    """`none` and `edge` in two rounds: each round's figures come from every request
    Locust made in it, the table gives their means with intervals; the edge's hit
    ratio counts the answers Nginx gave from its own cache."""
    out, docs = tmp_path / "bench", tmp_path / "docs"
    seconds, rounds = 4, 2
    code = bench.main(
        [
            "latency",
            "--strategies",
            "none,edge",
            "--rounds",
            str(rounds),
            "--duration",
            f"{seconds}s",
            "--users",
            "3",
            "--delay",
            "1",
            "--results",
            str(out),
            "--max-fail-ratio",
            "0",
            "--publish",
            str(docs),
            "--machine",
            "test stack",
        ],
        stack=lab,
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    for step in (
        "round 1/2 [1/2] none: configuring",
        "round 2/2 [2/2] edge: Locust 3 users",
        "restoring",
        "p50 none / p50 edge",
    ):
        assert step in printed

    summary = (out / "summary.md").read_text()
    assert "**Where**: test stack" in summary and "SLOW_QUERY_SECONDS" in summary
    assert "**Machine load**:" in summary and "in each of 2 rounds" in summary
    table = _table(summary)
    assert set(table) == {"none", "edge"}
    none, edge = table["none"], table["edge"]
    data = json.loads((out / "summary.json").read_text())
    assert data["meta"]["rounds"] == rounds
    runs = {run["strategy"]: run for run in data["runs"]}
    for strategy, row in table.items():
        run = runs[strategy]
        assert row["failures"] == "0" and run["failures"] == 0
        assert len(run["rounds"]) == rounds
        total = 0
        for index, one in enumerate(run["rounds"], 1):
            folder = out / strategy / f"round-{index}"
            with (folder / "requests.csv").open(newline="") as handle:
                requests_ = list(csv.DictReader(handle))
            # Every request of the round is its source: its count and its one percentile.
            assert one["requests"] == len(requests_) > 0
            times = [float(r["response_ms"]) for r in requests_]
            assert one["p50_ms"] == stats.percentile(times, 50)
            assert one["rps"] == pytest.approx(len(requests_) / seconds)
            assert one["load"]["seconds"] >= seconds and "disturbed" in one["load"]
            html = (folder / "report.html").read_text()
            assert "locust" in html.lower() and "hot: /api/version?item=0" in html
            total += len(requests_)
        assert _number(row["requests"]) == run["requests"] == total
        means = [statistics.fmean(r[key] for r in run["rounds"]) for key in ("p50_ms", "rps")]
        assert [run["p50_ms"], run["rps"]] == pytest.approx(means, rel=1e-3)
        assert run["spread"]["p50_ms"]["n"] == rounds
    # Uncached: every request waited for the slow query, each one a slow_version call.
    assert _number(none["p50 ms"]) >= DELAY_MS * 0.9
    assert none["hit ratio"].startswith("0.0%")
    assert _number(none["slow queries"]) >= runs["none"]["requests"]
    assert _number(none["DB queries/s"]) == pytest.approx(
        _number(none["slow queries"]) / (seconds * rounds), 0.02
    )
    # The edge: one cold fill per round, then hits, most of them Nginx's own (never seen by
    # the app).
    assert _number(edge["p50 ms"]) * 20 < _number(none["p50 ms"])
    assert 1 <= _number(edge["slow queries"]) <= 3 * rounds
    edge_served = sum(runs["edge"]["edge_results"].get(k, 0) for k in ("hit", "updating"))
    app_lookups = sum(runs["edge"]["cache_results"].values())
    assert edge_served > app_lookups > 0, runs["edge"]
    assert edge_served + app_lookups >= runs["edge"]["requests"]  # nothing unaccounted for
    assert _number(edge["hit ratio"]) >= 80
    assert data["p50_ratio_vs_none"]["edge"] > 20
    assert data["p50_ratio_spread"]["edge"]["n"] == rounds
    # Two significant figures, not the false precision of a ratio of rounded figures.
    assert re.search(
        r"p50 of `none` / p50 of `edge`: \*\*\d(\.\d)?(,?\d)*×\*\* \(95 % CI ", summary
    )
    found = re.search(r"p50 of `none` / p50 of `edge`: \*\*([\d,.]+)×", summary)
    assert found is not None
    ratio = found.group(1)
    assert len(ratio.replace(",", "").replace(".", "").rstrip("0")) <= 2

    from matplotlib import image

    for name in (
        "latency_over_time.png",
        "db_queries_per_second.png",
        "requests_per_second.png",
        "latency_summary.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = image.imread(out / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
        assert f"]({name})" in summary
        assert (docs / name).read_bytes() == (out / name).read_bytes()
    published = (docs / "summary.md").read_text()
    assert _table(published) == table and "requests.csv" not in published

    # The lab is back on its original strategy (the default, two-tier), Nginx too.
    assert bench_lab.current_settings(lab)["CACHE_STRATEGY"] == "two-tier"
    answer = lab.get("/api/version")
    assert answer.json()["strategy"] == "two-tier" and "X-Edge-Cache" not in answer.headers


def test_staleness_benchmark_reports_each_mode(locust_installed, lab, tmp_path, capsys):
    """The writers and readers of each variant, judged from outside: the table
    and chart the command publishes."""
    out, docs = tmp_path / "staleness", tmp_path / "docs"
    code = bench.main(
        [
            "staleness",
            "--variants",
            "delete,edge",
            "--rounds",
            "2",
            "--duration",
            "4s",
            "--readers",
            "4",
            "--writers",
            "2",
            "--delay",
            "1",
            "--ttl",
            "30",
            "--results",
            str(out),
            "--publish",
            str(docs),
        ],
        stack=lab,
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    data = json.loads((out / "staleness.json").read_text())["variants"]
    assert set(data) == {"delete", "edge"}
    for variant, row in data.items():
        # delete: each writer's own read after a write waits the 1 s query
        assert row["writes"] >= 4 and row["reads"] > 20 and row["errors"] == 0, (variant, row)
        assert row["db_queries"] >= 1
    assert data["delete"]["ryw_violations"] == 0 and data["delete"]["strategy"] == "two-tier"
    # Two rounds, each running both variants: each figure with its interval.
    for variant, row in data.items():
        assert [r["strategy"] for r in row["rounds"]] == [row["strategy"]] * 2, variant
        assert row["reads"] == sum(r["reads"] for r in row["rounds"])
        assert row["spread"]["db_queries_per_s"]["n"] == 2, (variant, row["spread"])
    # The edge (1 s validity) serves its copy after a write: stale reads, a writer's
    # own read among them (no read-your-writes), typically at most the validity plus
    # a refresh (the 1 s query) old. The worst read waits on a loaded machine too:
    # 2455 to 3393 ms measured at a load average of 4 to 25.
    edge = data["edge"]
    assert edge["strategy"] == "edge" and edge["stale_reads"] > 0 and edge["ryw_violations"] > 0
    assert edge["staleness_p50_ms"] <= 1000 + 1000, edge  # validity + one refresh (ms)
    assert edge["staleness_max_ms"] < 3 * (1000 + 1000), edge  # generous, for the tail
    table = (docs / "staleness.md").read_text()
    assert "| `delete` |" in table and "| `edge` |" in table
    assert "no read-your-writes" in table
    assert (docs / "staleness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "WRITE_API_TOKEN" not in printed
    assert bench_lab.current_settings(lab)["CACHE_STRATEGY"] == "two-tier"


@pytest.mark.parametrize("command", [["latency"], []])  # without a subcommand: latency
def test_benchmark_fails_clearly_when_the_lab_is_not_running(docker_available, capsys, command):
    code = bench.main([*command, "--project", "cachelab-absent-0000", "--duration", "1s"])
    err = capsys.readouterr().err
    assert code == 2
    assert "the lab is not running" in err and "docker compose up" in err
    assert "cachelab-absent-0000" in err and "Traceback" not in err


@pytest.mark.unit
def test_benchmark_subcommands_and_their_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    assert "{latency,hits,capacity,sweep,staleness,compare}" in capsys.readouterr().out
    args = bench.build_parser().parse_args(
        ["hits", "--modes", "expiry", "--systems", "two-tier,flask-caching", "--duration", "2s"]
    )
    assert (args.modes, args.systems, args.duration) == (
        ["expiry"],
        ["two-tier", "flask-caching"],
        2.0,
    )
    args = bench.build_parser().parse_args(["capacity", "--p99-ms", "10", "--fractions", "0.5,1"])
    assert (args.p99_ms, args.fractions, args.repeats) == (10.0, [0.5, 1.0], 3)
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["hits", "--systems", "memcached"])
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["sweep", "--skews", "steep"])
    assert bench.main(["hits", "--delay", "30"]) == 2
    assert "--delay must be between 1 and 10" in capsys.readouterr().err
    assert bench.main(["hits", "--delay", "5", "--duration", "8s"]) == 2
    assert "at least twice --delay" in capsys.readouterr().err
    assert bench.main(["hits", "--systems", "before"]) == 2
    assert "needs --before REF" in capsys.readouterr().err


def test_quick_sweep_reports_every_cell_and_the_miss_ratio_curve(lab, tmp_path, capsys):
    """The CI profile of `sweep` (under 3 minutes): every cell's tiers, DB load and p99."""
    out, docs = tmp_path / "sweep", tmp_path / "docs"
    code = bench.main(
        ["sweep", "--quick", "--results", str(out), "--publish", str(docs)], stack=lab
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    data = json.loads((out / "sweep.json").read_text())
    cells = {(c["skew"], c["tier1"], c["payload"]): c for c in data["cells"]}
    assert set(cells) == {
        ("uniform", 10, 256),
        ("1.2", 10, 256),
        ("uniform", 1000, 256),
        ("1.2", 1000, 256),
        ("uniform", 1000, 16384),
        ("1.2", 1000, 16384),
    }
    for key, cell in cells.items():
        shares = cell["tier_share"]
        assert cell["lookups"] > 0 and cell["step"]["errors"] == 0, key
        assert len(cell["batches"]) == 2 and cell["spread"]["hit_ratio"]["n"] == 2, key
        assert sum(v for v in shares.values() if v) == pytest.approx(1.0)
        assert cell["db_queries"] >= 1 and cell["step"]["p99_ms"] > 0
        # Every key was read once before the batches (priming), so no batch waits
        # on a first read: before it, the first batch's database share was ~50 %.
        assert cell["prime"]["dropped"] == 0 and cell["prime"]["errors"] == 0, key
        assert all(b["tier_share"]["database"] <= 0.02 for b in cell["batches"]), key
    # Skew and a larger tier 1 both move answers into memory: the curve's shape.
    assert (
        cells[("1.2", 1000, 256)]["tier_share"]["memory"]
        > (cells[("uniform", 10, 256)]["tier_share"]["memory"])
    )
    report = (docs / "sweep.md").read_text()
    assert "## Tier-1 size" in report and "## Payload size" in report
    assert (docs / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench_lab.current_settings(lab)["CACHE_STRATEGY"] == "two-tier"


def test_target_runs_the_strategy_the_target_has_and_says_where(
    locust_installed, lab, tmp_path, capsys
):
    """--target measures a running deployment as it is, in rounds: no reconfiguring."""
    out = tmp_path / "target"
    settings = bench_lab.current_settings(lab)
    code = bench.main(
        [
            "latency",
            "--target",
            lab.base_url,
            "--rounds",
            "2",
            "--duration",
            "3s",
            "--users",
            "2",
            "--results",
            str(out),
            "--strategies",
            "none",  # ignored: the target's own strategy runs
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    assert f"target {lab.base_url}: strategy two-tier (local)" in printed
    data = json.loads((out / "summary.json").read_text())
    assert [run["strategy"] for run in data["runs"]] == ["two-tier"]
    assert data["meta"]["where"]["kind"] == "local" and data["meta"]["where"]["tls"] == "off"
    run = data["runs"][0]
    assert data["meta"]["rounds"] == 2 and len(run["rounds"]) == 2
    assert run["requests"] == sum(one["requests"] for one in run["rounds"])
    assert run["requests"] > 0 and run["slow_calls"] is None  # the database is not reachable
    assert run["hit_ratio"] > 0.5  # the clients' view, from X-Cache
    assert bench_lab.current_settings(lab) == settings  # nothing was reconfigured
    # compare: a results folder against itself names no difference.
    assert bench.main(["compare", str(out), str(out)]) == 0
    assert "nothing recorded" in capsys.readouterr().out


def test_a_local_open_loop_run_reports_the_labs_load_per_request(lab, tmp_path, capsys):
    """`loadgen openloop` against the lab: one k6 step, and the lab's own load over it
    (its app containers' CPU, PostgreSQL's slow queries) per request in the report."""
    lab.flush_cache()
    first = random.randrange(1000, 9000)  # keys no earlier test read
    code = loadgen.main(
        ["openloop", "--url", lab.base_url, "-t", "3", "--keys", "4"]
        + ["--first-item", str(first), "--out", str(tmp_path), "--target-ms", "60000", "20"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    meta = json.loads((next(tmp_path.iterdir()) / "run.json").read_text())
    load = meta["load"]
    assert meta["keys"] == {"KEYS": "4", "FIRST_ITEM": str(first)}
    # 4 cold keys: each ran its slow query at least once, counted by PostgreSQL
    requests_made = json.loads((next(tmp_path.iterdir()) / "openloop.jsonl").read_text())
    assert 4 <= load["db_queries"] <= requests_made["requests"], load
    assert load["app_cpu_seconds"] > 0, load
    assert "(PostgreSQL)" in printed.out and "(app containers' cgroups)" in printed.out
