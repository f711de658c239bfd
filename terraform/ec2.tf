# App tier: one launch template, one Auto Scaling group.
#   default   : ASG of 1 instance, reachable on an Elastic IP (port 80) from
#               allowed_http_cidrs only (nothing by default). The instance
#               takes the address over when its stack is healthy, so the URL
#               survives replacements and instance refreshes.
#   scale path: ASG of app_instance_count..app_max_instance_count instances
#               behind an ALB (enable_alb = true), scaled on the ALB's requests
#               per target; instances accept HTTP only from the ALB.
# Instances live in the public subnets with a public IP for egress (ECR,
# Secrets Manager, SSM, CloudWatch Logs) without paying for a NAT gateway;
# no SSH key, no port 22: shell access is Session Manager only.
data "aws_ssm_parameter" "al2023_ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

# The AMI and the images are x86_64: an arm64 (Graviton) type would plan
# cleanly and never boot.
data "aws_ec2_instance_type" "app" {
  instance_type = var.instance_type
}

locals {
  redis_host = (var.cache_cluster_mode
    ? aws_elasticache_replication_group.this.configuration_endpoint_address
    : aws_elasticache_replication_group.this.primary_endpoint_address
  )

  # The app's settings: the variables of their own, then app_settings (names
  # checked in variables.tf; values by the app at start). db-init's own
  # settings go to the db-init task (dbinit.tf).
  db_init_setting_names = ["ITEM_COUNT", "ITEM_PAYLOAD_BYTES", "SLOW_CALL_LOG"]
  app_env = merge(
    { for k, v in var.app_settings : k => v if !contains(local.db_init_setting_names, k) },
    {
      CACHE_STRATEGY     = var.cache_strategy
      CACHE_TTL_SECONDS  = tostring(var.cache_ttl_seconds)
      SLOW_QUERY_SECONDS = tostring(var.slow_query_seconds)
      GUNICORN_WORKERS   = tostring(var.gunicorn_workers)
      DB_POOL_SIZE       = tostring(var.db_pool_size)
    },
    var.cache_cluster_mode ? { REDIS_CLUSTER = "on" } : {},
  )
  # The app's defaults of the settings the plan checks (app/cachelab/config.py).
  setting = { for k, default in {
    CACHE_LOCK_WAIT_SECONDS = 15
    DB_STATEMENT_TIMEOUT_MS = 30000
    CACHE_FILL_SLOTS        = 16
    CACHE_REFRESH_THREADS   = 4
    DB_CONTROL_CONNECTIONS  = 4
    REDIS_MAX_CONNECTIONS   = 80
    GUNICORN_THREADS        = 64
  } : k => tonumber(lookup(var.app_settings, k, tostring(default))) }
  cache_namespace = lookup(var.app_settings, "CACHE_NAMESPACE", "lab")

  # Non-secret settings of host/bootstrap.sh (systemd EnvironmentFile). The
  # secrets themselves are read from Secrets Manager on the host at every boot.
  bootstrap_env = merge({
    AWS_REGION            = var.region
    PROJECT_DIR           = "/opt/${var.name}"
    COMPOSE_PROJECT_NAME  = var.name
    ECR_REGISTRY          = local.ecr_registry
    APP_IMAGE             = local.app_image
    NGINX_APP_IMAGE       = local.nginx_image
    APP_DB_SECRET_ARN     = aws_secretsmanager_secret.this["app_db"].arn
    CACHE_AUTH_SECRET_ARN = aws_secretsmanager_secret.this["cache_auth"].arn
    CACHE_USER            = aws_elasticache_user.app.user_name
    APP_DB_USER           = var.app_db_username
    DB_HOST               = aws_db_instance.this.address
    DB_PORT               = aws_db_instance.this.port
    DB_NAME               = var.db_name
    REDIS_HOST            = local.redis_host
    REDIS_PORT            = 6379
    RDS_CA_URL            = local.rds_ca_url
    AWSLOGS_GROUP         = aws_cloudwatch_log_group.containers.name
    AUTOSCALING_GROUP     = "${var.name}-app"
    METRICS_NAMESPACE     = local.metrics_namespace
    HTTP_BIND             = "0.0.0.0"
    HTTP_PORT             = 80
    RATE_LIMIT_RPS        = var.rate_limit_rps
    RATE_LIMIT_BURST      = var.rate_limit_burst
    # X-Forwarded-For is believed only from the ALB's own subnets, where
    # nothing else runs; the load generator's subnets are not rate limited.
    REAL_IP_FROM      = var.enable_alb ? join(",", local.edge_subnet_cidrs) : ""
    RATE_LIMIT_EXEMPT = var.enable_loadgen ? join(",", local.loadgen_subnet_cidrs) : ""
    # Settings the bootstrap copies into the app's environment (.env).
    APP_SETTINGS = join(",", sort(keys(local.app_env)))
    }, local.app_env, var.enable_write_api ? {
    WRITE_API_SECRET_ARN = aws_secretsmanager_secret.this["write_api"].arn
    } : {}, var.enable_alb ? {} : {
    EIP_ALLOCATION_ID = aws_eip.app[0].allocation_id
  })

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

  # Instances at the peak: the group's maximum, doubled while an instance
  # refresh launches replacements before it stops the old ones
  # (max_healthy_percentage 200, with the ALB). Without the ALB there is one
  # instance and a refresh replaces it (no surge).
  max_instances  = var.enable_alb ? max(var.app_instance_count, var.app_max_instance_count) : 1
  peak_instances = var.enable_alb ? 2 * local.max_instances : 1

  # Database connections the app tier may open at once: per gunicorn worker
  # DB_POOL_SIZE connections for the slow queries, DB_CONTROL_CONNECTIONS for
  # writes and probes, and 1 listener connection (LISTEN for notify).
  db_connections_per_worker   = var.db_pool_size + local.setting.DB_CONTROL_CONNECTIONS + 1
  db_connections_per_instance = var.gunicorn_workers * local.db_connections_per_worker
  db_connections_needed       = local.peak_instances * local.db_connections_per_instance
  # Of max_connections (rds.tf), kept free: superuser_reserved_connections (3)
  # and rds.rds_superuser_reserved_connections (2), db-init and an operator.
  db_connection_headroom = 5 + 3
  db_connections_allowed = local.db_max_connections - local.db_connection_headroom

  # Cache connections per node: each gunicorn worker's pool (REDIS_MAX_CONNECTIONS,
  # one pool per node in cluster mode) and its tracking connection.
  cache_connections_per_node = local.peak_instances * var.gunicorn_workers * (local.setting.REDIS_MAX_CONNECTIONS + 1)
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

  tag_specifications {
    resource_type = "network-interface"
    tags          = { Name = "${var.name}-app" }
  }

  lifecycle {
    precondition {
      condition     = length(local.user_data_b64) <= 16384
      error_message = "The gzip+base64 user data exceeds the 16 KB EC2 limit; shrink compose.yaml / compose.aws.yaml / host/bootstrap.sh or the template."
    }
    precondition {
      condition     = contains(data.aws_ec2_instance_type.app.supported_architectures, "x86_64")
      error_message = "instance_type ${var.instance_type} is not x86_64 (it supports ${join(", ", data.aws_ec2_instance_type.app.supported_architectures)}): the AMI, the Compose plugin and the images are x86_64. Choose an x86_64 type such as t3.small."
    }
    precondition {
      condition     = local.db_max_connections > 0
      error_message = "Unknown max_connections for db_instance_class ${var.db_instance_class}: set db_max_connections (it goes into the project's parameter group)."
    }
    precondition {
      condition     = local.db_connections_needed <= local.db_connections_allowed
      error_message = "Database connection budget exceeded: ${local.peak_instances} instances at the peak (the group's maximum ${local.max_instances}${var.enable_alb ? ", doubled during an instance refresh" : ""}) x ${var.gunicorn_workers} gunicorn workers x (${var.db_pool_size} pool + ${local.setting.DB_CONTROL_CONNECTIONS} control + 1 listener) = ${local.db_connections_needed} connections, but the parameter group sets max_connections = ${local.db_max_connections} (${local.db_connections_allowed} after ${local.db_connection_headroom} kept free). Lower db_pool_size, gunicorn_workers or app_max_instance_count, or choose a larger db_instance_class."
    }
    precondition {
      condition     = var.slow_query_seconds < local.setting.CACHE_LOCK_WAIT_SECONDS
      error_message = "slow_query_seconds (${var.slow_query_seconds}) must stay below CACHE_LOCK_WAIT_SECONDS (${local.setting.CACHE_LOCK_WAIT_SECONDS}; app_settings), or the app refuses to start: raise CACHE_LOCK_WAIT_SECONDS in app_settings."
    }
    precondition {
      condition     = var.slow_query_seconds * 1000 < local.setting.DB_STATEMENT_TIMEOUT_MS
      error_message = "slow_query_seconds (${var.slow_query_seconds}) must stay below DB_STATEMENT_TIMEOUT_MS (${local.setting.DB_STATEMENT_TIMEOUT_MS} ms; app_settings), or every query times out and the app refuses to start."
    }
    precondition {
      condition     = var.db_pool_size >= local.setting.CACHE_FILL_SLOTS + local.setting.CACHE_REFRESH_THREADS
      error_message = "db_pool_size (${var.db_pool_size}) must be at least CACHE_FILL_SLOTS (${local.setting.CACHE_FILL_SLOTS}) + CACHE_REFRESH_THREADS (${local.setting.CACHE_REFRESH_THREADS}), or the app refuses to start."
    }
    precondition {
      condition     = local.setting.REDIS_MAX_CONNECTIONS >= local.setting.GUNICORN_THREADS + local.setting.CACHE_REFRESH_THREADS + 2
      error_message = "REDIS_MAX_CONNECTIONS (${local.setting.REDIS_MAX_CONNECTIONS}) must cover GUNICORN_THREADS + CACHE_REFRESH_THREADS + 2 (${local.setting.GUNICORN_THREADS + local.setting.CACHE_REFRESH_THREADS + 2}), or the app refuses to start."
    }
    precondition {
      # ElastiCache's maxclients is 65000 per node.
      condition     = local.cache_connections_per_node <= 60000
      error_message = "Cache connection budget exceeded: ${local.cache_connections_per_node} connections per node (${local.peak_instances} instances x ${var.gunicorn_workers} workers x (${local.setting.REDIS_MAX_CONNECTIONS} + 1)) of ElastiCache's 65000."
    }
  }
}

