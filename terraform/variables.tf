# -----------------------------------------------------------------------------
# General
# -----------------------------------------------------------------------------
variable "region" {
  description = "AWS region to deploy into (for example eu-west-1 or us-east-1)."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix for every resource; lowercase letters, digits and single hyphens (ElastiCache and RDS ids refuse a double or trailing hyphen)."
  type        = string
  default     = "cachelab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]*(-[a-z0-9]+)*$", var.name)) && length(var.name) >= 2 && length(var.name) <= 21
    error_message = "name must be 2-21 characters of lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen (it prefixes the ElastiCache and RDS ids, which refuse \"--\" and a trailing \"-\")."
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
  description = "CIDR block of the VPC; split into subnets 8 bits longer (a /16 gives /24s): 2 public (app tier), 2 private (data tier), 2 edge (the ALB) and 2 loadgen."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 18
    error_message = "vpc_cidr must be a valid IPv4 CIDR block of /18 or larger (its subnets are 8 bits longer, and an ALB needs at least a /27)."
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
  description = "IPv4 CIDR blocks allowed to reach the lab: HTTP port 80 (the instance, or the ALB when enable_alb = true), or HTTPS 443 on the ALB with certificate_arn. Empty (default) opens nothing to the internet; use Session Manager port forwarding or set e.g. [\"203.0.113.7/32\"]. With enable_write_api, port 80 is never opened to these (the token must not travel in clear): give certificate_arn or keep this empty."
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
  description = "EC2 instance type of the app instances. x86_64 only (the AL2023 x86_64 AMI and linux/amd64 images): the plan refuses a Graviton (arm64) type."
  type        = string
  default     = "t3.small"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like t3.small."
  }
}

variable "app_instance_count" {
  description = "Number of app instances in the Auto Scaling group (its minimum). More than 1 requires enable_alb = true."
  type        = number
  default     = 1

  validation {
    condition     = var.app_instance_count >= 1 && var.app_instance_count <= 10 && floor(var.app_instance_count) == var.app_instance_count
    error_message = "app_instance_count must be a whole number between 1 and 10."
  }
}

variable "app_max_instance_count" {
  description = "Maximum of the Auto Scaling group (only with enable_alb): a target-tracking policy scales between app_instance_count and this on the ALB's requests per target. 0 (default) = app_instance_count (no scaling). The database connection budget counts this maximum doubled by an instance refresh (max_healthy_percentage 200)."
  type        = number
  default     = 0

  validation {
    condition     = var.app_max_instance_count >= 0 && var.app_max_instance_count <= 20 && floor(var.app_max_instance_count) == var.app_max_instance_count
    error_message = "app_max_instance_count must be a whole number between 0 and 20."
  }
}

variable "scaling_requests_per_target" {
  description = "Target of the scaling policy (with enable_alb and app_max_instance_count > app_instance_count): ALB requests per minute per instance (ALBRequestCountPerTarget)."
  type        = number
  default     = 6000

  validation {
    condition     = var.scaling_requests_per_target >= 10
    error_message = "scaling_requests_per_target must be at least 10 requests per minute per instance."
  }
}

variable "instance_warmup_seconds" {
  description = "Seconds a new instance needs before it counts (Auto Scaling default_instance_warmup, instance refresh warm-up, scaling policy): boot, image pull, app start."
  type        = number
  default     = 300

  validation {
    condition     = var.instance_warmup_seconds >= 60 && var.instance_warmup_seconds <= 3600
    error_message = "instance_warmup_seconds must be between 60 and 3600."
  }
}

variable "enable_alb" {
  description = "Put an Application Load Balancer in front of the Auto Scaling group (the scale path). false = one instance reachable on an Elastic IP that follows it through replacements."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate ARN for an HTTPS listener (443, TLS 1.2+) on the ALB (needs enable_alb). Empty (default) = HTTP only. With enable_write_api and a certificate, port 80 is not opened at all."
  type        = string
  default     = ""

  validation {
    condition     = var.certificate_arn == "" || can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]+$", var.certificate_arn))
    error_message = "certificate_arn must be empty or an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)."
  }
}

