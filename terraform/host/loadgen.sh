#!/bin/bash
# The load generator's hosts (terraform/loadgen.tf), run by systemd at boot and
# by the loadgen_run_command output through Session Manager:
#
#   loadgen.sh master   the Locust master: web UI on 127.0.0.1:$LOCUST_WEB_PORT
#                       (Session Manager port forwarding), workers on
#                       $LOCUST_MASTER_PORT; restarted by Docker
#   loadgen.sh worker   one Locust worker per vCPU, connected to $MASTER_HOST;
#                       a worker whose master goes away exits and Docker
#                       starts it again, so it follows a restarted master
#   loadgen.sh run USERS RATE DURATION [LOCUST ARGS...]
#                       a headless run: the UI master steps aside, a headless
#                       master waits for the workers, runs, and writes Locust's
#                       CSVs (with the full history), its HTML report and
#                       run.json (the run's parameters and the lab's
#                       configuration) to s3://$RESULTS_BUCKET/runs/<id>/;
#                       then the UI master comes back
#   loadgen.sh openloop DURATION RATE [RATE...]
#                       the open-loop benchmark (k6, loadtest/k6/openloop.js,
#                       from the same image): one step of DURATION seconds at
#                       each constant arrival rate, on this host; each step's
#                       summary (exact percentiles to p99.9, dropped requests)
#                       goes to openloop.jsonl beside run.json in
#                       s3://$RESULTS_BUCKET/runs/<id>/. LAB_PATH, KEYS and
#                       SKEW choose the keys, as in the local benchmark
#   loadgen.sh target   prints the URL the runs load
#
# The target is found from inside the VPC: $TARGET_URL if set, else the ALB's
# private address (its network interface carries $ALB_ENI_DESCRIPTION), else
# the private address of an instance of $APP_GROUP. Those requests come from
# the load generator's subnets, which nginx exempts from its rate limit.
#
# tests/test_aws_rehearsal.py runs this script against the rehearsal stack,
# moto (S3) and the local registry.
# shellcheck disable=SC2153 # the settings are environment variables (loadgen.env)
set -euo pipefail
umask 022

log() { echo "loadgen: $*" >&2; }
die() { echo "loadgen: error: $*" >&2; exit 1; }
need() { [ -n "${!1:-}" ] || die "$1 must be set (loadgen.env)"; }
export AWS_RETRY_MODE=${AWS_RETRY_MODE:-standard} AWS_MAX_ATTEMPTS=${AWS_MAX_ATTEMPTS:-8}

need AWS_REGION
need LOCUST_IMAGE
LOCUST_WEB_PORT=${LOCUST_WEB_PORT:-8089}
LOCUST_MASTER_PORT=${LOCUST_MASTER_PORT:-5557}
RUNS_DIR=${RUNS_DIR:-/var/lib/cachelab-loadgen/runs}
NAME_PREFIX=${NAME_PREFIX:-cachelab-loadgen}
LOCUSTFILE=/loadtest/locustfile.py

image() { # log in (ECR) and pull, once per call site
  if [ -n "${ECR_REGISTRY:-}" ]; then
    aws ecr get-login-password --region "$AWS_REGION" |
      docker login --username AWS --password-stdin "$ECR_REGISTRY" >/dev/null ||
      die "docker login to $ECR_REGISTRY failed"
  fi
  docker pull --quiet "$LOCUST_IMAGE" >/dev/null || die "cannot pull $LOCUST_IMAGE"
}

# The hardening of the lab's own containers: read-only, no capabilities.
hardened=(--network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)
locust() { # NAME RESTART [DOCKER ARGS...] -- LOCUST ARGS...
  local name=$1 restart=$2 docker_args=()
  shift 2
  while [ "$1" != -- ]; do docker_args+=("$1"); shift; done
  shift
  docker run --name "$name" --restart "$restart" "${hardened[@]}" "${docker_args[@]}" \
    "$LOCUST_IMAGE" -f "$LOCUSTFILE" "$@"
}

