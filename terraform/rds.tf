# RDS PostgreSQL in the private subnets. The master password is generated and
# stored by RDS in Secrets Manager (manage_master_user_password); only the
# db-init task (dbinit.tf) may read it, the app tier never does.
resource "aws_db_subnet_group" "this" {
  name        = "${var.name}-db"
  description = "Private subnets of ${var.name} (2 AZs)"
  subnet_ids  = aws_subnet.private[*].id
}

# max_connections is set explicitly, so the connection budget (ec2.tf) and the
# connections alarm (monitoring.tf) are computed from what the server allows,
# not from nominal memory. RDS's default is LEAST(DBInstanceClassMemory /
# 9531392, 5000), where DBInstanceClassMemory is the class's memory minus what
# the OS and RDS's own processes keep (below the 112 a db.t4g.micro's
# nominal 1 GiB would give). The table stays below that default for each
# class, assuming about 280 MiB kept (an estimate, not measured here: SHOW
# max_connections on a default instance tells); db_max_connections sets any
# other value.
locals {
  db_class_max_connections = {
    "db.t4g.micro"   = 75
    "db.t4g.small"   = 180
    "db.t4g.medium"  = 400
    "db.t4g.large"   = 830
    "db.t4g.xlarge"  = 1700
    "db.t4g.2xlarge" = 3400
    "db.t3.micro"    = 75
    "db.t3.small"    = 180
    "db.t3.medium"   = 400
    "db.t3.large"    = 830
    "db.m7g.large"   = 830
    "db.m6g.large"   = 830
    "db.m7g.xlarge"  = 1700
    "db.r7g.large"   = 1700
    "db.r6g.large"   = 1700
    "db.r7g.xlarge"  = 3400
  }
  db_max_connections = var.db_max_connections > 0 ? var.db_max_connections : lookup(local.db_class_max_connections, var.db_instance_class, 0)
  rds_ca_url         = "https://truststore.pki.rds.amazonaws.com/${var.region}/${var.region}-bundle.pem"
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${var.db_engine_version}-"
  family      = "postgres${var.db_engine_version}"
  description = "${var.name}: explicit max_connections, track plpgsql functions and statements, force TLS, log slow statements"

  parameter {
    name         = "max_connections"
    value        = tostring(local.db_max_connections)
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "track_functions"
    value = "pl"
  }

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # pg_stat_statements (per-statement counts): the library must be preloaded;
  # db-init creates the extension (the master may, as rds_superuser).
  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_stat_statements"
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "pg_stat_statements.track"
    value = "top"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

# Created by Terraform (before the instance) so that `terraform destroy`
# removes them too; otherwise RDS creates them on first export and they stay.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(local.db_log_exports)
  #checkov:skip=CKV_AWS_158: lab - CloudWatch Logs' own encryption is used; a customer-managed KMS key costs $1/month
  #checkov:skip=CKV_AWS_338: lab - database logs are kept for log_retention_days (14 by default), not a year

  name              = "/aws/rds/instance/${local.db_identifier}/${each.value}"
  retention_in_days = var.log_retention_days
}

locals {
  db_identifier  = "${var.name}-db"
  db_log_exports = ["postgresql", "upgrade"]
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_118: lab - enhanced monitoring needs an extra IAM role and adds CloudWatch cost; basic CloudWatch metrics are enough
  #checkov:skip=CKV_AWS_157: Multi-AZ is the scale path (db_multi_az = true); the default is a cheap single-AZ lab
  #checkov:skip=CKV_AWS_293: deletion protection is a variable (db_deletion_protection), false by default so the lab can be destroyed in one go
  #checkov:skip=CKV_AWS_353: lab - Performance Insights is not needed to observe the slow query (pg_stat_user_functions with track_functions = pl is used)
  #checkov:skip=CKV_AWS_354: Performance Insights is off (see CKV_AWS_353)
  identifier = local.db_identifier

  engine                     = "postgres"
  engine_version             = var.db_engine_version
  auto_minor_version_upgrade = true
  instance_class             = var.db_instance_class
  multi_az                   = var.db_multi_az

  db_name                     = var.db_name
  username                    = var.db_username
  manage_master_user_password = true
  # Password auth via the managed secret is what the app uses; IAM auth is
  # enabled as well (no cost) for operators.
  iam_database_authentication_enabled = true

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name
  ca_cert_identifier     = "rds-ca-rsa2048-g1"

  enabled_cloudwatch_logs_exports = local.db_log_exports
  backup_retention_period         = var.db_backup_retention_days
  copy_tags_to_snapshot           = true
  delete_automated_backups        = true

  deletion_protection       = var.db_deletion_protection
  skip_final_snapshot       = var.db_skip_final_snapshot
  final_snapshot_identifier = var.db_skip_final_snapshot ? null : "${var.name}-final"

  apply_immediately = true

  depends_on = [aws_cloudwatch_log_group.rds]
}
