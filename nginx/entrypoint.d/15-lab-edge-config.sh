#!/bin/sh
# Validate the edge's variables and write the parts of the config that depend
# on them (run by the image's entrypoint before nginx starts). A bad value
# stops the container with one line naming the variable, like the app does.
#
#   RATE_LIMIT_RPS    requests/s per client on app routes; 0 = no limit
#   RATE_LIMIT_BURST  requests a client may send above the rate before 429
#   REAL_IP_FROM      proxies (CIDRs or addresses, space or comma separated)
#                     whose X-Forwarded-For gives the client address, e.g. the
#                     subnets of an AWS load balancer; empty = trust no one
#   RATE_LIMIT_EXEMPT clients (CIDRs or addresses, after REAL_IP_FROM) that the
#                     rate limit does not count, e.g. the lab's own load
#                     generator; empty = everyone is limited
#   CACHE_STRATEGY    the app's strategy (the app validates it); `edge` turns on
#                     Nginx's micro-cache of the lookup routes in front of it
#   EDGE_CACHE_SECONDS how long the edge keeps an answer fresh (1-60, default 1)
#   REQUEST_LOG_HIT_SAMPLE  share of cache hits written to the access log (0-1,
#                     default 0.01, as the app's); every other answer is logged
set -eu
out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}

fail() { echo "nginx: invalid configuration: $1" >&2; exit 2; }
integer() { # name value low high
  case "$2" in ''|*[!0-9]*) fail "$1 must be an integer from $3 to $4, got '$2'" ;; esac
  [ "${#2}" -le 7 ] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || fail "$1 must be an integer from $3 to $4, got '$2'"
}

rps=${RATE_LIMIT_RPS:-0}
burst=${RATE_LIMIT_BURST:-0}
integer RATE_LIMIT_RPS "$rps" 0 1000000
integer RATE_LIMIT_BURST "$burst" 0 1000000
integer UPSTREAM_WATCH_SECONDS "${UPSTREAM_WATCH_SECONDS:-2}" 1 3600
sample=${REQUEST_LOG_HIT_SAMPLE:-0.01}
case "$sample" in
  ''|*[!0-9.]*|*.*.*) fail "REQUEST_LOG_HIT_SAMPLE must be a number from 0 to 1, got '$sample'" ;;
esac
# split_clients takes percentages to two decimals: 0.0001 is none, 1 is all.
hit_percent=$(awk -v s="$sample" 'BEGIN { if (s < 0 || s > 1) exit 1; printf "%.2f", s * 100 }') \
  || fail "REQUEST_LOG_HIT_SAMPLE must be a number from 0 to 1, got '$sample'"
edge_seconds=${EDGE_CACHE_SECONDS:-1}
integer EDGE_CACHE_SECONDS "$edge_seconds" 1 60
case "${APP_UPSTREAM:-}" in
  *[!A-Za-z0-9.:_-]*|'') fail "APP_UPSTREAM must be host:port, got '${APP_UPSTREAM:-}'" ;;
esac

cidrs() { # name: the variable's CIDRs/addresses, one per line, validated
  for cidr in $(eval "echo \"\${$1:-}\"" | tr ',' ' '); do
    case "$cidr" in
      *[!0-9A-Fa-f.:/]*) fail "$1 must list CIDRs or addresses, got '$cidr'" ;;
    esac
    echo "$cidr"
  done
}
real_ip_from=$(cidrs REAL_IP_FROM)
exempt=$(cidrs RATE_LIMIT_EXEMPT)

{
  echo "# written by /docker-entrypoint.d/15-lab-edge-config.sh"
  if [ "$rps" -gt 0 ]; then
    # The key is the client's address (after REAL_IP_FROM); an exempt
    # client's key is empty, which limit_req does not count.
    echo "geo \$lab_rate_limit_exempt {"
    echo "  default 0;"
    for cidr in $exempt; do echo "  $cidr 1;"; done
    echo "}"
    echo "map \$lab_rate_limit_exempt \$lab_rate_limit_key {"
    echo "  1 \"\";"
    echo "  default \$binary_remote_addr;"
    echo "}"
    echo "limit_req_zone \$lab_rate_limit_key zone=per_client:10m rate=${rps}r/s;"
  fi
  for cidr in $real_ip_from; do
    echo "set_real_ip_from $cidr;"
  done
  if [ -n "$(echo "${REAL_IP_FROM:-}" | tr -d ' ,')" ]; then
    echo "real_ip_header X-Forwarded-For;"
    echo "real_ip_recursive on;"
  fi
  # A sample of the cache hits (the request id is random), every other answer.
  case "$hit_percent" in
    0.00) rule="* 0;" ;;
    100.00) rule="* 1;" ;;
    *) rule="${hit_percent}% 1; * 0;" ;;
  esac
  echo "split_clients \"\${request_id}\" \$lab_hit_sampled { $rule }"
  if [ "${CACHE_STRATEGY:-}" = edge ]; then
    echo "proxy_cache_path /tmp/nginx-edge-cache levels=1:2 keys_zone=lab_edge:4m max_size=24m inactive=10m use_temp_path=off;"
  fi
} >"$out/00-lab-edge.conf"

# The edge tier (CACHE_STRATEGY=edge): Nginx answers the lookup routes from its
# own copy for EDGE_CACHE_SECONDS, then serves that copy while one background
# request refreshes it (stale-while-revalidate); a cold key is fetched once
# while the others wait for it (the cache lock). The key is the whole request
# URI, so ?item= (and any other parameter) gets an entry of its own;
# ?cache=bypass is never served from or stored in it. It gives up
# read-your-writes: a write is seen after at most EDGE_CACHE_SECONDS plus one
# refresh (docs/caching.md).
if [ "${CACHE_STRATEGY:-}" = edge ]; then
  cat >"$out/lab-edge-cache.inc" <<EOF
# written by /docker-entrypoint.d/15-lab-edge-config.sh (CACHE_STRATEGY=edge)
proxy_cache lab_edge;
proxy_cache_key \$request_uri;
proxy_cache_valid 200 ${edge_seconds}s;
proxy_cache_use_stale updating error timeout http_500 http_502 http_503 http_504;
proxy_cache_background_update on;
proxy_cache_lock on;
proxy_cache_lock_age 5s;
proxy_cache_lock_timeout 5s;
proxy_cache_bypass \$lab_edge_skip \$arg_cache;
proxy_no_cache \$lab_edge_skip \$arg_cache \$lab_edge_no_store;
# The app stamps each answer's expiry (X-Accel-Expires: @<second>, counted from
# EDGE_CACHE_SECONDS): fresh up to EDGE_CACHE_SECONDS, never the extra second a
# relative validity gets from Nginx's whole-second clock; proxy_cache_valid is
# the fallback for an answer without it.
proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
proxy_hide_header X-Request-ID;
EOF
  echo "edge cache: on, ${edge_seconds} s" >&2
else
  echo "# the edge cache is off (CACHE_STRATEGY=${CACHE_STRATEGY:-two-tier})" >"$out/lab-edge-cache.inc"
fi

if [ "$rps" -gt 0 ]; then
  echo "limit_req zone=per_client burst=$burst nodelay;" >"$out/lab-rate-limit.inc"
  echo "per-client rate limit: ${rps} r/s, burst ${burst}${exempt:+; exempt: $(echo "$exempt" | tr '\n' ' ')}" >&2
else
  echo "# RATE_LIMIT_RPS=0: no per-client rate limit" >"$out/lab-rate-limit.inc"
  echo "per-client rate limit: off" >&2
fi
