# Plan-level checks of the load generator in the VPC (enable_loadgen).

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  app_image_tag  = "c-0123456789ab"
  enable_loadgen = true
}

run "loadgen_without_alb" {
  command = plan

  assert {
    condition = (
      output.lab_configuration.metrics.app_group == aws_autoscaling_group.app.name &&
      output.lab_configuration.metrics.db_instance == aws_db_instance.this.identifier &&
      output.lab_configuration.metrics.namespace == aws_cloudwatch_log_metric_filter.cache_results["miss"].metric_transformation[0].namespace
    )
    error_message = "The runs' lab configuration names where CloudWatch keeps their load: the app group, the database, the cache results' namespace."
  }

  assert {
    condition     = length(aws_subnet.loadgen) == 2 && toset(aws_subnet.loadgen[*].cidr_block) == toset(["10.40.30.0/24", "10.40.31.0/24"])
    error_message = "The load generator has its own subnets."
  }
  assert {
    condition     = local.bootstrap_env.RATE_LIMIT_EXEMPT == "10.40.30.0/24,10.40.31.0/24" && local.bootstrap_env.REAL_IP_FROM == ""
    error_message = "nginx exempts exactly the load generator's subnets from the rate limit, and believes no X-Forwarded-For without an ALB."
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.app_http_loadgen[0].referenced_security_group_id == aws_security_group.loadgen[0].id &&
      aws_vpc_security_group_ingress_rule.loadgen_workers[0].referenced_security_group_id == aws_security_group.loadgen[0].id &&
      aws_vpc_security_group_ingress_rule.loadgen_workers[0].from_port == 5557
    )
    error_message = "The instance admits the load generator; the master admits only its workers (5557), nothing from outside."
  }
  assert {
    condition = (
      aws_instance.loadgen_master[0].private_ip == "10.40.30.10" && aws_instance.loadgen_master[0].launch_template[0].id == aws_launch_template.loadgen["master"].id &&
      alltrue([for k, t in aws_launch_template.loadgen : t.metadata_options[0].http_tokens == "required" && t.block_device_mappings[0].ebs[0].encrypted == "true" && t.monitoring[0].enabled]) &&
      aws_autoscaling_group.loadgen_worker[0].desired_capacity == 2 && aws_autoscaling_group.loadgen_worker[0].vpc_zone_identifier == toset(aws_subnet.loadgen[*].id) &&
      local.loadgen_env.MASTER_HOST == "10.40.30.10" && tostring(local.loadgen_env.EXPECT_WORKERS) == "4"
    )
    error_message = "A master at a fixed address (IMDSv2, encrypted) and an Auto Scaling group of workers, one process per vCPU."
  }
  assert {
    condition     = local.loadgen_env.LOCUST_IMAGE == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/app:c-0123456789ab@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" || strcontains(local.loadgen_env.LOCUST_IMAGE, ":c-0123456789ab@sha256:")
    error_message = "The load generator runs the Locust image pushed to ECR, by tag and digest."
  }
  assert {
    condition     = contains(keys(data.aws_ecr_image.this), "locust")
    error_message = "With enable_loadgen the plan looks the Locust image up in ECR."
  }
  assert {
    condition = (
      one([for r in aws_s3_bucket_server_side_encryption_configuration.loadgen[0].rule : r.apply_server_side_encryption_by_default[0].sse_algorithm]) == "AES256" &&
      aws_s3_bucket_public_access_block.loadgen[0].block_public_acls && aws_s3_bucket_public_access_block.loadgen[0].restrict_public_buckets &&
      aws_s3_bucket_lifecycle_configuration.loadgen[0].rule[0].expiration[0].days == 30 &&
      one([for st in data.aws_iam_policy_document.loadgen_bucket[0].statement : st.effect if st.sid == "TlsOnly"]) == "Deny"
    )
    error_message = "The results bucket is encrypted, private, TLS only and expires its objects."
  }
  assert {
    condition = (
      toset(flatten([for st in data.aws_iam_policy_document.loadgen[0].statement : st.actions if st.sid == "WriteResults"])) == toset(["s3:PutObject"]) &&
      toset(flatten([for st in data.aws_iam_policy_document.loadgen[0].statement : st.resources if st.sid == "WriteResults"])) == toset(["${aws_s3_bucket.loadgen[0].arn}/runs/*"])
    )
    error_message = "The load generator may only write results under runs/."
  }
  assert {
    condition = (
      strcontains(output.loadgen_ui_command, "AWS-StartPortForwardingSession") && strcontains(output.loadgen_ui_command, "portNumber=8089") &&
      strcontains(output.loadgen_run_command, "aws ssm send-command") && strcontains(output.loadgen_run_command, "/usr/local/bin/loadgen run") &&
      strcontains(output.loadgen_openloop_command, "/usr/local/bin/loadgen openloop 30 ") &&
      startswith(output.loadgen_fetch_command, "python -m loadtest.loadgen fetch")
    )
    error_message = "One command each: the UI (port forwarding), a headless run (SSM), fetching the report."
  }
  assert {
    condition     = length(local.loadgen_user_data["master"]) <= 16384 && length(local.loadgen_user_data["worker"]) <= 16384
    error_message = "The load generator's user data fits EC2's 16 KB."
  }
}

run "loadgen_behind_the_alb" {
  command = plan

  variables {
    enable_alb        = true
    db_instance_class = "db.t4g.small"
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.alb_from_loadgen[0].referenced_security_group_id == aws_security_group.loadgen[0].id && aws_vpc_security_group_ingress_rule.alb_from_loadgen[0].from_port == 80
    error_message = "The ALB admits the load generator (to its private addresses, from inside the VPC)."
  }
  assert {
    condition     = local.loadgen_env.ALB_ENI_DESCRIPTION == "ELB app/cachelab-alb/0123456789abcdef" && local.bootstrap_env.REAL_IP_FROM == "10.40.20.0/24,10.40.21.0/24"
    error_message = "The load generator finds the ALB's private addresses; nginx believes X-Forwarded-For from the ALB's subnets only."
  }
}

run "loadgen_off_creates_nothing" {
  command = plan

  variables {
    enable_loadgen = false
  }

  assert {
    condition     = length(aws_subnet.loadgen) == 0 && length(aws_instance.loadgen_master) == 0 && length(aws_s3_bucket.loadgen) == 0 && output.loadgen_run_command == null && output.loadgen_openloop_command == null
    error_message = "enable_loadgen = false creates no load generator."
  }
}