resource "aws_autoscaling_group" "app" {
  name                = "${var.name}-app"
  vpc_zone_identifier = aws_subnet.public[*].id

  # With the ALB the scaling policy moves the desired capacity between min
  # and max; Terraform sets it only where nothing scales.
  min_size         = var.enable_alb ? var.app_instance_count : 1
  max_size         = local.max_instances
  desired_capacity = var.enable_alb && local.max_instances > var.app_instance_count ? null : local.max_instances

  target_group_arns         = var.enable_alb ? [aws_lb_target_group.app[0].arn] : []
  health_check_type         = var.enable_alb ? "ELB" : "EC2"
  health_check_grace_period = var.instance_warmup_seconds
  default_instance_warmup   = var.instance_warmup_seconds
  # Wait until the instances are InService in the group (launched), not until
  # they pass the ALB health check: a boot failure must not turn into a long
  # apply timeout. A boot that fails for good marks its instance Unhealthy
  # (bootstrap.sh report-unhealthy), and the group replaces it.
  wait_for_capacity_timeout = "10m"

  launch_template {
    id      = aws_launch_template.app.id
    version = aws_launch_template.app.latest_version
  }

  # A new image tag changes the user data, hence the launch template version:
  # roll the instances (rotate-secret.sh starts the same refresh). Behind the ALB, replacements
  # start first and the old ones stop once the new ones are warm (capacity
  # never drops); a single instance is replaced (its Elastic IP follows).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.enable_alb ? 100 : 0
      max_healthy_percentage = var.enable_alb ? 200 : 100
      instance_warmup        = var.instance_warmup_seconds
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
    precondition {
      condition     = var.app_max_instance_count <= 1 || var.enable_alb
      error_message = "app_max_instance_count > 1 needs enable_alb = true (scaling spreads requests over the ALB's targets)."
    }
    precondition {
      condition     = var.certificate_arn == "" || var.enable_alb
      error_message = "certificate_arn needs enable_alb = true (the ALB ends TLS)."
    }
    precondition {
      condition     = !var.enable_write_api || length(var.allowed_http_cidrs) == 0 || local.https
      error_message = "enable_write_api with allowed_http_cidrs would send WRITE_API_TOKEN over plain HTTP: give certificate_arn (with enable_alb) for HTTPS, or keep allowed_http_cidrs empty and use the Session Manager tunnel."
    }
    precondition {
      condition     = var.app_max_instance_count == 0 || var.app_max_instance_count >= var.app_instance_count
      error_message = "app_max_instance_count (${var.app_max_instance_count}) must be 0 or at least app_instance_count (${var.app_instance_count})."
    }
  }

  depends_on = [
    # the instances need their outbound route and permissions at boot
    aws_route.public_internet,
    aws_iam_role_policy.app,
    aws_iam_role_policy_attachment.ssm_core,
  ]
}

# The scale path: keep the ALB's requests per instance near the target.
resource "aws_autoscaling_policy" "requests_per_target" {
  count = var.enable_alb && local.max_instances > var.app_instance_count ? 1 : 0

  name                      = "${var.name}-requests-per-target"
  autoscaling_group_name    = aws_autoscaling_group.app.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = var.instance_warmup_seconds

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.app[0].arn_suffix}/${aws_lb_target_group.app[0].arn_suffix}"
    }
    target_value = var.scaling_requests_per_target
  }
}

# The stable URL without an ALB: an Elastic IP that the booted instance takes
# over (bootstrap.sh, once its stack is healthy), so it follows replacements.
resource "aws_eip" "app" {
  #checkov:skip=CKV2_AWS_19: the instance of the Auto Scaling group attaches it at boot (bootstrap.sh): Terraform cannot name an instance the group replaces
  count  = var.enable_alb ? 0 : 1
  domain = "vpc"

  tags = { Name = "${var.name}-app" }
}

# Instances currently in the group (for the Session Manager command). Read
# after the ASG is created/updated.
data "aws_instances" "app" {
  instance_tags = {
    "aws:autoscaling:groupName" = aws_autoscaling_group.app.name
  }
  instance_state_names = ["running"]
}
