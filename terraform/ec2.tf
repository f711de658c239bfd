# App tier: one launch template, one Auto Scaling group.
#   default   : ASG of 1 instance, reachable on its public IP (port 80) from
#               allowed_http_cidrs only (nothing by default).
#   scale path: ASG of app_instance_count instances behind an ALB
#               (enable_alb = true); instances accept HTTP only from the ALB.
# Instances live in the public subnets with a public IP for egress (ECR,
# Secrets Manager, SSM, CloudWatch Logs) without paying for a NAT gateway;
# no SSH key, no port 22: shell access is Session Manager only.
data "aws_ssm_parameter" "al2023_ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  redis_host = aws_elasticache_replication_group.this.primary_endpoint_address

  # Non-secret settings of host/bootstrap.sh (systemd EnvironmentFile). The
  # secrets themselves are read from Secrets Manager on the host at every boot.
  bootstrap_env = merge({
    AWS_REGION            = var.region
    PROJECT_DIR           = "/opt/${var.name}"
    COMPOSE_PROJECT_NAME  = var.name
    ECR_REGISTRY          = local.ecr_registry
    APP_IMAGE             = local.app_image
    NGINX_APP_IMAGE       = local.nginx_image
    DB_MASTER_SECRET_ARN  = aws_db_instance.this.master_user_secret[0].secret_arn
    APP_DB_SECRET_ARN     = aws_secretsmanager_secret.this["app_db"].arn
    CACHE_AUTH_SECRET_ARN = aws_secretsmanager_secret.this["cache_auth"].arn
    APP_DB_USER           = var.app_db_username
    DB_HOST               = aws_db_instance.this.address
    DB_PORT               = aws_db_instance.this.port
    DB_NAME               = var.db_name
    REDIS_HOST            = local.redis_host
    REDIS_PORT            = 6379
    RDS_CA_URL            = "https://truststore.pki.rds.amazonaws.com/${var.region}/${var.region}-bundle.pem"
    AWSLOGS_GROUP         = aws_cloudwatch_log_group.containers.name
    HTTP_BIND             = "0.0.0.0"
    HTTP_PORT             = 80
    CACHE_TTL_SECONDS     = var.cache_ttl_seconds
    CACHE_STRATEGY        = var.cache_strategy
    SLOW_QUERY_SECONDS    = var.slow_query_seconds
    GUNICORN_WORKERS      = var.gunicorn_workers
    DB_POOL_SIZE          = var.db_pool_size
    RATE_LIMIT_RPS        = var.rate_limit_rps
    RATE_LIMIT_BURST      = var.rate_limit_burst
    REAL_IP_FROM          = var.vpc_cidr
    }, var.enable_write_api ? {
    WRITE_API_SECRET_ARN = aws_secretsmanager_secret.this["write_api"].arn
  } : {})

  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    project_dir      = "/opt/${var.name}"
    compose_version  = var.compose_version
    compose_sha256   = var.compose_sha256
    compose_yaml     = file("${path.module}/../compose.yaml")
    compose_aws_yaml = file("${path.module}/compose.aws.yaml")
    bootstrap_sh     = file("${path.module}/host/bootstrap.sh")
    bootstrap_env    = join("\n", [for k in sort(keys(local.bootstrap_env)) : "${k}=${local.bootstrap_env[k]}"])
  })

  # cloud-init detects and unpacks gzip user data; keeps us under the 16 KB
  # EC2 user-data limit with both compose files and the bootstrap embedded.
  user_data_b64 = base64gzip(local.user_data)

  # Database connections the app tier may open at once: per gunicorn worker
  # DB_POOL_SIZE pooled connections + 1 listener connection.
  db_connections_needed = var.app_instance_count * var.gunicorn_workers * (var.db_pool_size + 1)
  # RDS default max_connections = LEAST(DBInstanceClassMemory / 9531392, 5000);
  # DBInstanceClassMemory is below the class's nominal memory, so these values
  # (nominal GiB x 1073741824 / 9531392) are upper bounds.
  db_class_max_connections = {
    "db.t4g.micro"  = 112
    "db.t4g.small"  = 225
    "db.t4g.medium" = 450
    "db.t4g.large"  = 901
    "db.t3.micro"   = 112
    "db.t3.small"   = 225
    "db.t3.medium"  = 450
    "db.t3.large"   = 901
    "db.m7g.large"  = 901
    "db.r7g.large"  = 1802
  }
  db_max_connections = var.db_max_connections > 0 ? var.db_max_connections : lookup(local.db_class_max_connections, var.db_instance_class, 0)
  # Kept free: RDS's reserved superuser slots, db-init, an operator's psql,
  # and the difference between nominal and usable memory.
  db_connection_headroom = ceil(local.db_max_connections * 0.1) + 5
  db_connections_allowed = local.db_max_connections - local.db_connection_headroom
}

