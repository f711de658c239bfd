# Variables that would plan cleanly and then break the boot (or the ids AWS
# accepts) are refused at plan time, naming the variable.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  app_image_tag = "c-0123456789ab"
}

run "name_with_a_double_hyphen_is_refused" {
  command = plan
  variables {
    name = "cache--lab"
  }
  expect_failures = [var.name]
}

run "name_with_a_trailing_hyphen_is_refused" {
  command = plan
  variables {
    name = "cachelab-"
  }
  expect_failures = [var.name]
}

run "arm64_instance_type_is_refused" {
  command = plan
  variables {
    instance_type = "t4g.small"
  }
  override_data {
    target = data.aws_ec2_instance_type.app
    values = { supported_architectures = ["arm64"], default_vcpus = 2 }
  }
  expect_failures = [aws_launch_template.app]
}

run "slow_query_at_the_lock_wait_is_refused" {
  command = plan
  variables {
    slow_query_seconds = 15
  }
  # the app refuses SLOW_QUERY_SECONDS >= CACHE_LOCK_WAIT_SECONDS (15 by default)
  expect_failures = [aws_launch_template.app]
}

run "slow_query_with_a_longer_lock_wait_is_accepted" {
  command = plan
  variables {
    slow_query_seconds = 20
    app_settings       = { CACHE_LOCK_WAIT_SECONDS = "25" }
  }
  assert {
    condition     = local.bootstrap_env.SLOW_QUERY_SECONDS == "20" && local.bootstrap_env.CACHE_LOCK_WAIT_SECONDS == "25"
    error_message = "The lock wait the app needs for a longer slow query reaches it."
  }
}

run "slow_query_beyond_the_statement_timeout_is_refused" {
  command = plan
  variables {
    slow_query_seconds = 40
    app_settings       = { CACHE_LOCK_WAIT_SECONDS = "60" }
  }
  expect_failures = [aws_launch_template.app]
}

run "app_settings_of_unknown_names_are_refused" {
  command = plan
  variables {
    app_settings = { REDIS_SOCKET_TIMEOUT = "100" }
  }
  expect_failures = [var.app_settings]
}

run "app_settings_cannot_override_what_terraform_sets" {
  command = plan
  variables {
    app_settings = { REDIS_URL = "redis://elsewhere:6379/0" }
  }
  expect_failures = [var.app_settings]
}

run "app_settings_values_that_env_cannot_carry_are_refused" {
  command = plan
  variables {
    app_settings = { LOG_LEVEL = "INFO'; rm -rf /" }
  }
  expect_failures = [var.app_settings]
}

run "every_engine_setting_reaches_the_app" {
  command = plan
  variables {
    name = "cache-lab-2" # single hyphens are fine
    app_settings = {
      REDIS_SOCKET_TIMEOUT_MS = "120"
      CACHE_TRACKING          = "off"
      CACHE_NAMESPACE         = "lab2"
      ITEM_COUNT              = "500"
    }
  }
  assert {
    condition     = aws_elasticache_replication_group.this.replication_group_id == "cache-lab-2-cache" && aws_db_instance.this.identifier == "cache-lab-2-db"
    error_message = "The name prefixes the ElastiCache and RDS ids."
  }
  assert {
    condition     = startswith(aws_elasticache_user.app.access_string, "on ~lab2:* -@all ")
    error_message = "The cache user's keys follow CACHE_NAMESPACE."
  }
  assert {
    condition = (
      local.bootstrap_env.REDIS_SOCKET_TIMEOUT_MS == "120" && local.bootstrap_env.CACHE_TRACKING == "off" &&
      contains(split(",", local.bootstrap_env.APP_SETTINGS), "REDIS_SOCKET_TIMEOUT_MS") &&
      !contains(keys(local.bootstrap_env), "ITEM_COUNT") &&
      contains([for e in jsondecode(aws_ecs_task_definition.db_init.container_definitions)[0].environment : "${e.name}=${e.value}"], "ITEM_COUNT=500")
    )
    error_message = "App settings go to the instances through APP_SETTINGS; db-init's (ITEM_COUNT) to the db-init task."
  }
}

