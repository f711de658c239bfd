"""Where a benchmark measured, and how busy the machine was while it did.

Every result records **where** (``local`` with this machine's CPUs and
kernel, or a deployment described by ``--target``: region and instance
classes) and, for every step it timed, the **machine's load**: the load
average, the CPU the machine used, how much of it went to the benchmark's own
containers and processes, and how much to everything else -- other Compose
projects on the same Docker engine, other processes on the host. A step is
**disturbed** when something else took more than ``DISTURBED_SHARE`` of the
machine during it: its figures are kept, flagged, and the report says so.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import cgroups

DISTURBED_SHARE = 0.10  # of the machine's CPU, used by something else during a step
PROC_STAT = Path("/proc/stat")
LOADAVG = Path("/proc/loadavg")


def local_description() -> dict:
    """This machine, as a result's ``where`` records it."""
    return {
        "kind": "local",
        "label": "local",
        "cpus": os.cpu_count(),
        "machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()} "
        f"({platform.machine()}), Docker on the same host",
    }


def _busy_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds, all CPU seconds) of the whole machine so far."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields[:8]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _own_seconds() -> float:
    """CPU of this process and its finished children (a Locust run on the host)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loadavg() -> float | None:
    try:
        return float(LOADAVG.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Load:
    """The machine during one timed step (CPU as cores: CPU seconds / wall seconds)."""

    seconds: float
    loadavg_start: float | None
    loadavg_end: float | None
    machine_cores: float | None  # CPU the whole machine used
    ours_cores: float  # the benchmark's containers and this process tree
    other_containers_cores: float | None  # containers of other projects
    other_cores: float | None  # everything else (other processes, Docker's daemon)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def disturbed(self) -> bool:
        others = (self.other_containers_cores or 0.0) + max(0.0, self.other_cores or 0.0)
        return others > DISTURBED_SHARE * self.cpus

    def to_dict(self) -> dict:
        data = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        data["disturbed"] = self.disturbed
        return data


BENCH_LABEL = "cachelab.bench"  # on the containers a benchmark runs itself (k6, wrk)


def docker_or_none():
    """A Docker client, or None where there is no engine to ask."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return client
    except Exception:  # noqa: BLE001 - no engine: no container figures
        return None


class LoadMeter:
    """Brackets a step: ``meter.start()``, run, ``meter.stop() -> Load``.

    Ours: the containers of the benchmark's Compose project (the bench stack,
    the lab being measured) and those it started itself (label
    ``cachelab.bench``); every other running container is someone else's.
    Without container figures (no Docker here), everything but this process
    tree counts as someone else's.
    """

    def __init__(self, docker_client, project: str | None) -> None:
        self.docker, self.project = docker_client, project
        self._start: tuple | None = None

    def _containers(self) -> tuple[dict[str, cgroups.Cpu], dict[str, cgroups.Cpu]] | None:
        ours: dict[str, cgroups.Cpu] = {}
        others: dict[str, cgroups.Cpu] = {}
        try:
            running = self.docker.containers.list()
        except Exception:  # noqa: BLE001 - no Docker (a remote target): no container figures
            return None
        for container in running:
            counters = cgroups.read(container.id)
            if counters is None:
                return None  # not on the Docker host: the API is too slow for every container
            labels = container.labels
            mine = BENCH_LABEL in labels or (
                self.project and labels.get("com.docker.compose.project") == self.project
            )
            (ours if mine else others)[container.id] = counters
        return ours, others

    def start(self) -> None:
        self._start = (time.monotonic(), loadavg(), _busy_seconds(), _own_seconds())
        self._start += (self._containers(),)

    def stop(self) -> Load:
        if self._start is None:
            raise RuntimeError("LoadMeter.stop() before start()")
        started, load0, busy0, own0, containers0 = self._start
        wall = max(1e-6, time.monotonic() - started)
        busy1, own1, containers1 = _busy_seconds(), _own_seconds(), self._containers()
        machine = (busy1[0] - busy0[0]) / wall if busy0 and busy1 else None
        own = (own1 - own0) / wall
        ours_containers = other_containers = None
        if containers0 and containers1:
            ours_containers = _delta(containers0[0], containers1[0]) / wall
            other_containers = _delta(containers0[1], containers1[1]) / wall
        ours = own + (ours_containers or 0.0)
        other = None
        if machine is not None:
            other = machine - ours - (other_containers or 0.0)
        return Load(
            seconds=wall,
            loadavg_start=load0,
            loadavg_end=loadavg(),
            machine_cores=machine,
            ours_cores=ours,
            other_containers_cores=other_containers,
            other_cores=other,
        )


def _delta(before: dict[str, cgroups.Cpu], after: dict[str, cgroups.Cpu]) -> float:
    """CPU seconds the containers present at both ends used between them."""
    return sum(max(0.0, after[cid].seconds - before[cid].seconds) for cid in after if cid in before)


def summarize(loads: list[dict]) -> dict:
    """A run's load in one line: how many steps were disturbed, the worst share."""
    disturbed = [load for load in loads if load.get("disturbed")]
    shares = [
        ((load.get("other_containers_cores") or 0) + max(0.0, load.get("other_cores") or 0))
        / (load.get("cpus") or 1)
        for load in loads
    ]
    return {
        "steps": len(loads),
        "disturbed_steps": len(disturbed),
        "max_other_share": round(max(shares), 3) if shares else None,
        "loadavg_max": max(
            (
                v
                for load in loads
                for v in (load.get("loadavg_start"), load.get("loadavg_end"))
                if v is not None
            ),
            default=None,
        ),
    }


def note(summary: dict) -> str:
    """The load summary as the reports print it."""
    if not summary.get("steps"):
        return "not recorded"
    share = summary.get("max_other_share")
    text = (
        f"{summary['disturbed_steps']} of {summary['steps']} timed steps disturbed "
        f"(something else used more than {DISTURBED_SHARE:.0%} of the machine's CPU)"
    )
    if share is not None:
        text += f"; at most {share:.0%} of the CPU went to others during a step"
    if summary.get("loadavg_max") is not None:
        text += f"; load average up to {summary['loadavg_max']:.1f}"
    if summary["disturbed_steps"]:
        text = "**taken under contention**: " + text
    return text


def run_meta(started, where: dict, machine: str | None, loads: list[dict]) -> dict:
    """What every report says about its run: when, where, how busy the machine was."""
    found = summarize(loads)
    return {
        "started_utc": started.strftime("%Y-%m-%d %H:%M"),
        "where": where,
        "machine": machine or where["machine"],
        "load": found,
        "load_note": note(found),
    }
