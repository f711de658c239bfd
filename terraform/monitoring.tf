# CloudWatch: the app's own cache results from its JSON logs, a dashboard and
# alarms for the cache, the database and (with enable_alb) the load balancer.
#
# The app logs, every 10 s per gunicorn worker, one JSON line
#   {"event": "cache_summary", "interval_s": 10.0, "hit": 12, "stale": 0, "miss": 1, ...}
# to stdout; the awslogs driver ships it to the container log group, where
# these filters turn each field into a metric (summed over workers/instances).
locals {
  metrics_namespace = var.name
  app_cache_results = {
    hit        = "CacheHit"
    stale      = "CacheStale"
    miss       = "CacheMiss"
    collapsed  = "CacheCollapsed"
    bypass     = "CacheBypass"
    overloaded = "CacheOverloaded"
  }

  # ElastiCache names a replication group's nodes <id>-001, <id>-002, ...
  cache_node_ids = [for i in range(1 + var.cache_replicas) : format("%s-%03d", aws_elasticache_replication_group.this.replication_group_id, i + 1)]
  # Every gunicorn worker holds at most REDIS_MAX_CONNECTIONS (50) connections.
  cache_connections_expected = var.app_instance_count * var.gunicorn_workers * 50

  alb_dimension = var.enable_alb ? { LoadBalancer = aws_lb.app[0].arn_suffix } : {}
  period        = 60
}

resource "aws_cloudwatch_log_metric_filter" "cache_results" {
  for_each = local.app_cache_results

  name           = "${var.name}-${each.key}"
  log_group_name = aws_cloudwatch_log_group.containers.name
  pattern        = "{ $.event = \"cache_summary\" }"

  metric_transformation {
    name      = each.value
    namespace = local.metrics_namespace
    value     = "$.${each.key}"
    unit      = "Count"
  }
}

# --- alarms ------------------------------------------------------------------
# Share of lookups answered from the cache (hit + stale) among all lookups,
# from the app's own counts: what users see, whatever the engine or node.
resource "aws_cloudwatch_metric_alarm" "app_cache_hit_rate" {
  alarm_name          = "${var.name}-app-cache-hit-rate"
  alarm_description   = "Share of requests served from the cache (app logs: hit + stale over all lookups) below ${var.alarm_cache_hit_rate_percent}% for 5 minutes."
  comparison_operator = "LessThanThreshold"
  threshold           = var.alarm_cache_hit_rate_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  treat_missing_data  = "notBreaching" # no traffic, no alarm
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "rate"
    expression  = "IF(total > 0, 100 * (hit + stale) / total)"
    label       = "cache hit rate (%)"
    return_data = true
  }
  metric_query {
    id         = "total"
    expression = "hit + stale + miss + collapsed + bypass"
  }
  dynamic "metric_query" {
    for_each = { hit = "CacheHit", stale = "CacheStale", miss = "CacheMiss", collapsed = "CacheCollapsed", bypass = "CacheBypass" }
    content {
      id = metric_query.key
      metric {
        namespace   = local.metrics_namespace
        metric_name = metric_query.value
        period      = local.period
        stat        = "Sum"
      }
    }
  }

  depends_on = [aws_cloudwatch_log_metric_filter.cache_results]
}

