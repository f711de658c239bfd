# -----------------------------------------------------------------------------
# General
# -----------------------------------------------------------------------------
variable "region" {
  description = "AWS region to deploy into (for example eu-west-1 or us-east-1)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix for every resource; lowercase letters, digits and hyphens."
  type        = string
  default     = "cachelab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name must be 2-21 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags added to every resource through the provider's default_tags."
  type        = map(string)
  default     = {}
}

# -----------------------------------------------------------------------------
# Network
# -----------------------------------------------------------------------------
variable "vpc_cidr" {
  description = "CIDR block of the VPC; split into 2 public (app tier) and 2 private (data tier) /24-style subnets."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /24 or larger."
  }
}

variable "availability_zones" {
  description = "The two Availability Zones to use (names). Empty (default) = <region>a and <region>b."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "availability_zones must be empty or list exactly two zone names."
  }
}

variable "allowed_http_cidrs" {
  description = "IPv4 CIDR blocks allowed to reach HTTP port 80 (the instance, or the ALB when enable_alb = true). Empty (default) opens nothing to the internet; use Session Manager port forwarding or set e.g. [\"203.0.113.7/32\"]."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_http_cidrs : can(cidrhost(c, 0))])
    error_message = "Every entry of allowed_http_cidrs must be a valid IPv4 CIDR block."
  }
}

# -----------------------------------------------------------------------------
# Application tier (EC2 via launch template + Auto Scaling group)
# -----------------------------------------------------------------------------
variable "app_image_tag" {
  description = "Tag of the app and nginx images in ECR, required: terraform/deploy.sh builds and pushes them (terraform/push-images.sh) and passes their content-hash tag. The plan fails while the tag is not in ECR, so no instance starts without its image."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.app_image_tag))
    error_message = "app_image_tag is required and must be a valid Docker tag: run terraform/deploy.sh (builds, pushes and applies), or pass -var app_image_tag=<a tag already pushed to ECR>."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the app instances (x86_64, matches the AL2023 x86_64 AMI)."
  type        = string
  default     = "t3.small"
}

variable "app_instance_count" {
  description = "Number of app instances in the Auto Scaling group. More than 1 requires enable_alb = true."
  type        = number
  default     = 1

  validation {
    condition     = var.app_instance_count >= 1 && var.app_instance_count <= 10 && floor(var.app_instance_count) == var.app_instance_count
    error_message = "app_instance_count must be a whole number between 1 and 10."
  }
}

variable "enable_alb" {
  description = "Put an Application Load Balancer in front of the Auto Scaling group (the scale path). false = one instance reachable on its public IP."
  type        = bool
  default     = false
}

variable "health_check_path" {
  description = "HTTP path the ALB target group health check requests through nginx (only with enable_alb). /healthz is the app's liveness route; /readyz would also take instances out when RDS is down."
  type        = string
  default     = "/healthz"
}

variable "root_volume_size" {
  description = "Size in GiB of the encrypted gp3 root volume of each app instance."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 200
    error_message = "root_volume_size must be between 8 and 200 GiB."
  }
}

variable "compose_version" {
  description = "Version of the Docker Compose v2 CLI plugin installed by user-data (AL2023 does not package it); must be >= 2.24.4 for !reset/!override."
  type        = string
  default     = "2.29.7"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.compose_version))
    error_message = "compose_version must look like 2.29.7 (without a leading v)."
  }
}

variable "compose_sha256" {
  description = "Optional SHA-256 of the docker-compose-linux-x86_64 binary of compose_version; when set, user-data refuses a download that does not match. Empty = not verified."
  type        = string
  default     = ""

  validation {
    condition     = var.compose_sha256 == "" || can(regex("^[0-9a-f]{64}$", var.compose_sha256))
    error_message = "compose_sha256 must be empty or 64 lowercase hex digits."
  }
}

variable "cache_ttl_seconds" {
  description = "CACHE_TTL_SECONDS passed to the app."
  type        = number
  default     = 10
}

variable "cache_strategy" {
  description = "CACHE_STRATEGY passed to the app: none, cache-aside, swr or two-tier (two-tier is the local Compose default too)."
  type        = string
  default     = "two-tier"

  validation {
    condition     = contains(["none", "cache-aside", "swr", "two-tier"], var.cache_strategy)
    error_message = "cache_strategy must be one of none, cache-aside, swr, two-tier."
  }
}

variable "slow_query_seconds" {
  description = "SLOW_QUERY_SECONDS given to `cachelab db-init`, which stores it in the table lab_settings that slow_version() reads (RDS has no init scripts)."
  type        = number
  default     = 10
}

variable "gunicorn_workers" {
  description = "GUNICORN_WORKERS of the app container on each instance (each worker holds its own database pool)."
  type        = number
  default     = 2

  validation {
    condition     = var.gunicorn_workers >= 1 && var.gunicorn_workers <= 16 && floor(var.gunicorn_workers) == var.gunicorn_workers
    error_message = "gunicorn_workers must be a whole number between 1 and 16."
  }
}

variable "db_pool_size" {
  description = "DB_POOL_SIZE: database connections per gunicorn worker. The plan checks app_instance_count x gunicorn_workers x (db_pool_size + 1 listener) against the RDS class's max_connections."
  type        = number
  default     = 20

  # The app refuses a pool smaller than CACHE_FILL_SLOTS (16) + CACHE_REFRESH_THREADS (4).
  validation {
    condition     = var.db_pool_size >= 20 && var.db_pool_size <= 200 && floor(var.db_pool_size) == var.db_pool_size
    error_message = "db_pool_size must be a whole number between 20 (the app's CACHE_FILL_SLOTS 16 + CACHE_REFRESH_THREADS 4) and 200."
  }
}