variable "health_check_path" {
  description = "HTTP path the ALB target group health check requests through nginx (only with enable_alb). /healthz is the app's liveness route; /readyz would also take instances out when RDS is down."
  type        = string
  default     = "/healthz"

  validation {
    condition     = can(regex("^/[A-Za-z0-9/_.-]*$", var.health_check_path))
    error_message = "health_check_path must be a path starting with /."
  }
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

  # The lab's compose files use !reset and !override, which Compose reads from
  # 2.24.4: an older plugin installs cleanly and then refuses every file at boot.
  validation {
    condition = !can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.compose_version)) || (
      tonumber(split(".", var.compose_version)[0]) > 2 || (
        tonumber(split(".", var.compose_version)[0]) == 2 && (
          tonumber(split(".", var.compose_version)[1]) > 24 || (
            tonumber(split(".", var.compose_version)[1]) == 24 &&
            tonumber(split(".", var.compose_version)[2]) >= 4
          )
        )
      )
    )
    error_message = "compose_version must be 2.24.4 or later (the compose files use !reset and !override)."
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

  validation {
    condition     = var.cache_ttl_seconds >= 1 && var.cache_ttl_seconds <= 86400 && floor(var.cache_ttl_seconds) == var.cache_ttl_seconds
    error_message = "cache_ttl_seconds must be a whole number between 1 and 86400 (the app refuses anything else)."
  }
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
  description = "SLOW_QUERY_SECONDS given to `cachelab db-init`, which stores it in the table lab_settings that slow_version() reads (RDS has no init scripts), and to the app. Must stay below CACHE_LOCK_WAIT_SECONDS (15 by default; app_settings) and DB_STATEMENT_TIMEOUT_MS (30 s), or the app refuses to start: the plan checks both."
  type        = number
  default     = 10

  validation {
    condition     = var.slow_query_seconds >= 0 && var.slow_query_seconds <= 300
    error_message = "slow_query_seconds must be between 0 and 300."
  }
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
  description = "DB_POOL_SIZE: database connections per gunicorn worker for the slow queries. At least CACHE_FILL_SLOTS + CACHE_REFRESH_THREADS (16 + 4 by default; app_settings), which the plan checks. The plan also checks the peak number of instances x gunicorn_workers x (db_pool_size + DB_CONTROL_CONNECTIONS (4) + 1 listener) against max_connections of the project's RDS parameter group."
  type        = number
  default     = 20

  validation {
    condition     = var.db_pool_size >= 2 && var.db_pool_size <= 200 && floor(var.db_pool_size) == var.db_pool_size
    error_message = "db_pool_size must be a whole number between 2 and 200."
  }
}

variable "app_settings" {
  description = "Any other setting of the app (and of db-init: ITEM_COUNT, ITEM_PAYLOAD_BYTES), by its environment variable name, e.g. { REDIS_SOCKET_TIMEOUT_MS = \"100\", CACHE_NAMESPACE = \"lab\" }. The names are checked against the ones the app reads (see .env.example); the app validates the values at start (the bootstrap runs `cachelab check-config` first, so a bad value stops the boot naming it). Variables of their own (cache_strategy, cache_ttl_seconds, slow_query_seconds, gunicorn_workers, db_pool_size) and the URLs and token Terraform sets are not accepted here."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([for k in keys(var.app_settings) : contains([
      "CACHE_GRACE_SECONDS", "CACHE_JITTER_RATIO", "CACHE_NAMESPACE", "CACHE_LOCK_WAIT_SECONDS",
      "CACHE_LOCK_LEASE_SECONDS", "XFETCH_BETA", "LOCAL_CACHE_SIZE", "CACHE_REFRESH_THREADS",
      "CACHE_FILL_SLOTS", "CACHE_MISS_SLOTS", "CACHE_TRACKING", "MEMORY_FALLBACK_TTL_MS",
      "TRACKING_HEARTBEAT_SECONDS", "ITEMS_INVALIDATION", "REQUEST_LOG_HIT_SAMPLE",
      "LOG_SUMMARY_SECONDS", "REDIS_SOCKET_TIMEOUT_MS", "REDIS_CONNECT_TIMEOUT_MS",
      "REDIS_MAX_CONNECTIONS", "BREAKER_FAILURE_THRESHOLD", "BREAKER_COOLDOWN_SECONDS",
      "DB_CONNECT_TIMEOUT_SECONDS", "DB_STATEMENT_TIMEOUT_MS", "DB_POOL_WAIT_SECONDS",
      "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT", "LOG_LEVEL",
      "CACHE_FOLLOWER_SLOTS", "CACHE_REFRESH_QUEUE", "DB_CONTROL_CONNECTIONS", "LOCAL_CACHE_BYTES",
      "NEGATIVE_TTL_SECONDS", "REDIS_RETRY_TIMEOUT_MS", "CLUSTER_REFRESH_SECONDS",
      "ITEM_COUNT", "ITEM_PAYLOAD_BYTES", "SLOW_CALL_LOG", "EDGE_CACHE_SECONDS",
    ], k)])
    error_message = "app_settings accepts only settings the app or db-init reads (see .env.example), except those with a variable of their own (cache_strategy, cache_ttl_seconds, slow_query_seconds, gunicorn_workers, db_pool_size) and those Terraform or compose.aws.yaml sets (DATABASE_URL, REDIS_URL, REDIS_CLUSTER, WRITE_API_TOKEN, DATABASE_PASSWORD_FILE, PROMETHEUS_URL, PROMETHEUS_UI_URL)."
  }
  validation {
    condition     = alltrue([for v in values(var.app_settings) : can(regex("^[A-Za-z0-9._:-]{1,64}$", v))])
    error_message = "app_settings values must be 1-64 characters of letters, digits and . _ : - (they are written to the instance's .env)."
  }
  validation {
    condition     = alltrue([for k in ["CACHE_LOCK_WAIT_SECONDS", "DB_STATEMENT_TIMEOUT_MS", "CACHE_FILL_SLOTS", "CACHE_REFRESH_THREADS", "DB_CONTROL_CONNECTIONS", "REDIS_MAX_CONNECTIONS", "GUNICORN_THREADS", "ITEM_COUNT", "ITEM_PAYLOAD_BYTES"] : can(tonumber(lookup(var.app_settings, k, "0")))])
    error_message = "CACHE_LOCK_WAIT_SECONDS, DB_STATEMENT_TIMEOUT_MS, CACHE_FILL_SLOTS, CACHE_REFRESH_THREADS, DB_CONTROL_CONNECTIONS, REDIS_MAX_CONNECTIONS, GUNICORN_THREADS, ITEM_COUNT and ITEM_PAYLOAD_BYTES in app_settings must be numbers (the plan checks the connection budgets and the slow query against them)."
  }
  validation {
    condition     = can(regex("^[a-z][a-z0-9_-]{0,31}$", lookup(var.app_settings, "CACHE_NAMESPACE", "lab")))
    error_message = "CACHE_NAMESPACE must be 1-32 characters of a-z, 0-9, _ or -, starting with a letter (it also scopes the cache user's keys: ~<namespace>:*)."
  }
}