resource "aws_launch_template" "app" {
  name_prefix = "${var.name}-app-"
  description = "${var.name} app tier (image tag ${var.app_image_tag})"

  image_id      = data.aws_ssm_parameter.al2023_ami.value
  instance_type = var.instance_type
  user_data     = local.user_data_b64
  ebs_optimized = true

  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.app.arn
  }

  network_interfaces {
    #checkov:skip=CKV_AWS_88: lab - the app instances use a public IP for egress instead of a NAT gateway (about $33/month); inbound is limited by the app security group (allowed_http_cidrs or the ALB only, never port 22)
    device_index                = 0
    associate_public_ip_address = true
    delete_on_termination       = true
    security_groups             = [aws_security_group.app.id]
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1 # containers cannot reach IMDS; secrets are read on the host
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-app" }
  }

  tag_specifications {
    resource_type = "volume"
    tags          = { Name = "${var.name}-app" }
  }

  lifecycle {
    precondition {
      condition     = length(local.user_data_b64) <= 16384
      error_message = "The gzip+base64 user data exceeds the 16 KB EC2 limit; shrink compose.yaml / compose.aws.yaml / host/bootstrap.sh or the template."
    }
    precondition {
      condition     = local.db_max_connections > 0
      error_message = "Unknown max_connections for db_instance_class ${var.db_instance_class}: set db_max_connections (SHOW max_connections on that class)."
    }
    precondition {
      condition     = local.db_connections_needed <= local.db_connections_allowed
      error_message = "Database connection budget exceeded: ${var.app_instance_count} instances x ${var.gunicorn_workers} gunicorn workers x (${var.db_pool_size} pool + 1 listener) = ${local.db_connections_needed} connections, but ${var.db_instance_class} allows ${local.db_max_connections} (${local.db_connections_allowed} after ${local.db_connection_headroom} kept free). Lower db_pool_size, gunicorn_workers or app_instance_count, or choose a larger db_instance_class."
    }
  }
}

resource "aws_autoscaling_group" "app" {
  name_prefix         = "${var.name}-app-"
  vpc_zone_identifier = aws_subnet.public[*].id

  min_size         = var.app_instance_count
  max_size         = var.app_instance_count
  desired_capacity = var.app_instance_count

  target_group_arns         = var.enable_alb ? [aws_lb_target_group.app[0].arn] : []
  health_check_type         = var.enable_alb ? "ELB" : "EC2"
  health_check_grace_period = 300
  # Wait until the instances are InService in the group (launched), not until
  # they pass the ALB health check: a boot failure must not turn into a long
  # apply timeout. The ALB health check and the group replace a bad instance;
  # `terraform output url` + curl, or the target group health, tell when it serves.
  wait_for_capacity_timeout = "10m"

  launch_template {
    id      = aws_launch_template.app.id
    version = aws_launch_template.app.latest_version
  }

  # A new image tag changes the user data, hence the launch template version:
  # roll the instances.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.enable_alb && var.app_instance_count > 1 ? 50 : 0
    }
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-app"
    propagate_at_launch = true
  }

  lifecycle {
    precondition {
      condition     = var.app_instance_count == 1 || var.enable_alb
      error_message = "app_instance_count > 1 needs enable_alb = true (one URL in front of N instances)."
    }
  }

  depends_on = [
    # the instances need their outbound route and permissions at boot
    aws_route.public_internet,
    aws_iam_role_policy.app,
    aws_iam_role_policy_attachment.ssm_core,
  ]
}

# Instances currently in the group (for the URL without ALB and the Session
# Manager command). Read after the ASG is created/updated.
data "aws_instances" "app" {
  instance_tags = {
    "aws:autoscaling:groupName" = aws_autoscaling_group.app.name
  }
  instance_state_names = ["running"]
}
