# CloudWatch: the app's own cache results from its JSON logs, a heartbeat of
# every instance's stack, a dashboard and alarms for the app, the instances,
# the cache, the database and (with enable_alb) the load balancer.
#
# An outage must read as one: the alarms that watch whether the lab serves at
# all (heartbeat, healthy hosts) treat missing data as breaching; those that
# watch a rate of traffic (hit rate, 5xx, overloaded) treat it as not
# breaching, since an idle lab sends nothing.
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

  # ElastiCache names a replication group's nodes <id>-001, <id>-002, ...; in
  # cluster mode <id>-<shard 0001..>-<node 001..>. The first node of a shard
  # starts as its primary; a failover may swap roles, so node alarms do not
  # depend on the role (ReplicationLag is only reported by a replica).
  cache_group_id = aws_elasticache_replication_group.this.replication_group_id
  cache_node_ids = (var.cache_cluster_mode
    ? flatten([for s in range(var.cache_shards) : [for n in range(1 + var.cache_replicas) : format("%s-%04d-%03d", local.cache_group_id, s + 1, n + 1)]])
    : [for n in range(1 + var.cache_replicas) : format("%s-%03d", local.cache_group_id, n + 1)]
  )
  # The budget the plan checked (ec2.tf): each gunicorn worker's pool per node
  # and its tracking connection, at the peak number of instances.
  cache_connections_expected = local.cache_connections_per_node
  burstable_cache            = startswith(var.cache_node_type, "cache.t")
  burstable_db               = startswith(var.db_instance_class, "db.t")
  heartbeat_metric           = "StackHeartbeat"

  alb_dimension          = var.enable_alb ? { LoadBalancer = aws_lb.app[0].arn_suffix } : {}
  target_group_dimension = var.enable_alb ? { LoadBalancer = aws_lb.app[0].arn_suffix, TargetGroup = aws_lb_target_group.app[0].arn_suffix } : {}
  period                 = 60
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
  treat_missing_data  = "notBreaching" # no traffic, no alarm: a dead app is the heartbeat's alarm
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

