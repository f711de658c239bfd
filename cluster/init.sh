#!/bin/sh
# The lab's Valkey Cluster, made and checked by a one-shot (compose.cluster.yaml).
# Idempotent, so `docker compose up` runs it every time:
#   - no node is part of a cluster yet: create it (the first third of the nodes
#     become primaries, the others their replicas) -- valkey-cli --cluster create;
#   - a cluster exists and a node came back empty (restarted: nodes keep no
#     state): add it back as a replica -- valkey-cli --cluster add-node --cluster-slave;
#   - then wait until every node says cluster_state:ok and knows every other.
# Exit status 0 only when the cluster is whole and healthy within CLUSTER_WAIT_SECONDS.
set -eu

nodes=${CLUSTER_NODES:?CLUSTER_NODES is set by compose.cluster.yaml}
replicas=${CLUSTER_REPLICAS:-1}
wait_seconds=${CLUSTER_WAIT_SECONDS:-90}
deadline=$(( $(date +%s) + wait_seconds ))

cli() { if command -v valkey-cli >/dev/null 2>&1; then valkey-cli "$@"; else redis-cli "$@"; fi; }
at() { node=$1; shift; cli -h "${node%:*}" -p "${node##*:}" "$@"; }
field() { at "$1" cluster info | tr -d '\r' | sed -n "s/^$2:\\(.*\\)/\\1/p"; }
give_up() { echo "cluster-init: $*" >&2; exit 1; }

count=0
for node in $nodes; do
  count=$((count + 1))
  until [ "$(at "$node" ping 2>/dev/null)" = PONG ]; do
    [ "$(date +%s)" -lt "$deadline" ] || give_up "$node does not answer PING"
    sleep 0.5
  done
done

member=""
for node in $nodes; do
  if [ "$(field "$node" cluster_known_nodes)" -gt 1 ] || [ "$(field "$node" cluster_slots_assigned)" -gt 0 ]; then
    member=$node
    break
  fi
done

if [ -z "$member" ]; then
  echo "cluster-init: creating a cluster of $count nodes, $replicas replica(s) per primary"
  # shellcheck disable=SC2086 # one argument per node
  cli --cluster create $nodes --cluster-replicas "$replicas" --cluster-yes
else
  for node in $nodes; do
    if [ "$(field "$node" cluster_known_nodes)" -le 1 ] && [ "$(field "$node" cluster_slots_assigned)" -eq 0 ]; then
      echo "cluster-init: $node came back empty: adding it as a replica"
      cli --cluster add-node "$node" "$member" --cluster-slave
    fi
  done
fi

for node in $nodes; do
  until [ "$(field "$node" cluster_state)" = ok ] && [ "$(field "$node" cluster_known_nodes)" -ge "$count" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || give_up "$node: $(at "$node" cluster info | tr -d '\r' | grep -E 'cluster_state|known_nodes' | tr '\n' ' ')"
    sleep 0.5
  done
done
echo "cluster-init: cluster_state:ok on all $count nodes"
at "${nodes%% *}" cluster nodes
