#!/bin/sh
# The bench container's entrypoint (loadtest/bench.Dockerfile): drop root for
# the owner of the checkout (the working directory, mounted from the host) and
# the group of the Docker socket, then run the benchmarks' command line.
set -eu
uid=$(stat -c %u .)
gid=$(stat -c %g .)
socket_gid=$(stat -c %g /var/run/docker.sock 2>/dev/null || echo "$gid")
export PYTHONPATH="$PWD/app"
exec setpriv --reuid="$uid" --regid="$gid" --groups="$socket_gid" \
  python -m loadtest.bench "$@"
