"""``python -m loadtest.bench <benchmark>``: the lab's benchmarks, one command each.

=============  ============================================================  ==============
benchmark      what it measures                                              runs on
=============  ============================================================  ==============
``latency``    the same Locust load against each strategy: latency over     the running lab
               time, DB load, hit ratio (:mod:`loadtest.latency`)
``hits``       hit throughput at saturation, closed loop (wrk), against     its own stack
               Flask-Caching and a static page (:mod:`loadtest.hitbench`)
``capacity``   the highest rate with p99 under a target, open loop (k6),    its own stack
               the throughput-latency curves (:mod:`loadtest.capacity`)
``sweep``      hit ratio per tier, DB queries/s and p99 across key skew,    the running lab
               tier-1 size and payload size (:mod:`loadtest.sweep`)
``staleness``  staleness and read-your-writes per invalidation mode and     the running lab
               the edge tier (:mod:`loadtest.staleness`)
``compare``    two results folders side by side (local and AWS), with the   files only
               differences between where they ran (:mod:`loadtest.compare`)
=============  ============================================================  ==============

Without a subcommand the arguments go to ``latency`` (its flags are the
command's original ones). Exit code 2, with a one-line reason, when a run
cannot be made; 1 when a threshold was breached.
"""

from __future__ import annotations

import argparse
import sys

from . import capacity, compare, hitbench, latency, staleness, sweep
from .errors import BenchError

SUBCOMMANDS = {
    "latency": (latency, "Locust load per strategy of the running lab (latency, hit ratio)"),
    "hits": (hitbench, "hit throughput at saturation (closed loop) vs Flask-Caching and a page"),
    "capacity": (capacity, "the highest open-loop rate with p99 under a target, per system"),
    "sweep": (sweep, "hit ratio, DB load and p99 across key skew, tier-1 and payload size"),
    "staleness": (staleness, "staleness, read-your-writes and DB load per invalidation mode"),
    "compare": (compare, "two results folders side by side, with what differed"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="The lab's benchmarks (docs/load-testing.md).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}"
    )
    for name, (module, summary) in SUBCOMMANDS.items():
        module.add_arguments(
            commands.add_parser(name, help=summary, description=module.DESCRIPTION)
        )
    return parser


def main(argv: list[str] | None = None, stack=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*SUBCOMMANDS, "-h", "--help"):
        argv = ["latency", *argv]  # the command's original form: latency flags only
    args = build_parser().parse_args(argv)
    args.argv = argv
    module = SUBCOMMANDS[args.command][0]
    try:
        if args.command in ("latency", "staleness", "sweep"):
            return module.run(args, stack)
        return module.run(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
