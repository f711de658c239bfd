# Plan-level checks of the default (cheap) deployment, fully offline:
# the aws provider is mocked, nothing is created.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  app_image_tag = "c-0123456789ab"
}

run "default_plan_is_private_and_encrypted" {
  command = plan

  # --- RDS -------------------------------------------------------------------
  assert {
    condition     = aws_db_instance.this.publicly_accessible == false
    error_message = "RDS must not be publicly accessible."
  }
  assert {
    condition     = aws_db_instance.this.storage_encrypted == true
    error_message = "RDS storage must be encrypted."
  }
  assert {
    condition     = aws_db_instance.this.manage_master_user_password == true && aws_db_instance.this.password == null
    error_message = "RDS must use a Secrets Manager managed master password (no password in Terraform)."
  }
  assert {
    condition     = startswith(aws_db_instance.this.engine_version, "16") || startswith(aws_db_instance.this.engine_version, "15")
    error_message = "RDS must run PostgreSQL 15 or 16."
  }
  assert {
    condition     = aws_db_instance.this.multi_az == false && aws_db_instance.this.instance_class == "db.t4g.micro"
    error_message = "Default RDS must be a single-AZ db.t4g.micro."
  }
  assert {
    condition     = aws_db_instance.this.deletion_protection == false && aws_db_instance.this.skip_final_snapshot == true
    error_message = "Lab defaults: no deletion protection, skip final snapshot."
  }
  assert {
    condition     = aws_db_instance.this.ca_cert_identifier == "rds-ca-rsa2048-g1"
    error_message = "RDS must use the rds-ca-rsa2048-g1 CA (in the regional bundle that db-init and the instances download)."
  }
  assert {
    condition = (
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "track_functions=pl") &&
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "rds.force_ssl=1")
    )
    error_message = "The DB parameter group must set track_functions = pl and rds.force_ssl = 1."
  }
  assert {
    condition = (
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "shared_preload_libraries=pg_stat_statements") &&
      contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "pg_stat_statements.track=top")
    )
    error_message = "The DB parameter group must preload pg_stat_statements (track = top)."
  }
  assert {
    condition     = aws_db_instance.this.parameter_group_name == aws_db_parameter_group.this.name
    error_message = "RDS must use the project's parameter group."
  }
  assert {
    condition     = aws_db_subnet_group.this.subnet_ids == toset(aws_subnet.private[*].id)
    error_message = "RDS must live in the private subnets."
  }
  assert {
    condition     = aws_db_instance.this.vpc_security_group_ids == toset([aws_security_group.db.id])
    error_message = "RDS must use only the db security group."
  }

  # --- ElastiCache -------------------------------------------------------------
  assert {
    condition     = aws_elasticache_replication_group.this.transit_encryption_enabled == true
    error_message = "ElastiCache must encrypt in transit."
  }
  assert {
    condition     = tostring(aws_elasticache_replication_group.this.at_rest_encryption_enabled) == "true"
    error_message = "ElastiCache must encrypt at rest."
  }
  # --- ElastiCache RBAC: the app's own user, the default user off ---------------
  assert {
    condition     = aws_elasticache_replication_group.this.auth_token == null && aws_elasticache_replication_group.this.user_group_ids == toset([aws_elasticache_user_group.this.id])
    error_message = "ElastiCache access must be RBAC (the project's user group), not a shared AUTH token."
  }
  assert {
    condition     = toset(aws_elasticache_user_group.this.user_ids) == toset([aws_elasticache_user.default.user_id, aws_elasticache_user.app.user_id])
    error_message = "The user group holds the (disabled) default user and the app's user only."
  }
  assert {
    condition     = aws_elasticache_user.default.user_name == "default" && startswith(aws_elasticache_user.default.access_string, "off ") && strcontains(aws_elasticache_user.default.access_string, "-@all")
    error_message = "The default user every group must hold is switched off with no command."
  }
  assert {
    condition     = startswith(aws_elasticache_user.app.access_string, "on ~lab:* -@all +")
    error_message = "The app's user may touch only its namespace's keys (~lab:*), starting from no command at all."
  }
  assert {
    condition = alltrue([for c in ["get", "set", "pttl", "unlink", "evalsha", "eval", "script|load", "scan", "client|tracking", "hello", "info", "role", "ping"] :
    contains(split(" ", aws_elasticache_user.app.access_string), "+${c}")])
    error_message = "The app's user needs GET/SET/PTTL/UNLINK/EVALSHA/EVAL/SCRIPT LOAD/SCAN and CLIENT TRACKING/HELLO/INFO/ROLE/PING."
  }
  assert {
    condition = alltrue([for c in ["flushall", "flushdb", "keys", "config", "@all", "@admin", "@dangerous", "debug", "shutdown", "client", "cluster|slots"] :
    !contains(split(" ", aws_elasticache_user.app.access_string), "+${c}")])
    error_message = "The app's user must not get FLUSHALL, KEYS, CONFIG, whole categories, all of CLIENT, or cluster commands without cluster mode."
  }
  assert {
    condition     = data.aws_secretsmanager_secret_version.current["cache_auth"].version_stage == "AWSCURRENT" && data.aws_secretsmanager_secret_version.current["cache_auth"].secret_id == aws_secretsmanager_secret_version.this["cache_auth"].secret_id
    error_message = "The cache user's passwords come from the cache secret's current version, read at every plan (so a rotation reaches the cluster), not from the first stored version."
  }
  assert {
    condition     = data.aws_secretsmanager_random_password.this["cache_auth"].exclude_punctuation == true
    error_message = "The cache password must be generated without punctuation."
  }
  assert {
    condition = (
      aws_elasticache_replication_group.this.num_cache_clusters == 1 &&
      aws_elasticache_replication_group.this.automatic_failover_enabled == false &&
      aws_elasticache_replication_group.this.node_type == "cache.t4g.micro"
    )
    error_message = "Default cache must be a single cache.t4g.micro node."
  }
  assert {
    condition     = aws_elasticache_subnet_group.this.subnet_ids == toset(aws_subnet.private[*].id)
    error_message = "ElastiCache must live in the private subnets."
  }
  assert {
    condition     = aws_elasticache_replication_group.this.security_group_ids == toset([aws_security_group.cache.id])
    error_message = "ElastiCache must use only the cache security group."
  }

  # --- Data-tier security groups admit only the app SG ------------------------
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.db_from_app.referenced_security_group_id == aws_security_group.app.id &&
      aws_vpc_security_group_ingress_rule.db_from_app.security_group_id == aws_security_group.db.id &&
      aws_vpc_security_group_ingress_rule.db_from_app.from_port == 5432 &&
      aws_vpc_security_group_ingress_rule.db_from_app.to_port == 5432 &&
      aws_vpc_security_group_ingress_rule.db_from_app.cidr_ipv4 == null &&
      aws_vpc_security_group_ingress_rule.db_from_app.cidr_ipv6 == null &&
      aws_vpc_security_group_ingress_rule.db_from_app.prefix_list_id == null
    )
    error_message = "5432 must be admitted only from the app security group."
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.cache_from_app.referenced_security_group_id == aws_security_group.app.id &&
      aws_vpc_security_group_ingress_rule.cache_from_app.security_group_id == aws_security_group.cache.id &&
      aws_vpc_security_group_ingress_rule.cache_from_app.from_port == 6379 &&
      aws_vpc_security_group_ingress_rule.cache_from_app.to_port == 6379 &&
      aws_vpc_security_group_ingress_rule.cache_from_app.cidr_ipv4 == null &&
      aws_vpc_security_group_ingress_rule.cache_from_app.cidr_ipv6 == null &&
      aws_vpc_security_group_ingress_rule.cache_from_app.prefix_list_id == null
    )
    error_message = "6379 must be admitted only from the app security group."
  }

  # --- Nothing open to the internet by default ---------------------------------
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 0 && length(aws_vpc_security_group_ingress_rule.alb_http) == 0
    error_message = "With allowed_http_cidrs = [] (default) no CIDR may reach the app tier."
  }
  assert {
    condition     = length(aws_lb.app) == 0 && length(aws_security_group.alb) == 0 && length(aws_vpc_security_group_ingress_rule.app_http_alb) == 0
    error_message = "The default deployment has no ALB."
  }

  # --- Network -----------------------------------------------------------------
  assert {
    condition     = length(aws_subnet.public) == 2 && length(aws_subnet.private) == 2
    error_message = "Expected 2 public and 2 private subnets."
  }
  assert {
    condition     = length(toset(aws_subnet.private[*].availability_zone)) == 2 && length(toset(aws_subnet.public[*].availability_zone)) == 2
    error_message = "Subnets must span 2 availability zones."
  }
  assert {
    condition     = alltrue([for s in aws_subnet.private : s.map_public_ip_on_launch == false])
    error_message = "Private subnets must not assign public IPs."
  }
  assert {
    condition     = aws_route.public_internet.route_table_id == aws_route_table.public.id
    error_message = "Only the public route table may route to the internet gateway."
  }
  assert {
    condition     = alltrue([for a in aws_route_table_association.private : a.route_table_id == aws_route_table.private.id])
    error_message = "Private subnets must use the private route table (no internet route)."
  }

  # --- EC2 app tier ------------------------------------------------------------
  assert {
    condition     = aws_launch_template.app.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required."
  }
  assert {
    condition     = aws_launch_template.app.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "IMDS hop limit must be 1 (containers must not reach the instance credentials)."
  }
  assert {
    condition     = aws_launch_template.app.key_name == null
    error_message = "No SSH key pair."
  }
  assert {
    condition     = aws_launch_template.app.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "The root volume must be encrypted."
  }
  assert {
    condition     = aws_launch_template.app.image_id == "ami-0123456789abcdef0"
    error_message = "The AMI must come from the SSM public parameter."
  }
  assert {
    condition     = data.aws_ssm_parameter.al2023_ami.name == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    error_message = "The AMI must be Amazon Linux 2023 from the SSM public parameter."
  }
  assert {
    condition = (
      aws_autoscaling_group.app.min_size == 1 &&
      aws_autoscaling_group.app.max_size == 1 &&
      aws_autoscaling_group.app.desired_capacity == 1 &&
      length(aws_autoscaling_group.app.target_group_arns) == 0
    )
    error_message = "Default: an Auto Scaling group of exactly one instance without a target group."
  }
  assert {
    condition     = aws_launch_template.app.instance_type == "t3.small"
    error_message = "Default instance type is t3.small."
  }
  assert {
    condition     = length(aws_launch_template.app.user_data) <= 16384
    error_message = "User data must fit the 16 KB limit."
  }
  assert {
    condition     = aws_iam_role_policy_attachment.ssm_core.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "Session Manager needs AmazonSSMManagedInstanceCore."
  }

  # --- ECR -----------------------------------------------------------------------
  assert {
    condition     = alltrue([for r in aws_ecr_repository.this : r.image_tag_mutability == "IMMUTABLE" && r.image_scanning_configuration[0].scan_on_push && r.force_delete])
    error_message = "ECR repositories must be immutable, scan on push and be force-deletable."
  }
  assert {
    condition     = toset(keys(aws_ecr_repository.this)) == toset(["app", "nginx", "locust"]) && toset(keys(data.aws_ecr_image.this)) == toset(["app", "nginx"])
    error_message = "Expected ECR repositories for app, nginx and locust; without enable_loadgen the plan looks up the app and nginx images only."
  }

  # --- Outputs -------------------------------------------------------------------
  assert {
    condition     = startswith(output.session_manager_command, "aws ssm start-session")
    error_message = "session_manager_command must be an aws ssm start-session command."
  }
  assert {
    condition     = output.rds_endpoint != "" && output.redis_primary_endpoint != ""
    error_message = "Endpoints must be output."
  }
}

