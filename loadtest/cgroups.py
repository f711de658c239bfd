"""CPU counters of containers, read from their cgroups: used CPU time and CFS throttling.

Read from the kernel's files when this process sees the host's cgroup tree
(cgroup v1 ``cpuacct``/``cpu`` or v2 ``cpu.stat``; both drivers' layouts),
else from Docker's stats API (the same counters, but about a second per call
on Docker 20.10, too slow to read every container at every step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cpu:
    """One container's counters so far: CPU time (s), CFS periods, throttled periods."""

    seconds: float
    periods: int = 0
    throttled: int = 0

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.seconds - other.seconds,
            self.periods - other.periods,
            self.throttled - other.throttled,
        )

    @property
    def throttled_share(self) -> float | None:
        """The share of CFS periods in which the quota ran out (None: no periods)."""
        return self.throttled / self.periods if self.periods > 0 else None


def _stat(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def _candidates(container_id: str) -> list[Path]:
    return [
        ROOT / "system.slice" / f"docker-{container_id}.scope",  # v2, systemd driver
        ROOT / "docker" / container_id,  # v2, cgroupfs driver
    ]


def read(container_id: str) -> Cpu | None:
    """The container's counters from its cgroup files, or None when not visible here."""
    usage = ROOT / "cpuacct" / "docker" / container_id / "cpuacct.usage"
    if usage.exists():  # cgroup v1
        try:
            seconds = int(usage.read_text()) / 1e9
            stat = _stat(ROOT / "cpu" / "docker" / container_id / "cpu.stat")
        except OSError:
            return None
        return Cpu(seconds, stat.get("nr_periods", 0), stat.get("nr_throttled", 0))
    for folder in _candidates(container_id):
        if (folder / "cpu.stat").exists():
            try:
                stat = _stat(folder / "cpu.stat")
            except OSError:
                return None
            return Cpu(
                stat.get("usage_usec", 0) / 1e6,
                stat.get("nr_periods", 0),
                stat.get("nr_throttled", 0),
            )
    return None


def counters(container) -> Cpu:
    """A container's counters (Docker SDK container): its cgroup, else Docker's API."""
    found = read(container.id)
    if found is not None:
        return found
    cpu = container.stats(stream=False)["cpu_stats"]
    throttling = cpu.get("throttling_data") or {}
    return Cpu(
        int(cpu["cpu_usage"]["total_usage"]) / 1e9,
        int(throttling.get("periods", 0)),
        int(throttling.get("throttled_periods", 0)),
    )