variable "enable_write_api" {
  description = "Create a Secrets Manager secret WRITE_API_TOKEN and pass it to the app, which then turns its write API on. false (default): the variable is not set at all and the write API stays off."
  type        = bool
  default     = false
}

variable "rate_limit_rps" {
  description = "RATE_LIMIT_RPS of the nginx image: per-client request rate limit at the edge (0 = off)."
  type        = number
  default     = 20

  validation {
    condition     = var.rate_limit_rps >= 0
    error_message = "rate_limit_rps must be >= 0."
  }
}

variable "rate_limit_burst" {
  description = "RATE_LIMIT_BURST of the nginx image: requests a client may send above rate_limit_rps before getting 429."
  type        = number
  default     = 40

  validation {
    condition     = var.rate_limit_burst >= 0
    error_message = "rate_limit_burst must be >= 0."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the CloudWatch log group receiving the container logs."
  type        = number
  default     = 14
}

# -----------------------------------------------------------------------------
# ElastiCache
# -----------------------------------------------------------------------------
variable "cache_engine" {
  description = "ElastiCache engine: valkey (cheaper, Redis-compatible) or redis."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["valkey", "redis"], var.cache_engine)
    error_message = "cache_engine must be valkey or redis."
  }
}

variable "cache_engine_version" {
  description = "ElastiCache engine version (valkey 7.2/8.0, redis 7.0/7.1)."
  type        = string
  default     = "8.0"
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "cache_replicas" {
  description = "Read replicas besides the primary. > 0 turns on automatic failover and Multi-AZ (the scale path)."
  type        = number
  default     = 0

  validation {
    condition     = var.cache_replicas >= 0 && var.cache_replicas <= 5 && floor(var.cache_replicas) == var.cache_replicas
    error_message = "cache_replicas must be a whole number between 0 and 5."
  }
}

variable "cache_snapshot_retention_days" {
  description = "Days ElastiCache keeps automatic snapshots (0 = none; the cache holds only derived data)."
  type        = number
  default     = 0
}

# -----------------------------------------------------------------------------
# RDS PostgreSQL
# -----------------------------------------------------------------------------
variable "db_engine_version" {
  description = "PostgreSQL major version on RDS (15 or 16)."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["15", "16"], var.db_engine_version)
    error_message = "db_engine_version must be 15 or 16."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "Allocated gp3 storage of the RDS instance in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB (0 disables autoscaling)."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "Run RDS Multi-AZ with a standby in the second AZ (the scale path)."
  type        = bool
  default     = false
}

variable "db_max_connections" {
  description = "max_connections of the RDS instance for the connection-budget check. 0 (default) = the RDS default of db_instance_class (LEAST(memory/9531392, 5000)); set it for a class the table in ec2.tf does not know or a custom parameter group."
  type        = number
  default     = 0

  validation {
    condition     = var.db_max_connections >= 0
    error_message = "db_max_connections must be >= 0."
  }
}

variable "app_db_username" {
  description = "The app's own PostgreSQL login role (APP_DB_USER). db-init, run as the RDS master, creates it as a member of cachelab_runtime; its password is a Secrets Manager secret generated by Terraform, never the master's."
  type        = string
  default     = "cachelab_app"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.app_db_username)) && var.app_db_username != "cachelab_runtime"
    error_message = "app_db_username must be a lower-case PostgreSQL role name other than cachelab_runtime."
  }
}

variable "db_name" {
  description = "Name of the database created in RDS."
  type        = string
  default     = "lab"
}

variable "db_username" {
  description = "Master user name; its password is generated and kept by RDS in Secrets Manager (manage_master_user_password)."
  type        = string
  default     = "cachelab"
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (1-35)."
  type        = number
  default     = 1

  validation {
    condition     = var.db_backup_retention_days >= 1 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be between 1 and 35."
  }
}

variable "db_deletion_protection" {
  description = "RDS deletion protection. false by default so a lab can be destroyed in one go; set true for anything you want to keep."
  type        = bool
  default     = false
}

variable "db_skip_final_snapshot" {
  description = "Skip the final RDS snapshot on destroy. true by default for a throw-away lab; set false to keep a snapshot."
  type        = bool
  default     = true
}

# -----------------------------------------------------------------------------
# Monitoring (CloudWatch dashboard and alarms)
# -----------------------------------------------------------------------------
variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or recovers (e.g. an SNS topic). Empty (default): the alarms only show on the dashboard and in the console."
  type        = list(string)
  default     = []
}

variable "alarm_cache_hit_rate_percent" {
  description = "Alarm when ElastiCache's CacheHitRate of the primary stays below this percentage (5 x 1 min)."
  type        = number
  default     = 80
}

variable "alarm_p99_seconds" {
  description = "Alarm when the ALB's p99 TargetResponseTime stays above this many seconds (only with enable_alb). Cached pages take milliseconds; a miss takes slow_query_seconds."
  type        = number
  default     = 2
}

variable "alarm_cpu_percent" {
  description = "Alarm when ElastiCache EngineCPUUtilization or RDS CPUUtilization stays above this percentage."
  type        = number
  default     = 80
}
