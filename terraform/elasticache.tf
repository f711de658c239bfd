# ElastiCache (Valkey by default, or Redis) replacing the local Redis
# container: TLS in transit, encrypted at rest, AUTH token from Secrets
# Manager, reachable on 6379 only from the app tier's security group.
resource "aws_elasticache_subnet_group" "this" {
  name        = "${var.name}-cache"
  description = "Private subnets of ${var.name} (2 AZs)"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50: automatic failover + Multi-AZ is the scale path (cache_replicas > 0); the default lab uses one cache.t4g.micro node
  #checkov:skip=CKV_AWS_191: lab - the AWS-managed key encrypts at rest; a customer-managed KMS key costs $1/month
  replication_group_id = "${var.name}-cache"
  description          = "${var.name} cache"

  engine               = var.cache_engine
  engine_version       = var.cache_engine_version
  node_type            = var.cache_node_type
  port                 = 6379
  parameter_group_name = "default.${var.cache_engine}${split(".", var.cache_engine_version)[0]}"

  num_cache_clusters         = 1 + var.cache_replicas
  automatic_failover_enabled = var.cache_replicas > 0
  multi_az_enabled           = var.cache_replicas > 0

  subnet_group_name  = aws_elasticache_subnet_group.this.name
  security_group_ids = [aws_security_group.cache.id]

  at_rest_encryption_enabled = true
  transit_encryption_enabled = true # mode "required": plaintext clients are refused
  auth_token                 = aws_secretsmanager_secret_version.this["cache_auth"].secret_string

  auto_minor_version_upgrade = true
  snapshot_retention_limit   = var.cache_snapshot_retention_days
  apply_immediately          = true
}