run "http_cidr_opens_only_port_80_on_the_instance" {
  command = plan

  variables {
    allowed_http_cidrs = ["198.51.100.0/24", "203.0.113.7/32"]
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 2
    error_message = "Each allowed CIDR gets one rule on the app SG."
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.app_http_cidr : r.from_port == 80 && r.to_port == 80 && r.ip_protocol == "tcp"])
    error_message = "CIDR rules may open only TCP 80."
  }
  assert {
    condition     = toset([for r in aws_vpc_security_group_ingress_rule.app_http_cidr : r.cidr_ipv4]) == toset(["198.51.100.0/24", "203.0.113.7/32"])
    error_message = "CIDR rules must be exactly allowed_http_cidrs."
  }
}

run "several_instances_need_an_alb" {
  command = plan

  variables {
    app_instance_count = 2
    enable_alb         = false
  }

  expect_failures = [aws_autoscaling_group.app]
}

run "invalid_cache_strategy_is_rejected" {
  command = plan

  variables {
    cache_strategy = "write-behind"
  }

  expect_failures = [var.cache_strategy]
}

run "boot_path_and_app_role" {
  command = plan

  # The app's own database role: its password is a separate generated secret,
  # the instance may read exactly the runtime secrets, and the bootstrap gets
  # every setting it needs but no secret.
  assert {
    condition     = data.aws_secretsmanager_random_password.this["app_db"].exclude_punctuation == true && data.aws_secretsmanager_random_password.this["app_db"].password_length >= 32
    error_message = "APP_DB_PASSWORD must be generated by Secrets Manager, alphanumeric, 32+ characters."
  }
  assert {
    condition     = aws_secretsmanager_secret_version.this["app_db"].secret_id == aws_secretsmanager_secret.this["app_db"].id
    error_message = "APP_DB_PASSWORD must be stored in its own secret."
  }
  assert {
    condition = toset(flatten([for st in data.aws_iam_policy_document.app.statement : st.resources if st.sid == "ReadRuntimeSecrets"])) == toset([
      aws_secretsmanager_secret.this["app_db"].arn,
      aws_secretsmanager_secret.this["cache_auth"].arn,
    ])
    error_message = "The instance role may read exactly the app's database and cache secrets (no write API secret by default)."
  }
  assert {
    condition     = !contains(flatten([for st in data.aws_iam_policy_document.app.statement : st.resources]), aws_db_instance.this.master_user_secret[0].secret_arn) && !contains(keys(local.bootstrap_env), "DB_MASTER_SECRET_ARN")
    error_message = "The app instances never get the RDS master secret (only the db-init task reads it)."
  }
  assert {
    condition = toset(flatten([for st in data.aws_iam_policy_document.db_init_execution.statement : st.resources if st.sid == "DatabaseSecrets"])) == toset([
      aws_db_instance.this.master_user_secret[0].secret_arn,
      aws_secretsmanager_secret.this["app_db"].arn,
    ])
    error_message = "The db-init task (only it) reads the master secret, and the app database secret whose password it sets."
  }
  assert {
    condition = (
      jsondecode(aws_ecs_task_definition.db_init.container_definitions)[0].command == ["cachelab", "db-init"] &&
      toset([for e in jsondecode(aws_ecs_task_definition.db_init.container_definitions)[0].secrets : "${e.name}=${e.valueFrom}"]) == toset([
        "DB_OWNER_SECRET=${aws_db_instance.this.master_user_secret[0].secret_arn}",
        "APP_DB_PASSWORD=${aws_secretsmanager_secret.this["app_db"].arn}",
      ]) &&
      jsondecode(aws_ecs_task_definition.db_init.container_definitions)[0].readonlyRootFilesystem == true &&
      aws_ecs_task_definition.db_init.requires_compatibilities == toset(["FARGATE"])
    )
    error_message = "db-init is a one-shot Fargate task of the app image, with the master secret injected by ECS at start (its current version), on a read-only root."
  }
  assert {
    condition     = toset([for e in jsondecode(aws_ecs_task_definition.db_init.container_definitions)[0].environment : e.name]) == toset(["DB_HOST", "DB_PORT", "DB_NAME", "DB_CA_URL", "APP_DB_USER", "SLOW_QUERY_SECONDS"])
    error_message = "db-init gets the endpoint, the RDS CA bundle's URL, the app role and the lab's settings."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.db_from_db_init.referenced_security_group_id == aws_security_group.db_init.id && aws_vpc_security_group_ingress_rule.db_from_db_init.security_group_id == aws_security_group.db.id
    error_message = "RDS admits the db-init task's security group."
  }
  assert {
    condition     = !contains(keys(aws_secretsmanager_secret.this), "write_api") && !contains(keys(local.bootstrap_env), "WRITE_API_SECRET_ARN")
    error_message = "Without enable_write_api there is no WRITE_API_TOKEN secret and the bootstrap sets no WRITE_API_TOKEN."
  }
  assert {
    condition = (
      local.bootstrap_env.APP_DB_SECRET_ARN == aws_secretsmanager_secret.this["app_db"].arn &&
      local.bootstrap_env.CACHE_AUTH_SECRET_ARN == aws_secretsmanager_secret.this["cache_auth"].arn &&
      local.bootstrap_env.CACHE_USER == "cachelab-app" &&
      local.bootstrap_env.APP_DB_USER == "cachelab_app" &&
      tostring(local.bootstrap_env.GUNICORN_WORKERS) == "2" && tostring(local.bootstrap_env.DB_POOL_SIZE) == "20" &&
      local.bootstrap_env.HTTP_BIND == "0.0.0.0" && tostring(local.bootstrap_env.HTTP_PORT) == "80" &&
      local.bootstrap_env.RDS_CA_URL == "https://truststore.pki.rds.amazonaws.com/eu-west-1/eu-west-1-bundle.pem"
    )
    error_message = "bootstrap.env must name the secrets, the app role, the pool settings, the bind address and the RDS CA."
  }
  assert {
    condition     = alltrue([for v in values(local.bootstrap_env) : !strcontains(lower(tostring(v)), "mockauthtoken")])
    error_message = "No secret value may be rendered into the user data."
  }
  assert {
    condition = (
      strcontains(local.user_data, "systemctl enable cachelab.service") &&
      strcontains(local.user_data, "ExecStart=/opt/cachelab/bootstrap.sh") &&
      strcontains(local.user_data, file("${path.module}/host/bootstrap.sh"))
    )
    error_message = "The user data must install host/bootstrap.sh as cachelab.service (run at every boot)."
  }
  assert {
    condition     = local.app_image == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/app:c-0123456789ab@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    error_message = "The instances must run the pushed image by tag and digest (read from ECR)."
  }
  assert {
    condition     = data.aws_ecr_image.this["app"].image_tag == "c-0123456789ab" && data.aws_ecr_image.this["nginx"].image_tag == "c-0123456789ab"
    error_message = "The plan must look the image tag up in ECR (so a missing image stops it)."
  }
  assert {
    condition     = aws_autoscaling_group.app.min_elb_capacity == null && aws_autoscaling_group.app.wait_for_capacity_timeout == "10m"
    error_message = "The ASG must not wait for ELB health (a boot failure would become a long apply timeout)."
  }
  assert {
    condition = (
      strcontains(local.user_data, "Restart=on-failure") &&
      strcontains(local.user_data, "OnFailure=cachelab-unhealthy.service") &&
      strcontains(local.user_data, "ExecStart=/opt/cachelab/bootstrap.sh report-unhealthy") &&
      strcontains(local.user_data, "systemctl start --no-block cachelab.service")
    )
    error_message = "A failed boot is retried by systemd and, once it gives up, reported to the Auto Scaling group (report-unhealthy)."
  }
  assert {
    condition     = contains(flatten([for st in data.aws_iam_policy_document.app.statement : st.actions if st.sid == "ReportOwnHealth"]), "autoscaling:SetInstanceHealth")
    error_message = "The instances may report their own health to their group."
  }
  assert {
    condition     = length(aws_eip.app) == 1 && local.bootstrap_env.EIP_ALLOCATION_ID == aws_eip.app[0].allocation_id && output.url == "http://203.0.113.10/"
    error_message = "Without an ALB the URL is an Elastic IP, which the booted instance takes over (stable through replacements)."
  }
  assert {
    condition     = local.bootstrap_env.APP_SETTINGS == "CACHE_STRATEGY,CACHE_TTL_SECONDS,DB_POOL_SIZE,GUNICORN_WORKERS,SLOW_QUERY_SECONDS" && local.bootstrap_env.CACHE_TTL_SECONDS == "10"
    error_message = "Every app setting reaches the bootstrap from one list (APP_SETTINGS)."
  }
  assert {
    condition     = local.bootstrap_env.REAL_IP_FROM == "" && local.bootstrap_env.RATE_LIMIT_EXEMPT == ""
    error_message = "Without ALB and load generator nginx trusts no X-Forwarded-For and exempts no one."
  }
  assert {
    condition = (
      aws_elasticache_replication_group.this.cluster_mode == "disabled" && aws_elasticache_replication_group.this.num_cache_clusters == 1 &&
      aws_elasticache_replication_group.this.parameter_group_name == "default.valkey8" &&
      local.bootstrap_env.REDIS_HOST == "master.cachelab-cache.abcdef.euw1.cache.amazonaws.com" && !contains(keys(local.bootstrap_env), "REDIS_CLUSTER")
    )
    error_message = "Without cluster mode: one node group, the primary endpoint, no REDIS_CLUSTER."
  }
  assert {
    condition     = local.db_connections_needed == 50 && local.db_connections_allowed == 67 && contains([for p in aws_db_parameter_group.this.parameter : "${p.name}=${p.value}"], "max_connections=75")
    error_message = "Default budget: 1 x 2 x (20 + 4 control + 1) = 50 connections of 67 allowed by max_connections = 75 in the parameter group on db.t4g.micro."
  }
}