target() {
  if [ -n "${TARGET_URL:-}" ]; then echo "$TARGET_URL"; return; fi
  local scheme=${TARGET_SCHEME:-http} ip
  if [ -n "${ALB_ENI_DESCRIPTION:-}" ]; then
    ip=$(aws ec2 describe-network-interfaces --region "$AWS_REGION" \
      --filters "Name=description,Values=$ALB_ENI_DESCRIPTION" \
      --query 'NetworkInterfaces[0].PrivateIpAddress' --output text)
  else
    need APP_GROUP
    ip=$(aws ec2 describe-instances --region "$AWS_REGION" \
      --filters "Name=tag:aws:autoscaling:groupName,Values=$APP_GROUP" Name=instance-state-name,Values=running \
      --query 'Reservations[0].Instances[0].PrivateIpAddress' --output text)
  fi
  [[ $ip =~ ^[0-9.]+$ ]] || die "cannot find the lab's private address (got '$ip')"
  echo "$scheme://$ip"
}

stop() { # NAME: a Locust master stops its workers, which Docker restarts for the next one
  docker stop --time 15 "$1" >/dev/null 2>&1 || true
  docker rm -f "$1" >/dev/null 2>&1 || true
}

start_master() {
  stop "$NAME_PREFIX-master"
  locust "$NAME_PREFIX-master" unless-stopped -d -- --master --class-picker \
    --master-bind-host 0.0.0.0 --master-bind-port "$LOCUST_MASTER_PORT" \
    --web-host 127.0.0.1 --web-port "$LOCUST_WEB_PORT" --host "$(target)" >/dev/null
  log "master up: UI on 127.0.0.1:$LOCUST_WEB_PORT, workers on :$LOCUST_MASTER_PORT"
}