# Single-metric alarms, keyed by alarm name: the stack's heartbeat, the
# instances, each cache node, the database and (with the ALB) the load
# balancer. `stat` is a statistic or a percentile (pNN); `compare` Greater or
# Less (than the threshold); `missing` is treat_missing_data.
locals {
  app_alarms = merge({
    "${var.name}-app-down" = {
      namespace   = local.metrics_namespace, metric = local.heartbeat_metric, dimensions = tomap({ AutoScalingGroupName = "${var.name}-app" })
      stat        = "Sum", period = local.period, periods = 3, threshold = 1, compare = "Less", missing = "breaching"
      description = "No instance's stack answered its health check (nginx -> app /healthz) for 3 minutes: the lab is down. Each instance reports every minute (cachelab-heartbeat.timer); no report at all is an outage too."
    }
    "${var.name}-app-status-check" = {
      namespace   = "AWS/EC2", metric = "StatusCheckFailed", dimensions = tomap({ AutoScalingGroupName = "${var.name}-app" })
      stat        = "Maximum", period = local.period, periods = 2, threshold = 0, compare = "Greater", missing = "missing"
      description = "An app instance fails its EC2 status checks (instance or system)."
    }
    "${var.name}-app-overloaded" = {
      namespace   = local.metrics_namespace, metric = "CacheOverloaded", dimensions = tomap({})
      stat        = "Sum", period = local.period, periods = 3, threshold = var.alarm_overloaded_per_minute, compare = "Greater", missing = "notBreaching"
      description = "More than ${var.alarm_overloaded_per_minute} requests a minute answered 503 overloaded for 3 minutes (admission control refusing misses: the database is the bottleneck)."
    }
    }, var.enable_alb ? {
    "${var.name}-alb-healthy-hosts" = {
      namespace   = "AWS/ApplicationELB", metric = "HealthyHostCount", dimensions = tomap(local.target_group_dimension)
      stat        = "Minimum", period = local.period, periods = 3, threshold = var.app_instance_count, compare = "Less", missing = "breaching"
      description = "Fewer than ${var.app_instance_count} healthy targets behind the ALB for 3 minutes (no data: none)."
    }
  } : {})

  node_alarms = merge([for id in local.cache_node_ids : merge({
    "${id}-evictions" = {
      namespace   = "AWS/ElastiCache", metric = "Evictions", dimensions = tomap({ CacheClusterId = id })
      stat        = "Sum", period = 300, periods = 1, threshold = 0, compare = "Greater", missing = "notBreaching"
      description = "ElastiCache node ${id} evicted keys: the cache is too small for the working set."
    }
    "${id}-engine-cpu" = {
      namespace   = "AWS/ElastiCache", metric = "EngineCPUUtilization", dimensions = tomap({ CacheClusterId = id })
      stat        = "Average", period = local.period, periods = 5, threshold = var.alarm_cpu_percent, compare = "Greater", missing = "missing"
      description = "ElastiCache node ${id}: EngineCPUUtilization above ${var.alarm_cpu_percent}% for 5 minutes (the engine is single-threaded)."
    }
    "${id}-connections" = {
      namespace   = "AWS/ElastiCache", metric = "CurrConnections", dimensions = tomap({ CacheClusterId = id })
      stat        = "Maximum", period = local.period, periods = 5, threshold = local.cache_connections_expected, compare = "Greater", missing = "missing"
      description = "ElastiCache node ${id}: more than ${local.cache_connections_expected} client connections (the budget: peak instances x workers x (REDIS_MAX_CONNECTIONS + 1 tracking)): a leak or a reconnect storm."
    }
    }, local.burstable_cache ? {
    "${id}-cpu-credits" = {
      namespace   = "AWS/ElastiCache", metric = "CPUCreditBalance", dimensions = tomap({ CacheClusterId = id })
      stat        = "Minimum", period = 300, periods = 1, threshold = var.alarm_cpu_credit_balance, compare = "Less", missing = "missing"
      description = "ElastiCache node ${id} (burstable ${var.cache_node_type}) has fewer than ${var.alarm_cpu_credit_balance} CPU credits left: it is about to be held to its baseline."
    }
    } : {}, var.cache_replicas > 0 ? {
    "${id}-replication-lag" = {
      namespace   = "AWS/ElastiCache", metric = "ReplicationLag", dimensions = tomap({ CacheClusterId = id })
      stat        = "Maximum", period = local.period, periods = 3, threshold = var.alarm_replication_lag_seconds, compare = "Greater", missing = "notBreaching"
      description = "ElastiCache node ${id}, while a replica, lags its primary by more than ${var.alarm_replication_lag_seconds}s for 3 minutes (a primary reports no lag)."
    }
  } : {})]...)

  db_alarms = merge({
    "${local.db_identifier}-connections" = {
      namespace   = "AWS/RDS", metric = "DatabaseConnections", dimensions = tomap({ DBInstanceIdentifier = local.db_identifier })
      stat        = "Maximum", period = local.period, periods = 3, threshold = local.db_connections_allowed, compare = "Greater", missing = "missing"
      description = "RDS ${local.db_identifier}: more than ${local.db_connections_allowed} connections (the budget the plan checked, of max_connections ${local.db_max_connections} in the parameter group)."
    }
    "${local.db_identifier}-cpu" = {
      namespace   = "AWS/RDS", metric = "CPUUtilization", dimensions = tomap({ DBInstanceIdentifier = local.db_identifier })
      stat        = "Average", period = local.period, periods = 5, threshold = var.alarm_cpu_percent, compare = "Greater", missing = "missing"
      description = "RDS ${local.db_identifier}: CPUUtilization above ${var.alarm_cpu_percent}% for 5 minutes."
    }
    "${local.db_identifier}-free-storage" = {
      namespace   = "AWS/RDS", metric = "FreeStorageSpace", dimensions = tomap({ DBInstanceIdentifier = local.db_identifier })
      stat        = "Minimum", period = 300, periods = 1, threshold = var.alarm_free_storage_gib * 1073741824, compare = "Less", missing = "missing"
      description = "RDS ${local.db_identifier}: less than ${var.alarm_free_storage_gib} GiB of free storage."
    }
    }, local.burstable_db ? {
    "${local.db_identifier}-cpu-credits" = {
      namespace   = "AWS/RDS", metric = "CPUCreditBalance", dimensions = tomap({ DBInstanceIdentifier = local.db_identifier })
      stat        = "Minimum", period = 300, periods = 1, threshold = var.alarm_cpu_credit_balance, compare = "Less", missing = "missing"
      description = "RDS ${local.db_identifier} (burstable ${var.db_instance_class}) has fewer than ${var.alarm_cpu_credit_balance} CPU credits left: it is about to be held to its baseline."
    }
  } : {})

  alb_alarms = var.enable_alb ? {
    "${var.name}-alb-p99" = {
      namespace   = "AWS/ApplicationELB", metric = "TargetResponseTime", dimensions = tomap(local.alb_dimension)
      stat        = "p99", period = local.period, periods = 5, threshold = var.alarm_p99_seconds, compare = "Greater", missing = "notBreaching"
      description = "p99 target response time above ${var.alarm_p99_seconds}s for 5 minutes: requests are waiting for the database."
    }
  } : {}

  metric_alarms = merge(local.app_alarms, local.node_alarms, local.db_alarms, local.alb_alarms)
}