run "monitoring_default" {
  command = plan

  assert {
    condition     = toset(keys(aws_cloudwatch_log_metric_filter.cache_results)) == toset(["hit", "stale", "miss", "collapsed", "bypass", "overloaded"])
    error_message = "One log metric filter per cache result of the app's summary line."
  }
  assert {
    condition = alltrue([for k, f in aws_cloudwatch_log_metric_filter.cache_results :
      f.pattern == "{ $.event = \"cache_summary\" }" && f.metric_transformation[0].value == "$.${k}" &&
      f.log_group_name == aws_cloudwatch_log_group.containers.name
    ])
    error_message = "The filters must match the cache_summary JSON lines of the container log group and take the counts from them."
  }
  assert {
    condition     = aws_cloudwatch_log_metric_filter.cache_results["hit"].metric_transformation[0].name == "CacheHit" && aws_cloudwatch_log_metric_filter.cache_results["miss"].metric_transformation[0].name == "CacheMiss" && aws_cloudwatch_log_metric_filter.cache_results["stale"].metric_transformation[0].name == "CacheStale"
    error_message = "HIT/MISS/STALE become CacheHit/CacheMiss/CacheStale."
  }
  assert {
    condition     = strcontains(one([for q in aws_cloudwatch_metric_alarm.app_cache_hit_rate.metric_query : q.expression if q.id == "rate"]), "(hit + stale) / total") && aws_cloudwatch_metric_alarm.app_cache_hit_rate.threshold == 80
    error_message = "The hit-rate alarm divides hit + stale by all lookups and fires below 80%."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.metric["cachelab-cache-001-evictions"].metric_name == "Evictions" && aws_cloudwatch_metric_alarm.metric["cachelab-cache-001-evictions"].dimensions.CacheClusterId == "cachelab-cache-001"
    error_message = "An evictions alarm on the cache node."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.metric["cachelab-cache-001-engine-cpu"].metric_name == "EngineCPUUtilization" && aws_cloudwatch_metric_alarm.metric["cachelab-cache-001-connections"].metric_name == "CurrConnections"
    error_message = "Engine CPU and connection alarms per cache node."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.metric["cachelab-db-connections"].metric_name == "DatabaseConnections" && aws_cloudwatch_metric_alarm.metric["cachelab-db-connections"].threshold == 67 && aws_cloudwatch_metric_alarm.metric["cachelab-db-cpu"].metric_name == "CPUUtilization"
    error_message = "RDS connection (at the checked budget) and CPU alarms."
  }
  assert {
    condition = length(aws_cloudwatch_metric_alarm.alb_5xx) == 0 && toset(keys(aws_cloudwatch_metric_alarm.metric)) == toset([
      "cachelab-app-down", "cachelab-app-status-check", "cachelab-app-overloaded",
      "cachelab-cache-001-evictions", "cachelab-cache-001-engine-cpu", "cachelab-cache-001-connections", "cachelab-cache-001-cpu-credits",
      "cachelab-db-connections", "cachelab-db-cpu", "cachelab-db-free-storage", "cachelab-db-cpu-credits",
    ])
    error_message = "App (heartbeat, status checks, overloaded), node (with CPU credits of the burstable node) and database (with free storage and CPU credits) alarms; no ALB or replication-lag alarms without an ALB or a replica."
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.metric["cachelab-app-down"].treat_missing_data == "breaching" &&
      aws_cloudwatch_metric_alarm.metric["cachelab-app-down"].comparison_operator == "LessThanThreshold" &&
      aws_cloudwatch_metric_alarm.metric["cachelab-app-down"].metric_name == "StackHeartbeat" &&
      aws_cloudwatch_metric_alarm.metric["cachelab-app-down"].dimensions.AutoScalingGroupName == "cachelab-app"
    )
    error_message = "A dead app (no heartbeat from any instance) must read as an outage: missing data breaches."
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.app_cache_hit_rate.treat_missing_data == "notBreaching" && aws_cloudwatch_metric_alarm.metric["cachelab-app-overloaded"].treat_missing_data == "notBreaching"
    error_message = "Rates of traffic (hit rate, overloaded) do not alarm on an idle lab."
  }
  assert {
    condition = (
      aws_cloudwatch_metric_alarm.metric["cachelab-app-overloaded"].metric_name == "CacheOverloaded" && aws_cloudwatch_metric_alarm.metric["cachelab-app-overloaded"].threshold == 10 &&
      aws_cloudwatch_metric_alarm.metric["cachelab-db-free-storage"].comparison_operator == "LessThanThreshold" && aws_cloudwatch_metric_alarm.metric["cachelab-db-free-storage"].threshold == 2 * 1073741824 &&
      aws_cloudwatch_metric_alarm.metric["cachelab-cache-001-cpu-credits"].metric_name == "CPUCreditBalance" && aws_cloudwatch_metric_alarm.metric["cachelab-db-cpu-credits"].comparison_operator == "LessThanThreshold" &&
      aws_cloudwatch_metric_alarm.metric["cachelab-app-status-check"].metric_name == "StatusCheckFailed"
    )
    error_message = "The 503 overloaded rate, free storage, CPU credits and status checks each have their alarm."
  }
  assert {
    condition     = strcontains(local.user_data, "ExecStart=/opt/cachelab/bootstrap.sh heartbeat") && strcontains(local.user_data, "OnUnitActiveSec=1min") && contains(flatten([for st in data.aws_iam_policy_document.app.statement : st.actions if st.sid == "Heartbeat"]), "cloudwatch:PutMetricData")
    error_message = "Every instance reports its heartbeat each minute."
  }
  assert {
    condition     = strcontains(file("${path.module}/compose.aws.yaml"), "mode: non-blocking")
    error_message = "awslogs must not block the app when CloudWatch is slow."
  }
  assert {
    condition = alltrue([for t in ["CacheHitRate", "Evictions", "EngineCPUUtilization", "CurrConnections", "DatabaseConnections", "CPUUtilization", "CacheHit", "CacheMiss", "CacheStale"] :
    strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "\"${t}\"")]) && !strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "ApplicationELB")
    error_message = "The dashboard shows the cache, database and app metrics (no ALB widgets without an ALB)."
  }
}

