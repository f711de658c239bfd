#!/bin/sh
# Count every request Nginx answered, for Prometheus (and the benchmarks):
#
#   cachelab_edge_requests_total{route,cache,status}
#     route   version (/api/version), page (/), items (/api/items/<id>), other
#     cache   Nginx's $upstream_cache_status lower-cased (hit, stale, updating,
#             revalidated, miss, expired, bypass), none without the edge cache
#     status  the answer's status class: 2xx, 3xx, 4xx, 5xx
#
# Nginx writes one short line per request to a buffered log
# (default.conf.template: log_format lab_count); every EDGE_METRICS_SECONDS
# (default 5) this loop renames it and has Nginx reopen it, adds the previous
# round's file to the running totals (awk) and rewrites metrics.prom, which
# Nginx serves on :9145/metrics. Counts lag by one to two rounds plus the 1 s
# log flush; they restart at 0 with the container, as counters may.
set -eu
dir=/tmp/nginx-edge-log
interval=${EDGE_METRICS_SECONDS:-5}
case "$interval" in ''|*[!0-9]*|0) echo "nginx: invalid configuration: EDGE_METRICS_SECONDS must be a whole number of seconds from 1, got '$interval'" >&2; exit 2 ;; esac
mkdir -p "$dir"
# Every lookup route's successful answers start at 0, by cache status: a series
# born at its first count (say 20) would hide those 20 from rate(), which needs
# a sample before the increase (the hit ratio would miss the first burst).
for route in version page items; do
  for cache in hit stale updating revalidated miss expired bypass none; do
    echo "$route $cache 2xx 0"
  done
done >"$dir/totals"

render() {
  awk '
    BEGIN {
      print "# HELP cachelab_edge_requests_total Requests Nginx answered, by route, edge cache status (Nginx'"'"'s upstream_cache_status; none: not through the edge cache) and status class."
      print "# TYPE cachelab_edge_requests_total counter"
    }
    NF == 4 { printf "cachelab_edge_requests_total{route=\"%s\",cache=\"%s\",status=\"%s\"} %d\n", $1, $2, $3, $4 }
  ' "$dir/totals" >"$dir/metrics.prom.tmp"
  mv "$dir/metrics.prom.tmp" "$dir/metrics.prom"
}

add() { # the totals plus one rotated log
  awk '
    NF == 4 && FILENAME == ARGV[1] { total[$1 " " $2 " " $3] += $4; next }
    NF == 3 {
      cache = ($2 == "-" || $2 == "") ? "none" : tolower($2)
      total[$1 " " cache " " substr($3, 1, 1) "xx"]++
    }
    END { for (key in total) print key, total[key] }
  ' "$dir/totals" "$1" >"$dir/totals.tmp"
  mv "$dir/totals.tmp" "$dir/totals"
}

render
(
  while sleep "$interval"; do
    if [ -f "$dir/requests.log.1" ]; then # renamed a round ago: Nginx has reopened since
      add "$dir/requests.log.1"
      rm -f "$dir/requests.log.1"
      render
    fi
    if [ -s "$dir/requests.log" ]; then
      mv "$dir/requests.log" "$dir/requests.log.1"
      if ! nginx -s reopen 2>/dev/null; then
        mv "$dir/requests.log.1" "$dir/requests.log" # Nginx still writes it: next round
      fi
    fi
  done
) &