resource "aws_cloudwatch_metric_alarm" "metric" {
  for_each = local.metric_alarms

  alarm_name          = each.key
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = startswith(each.value.stat, "p") ? null : each.value.stat
  extended_statistic  = startswith(each.value.stat, "p") ? each.value.stat : null
  period              = each.value.period
  evaluation_periods  = each.value.periods
  comparison_operator = "${each.value.compare}ThanThreshold"
  threshold           = each.value.threshold
  treat_missing_data  = each.value.missing
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

# --- dashboard -------------------------------------------------------------------
locals {
  all_alarm_arns = concat(
    [aws_cloudwatch_metric_alarm.app_cache_hit_rate.arn],
    [for a in aws_cloudwatch_metric_alarm.metric : a.arn],
    aws_cloudwatch_metric_alarm.alb_5xx[*].arn,
  )

  # One widget per ElastiCache metric, a line per node.
  node_widgets = { for m, w in merge({
    CacheHitRate         = ["ElastiCache CacheHitRate (%)", "Average"]
    Evictions            = ["ElastiCache Evictions", "Sum"]
    EngineCPUUtilization = ["ElastiCache EngineCPUUtilization (%)", "Average"]
    CurrConnections      = ["ElastiCache CurrConnections", "Maximum"]
    }, local.burstable_cache ? { CPUCreditBalance = ["ElastiCache CPUCreditBalance", "Minimum"] } : {},
    var.cache_replicas > 0 ? { ReplicationLag = ["ElastiCache ReplicationLag (s)", "Maximum"] } : {},
    ) : "cache_${lower(m)}" => {
    title   = w[0]
    stat    = w[1]
    metrics = jsonencode([for id in local.cache_node_ids : ["AWS/ElastiCache", m, "CacheClusterId", id]])
  } }

  widget = merge(local.node_widgets, {
    app_results = {
      title   = "App: cache results per minute (JSON logs)"
      stat    = "Sum"
      metrics = jsonencode([for k, m in local.app_cache_results : [local.metrics_namespace, m]])
    }
    db = {
      title = "RDS connections and CPU (%)"
      stat  = "Maximum"
      metrics = jsonencode([
        ["AWS/RDS", "DatabaseConnections", "DBInstanceIdentifier", local.db_identifier],
        ["AWS/RDS", "CPUUtilization", "DBInstanceIdentifier", local.db_identifier, { yAxis = "right", stat = "Average" }],
      ])
    }
    db_storage_credits = {
      title = "RDS free storage (bytes) and CPU credits"
      stat  = "Minimum"
      metrics = jsonencode([
        ["AWS/RDS", "FreeStorageSpace", "DBInstanceIdentifier", local.db_identifier],
        ["AWS/RDS", "CPUCreditBalance", "DBInstanceIdentifier", local.db_identifier, { yAxis = "right" }],
      ])
    }
    app_heartbeat = {
      title = "Instances serving (heartbeats a minute) and 503 overloaded"
      stat  = "Sum"
      metrics = jsonencode([
        [local.metrics_namespace, local.heartbeat_metric, "AutoScalingGroupName", "${var.name}-app"],
        [local.metrics_namespace, "CacheOverloaded", { yAxis = "right" }],
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
    alb_hosts = {
      title = "ALB healthy / unhealthy targets"
      stat  = "Minimum"
      metrics = jsonencode([
        ["AWS/ApplicationELB", "HealthyHostCount", "TargetGroup", local.target_group_suffix, "LoadBalancer", local.alb_suffix],
        ["AWS/ApplicationELB", "UnHealthyHostCount", "TargetGroup", local.target_group_suffix, "LoadBalancer", local.alb_suffix, { stat = "Maximum" }],
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
  })
  alb_suffix          = try(aws_lb.app[0].arn_suffix, "")
  target_group_suffix = try(aws_lb_target_group.app[0].arn_suffix, "")
  metric_widgets      = { for k, w in local.widget : k => w if var.enable_alb || !startswith(k, "alb_") }
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
