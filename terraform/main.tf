provider "aws" {
  region = var.region

  default_tags {
    tags = merge({
      Project   = var.name
      ManagedBy = "terraform"
    }, var.tags)
  }
}

# The two AZs are pinned by name (default: <region>a and <region>b) so the
# subnets never move when AWS adds a zone.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = local.wanted_azs
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) >= 2
      error_message = "Need 2 available AZs in ${var.region}; set availability_zones to two zone names that exist in your account."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  wanted_azs = length(var.availability_zones) > 0 ? var.availability_zones : ["${var.region}a", "${var.region}b"]
  azs        = slice(sort(data.aws_availability_zones.available.names), 0, 2)

  # 10.40.0.0/16 -> public 10.40.0.0/24, 10.40.1.0/24; private 10.40.10.0/24,
  # 10.40.11.0/24; edge (the ALB) 10.40.20.0/24, 10.40.21.0/24; loadgen
  # 10.40.30.0/24, 10.40.31.0/24.
  public_subnet_cidrs  = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnet_cidrs = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i + 10)]
  edge_subnet_cidrs    = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i + 20)]
  loadgen_subnet_cidrs = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i + 30)]

  # The locust repository always exists (deploy.sh pushes the three images
  # alike); its image is looked up only with enable_loadgen.
  app_repositories = {
    app    = "${var.name}/app"
    nginx  = "${var.name}/nginx"
    locust = "${var.name}/locust"
  }
  used_repositories = { for k, v in local.app_repositories : k => v if k != "locust" || var.enable_loadgen }

  # tag@digest from the ECR data source (ecr.tf): the plan fails while the
  # image is missing, so no instance ever starts without its image.
  app_image    = "${aws_ecr_repository.this["app"].repository_url}:${var.app_image_tag}@${data.aws_ecr_image.this["app"].image_digest}"
  nginx_image  = "${aws_ecr_repository.this["nginx"].repository_url}:${var.app_image_tag}@${data.aws_ecr_image.this["nginx"].image_digest}"
  locust_image = var.enable_loadgen ? "${aws_ecr_repository.this["locust"].repository_url}:${var.app_image_tag}@${data.aws_ecr_image.this["locust"].image_digest}" : ""
  ecr_registry = split("/", aws_ecr_repository.this["app"].repository_url)[0]

  log_group_name = "/${var.name}/containers"
}

locals {
  # What was deployed: the load generator writes it beside each run's results
  # and the cost report (loadtest/cost.py) prices it.
  lab_configuration = {
    region              = var.region
    app_instance_type   = var.instance_type
    app_instances_min   = var.enable_alb ? var.app_instance_count : 1
    app_instances_max   = local.max_instances
    gunicorn_workers    = var.gunicorn_workers
    alb                 = var.enable_alb
    cache_strategy      = var.cache_strategy
    cache_ttl_seconds   = var.cache_ttl_seconds
    slow_query_seconds  = var.slow_query_seconds
    cache_engine        = var.cache_engine
    cache_node_type     = var.cache_node_type
    cache_nodes         = length(local.cache_node_ids)
    cache_cluster_mode  = var.cache_cluster_mode
    db_instance_class   = var.db_instance_class
    db_multi_az         = var.db_multi_az
    db_storage_gib      = var.db_allocated_storage
    db_max_connections  = local.db_max_connections
    db_connections_app  = local.db_connections_allowed
    app_root_volume_gib = var.root_volume_size
    # where CloudWatch keeps a run's load (loadtest/cloudwatch.py)
    metrics = {
      namespace   = local.metrics_namespace
      app_group   = "${var.name}-app"
      db_instance = local.db_identifier
    }
  }
}
