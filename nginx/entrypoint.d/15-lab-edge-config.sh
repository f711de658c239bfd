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
} >"$out/00-lab-edge.conf"

if [ "$rps" -gt 0 ]; then
  echo "limit_req zone=per_client burst=$burst nodelay;" >"$out/lab-rate-limit.inc"
  echo "per-client rate limit: ${rps} r/s, burst ${burst}${exempt:+; exempt: $(echo "$exempt" | tr '\n' ' ')}" >&2
else
  echo "# RATE_LIMIT_RPS=0: no per-client rate limit" >"$out/lab-rate-limit.inc"
  echo "per-client rate limit: off" >&2
fi