run "write_api_secret_when_enabled" {
  command = plan

  variables {
    enable_write_api = true
  }

  assert {
    condition     = contains(keys(aws_secretsmanager_secret.this), "write_api") && data.aws_secretsmanager_random_password.this["write_api"].exclude_punctuation == true
    error_message = "enable_write_api creates a generated WRITE_API_TOKEN secret."
  }
  assert {
    condition     = local.bootstrap_env.WRITE_API_SECRET_ARN == aws_secretsmanager_secret.this["write_api"].arn
    error_message = "The bootstrap must get the WRITE_API_TOKEN secret's ARN."
  }
  assert {
    condition     = contains(flatten([for st in data.aws_iam_policy_document.app.statement : st.resources if st.sid == "ReadRuntimeSecrets"]), aws_secretsmanager_secret.this["write_api"].arn)
    error_message = "The instance role must be able to read the WRITE_API_TOKEN secret."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.app_http_cidr) == 0 && length(aws_vpc_security_group_ingress_rule.alb_http) == 0
    error_message = "Without a certificate the write API is reached through the Session Manager tunnel only."
  }
}

run "plain_apply_without_image_tag_is_refused" {
  command = plan

  variables {
    app_image_tag = ""
  }

  expect_failures = [var.app_image_tag]
}