case "${1:-}" in
  master)
    image
    start_master
    ;;
  worker)
    need MASTER_HOST
    image
    processes=${WORKER_PROCESSES:-$(nproc)}
    for i in $(seq 1 "$processes"); do
      docker rm -f "$NAME_PREFIX-worker-$i" >/dev/null 2>&1 || true
      locust "$NAME_PREFIX-worker-$i" always -d -- --worker \
        --master-host "$MASTER_HOST" --master-port "$LOCUST_MASTER_PORT" >/dev/null
    done
    log "$processes workers for $MASTER_HOST:$LOCUST_MASTER_PORT"
    ;;
  run)
    shift
    [ $# -ge 3 ] || die "usage: loadgen.sh run USERS SPAWN_RATE DURATION [LOCUST ARGS...]"
    users=$1 rate=$2 duration=$3
    shift 3
    [[ $users =~ ^[0-9]+$ && $rate =~ ^[0-9.]+$ && $duration =~ ^[0-9]+[smh]?$ ]] ||
      die "USERS, SPAWN_RATE and DURATION must be like 50 10 60s"
    need RESULTS_BUCKET
    need EXPECT_WORKERS
    image
    url=$(target)
    id=$(date -u +%Y%m%dT%H%M%SZ)
    dir="$RUNS_DIR/$id"
    install -d -m 0777 "$dir" # written by the image's user (uid 10002)
    stop "$NAME_PREFIX-master"
    log "run $id: $users users (spawn $rate/s) for $duration against $url, $EXPECT_WORKERS workers"
    started=$(date -u +%FT%TZ)
    rc=0
    locust "$NAME_PREFIX-headless" no -v "$dir:/results" -- --master --headless \
      --master-bind-host 0.0.0.0 --master-bind-port "$LOCUST_MASTER_PORT" \
      --expect-workers "$EXPECT_WORKERS" --expect-workers-max-wait 300 \
      -u "$users" -r "$rate" -t "$duration" --host "$url" \
      --csv /results/locust --csv-full-history --html /results/report.html "$@" \
      >"$dir/locust.log" 2>&1 || rc=$?
    docker rm -f "$NAME_PREFIX-headless" >/dev/null 2>&1 || true
    # run.json; no request at all (workers lost) fails the run, after the upload
    python3 - "$dir/run.json" "$id" "$started" "$url" "$users" "$rate" "$duration" "$EXPECT_WORKERS" "$rc" "$*" <<'__PY__' || { [ "$rc" != 0 ] || rc=3; }
import base64, csv, json, os, sys
out, run_id, started, url, users, rate, duration, workers, rc, extra = sys.argv[1:]
lab = os.environ.get("LAB_CONFIGURATION", "")
stats = os.path.join(os.path.dirname(out), "locust_stats.csv")
rows = list(csv.DictReader(open(stats))) if os.path.exists(stats) else []
requests = sum(int(r["Request Count"]) for r in rows if r["Name"] == "Aggregated")
json.dump({
    "run_id": run_id, "started": started, "where": "aws", "target": url,
    "users": int(users), "spawn_rate": float(rate), "duration": duration,
    "worker_processes": int(workers), "locust_exit_code": int(rc), "locust_args": extra,
    "requests": requests, "lab": json.loads(base64.b64decode(lab)) if lab else {},
}, open(out, "w"), indent=2)
sys.exit(0 if requests else 1)
__PY__
    aws s3 cp --region "$AWS_REGION" --recursive --only-show-errors "$dir" \
      "s3://$RESULTS_BUCKET/runs/$id/" || die "cannot upload the results to s3://$RESULTS_BUCKET/runs/$id/"
    start_master
    echo "s3://$RESULTS_BUCKET/runs/$id/ (Locust exit code $rc)"
    [ "$rc" = 0 ] || die "the run failed (exit code $rc; 3: no request was made, see locust.log)"
    ;;
  openloop)
    shift
    [ $# -ge 2 ] || die "usage: loadgen.sh openloop DURATION RATE [RATE...]"
    duration=$1
    shift
    [[ $duration =~ ^[0-9]+$ ]] || die "DURATION must be whole seconds, like 30"
    for rate in "$@"; do [[ $rate =~ ^[1-9][0-9]*$ ]] || die "RATE must be requests/s, like 200 (got '$rate')"; done
    need RESULTS_BUCKET
    image
    url=$(target)
    id=$(date -u +%Y%m%dT%H%M%SZ)
    dir="$RUNS_DIR/$id"
    install -d -m 0755 "$dir"
    started=$(date -u +%FT%TZ)
    log "open-loop run $id: $* requests/s, ${duration}s each, against $url"
    settings=(-e "LAB_URL=$url" -e "DURATION=$duration")
    for name in LAB_PATH KEYS SKEW FIRST_ITEM; do
      if [ -n "${!name:-}" ]; then settings+=(-e "$name=${!name}"); fi
    done
    seed=0
    for rate in "$@"; do
      # each step its own key sequence (k6's SEED; loadtest/loadgen.py does the same)
      seed=$((seed + 1))
      # virtual users as loadtest/k6run.py's vus_for: 100 ms of requests in flight
      vus=$(((rate * 100 + 999) / 1000)); [ "$vus" -ge 20 ] || vus=20; [ "$vus" -le 1000 ] || vus=1000
      timeout "$((duration + 120))" docker run --rm --name "$NAME_PREFIX-k6" "${hardened[@]}" \
        --entrypoint k6 "$LOCUST_IMAGE" run -q --no-color "${settings[@]}" \
        -e "RATE=$rate" -e "VUS=$vus" -e "SEED=$seed" /loadtest/k6/openloop.js >"$dir/k6-$rate.log" 2>&1 || true
      grep -h '^{"rate"' "$dir/k6-$rate.log" | tail -n 1 >>"$dir/openloop.jsonl" ||
        log "the step at $rate requests/s wrote no summary (k6-$rate.log)"
    done
    steps=$(wc -l <"$dir/openloop.jsonl" 2>/dev/null || echo 0)
    python3 - "$dir/run.json" "$id" "$started" "$url" "$duration" "$*" <<'__PY__'
import base64, json, os, sys
out, run_id, started, url, duration, rates = sys.argv[1:]
lab = os.environ.get("LAB_CONFIGURATION", "")
keys = {n: os.environ[n] for n in ("LAB_PATH", "KEYS", "SKEW", "FIRST_ITEM") if os.environ.get(n)}
json.dump({
    "run_id": run_id, "started": started, "where": "aws", "kind": "openloop", "target": url,
    "duration": f"{duration}s", "rates": [int(r) for r in rates.split()], "keys": keys,
    "lab": json.loads(base64.b64decode(lab)) if lab else {},
}, open(out, "w"), indent=2)
__PY__
    aws s3 cp --region "$AWS_REGION" --recursive --only-show-errors "$dir" \
      "s3://$RESULTS_BUCKET/runs/$id/" || die "cannot upload the results to s3://$RESULTS_BUCKET/runs/$id/"
    echo "s3://$RESULTS_BUCKET/runs/$id/ ($steps of $# open-loop steps)"
    [ "$steps" = "$#" ] || die "only $steps of $# steps wrote a summary (see k6-RATE.log)"
    ;;
  target)
    target
    ;;
  *)
    die "usage: loadgen.sh master | worker | run USERS SPAWN_RATE DURATION [LOCUST ARGS...] | openloop DURATION RATE [RATE...] | target"
    ;;
esac
