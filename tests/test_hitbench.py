"""Issue 13: the hit-throughput benchmark (`python -m loadtest.bench hits`), one short round.

The command brings up its own stack (compose.yaml + loadtest/hits/compose.yaml)
under a project of its own, so this test needs Docker but not the session's
stack. It checks the report's shape and that its numbers are sane, never how
fast anything is: speed is the benchmark's business.
"""

from __future__ import annotations

import json
import math

import docker

from loadtest import bench, hitbench
from loadtest.stack import project_name

SYSTEMS = hitbench.systems_of("single")  # the default topology's systems


def test_one_short_round_reports_every_system_in_both_modes(docker_available, tmp_path, capsys):
    out, docs = tmp_path / "run", tmp_path / "docs"
    project = project_name("hits")
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
            "5",
            "--project",
            project,
            "--results",
            str(out),
            "--publish",
            str(docs),
            "--machine",
            "test",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    # The stack is gone (no --keep).
    assert (
        docker.from_env().containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        == []
    )

    data = json.loads((out / "hits.json").read_text())
    assert data["modes"]["pure-hit"]["ttl_s"] >= 3600 and data["modes"]["expiry"]["ttl_s"] == 1
    for mode in ("pure-hit", "expiry"):
        rows = data["modes"][mode]["rows"]
        assert list(rows) == SYSTEMS
        for name, row in rows.items():
            assert row["rounds"] == 1 and row["requests"] > 0 and row["errors"] == 0, (mode, name)
            assert row["rps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
            assert 0 < row["cpu_s_per_1k"] < 100 and row["redis_cpu_s_per_1k"] >= 0
            assert row["throttled"] is None or 0 <= row["throttled"] <= 1
            assert math.isclose(row["x_flask_caching"] * rows["flask-caching"]["rps"], row["rps"])
            assert 0 < row["of_ceiling"]
        assert rows["flask-caching"]["x_flask_caching"] == 1 and rows["ceiling"]["of_ceiling"] == 1
        # Every system answered the page with the database's version before the load,
        # Flask-Caching's baseline included.
        for name, check in data["checks"][mode].items():
            assert check["status"] == 200 and check["version"].startswith("PostgreSQL"), name
        assert data["checks"][mode]["flask-caching"]["item"] == 0
    samples = data["samples"]
    assert len(samples) == 2 * len(SYSTEMS)
    nginx = next(s for s in samples if s["system"] == "two-tier+nginx")
    assert set(nginx["cpu_by_container_s"]) == {"nginx", "app", "redis"}

    lag = data["lag"]
    assert lag["writes"] == 5 and 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"] < 2000

    report = (out / "hits.md").read_text()
    assert "## Pure hits" in report and "## Across expiries" in report
    assert "Tier-1 invalidation lag" in report and "python -m loadtest.bench hits" in report
    for label in data["meta"]["labels"].values():
        assert report.count(f"| {label} |") == 2, label
    assert (out / "hits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (docs / "hits.md").read_text() == report
    assert (docs / "hits.png").read_bytes() == (out / "hits.png").read_bytes()
    assert "Flask-Caching" in printed and "report:" in printed
