#!/bin/sh
# Reload nginx when the addresses behind the app's service name change.
#
# Open-source nginx before 1.27.3 resolves upstream names once, at start, and an
# upstream block is what gives keepalive connections to the app. Compose gives
# replicas (`--scale app=N`) and restarted containers new addresses behind the
# same name, so this loop re-resolves the name every UPSTREAM_WATCH_SECONDS and
# reloads nginx (graceful: in-flight requests finish) when the set changes.
set -eu
host=${APP_UPSTREAM%:*}
interval=${UPSTREAM_WATCH_SECONDS:-2}
resolve() { getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '; }
(
  last=$(resolve)
  while sleep "$interval"; do
    now=$(resolve)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      echo "upstream $host changed: [$last] -> [$now]; reloading nginx" >&2
      nginx -s reload || true
      last=$now
    fi
  done
) &