run "connection_budget_over_max_connections_is_refused" {
  command = plan

  variables {
    app_instance_count = 2
    enable_alb         = true
  }

  # 2 instances doubled by an instance refresh: 4 x 2 x (20 + 4 + 1) = 200 > 67 on db.t4g.micro
  expect_failures = [aws_launch_template.app]
}

run "unknown_db_class_needs_db_max_connections" {
  command = plan

  variables {
    db_instance_class = "db.x2g.large"
  }

  expect_failures = [aws_launch_template.app]
}

run "pool_below_the_apps_minimum_is_refused" {
  command = plan

  variables {
    db_pool_size = 10
  }

  # the app needs CACHE_FILL_SLOTS (16) + CACHE_REFRESH_THREADS (4)
  expect_failures = [aws_launch_template.app]
}

run "smaller_pool_with_fewer_fill_slots_is_accepted" {
  command = plan

  variables {
    db_pool_size = 10
    app_settings = { CACHE_FILL_SLOTS = "8", CACHE_REFRESH_THREADS = "2" }
  }

  assert {
    condition     = local.db_connections_needed == 30 && local.bootstrap_env.CACHE_FILL_SLOTS == "8" && strcontains(local.bootstrap_env.APP_SETTINGS, "CACHE_FILL_SLOTS")
    error_message = "app_settings reach the bootstrap and the pool check follows them."
  }
}

run "larger_db_class_admits_more_connections" {
  command = plan

  variables {
    app_instance_count = 3
    enable_alb         = true
    db_instance_class  = "db.t4g.medium"
  }

  assert {
    # 3 instances, doubled during an instance refresh: 6 x 2 x (20 + 4 + 1) = 300
    condition     = local.db_connections_needed == 300 && local.db_connections_allowed == 392
    error_message = "db.t4g.medium: max_connections 400 in the parameter group, 392 after what is kept free."
  }
}