resource "aws_cloudwatch_metric_alarm" "cache_evictions" {
  for_each = toset(local.cache_node_ids)

  alarm_name          = "${each.value}-evictions"
  alarm_description   = "ElastiCache node ${each.value} evicted keys: the cache is too small for the working set."
  namespace           = "AWS/ElastiCache"
  metric_name         = "Evictions"
  dimensions          = { CacheClusterId = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "cache_engine_cpu" {
  for_each = toset(local.cache_node_ids)

  alarm_name          = "${each.value}-engine-cpu"
  alarm_description   = "ElastiCache node ${each.value}: EngineCPUUtilization above ${var.alarm_cpu_percent}% for 5 minutes (the engine is single-threaded)."
  namespace           = "AWS/ElastiCache"
  metric_name         = "EngineCPUUtilization"
  dimensions          = { CacheClusterId = each.value }
  statistic           = "Average"
  period              = local.period
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_cpu_percent
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "cache_connections" {
  for_each = toset(local.cache_node_ids)

  alarm_name          = "${each.value}-connections"
  alarm_description   = "ElastiCache node ${each.value}: more than ${local.cache_connections_expected} client connections (instances x workers x 50 pooled): a leak or a reconnect storm."
  namespace           = "AWS/ElastiCache"
  metric_name         = "CurrConnections"
  dimensions          = { CacheClusterId = each.value }
  statistic           = "Maximum"
  period              = local.period
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.cache_connections_expected
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "db_connections" {
  alarm_name          = "${local.db_identifier}-connections"
  alarm_description   = "RDS ${local.db_identifier}: more than ${local.db_connections_allowed} connections (the budget the plan checked, of ${local.db_max_connections})."
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.this.identifier }
  statistic           = "Maximum"
  period              = local.period
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = local.db_connections_allowed
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "db_cpu" {
  alarm_name          = "${local.db_identifier}-cpu"
  alarm_description   = "RDS ${local.db_identifier}: CPUUtilization above ${var.alarm_cpu_percent}% for 5 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.this.identifier }
  statistic           = "Average"
  period              = local.period
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_cpu_percent
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  count = var.enable_alb ? 1 : 0

  alarm_name          = "${var.name}-alb-5xx"
  alarm_description   = "5xx answers through the ALB (from the targets or the ALB itself) in the last 5 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  metric_query {
    id          = "errors"
    expression  = "FILL(target, 0) + FILL(elb, 0)"
    label       = "5xx answers"
    return_data = true
  }
  metric_query {
    id = "target"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = local.alb_dimension
      period      = 300
      stat        = "Sum"
    }
  }
  metric_query {
    id = "elb"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = local.alb_dimension
      period      = 300
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "alb_p99" {
  count = var.enable_alb ? 1 : 0

  alarm_name          = "${var.name}-alb-p99"
  alarm_description   = "p99 target response time above ${var.alarm_p99_seconds}s for 5 minutes: requests are waiting for the database."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = local.alb_dimension
  extended_statistic  = "p99"
  period              = local.period
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.alarm_p99_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

# --- dashboard -------------------------------------------------------------------
locals {
  cache_alarm_arns = concat(
    [for a in aws_cloudwatch_metric_alarm.cache_evictions : a.arn],
    [for a in aws_cloudwatch_metric_alarm.cache_engine_cpu : a.arn],
    [for a in aws_cloudwatch_metric_alarm.cache_connections : a.arn],
  )
  all_alarm_arns = concat(
    [aws_cloudwatch_metric_alarm.app_cache_hit_rate.arn, aws_cloudwatch_metric_alarm.db_connections.arn, aws_cloudwatch_metric_alarm.db_cpu.arn],
    local.cache_alarm_arns,
    aws_cloudwatch_metric_alarm.alb_5xx[*].arn,
    aws_cloudwatch_metric_alarm.alb_p99[*].arn,
  )

  node_metric = { for m in ["CacheHitRate", "Evictions", "EngineCPUUtilization", "CurrConnections"] : m => [
    for id in local.cache_node_ids : ["AWS/ElastiCache", m, "CacheClusterId", id]
  ] }

  widget = {
    app_results = {
      title   = "App: cache results per minute (JSON logs)"
      stat    = "Sum"
      metrics = jsonencode([for k, m in local.app_cache_results : [local.metrics_namespace, m]])
    }
    cache_hit_rate = {
      title   = "ElastiCache CacheHitRate (%)"
      stat    = "Average"
      metrics = jsonencode(local.node_metric["CacheHitRate"])
    }
    cache_evictions = {
      title   = "ElastiCache Evictions"
      stat    = "Sum"
      metrics = jsonencode(local.node_metric["Evictions"])
    }
    cache_cpu = {
      title   = "ElastiCache EngineCPUUtilization (%)"
      stat    = "Average"
      metrics = jsonencode(local.node_metric["EngineCPUUtilization"])
    }
    cache_connections = {
      title   = "ElastiCache CurrConnections"
      stat    = "Maximum"
      metrics = jsonencode(local.node_metric["CurrConnections"])
    }
    db = {
      title = "RDS connections and CPU (%)"
      stat  = "Maximum"
      metrics = jsonencode([
        ["AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier", local.db_identifier],
        ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", local.db_identifier, { yAxis = "right", stat = "Average" }],
      ])
    }
    alb_5xx = {
      title = "ALB 5xx"
      stat  = "Sum"
      metrics = jsonencode([
        ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", local.alb_suffix],
        ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", local.alb_suffix],
      ])
    }
    alb_latency = {
      title = "ALB target response time p50 / p99 (s)"
      stat  = "p99"
      metrics = jsonencode([
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", local.alb_suffix, { stat = "p50" }],
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", local.alb_suffix],
      ])
    }
  }
  alb_suffix     = try(aws_lb.app[0].arn_suffix, "")
  metric_widgets = { for k, w in local.widget : k => w if var.enable_alb || !startswith(k, "alb_") }
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({
    widgets = concat(
      [{
        type       = "alarm", x = 0, y = 0, width = 24, height = 3
        properties = { title = "${var.name} alarms", alarms = local.all_alarm_arns }
      }],
      [{
        type = "metric", x = 0, y = 3, width = 12, height = 6
        properties = {
          title  = "App: cache hit rate (%) from its JSON logs"
          region = var.region
          view   = "timeSeries"
          period = local.period
          metrics = [
            [{ expression = "IF(hit + stale + miss + collapsed + bypass > 0, 100 * (hit + stale) / (hit + stale + miss + collapsed + bypass))", label = "hit rate", id = "rate" }],
            [local.metrics_namespace, "CacheHit", { id = "hit", visible = false, stat = "Sum" }],
            [local.metrics_namespace, "CacheStale", { id = "stale", visible = false, stat = "Sum" }],
            [local.metrics_namespace, "CacheMiss", { id = "miss", visible = false, stat = "Sum" }],
            [local.metrics_namespace, "CacheCollapsed", { id = "collapsed", visible = false, stat = "Sum" }],
            [local.metrics_namespace, "CacheBypass", { id = "bypass", visible = false, stat = "Sum" }],
          ]
        }
      }],
      [for i, k in sort(keys(local.metric_widgets)) : {
        type   = "metric"
        x      = ((i + 1) % 2) * 12
        y      = 3 + floor((i + 1) / 2) * 6
        width  = 12
        height = 6
        properties = {
          title   = local.metric_widgets[k].title
          region  = var.region
          view    = "timeSeries"
          period  = local.period
          stat    = local.metric_widgets[k].stat
          metrics = jsondecode(local.metric_widgets[k].metrics)
        }
      }],
    )
  })
}
