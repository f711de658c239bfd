# Generated secrets, each made by Secrets Manager itself (no random provider),
# alphanumeric so they are valid in a Redis AUTH command and in URLs:
#
#   cache_auth : the ElastiCache AUTH token (the replication group takes it
#                from the stored version)
#   app_db     : APP_DB_PASSWORD of the app's own PostgreSQL role
#                (app_db_username); db-init, run as the RDS master at every
#                boot, sets the role's password from it. The app never uses the
#                master, whose password RDS rotates.
#   write_api  : WRITE_API_TOKEN, only with enable_write_api; the bootstrap
#                passes it to the app container, which turns its write API on.
#                Without it the variable is not set at all.
#
# The data source returns a new value on every read, so each stored version
# ignores later changes: the values stay stable across plans.
locals {
  generated_secrets = merge({
    cache_auth = { length = 48, description = "AUTH token of the ${var.name} ElastiCache replication group" }
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
  #checkov:skip=CKV2_AWS_57: no rotation Lambda for a lab: rotate by putting a new version and re-applying (cache AUTH) or rebooting/refreshing the instances (db-init sets the app role's password at every boot)

  name_prefix             = "${var.name}-${replace(each.key, "_", "-")}-"
  description             = each.value.description
  recovery_window_in_days = 0 # lab: destroy/re-create without the 7-30 day wait
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each = local.generated_secrets

  secret_id     = aws_secretsmanager_secret.this[each.key].id
  secret_string = data.aws_secretsmanager_random_password.this[each.key].random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
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
