"""``--target URL``: measure a running deployment without restarting it.

A benchmark that cannot reconfigure its target measures it as it is:

* ``latency`` runs once, with the strategy the target reports (its answers
  say which: ``"strategy"`` in ``/api/version``), and says so; database and
  app counters are not reachable, so the hit ratio is the clients' view (the
  ``X-Cache`` / ``X-Edge-Cache`` headers of every answer);
* ``capacity`` (and ``hits``) measure the target alone -- the Flask-Caching,
  static-page and other rows come from a local run (``compare`` puts them
  side by side);
* ``staleness`` needs the target's write token (``WRITE_API_TOKEN``).

Every result records **where** it was measured: ``local`` (this machine's
CPUs) or what ``--where key=value`` says about the target, e.g. ``--where
kind=aws region=eu-west-1 app=t3.small cache=cache.t4g.micro
db=db.t4g.micro tls=on engine=valkey-8`` (terraform/ prints them as
outputs), so :mod:`loadtest.compare` can name what differed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from . import machine
from .errors import BenchError
from .machine import local_description

# What a local run is, in the same terms as --where (compose.yaml's limits).
LOCAL_WHERE = {
    "app": "container, 1 CPU (Compose limit)",
    "cache": "Valkey container on the same host, 1 CPU",
    "db": "PostgreSQL 15 container on the same host",
    "tls": "off",
    "network": "one Docker network on one host",
}


@dataclass(frozen=True)
class Target:
    url: str
    strategy: str
    where: dict
    project: str | None = None  # the Compose project behind a target on this machine

    def meter(self) -> machine.LoadMeter:
        """A load meter that counts the target's own containers (when local) as ours."""
        return machine.LoadMeter(machine.docker_or_none(), self.project)


def local_project(url: str) -> str | None:
    """The Compose project whose container publishes the URL's port here, if any."""
    parts = urlsplit(url)
    port = str(parts.port or (443 if parts.scheme == "https" else 80))
    client = machine.docker_or_none()
    if client is None:
        return None
    for container in client.containers.list():
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        for bindings in ports.values():
            if any(b.get("HostPort") == port for b in bindings or []):
                return container.labels.get("com.docker.compose.project")
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=None,
        metavar="URL",
        help="measure this running deployment as it is (no reconfiguring), e.g. "
        "http://127.0.0.1:8080 or the AWS URL terraform printed",
    )
    parser.add_argument(
        "--where",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="with --target: where it runs, e.g. kind=aws region=eu-west-1 app=t3.small "
        "cache=cache.t4g.micro db=db.t4g.micro tls=on",
    )


def parse_where(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BenchError(f"--where takes KEY=VALUE pairs, got {pair!r}")
        found[key.strip()] = value.strip()
    return found


def where_of(url: str, pairs: list[str]) -> dict:
    """The ``where`` record of a target: local when it is on this machine."""
    given = parse_where(pairs)
    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1") and given.get("kind", "local") == "local":
        where = {**local_description(), **LOCAL_WHERE, **given}
        where["label"] = given.get("label", "local")
        return where
    kind = given.get("kind", "remote")
    region = given.get("region")
    label = given.get("label") or (f"{kind} {region}" if region else f"{kind} ({host})")
    machine = ", ".join(
        f"{key} {given[key]}" for key in ("app", "cache", "db", "tls") if key in given
    )
    return {
        "kind": kind,
        "label": label,
        "host": host,
        "machine": f"{label}: {machine}" if machine else label,
        **given,
    }


def describe(args: argparse.Namespace) -> Target:
    """Ask the target what it runs (one GET of /api/version), and where it is."""
    url = args.target.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchError(f"--target must be an http(s) URL, got {args.target!r}")
    try:
        response = requests.get(url + "/api/version", timeout=30)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise BenchError(f"--target {url} does not answer /api/version with JSON: {exc}") from exc
    strategy = body.get("strategy") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(strategy, str):
        raise BenchError(
            f"--target {url}: /api/version answered {response.status_code} without a strategy"
        )
    where = where_of(url, args.where)
    project = local_project(url) if where["kind"] == "local" else None
    return Target(url=url, strategy=strategy, where=where, project=project)