variable "enable_write_api" {
  description = "Create a Secrets Manager secret WRITE_API_TOKEN and pass it to the app, which then turns its write API on. false (default): the variable is not set at all and the write API stays off."
  type        = bool
  default     = false
}

variable "rate_limit_rps" {
  description = "RATE_LIMIT_RPS of the nginx image: per-client request rate limit at the edge (0 = off). Clients are told apart by their address, through the ALB by the X-Forwarded-For it appends (trusted from the ALB's own subnets only); the load generator's subnets (enable_loadgen) are exempt."
  type        = number
  default     = 20

  # What the nginx image accepts (nginx/entrypoint.d/15-lab-edge-config.sh):
  # anything else plans cleanly and stops Nginx at boot.
  validation {
    condition     = var.rate_limit_rps >= 0 && var.rate_limit_rps <= 1000000 && floor(var.rate_limit_rps) == var.rate_limit_rps
    error_message = "rate_limit_rps must be a whole number from 0 to 1000000 (what the nginx image accepts)."
  }
}

variable "rate_limit_burst" {
  description = "RATE_LIMIT_BURST of the nginx image: requests a client may send above rate_limit_rps before getting 429."
  type        = number
  default     = 40

  # What the nginx image accepts (nginx/entrypoint.d/15-lab-edge-config.sh):
  # anything else plans cleanly and stops Nginx at boot.
  validation {
    condition     = var.rate_limit_burst >= 0 && var.rate_limit_burst <= 1000000 && floor(var.rate_limit_burst) == var.rate_limit_burst
    error_message = "rate_limit_burst must be a whole number from 0 to 1000000 (what the nginx image accepts)."
  }
}

variable "log_retention_days" {
  description = "Retention in days of the CloudWatch log groups (containers, RDS)."
  type        = number
  default     = 14

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, ...)."
  }
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
  description = "ElastiCache engine version (valkey 7.2/8.0/8.1, redis 7.0/7.1). RBAC (the app's own cache user) needs Valkey 7.2+ or Redis 6+."
  type        = string
  default     = "8.0"

  validation {
    condition     = contains(["7.2", "8.0", "8.1", "7.0", "7.1"], var.cache_engine_version)
    error_message = "cache_engine_version must be 7.2, 8.0 or 8.1 (valkey) or 7.0 or 7.1 (redis)."
  }
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.micro"
}

variable "cache_cluster_mode" {
  description = "ElastiCache cluster mode: cache_shards shards (node groups), each a primary and cache_replicas replicas, the cluster-on parameter group; the app gets the configuration endpoint and REDIS_CLUSTER=on. false (default): one shard, the cheapest lab (cluster mode needs at least 2 nodes)."
  type        = bool
  default     = false
}

variable "cache_shards" {
  description = "Shards (num_node_groups) with cache_cluster_mode."
  type        = number
  default     = 2

  validation {
    condition     = var.cache_shards >= 1 && var.cache_shards <= 15 && floor(var.cache_shards) == var.cache_shards
    error_message = "cache_shards must be a whole number between 1 and 15."
  }
}

