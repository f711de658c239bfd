output "url" {
  description = "URL of the lab: the ALB with enable_alb (https:// with certificate_arn), otherwise the Elastic IP the app instance takes over when it is healthy (stable through replacements). Reachable only from allowed_http_cidrs."
  value = (var.enable_alb
    ? "${local.https ? "https" : "http"}://${aws_lb.app[0].dns_name}/"
    : "http://${aws_eip.app[0].public_ip}/"
  )
}

output "allowed_http_cidrs" {
  description = "CIDR blocks that may reach the URL (empty = nobody; use session_manager_port_forward_command)."
  value       = var.allowed_http_cidrs
}

output "ecr_repository_urls" {
  description = "ECR repository URLs of the app and nginx images."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "ecr_registry" {
  description = "ECR registry host (for docker login)."
  value       = local.ecr_registry
}

output "app_image" {
  description = "Full app image reference the instances run."
  value       = local.app_image
}

output "nginx_image" {
  description = "Full nginx image reference the instances run."
  value       = local.nginx_image
}

output "redis_primary_endpoint" {
  description = "ElastiCache endpoint the app uses (TLS + its RBAC user, port 6379): the primary endpoint, or the configuration endpoint in cluster mode."
  value       = local.redis_host
}

output "cache_node_ids" {
  description = "ElastiCache node ids (CloudWatch's CacheClusterId), as the alarms and the dashboard name them."
  value       = local.cache_node_ids
}

output "cache_user" {
  description = "The app's ElastiCache user (RBAC): keys ~<namespace>:* and the app's commands only; its password is cache_auth_secret_arn."
  value       = { name = aws_elasticache_user.app.user_name, access_string = aws_elasticache_user.app.access_string }
}

output "redis_reader_endpoint" {
  description = "ElastiCache reader endpoint (useful with cache_replicas > 0)."
  value       = aws_elasticache_replication_group.this.reader_endpoint_address
}

output "rds_endpoint" {
  description = "RDS PostgreSQL endpoint (host:port), private only, TLS enforced."
  value       = aws_db_instance.this.endpoint
}

output "rds_master_secret_arn" {
  description = "Secrets Manager secret (managed by RDS) with the master user name and password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "cache_auth_secret_arn" {
  description = "Secrets Manager secret holding the app's ElastiCache user password (rotate with rotate-secret.sh cache_auth)."
  value       = aws_secretsmanager_secret.this["cache_auth"].arn
}

output "autoscaling_group_name" {
  description = "Name of the app tier Auto Scaling group."
  value       = aws_autoscaling_group.app.name
}

output "instance_refresh_preferences" {
  description = "The app group's instance refresh preferences (rotate-secret.sh starts a refresh with them)."
  value = join(",", [
    "MinHealthyPercentage=${aws_autoscaling_group.app.instance_refresh[0].preferences[0].min_healthy_percentage}",
    "MaxHealthyPercentage=${aws_autoscaling_group.app.instance_refresh[0].preferences[0].max_healthy_percentage}",
    "InstanceWarmup=${var.instance_warmup_seconds}",
  ])
}

output "instance_ids" {
  description = "Running app instances when Terraform last read them (instances may be replaced later; see list_instances_command)."
  value       = data.aws_instances.app.ids
}

output "log_group_name" {
  description = "CloudWatch log group receiving the container logs."
  value       = aws_cloudwatch_log_group.containers.name
}

locals {
  first_instance_query = "aws autoscaling describe-auto-scaling-groups --region ${var.region} --auto-scaling-group-names ${aws_autoscaling_group.app.name} --query 'AutoScalingGroups[0].Instances[0].InstanceId' --output text"
}

output "list_instances_command" {
  description = "AWS CLI command listing the instance ids currently in the Auto Scaling group."
  value       = "aws autoscaling describe-auto-scaling-groups --region ${var.region} --auto-scaling-group-names ${aws_autoscaling_group.app.name} --query 'AutoScalingGroups[0].Instances[].InstanceId' --output text"
}

output "session_manager_command" {
  description = "Open a shell on the first instance of the Auto Scaling group through Session Manager (no SSH). For another instance use an id from list_instances_command."
  value       = "aws ssm start-session --region ${var.region} --target \"$(${local.first_instance_query})\""
}

output "session_manager_port_forward_command" {
  description = "Forward localhost:8080 to nginx (port 80) on the first app instance; works while allowed_http_cidrs is empty."
  value       = "aws ssm start-session --region ${var.region} --target \"$(${local.first_instance_query})\" --document-name AWS-StartPortForwardingSession --parameters portNumber=80,localPortNumber=8080"
}

output "region" {
  description = "AWS region of the deployment (deploy.sh reads it from `terraform output -json`)."
  value       = var.region
}

output "app_db_secret_arn" {
  description = "Secrets Manager secret with APP_DB_PASSWORD, the app's own database role's password."
  value       = aws_secretsmanager_secret.this["app_db"].arn
}

output "write_api_secret_arn" {
  description = "Secrets Manager secret with WRITE_API_TOKEN (null unless enable_write_api)."
  value       = try(aws_secretsmanager_secret.this["write_api"].arn, null)
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the lab (cache, database, ALB, the app's own hit/miss counts)."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "dashboard_url" {
  description = "Console URL of the CloudWatch dashboard."
  value       = "https://${var.region}.console.aws.amazon.com/cloudwatch/home?region=${var.region}#dashboards:name=${aws_cloudwatch_dashboard.this.dashboard_name}"
}

output "alarm_names" {
  description = "Names of the CloudWatch alarms."
  value = concat(
    [aws_cloudwatch_metric_alarm.app_cache_hit_rate.alarm_name],
    keys(aws_cloudwatch_metric_alarm.metric),
    aws_cloudwatch_metric_alarm.alb_5xx[*].alarm_name,
  )
}

output "db_connection_budget" {
  description = "Connections the app tier may open at its peak (peak instances x workers x (pool + 1)) and what max_connections of the project's parameter group allows after what is kept free."
  value = {
    peak_instances  = local.peak_instances
    needed          = local.db_connections_needed
    allowed         = local.db_connections_allowed
    max_connections = local.db_max_connections
  }
}

output "db_init_task" {
  description = "How terraform/db-init.sh runs the db-init task (deploy.sh, once per deploy)."
  value = {
    cluster         = aws_ecs_cluster.this.name
    task_definition = aws_ecs_task_definition.db_init.arn
    subnets         = aws_subnet.public[*].id
    security_group  = aws_security_group.db_init.id
    log_group       = aws_cloudwatch_log_group.containers.name
    log_prefix      = "db-init/db-init"
  }
}

output "lab_configuration" {
  description = "What was deployed, for the load generator's results and the cost report (loadtest/cost.py)."
  value       = local.lab_configuration
}

output "app_image_tag" {
  description = "Image tag the instances run (destroy.sh passes it back)."
  value       = var.app_image_tag
}

# --- the load generator (enable_loadgen) ------------------------------------------------
locals {
  loadgen_master_id = try(aws_instance.loadgen_master[0].id, "")
}

output "loadgen_ui_command" {
  description = "Open the Locust web UI of the load generator on http://127.0.0.1:8089/ (Session Manager port forwarding; null without enable_loadgen)."
  value       = var.enable_loadgen ? "aws ssm start-session --region ${var.region} --target ${local.loadgen_master_id} --document-name AWS-StartPortForwardingSession --parameters portNumber=8089,localPortNumber=8089" : null
}

output "loadgen_run_command" {
  description = "Start a headless distributed run from inside the VPC (edit users, spawn rate, duration and the Locust user classes); its results go to the bucket. Null without enable_loadgen."
  value       = var.enable_loadgen ? "aws ssm send-command --region ${var.region} --instance-ids ${local.loadgen_master_id} --document-name AWS-RunShellScript --comment 'cachelab loadgen run' --parameters 'commands=[\"/usr/local/bin/loadgen run 200 20 120s ZipfUser\"]' --query Command.CommandId --output text" : null
}

output "loadgen_openloop_command" {
  description = "Start the open-loop benchmark (k6, constant arrival rate) on the load generator's master, from inside the VPC: 30 s at each rate (edit them; KEYS, SKEW and LAB_PATH choose the keys); its results go to the bucket. Null without enable_loadgen."
  value       = var.enable_loadgen ? "aws ssm send-command --region ${var.region} --instance-ids ${local.loadgen_master_id} --document-name AWS-RunShellScript --comment 'cachelab loadgen openloop' --parameters 'commands=[\"KEYS=1000 SKEW=0.99 /usr/local/bin/loadgen openloop 30 100 200 400 800 1600\"]' --query Command.CommandId --output text" : null
}

output "loadgen_fetch_command" {
  description = "Bring the latest run back and print it beside the local run, with the cost table (run from the repository root). Null without enable_loadgen."
  value       = var.enable_loadgen ? "python -m loadtest.loadgen fetch --region ${var.region} --bucket ${aws_s3_bucket.loadgen[0].bucket}" : null
}

output "loadgen_results_bucket" {
  description = "S3 bucket of the load generator's results (encrypted, private, TLS only, expiring after loadgen_results_days)."
  value       = try(aws_s3_bucket.loadgen[0].bucket, null)
}
