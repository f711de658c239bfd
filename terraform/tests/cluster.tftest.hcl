# Plan-level checks of ElastiCache cluster mode (cache_cluster_mode) and of the
# app tier's scaling behind the ALB.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  app_image_tag      = "c-0123456789ab"
  cache_cluster_mode = true
  cache_shards       = 2
  cache_replicas     = 1
}

run "cluster_mode_replication_group" {
  command = plan

  assert {
    condition = (
      aws_elasticache_replication_group.this.cluster_mode == "enabled" &&
      aws_elasticache_replication_group.this.num_node_groups == 2 &&
      aws_elasticache_replication_group.this.replicas_per_node_group == 1 &&
      aws_elasticache_replication_group.this.automatic_failover_enabled == true &&
      aws_elasticache_replication_group.this.parameter_group_name == "default.valkey8.cluster.on"
    )
    error_message = "Cluster mode: 2 node groups of a primary and 1 replica, automatic failover, the cluster-on parameter group family."
  }
  assert {
    condition     = aws_elasticache_replication_group.this.transit_encryption_enabled == true && aws_elasticache_replication_group.this.user_group_ids == toset([aws_elasticache_user_group.this.id])
    error_message = "Cluster mode keeps TLS and RBAC."
  }
  assert {
    condition = (
      local.bootstrap_env.REDIS_HOST == "clustercfg.cachelab-cache.abcdef.euw1.cache.amazonaws.com" &&
      local.bootstrap_env.REDIS_CLUSTER == "on" && contains(split(",", local.bootstrap_env.APP_SETTINGS), "REDIS_CLUSTER") &&
      output.redis_primary_endpoint == "clustercfg.cachelab-cache.abcdef.euw1.cache.amazonaws.com"
    )
    error_message = "The instances get the configuration endpoint (rediss:// by the bootstrap) and REDIS_CLUSTER=on."
  }
  assert {
    condition     = alltrue([for c in ["cluster|slots", "cluster|shards", "command"] : contains(split(" ", aws_elasticache_user.app.access_string), "+${c}")]) && !contains(split(" ", aws_elasticache_user.app.access_string), "+cluster")
    error_message = "The cache user may read the slot map and the command table in cluster mode (not every CLUSTER subcommand)."
  }
  assert {
    condition     = join(",", local.cache_node_ids) == "cachelab-cache-0001-001,cachelab-cache-0001-002,cachelab-cache-0002-001,cachelab-cache-0002-002"
    error_message = "Cluster-mode nodes are named <group>-<shard>-<node>."
  }
  assert {
    condition = alltrue([for id in local.cache_node_ids : alltrue([for a in ["evictions", "engine-cpu", "connections", "cpu-credits", "replication-lag"] :
    aws_cloudwatch_metric_alarm.metric["${id}-${a}"].dimensions.CacheClusterId == id])])
    error_message = "Every node of every shard has its alarms, named by its node id."
  }
  assert {
    condition     = alltrue([for id in local.cache_node_ids : strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "\"${id}\"")]) && strcontains(aws_cloudwatch_dashboard.this.dashboard_body, "ReplicationLag")
    error_message = "The dashboard's cache widgets name every node id."
  }
  assert {
    # one instance x 2 workers x (80 pooled + 1 tracking) per node
    condition     = local.cache_connections_per_node == 162 && aws_cloudwatch_metric_alarm.metric["cachelab-cache-0002-001-connections"].threshold == 162
    error_message = "The cache connection budget is counted per node (each worker holds a pool per node)."
  }
}

run "one_shard_cluster_is_accepted" {
  command = plan

  variables {
    cache_shards   = 1
    cache_replicas = 0
  }

  assert {
    condition     = join(",", local.cache_node_ids) == "cachelab-cache-0001-001" && aws_elasticache_replication_group.this.automatic_failover_enabled == true && aws_elasticache_replication_group.this.multi_az_enabled == false
    error_message = "A one-shard cluster has one node; cluster mode needs automatic failover on."
  }
}

run "target_tracking_scaling_behind_the_alb" {
  command = plan

  variables {
    cache_cluster_mode     = false
    cache_replicas         = 0
    enable_alb             = true
    app_instance_count     = 2
    app_max_instance_count = 3
    db_instance_class      = "db.t4g.medium"
  }

  assert {
    condition = (
      aws_autoscaling_group.app.min_size == 2 && aws_autoscaling_group.app.max_size == 3 &&
      aws_autoscaling_policy.requests_per_target[0].policy_type == "TargetTrackingScaling" &&
      aws_autoscaling_policy.requests_per_target[0].target_tracking_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ALBRequestCountPerTarget" &&
      aws_autoscaling_policy.requests_per_target[0].target_tracking_configuration[0].predefined_metric_specification[0].resource_label == "app/cachelab-alb/0123456789abcdef/targetgroup/app-mock/0123456789abcdef" &&
      aws_autoscaling_policy.requests_per_target[0].target_tracking_configuration[0].target_value == 6000 &&
      aws_autoscaling_policy.requests_per_target[0].estimated_instance_warmup == 300
    )
    error_message = "Between min and max the ALB's requests per target drive the group (the desired capacity is left to the policy)."
  }
  assert {
    # the maximum (3), doubled during an instance refresh: 6 x 2 x (20 + 4 + 1)
    condition     = local.peak_instances == 6 && local.db_connections_needed == 300 && local.db_connections_needed <= local.db_connections_allowed
    error_message = "The database budget counts the group's maximum plus the refresh's surge."
  }
}

run "scaling_beyond_the_database_budget_is_refused" {
  command = plan

  variables {
    cache_cluster_mode     = false
    cache_replicas         = 0
    enable_alb             = true
    app_instance_count     = 2
    app_max_instance_count = 6
    db_instance_class      = "db.t4g.medium"
  }

  # 12 x 2 x 25 = 600 > 392
  expect_failures = [aws_launch_template.app]
}