variable "cache_replicas" {
  description = "Read replicas besides each primary (replicas_per_node_group in cluster mode). > 0 turns on automatic failover and Multi-AZ (the scale path)."
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

  validation {
    condition     = var.cache_snapshot_retention_days >= 0 && var.cache_snapshot_retention_days <= 35
    error_message = "cache_snapshot_retention_days must be between 0 and 35."
  }
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

  validation {
    condition     = can(regex("^db\\.[a-z0-9-]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "db_instance_class must look like db.t4g.micro."
  }
}

variable "db_allocated_storage" {
  description = "Allocated gp3 storage of the RDS instance in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.db_allocated_storage >= 20 && var.db_allocated_storage <= 65536
    error_message = "db_allocated_storage must be between 20 (RDS's gp3 minimum) and 65536 GiB."
  }
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB (0 disables autoscaling; else at least db_allocated_storage)."
  type        = number
  default     = 50

  validation {
    condition     = var.db_max_allocated_storage == 0 || var.db_max_allocated_storage >= 20
    error_message = "db_max_allocated_storage must be 0 or at least 20."
  }
}

variable "db_multi_az" {
  description = "Run RDS Multi-AZ with a standby in the second AZ (the scale path)."
  type        = bool
  default     = false
}

variable "db_max_connections" {
  description = "max_connections set in the project's RDS parameter group, from which the connection budget is computed. 0 (default) = the value rds.tf's table gives db_instance_class (below RDS's own LEAST(DBInstanceClassMemory/9531392, 5000) on the class's usable memory); set it for a class the table does not know."
  type        = number
  default     = 0

  validation {
    condition     = var.db_max_connections == 0 || (var.db_max_connections >= 20 && var.db_max_connections <= 5000 && floor(var.db_max_connections) == var.db_max_connections)
    error_message = "db_max_connections must be 0 (from the class) or a whole number between 20 and 5000."
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

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name)) && !contains(["postgres", "rdsadmin", "template0", "template1"], var.db_name)
    error_message = "db_name must be a lower-case PostgreSQL name (letters, digits, _; starting with a letter), not postgres, rdsadmin or a template."
  }
}

variable "db_username" {
  description = "Master user name; its password is generated and kept by RDS in Secrets Manager (manage_master_user_password). Only the db-init task reads it."
  type        = string
  default     = "cachelab"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_username)) && !contains(["postgres", "rdsadmin", "rdsrepladmin", "rds_superuser", "cachelab_runtime", "admin"], var.db_username)
    error_message = "db_username must be a lower-case PostgreSQL role name that RDS accepts for the master (not postgres, rdsadmin, admin, ...), other than cachelab_runtime."
  }
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

variable "alarm_cpu_credit_balance" {
  description = "Alarm when the CPU credit balance of a burstable (t-class) cache node or database falls below this many credits: it is about to be throttled to its baseline."
  type        = number
  default     = 20
}

variable "alarm_free_storage_gib" {
  description = "Alarm when the RDS instance's FreeStorageSpace falls below this many GiB."
  type        = number
  default     = 2
}

variable "alarm_replication_lag_seconds" {
  description = "Alarm when a cache replica's ReplicationLag (with cache_replicas > 0) or the RDS ReplicaLag stays above this many seconds."
  type        = number
  default     = 5
}

variable "alarm_overloaded_per_minute" {
  description = "Alarm when the app answers more than this many requests a minute with 503 overloaded (CacheOverloaded from its summary lines: admission control refusing misses)."
  type        = number
  default     = 10
}

# -----------------------------------------------------------------------------
# Load generator in the VPC (distributed Locust; loadgen.tf)
# -----------------------------------------------------------------------------
variable "enable_loadgen" {
  description = "Run the lab's Locust image in the VPC: a master (web UI through Session Manager port forwarding only) and an Auto Scaling group of loadgen_workers workers, plus an encrypted S3 bucket for headless runs' results. Its traffic is exempt from the per-client rate limit."
  type        = bool
  default     = false
}

variable "loadgen_instance_type" {
  description = "EC2 instance type of the load generator's master and workers (x86_64)."
  type        = string
  default     = "c6i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.loadgen_instance_type))
    error_message = "loadgen_instance_type must look like c6i.large."
  }
}

variable "loadgen_workers" {
  description = "Locust worker instances (each runs one worker process per vCPU)."
  type        = number
  default     = 2

  validation {
    condition     = var.loadgen_workers >= 1 && var.loadgen_workers <= 20 && floor(var.loadgen_workers) == var.loadgen_workers
    error_message = "loadgen_workers must be a whole number between 1 and 20."
  }
}

variable "loadgen_results_days" {
  description = "Days the S3 bucket keeps the load generator's results before they expire."
  type        = number
  default     = 30

  validation {
    condition     = var.loadgen_results_days >= 1 && var.loadgen_results_days <= 3650
    error_message = "loadgen_results_days must be between 1 and 3650."
  }
}
