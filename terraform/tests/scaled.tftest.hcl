# Plan-level checks of the scale path: N instances behind an ALB, cache
# replicas with automatic failover + Multi-AZ, Multi-AZ RDS.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  app_image_tag      = "c-0123456789ab"
  app_instance_count = 2 # doubled by an instance refresh: 4 x 2 workers x (20 + 4 + 1) = 200 connections
  enable_alb         = true
  cache_replicas     = 1
  db_multi_az        = true
  db_instance_class  = "db.t4g.medium" # max_connections 400: 392 after what is kept free
  allowed_http_cidrs = ["198.51.100.0/24"]
}

run "scaled_plan_has_alb_and_asg" {
  command = plan

  assert {
    condition     = length(aws_lb.app) == 1 && aws_lb.app[0].load_balancer_type == "application" && aws_lb.app[0].internal == false
    error_message = "The scale path needs an internet-facing Application Load Balancer."
  }
  assert {
    condition     = aws_lb.app[0].drop_invalid_header_fields == true
    error_message = "The ALB must drop invalid headers."
  }
  assert {
    condition     = length(aws_lb_listener.http) == 1 && aws_lb_listener.http[0].port == 80 && aws_lb_listener.http[0].default_action[0].type == "forward" && length(aws_lb_listener.https) == 0
    error_message = "Without certificate_arn the ALB listens on HTTP 80 only."
  }
  assert {
    condition     = aws_lb.app[0].subnets == toset(aws_subnet.edge[*].id) && length(aws_subnet.edge) == 2
    error_message = "The ALB lives in its own (edge) subnets."
  }
  assert {
    condition     = local.bootstrap_env.REAL_IP_FROM == "10.40.20.0/24,10.40.21.0/24"
    error_message = "nginx believes X-Forwarded-For from the ALB's own subnets only, not the whole VPC."
  }
  assert {
    condition = (
      aws_autoscaling_group.app.instance_refresh[0].preferences[0].min_healthy_percentage == 100 &&
      aws_autoscaling_group.app.instance_refresh[0].preferences[0].max_healthy_percentage == 200 &&
      aws_autoscaling_group.app.instance_refresh[0].preferences[0].instance_warmup == "300"
    )
    error_message = "Behind the ALB an instance refresh keeps capacity: replacements first (max 200%), never below 100%, with a warm-up."
  }
  assert {
    condition = (
      aws_autoscaling_group.app.min_size == 2 &&
      aws_autoscaling_group.app.max_size == 2 &&
      aws_autoscaling_group.app.desired_capacity == 2 &&
      length(aws_autoscaling_policy.requests_per_target) == 0
    )
    error_message = "The Auto Scaling group must run app_instance_count instances (no scaling policy while max = min)."
  }
  assert {
    condition     = aws_autoscaling_group.app.target_group_arns == toset([aws_lb_target_group.app[0].arn])
    error_message = "The ASG must register with the ALB target group."
  }
  assert {
    condition     = aws_autoscaling_group.app.health_check_type == "ELB"
    error_message = "Behind the ALB the ASG uses ELB health checks."
  }
  assert {
    condition     = aws_autoscaling_group.app.launch_template[0].id == aws_launch_template.app.id
    error_message = "The ASG must use the launch template."
  }
  assert {
    condition     = aws_autoscaling_group.app.vpc_zone_identifier == toset(aws_subnet.public[*].id)
    error_message = "The app tier spans both public subnets."
  }

  # ingress: world -> ALB (allowed CIDRs, port 80) -> app SG (from ALB only)
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 0
    error_message = "With an ALB, no CIDR may reach the instances directly."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.app_http_alb[0].referenced_security_group_id == aws_security_group.alb[0].id
    error_message = "The instances admit HTTP only from the ALB's security group."
  }
  assert {
    condition = alltrue([for r in aws_vpc_security_group_ingress_rule.alb_http :
      r.from_port == 80 && r.to_port == 80 && r.cidr_ipv4 == "198.51.100.0/24" && r.security_group_id == aws_security_group.alb[0].id
    ]) && length(aws_vpc_security_group_ingress_rule.alb_http) == 1
    error_message = "The ALB admits port 80 from allowed_http_cidrs only."
  }

  # data tier scale path
  assert {
    condition = (
      aws_elasticache_replication_group.this.num_cache_clusters == 2 &&
      aws_elasticache_replication_group.this.automatic_failover_enabled == true &&
      aws_elasticache_replication_group.this.multi_az_enabled == true
    )
    error_message = "cache_replicas = 1 means 2 nodes with automatic failover and Multi-AZ."
  }
  assert {
    condition     = aws_db_instance.this.multi_az == true
    error_message = "db_multi_az = true means a Multi-AZ RDS instance."
  }
  assert {
    condition     = aws_db_instance.this.publicly_accessible == false && aws_db_instance.this.storage_encrypted == true
    error_message = "Scaling must not change RDS privacy or encryption."
  }
  assert {
    condition     = aws_launch_template.app.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required."
  }
  assert {
    condition     = output.url == "http://cachelab-alb-123456789.eu-west-1.elb.amazonaws.com/"
    error_message = "With an ALB the URL is the ALB's DNS name."
  }
}

run "alb_without_cidrs_is_closed" {
  command = plan

  variables {
    allowed_http_cidrs = []
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.alb_http) == 0 && length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 0
    error_message = "With allowed_http_cidrs = [] nothing is reachable from the internet, ALB or not."
  }
}

run "scaled_monitoring" {
  command = plan

  assert {
    condition     = alltrue([for n in ["001", "002"] : alltrue([for a in ["evictions", "engine-cpu", "connections"] : contains(keys(aws_cloudwatch_metric_alarm.metric), "cachelab-cache-${n}-${a}")])])
    error_message = "Node alarms for the primary and the replica."
  }
  assert {
    condition = (
      length(aws_cloudwatch_metric_alarm.alb_5xx) == 1 &&
      aws_cloudwatch_metric_alarm.metric["cachelab-alb-p99"].extended_statistic == "p99" && aws_cloudwatch_metric_alarm.metric["cachelab-alb-p99"].statistic == null &&
      aws_cloudwatch_metric_alarm.metric["cachelab-alb-p99"].metric_name == "TargetResponseTime" &&
      aws_cloudwatch_metric_alarm.metric["cachelab-alb-p99"].dimensions.LoadBalancer == "app/cachelab-alb/0123456789abcdef"
    )
    error_message = "With the ALB: a p99 target response time alarm on the load balancer."
  }
  assert {
    condition     = toset([for q in aws_cloudwatch_metric_alarm.alb_5xx[0].metric_query : q.metric[0].metric_name if length(q.metric) > 0]) == toset(["HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"])
    error_message = "The 5xx alarm adds the targets' and the ALB's own 5xx."
  }
  assert {
    condition     = strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "TargetResponseTime") && strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "HTTPCode_Target_5XX_Count")
    error_message = "The dashboard shows the ALB's 5xx and latency."
  }
  assert {
    condition     = local.db_connections_needed == 200 && local.peak_instances == 4 && tostring(local.bootstrap_env.DB_POOL_SIZE) == "20"
    error_message = "The scaled budget counts the surge: (2 x 2) x 2 x (20 + 4 + 1) = 200, and DB_POOL_SIZE reaches the app."
  }
}
