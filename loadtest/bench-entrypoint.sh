#!/bin/sh
# The bench container's entrypoint (loadtest/bench.Dockerfile): drop root for
# the owner of the checkout (the working directory, mounted from the host) and
# the group of the Docker socket, then run the benchmarks' command line:
#   docker compose run --rm bench hits ...          python -m loadtest.bench hits ...
#   docker compose run --rm bench python -m loadtest.soak ...   any other module
set -eu
uid=$(stat -c %u .)
gid=$(stat -c %g .)
socket_gid=$(stat -c %g /var/run/docker.sock 2>/dev/null || echo "$gid")
export PYTHONPATH="$PWD/app"
if [ "${1:-}" != python ]; then
  set -- python -m loadtest.bench "$@"
fi
exec setpriv --reuid="$uid" --regid="$gid" --groups="$socket_gid" "$@"
