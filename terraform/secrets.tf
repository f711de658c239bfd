# Generated secrets, each made by Secrets Manager itself (no random provider),
# alphanumeric so they are valid in a Redis AUTH command and in URLs:
#
#   cache_auth : the password of the app's ElastiCache user (RBAC,
#                elasticache.tf), as JSON {"password": ..., "previous": ...}:
#                the user accepts both, so after a rotation (which moves the
#                old password to "previous") instances booted before it keep
#                connecting until the refresh replaces them
#   app_db     : APP_DB_PASSWORD of the app's own PostgreSQL role
#                (app_db_username); the db-init task, run as the RDS master by
#                deploy.sh once per deploy, sets the role's password from it
#   write_api  : WRITE_API_TOKEN, only with enable_write_api; the bootstrap
#                passes it to the app container, which turns its write API on.
#                Without it the variable is not set at all.
#
# The random-password data source returns a new value on every read, so each
# stored version ignores later changes: Terraform writes the first value only.
# A rotation (terraform/rotate-secret.sh) puts a new version, which the read
# below sees: deploy.sh then hands it to the cache user's passwords
# (elasticache.tf) or, through db-init, to the app's database role, and an
# instance refresh hands it to every instance.
locals {
  generated_secrets = merge({
    cache_auth = { length = 48, description = "Password of the ${var.name} app's ElastiCache user (RBAC)" }
    app_db     = { length = 40, description = "Password of the ${var.name} app's own PostgreSQL role ${var.app_db_username}" }
    }, var.enable_write_api ? {
    write_api = { length = 48, description = "WRITE_API_TOKEN of the ${var.name} app's write API" }
  } : {})
}

data "aws_secretsmanager_random_password" "this" {
  for_each = local.generated_secrets

  password_length     = each.value.length
  exclude_punctuation = true
  include_space       = false
}

resource "aws_secretsmanager_secret" "this" {
  for_each = local.generated_secrets
  #checkov:skip=CKV_AWS_149: lab - the AWS-managed aws/secretsmanager key is used; a customer-managed KMS key costs $1/month and adds key policy management
  #checkov:skip=CKV2_AWS_57: no rotation Lambda for a lab: terraform/rotate-secret.sh puts a new version and runs deploy.sh, which hands it to the cache user, the app's database role (db-init) and the instances (refresh)

  name_prefix             = "${var.name}-${replace(each.key, "_", "-")}-"
  description             = each.value.description
  recovery_window_in_days = 0 # lab: destroy/re-create without the 7-30 day wait
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each = local.generated_secrets

  secret_id = aws_secretsmanager_secret.this[each.key].id
  secret_string = (each.key == "cache_auth"
    ? jsonencode({
      password = data.aws_secretsmanager_random_password.this[each.key].random_password
      previous = data.aws_secretsmanager_random_password.this[each.key].random_password
    })
    : data.aws_secretsmanager_random_password.this[each.key].random_password
  )

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# The current version of each secret (after a rotation: the new one). Read
# through the stored version, so never before Terraform wrote the first one.
data "aws_secretsmanager_secret_version" "current" {
  for_each = local.generated_secrets

  secret_id     = aws_secretsmanager_secret_version.this[each.key].secret_id
  version_stage = "AWSCURRENT"
}

# Deployments made before the secrets shared one block keep their AUTH token.
moved {
  from = aws_secretsmanager_secret.cache_auth
  to   = aws_secretsmanager_secret.this["cache_auth"]
}

moved {
  from = aws_secretsmanager_secret_version.cache_auth
  to   = aws_secretsmanager_secret_version.this["cache_auth"]
}