run "cache_ttl_the_app_refuses_is_refused" {
  command = plan
  variables {
    cache_ttl_seconds = 0
  }
  expect_failures = [var.cache_ttl_seconds]
}

run "log_retention_cloudwatch_refuses_is_refused" {
  command = plan
  variables {
    log_retention_days = 10
  }
  expect_failures = [var.log_retention_days]
}

run "reserved_master_user_name_is_refused" {
  command = plan
  variables {
    db_username = "postgres"
  }
  expect_failures = [var.db_username]
}

run "vpc_too_small_for_the_subnets_is_refused" {
  command = plan
  variables {
    vpc_cidr = "10.40.0.0/24"
  }
  expect_failures = [var.vpc_cidr]
}

# --- the write API's token never travels in clear ---------------------------------
run "write_api_with_open_http_is_refused" {
  command = plan
  variables {
    enable_write_api   = true
    allowed_http_cidrs = ["198.51.100.0/24"]
  }
  expect_failures = [aws_autoscaling_group.app]
}

run "write_api_behind_https_closes_port_80" {
  command = plan
  variables {
    enable_write_api   = true
    enable_alb         = true
    db_instance_class  = "db.t4g.small" # an instance refresh doubles the single instance
    certificate_arn    = "arn:aws:acm:eu-west-1:123456789012:certificate/0123abcd-0123-4567-89ab-0123456789ab"
    allowed_http_cidrs = ["198.51.100.0/24"]
  }
  assert {
    condition = (
      length(aws_vpc_security_group_ingress_rule.alb_http) == 0 &&
      length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 0 &&
      alltrue([for r in aws_vpc_security_group_ingress_rule.alb_https : r.from_port == 443 && r.to_port == 443 && r.cidr_ipv4 == "198.51.100.0/24"]) &&
      length(aws_vpc_security_group_ingress_rule.alb_https) == 1
    )
    error_message = "With the write API on, allowed_http_cidrs reach HTTPS 443 only; port 80 is not opened."
  }
  assert {
    condition = (
      aws_lb_listener.https[0].protocol == "HTTPS" && aws_lb_listener.https[0].certificate_arn == "arn:aws:acm:eu-west-1:123456789012:certificate/0123abcd-0123-4567-89ab-0123456789ab" &&
      startswith(aws_lb_listener.https[0].ssl_policy, "ELBSecurityPolicy-TLS13") &&
      aws_lb_listener.http[0].default_action[0].type == "redirect" &&
      output.url == "https://cachelab-alb-123456789.eu-west-1.elb.amazonaws.com/"
    )
    error_message = "The certificate gives an HTTPS listener (TLS 1.2+), HTTP only redirects, the URL is https://."
  }
}

run "certificate_without_alb_is_refused" {
  command = plan
  variables {
    certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/0123abcd-0123-4567-89ab-0123456789ab"
  }
  expect_failures = [aws_autoscaling_group.app]
}

run "malformed_certificate_arn_is_refused" {
  command = plan
  variables {
    enable_alb        = true
    db_instance_class = "db.t4g.small"
    certificate_arn   = "my-cert"
  }
  expect_failures = [var.certificate_arn]
}

run "scaling_without_alb_is_refused" {
  command = plan
  variables {
    app_max_instance_count = 3
  }
  expect_failures = [aws_autoscaling_group.app]
}

run "compose_older_than_2_24_4_is_refused" {
  command = plan
  variables {
    compose_version = "2.24.3"
  }
  expect_failures = [var.compose_version]
}

run "compose_2_24_4_and_later_are_accepted" {
  command = plan
  variables {
    compose_version = "2.24.4"
  }
}

run "a_fractional_rate_limit_is_refused" {
  command = plan
  variables {
    rate_limit_rps = 2.5
  }
  expect_failures = [var.rate_limit_rps]
}

run "a_burst_above_what_nginx_accepts_is_refused" {
  command = plan
  variables {
    rate_limit_burst = 1000001
  }
  expect_failures = [var.rate_limit_burst]
}
