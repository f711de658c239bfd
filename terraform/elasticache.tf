# ElastiCache (Valkey by default, or Redis) replacing the local Redis
# container: TLS in transit, encrypted at rest, reachable on 6379 only from
# the app tier's security group. One shard by default; cache_cluster_mode
# makes it a cluster of cache_shards shards behind a configuration endpoint.
#
# Access is RBAC, not a shared AUTH token: the app authenticates as its own
# user, allowed only the keys of its namespace (~<namespace>:*) and only the
# commands it sends. The `default` user every user group must hold is off.
resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-cache"
  description = "Private subnets of ${var.name} (2 AZs)"
  subnet_ids  = aws_subnet.private[*].id
}

locals {
  cache_engine_major = split(".", var.cache_engine_version)[0]
  # AWS's default parameter groups: the cluster-on family in cluster mode.
  cache_parameter_group = "default.${var.cache_engine}${local.cache_engine_major}${var.cache_cluster_mode ? ".cluster.on" : ""}"

  # Every command the app sends to the cache, including those its Lua scripts
  # call (cachelab/engine/store.py), the tracking connection's
  # (engine/tracking.py), the dashboard's and `cachelab cache purge`'s (SCAN,
  # UNLINK). tests/test_aws_rehearsal.py boots the app against a cache whose
  # only user has exactly this access string and finds no refusal in ACL LOG.
  cache_app_commands = [
    # entries, leases, fences (and what the scripts call: GET, SET, DEL, TIME)
    "get", "set", "pttl", "unlink", "del", "time",
    "evalsha", "eval", "script|load",
    # purge and the dashboard's key table
    "scan",
    # connection set-up, health, the tracking listener
    "hello", "ping", "info", "role", "client|setname", "client|setinfo", "client|tracking",
  ]
  # Cluster mode: the client reads the slot map and the command table.
  cache_cluster_commands = ["cluster|slots", "cluster|shards", "cluster|nodes", "command", "readonly"]
  cache_access_string = join(" ", concat(
    ["on", "~${local.cache_namespace}:*", "-@all"],
    [for c in concat(local.cache_app_commands, var.cache_cluster_mode ? local.cache_cluster_commands : []) : "+${c}"],
  ))
}

# The cache secret's current version holds the password and, after a
# rotation (terraform/rotate-secret.sh cache_auth), the one before it: the
# user accepts both, so instances booted before the rotation keep connecting
# until the instance refresh that rotate-secret.sh starts replaces them.
locals {
  cache_secret = jsondecode(data.aws_secretsmanager_secret_version.current["cache_auth"].secret_string)
}

resource "aws_elasticache_user" "default" {
  user_id              = "${var.name}-default"
  user_name            = "default"
  engine               = "redis" # RBAC users of a Valkey cache too (AWS's user guide)
  access_string        = "off -@all"
  no_password_required = true # off: nobody can log in as `default`
}

resource "aws_elasticache_user" "app" {
  user_id       = "${var.name}-app"
  user_name     = "${var.name}-app"
  engine        = "redis"
  access_string = local.cache_access_string
  passwords     = distinct([local.cache_secret.password, local.cache_secret.previous])
}

resource "aws_elasticache_user_group" "this" {
  user_group_id = "${var.name}-cache"
  engine        = "redis"
  user_ids      = [aws_elasticache_user.default.user_id, aws_elasticache_user.app.user_id]
}

locals {
  # moto has no user groups: tests/test_aws_moto.py overrides this (and the
  # group's count); terraform/tests/*.tftest.hcl check the real wiring.
  cache_user_group_ids = [aws_elasticache_user_group.this.id]
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50: automatic failover + Multi-AZ is the scale path (cache_replicas > 0); the default lab uses one cache.t4g.micro node
  #checkov:skip=CKV_AWS_191: lab - the AWS-managed key encrypts at rest; a customer-managed KMS key costs $1/month
  #checkov:skip=CKV_AWS_31: access is RBAC (user_group_ids: the app's own user, default user off) instead of an AUTH token
  replication_group_id = "${var.name}-cache"
  description          = "${var.name} cache"

  engine               = var.cache_engine
  engine_version       = var.cache_engine_version
  node_type            = var.cache_node_type
  port                 = 6379
  parameter_group_name = local.cache_parameter_group

  cluster_mode               = var.cache_cluster_mode ? "enabled" : "disabled"
  num_cache_clusters         = var.cache_cluster_mode ? null : 1 + var.cache_replicas
  num_node_groups            = var.cache_cluster_mode ? var.cache_shards : null
  replicas_per_node_group    = var.cache_cluster_mode ? var.cache_replicas : null
  automatic_failover_enabled = var.cache_cluster_mode || var.cache_replicas > 0
  multi_az_enabled           = var.cache_replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.cache.id]

  at_rest_encryption_enabled = true
  transit_encryption_enabled = true # mode "required": plaintext clients are refused
  user_group_ids             = local.cache_user_group_ids

  auto_minor_version_upgrade = true
  snapshot_retention_limit   = var.cache_snapshot_retention_days
  apply_immediately          = true

  lifecycle {
    precondition {
      condition     = !var.cache_cluster_mode || var.cache_shards >= 1
      error_message = "cache_cluster_mode needs cache_shards >= 1."
    }
  }
}
