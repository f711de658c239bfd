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

  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    region            = var.region
    project_dir       = "/opt/${var.name}"
    ecr_registry      = local.ecr_registry
    app_image         = local.app_image
    nginx_image       = local.nginx_image
    compose_version   = var.compose_version
    compose_sha256    = var.compose_sha256
    compose_yaml      = file("${path.module}/../compose.yaml")
    compose_aws_yaml  = file("${path.module}/compose.aws.yaml")
    db_secret_arn     = aws_db_instance.this.master_user_secret[0].secret_arn
    db_host           = aws_db_instance.this.address
    db_port           = aws_db_instance.this.port
    db_name           = var.db_name
    cache_secret_arn  = aws_secretsmanager_secret.cache_auth.arn
    redis_host        = local.redis_host
    log_group         = aws_cloudwatch_log_group.containers.name
    cache_ttl_seconds = var.cache_ttl_seconds
    cache_strategy    = var.cache_strategy
    slow_query_secs   = var.slow_query_seconds
    rate_limit_rps    = var.rate_limit_rps
    rate_limit_burst  = var.rate_limit_burst
    vpc_cidr          = var.vpc_cidr
  })

  # cloud-init detects and unpacks gzip user data; keeps us under the 16 KB
  # EC2 user-data limit even with both compose files embedded.
  user_data_b64 = base64gzip(local.user_data)
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
      error_message = "The gzip+base64 user data exceeds the 16 KB EC2 limit; shrink compose.yaml / compose.aws.yaml or the template."
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
  # Wait until the instances are in service (and healthy behind the ALB), so
  # the outputs below can find them.
  wait_for_capacity_timeout = "15m"
  min_elb_capacity          = var.enable_alb ? var.app_instance_count : null

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
