# -----------------------------------------------------------------------------
# VPC across 2 AZs.
#   public  subnets: app tier (EC2 instances) and the db-init task. Route
#                    0.0.0.0/0 -> IGW.
#   edge    subnets: the ALB alone (enable_alb), so nginx can believe the
#                    X-Forwarded-For of exactly these addresses. Public routes.
#   loadgen subnets: the load generator alone (enable_loadgen), so nginx can
#                    exempt exactly these addresses from the rate limit.
#                    Public routes.
#   private subnets: data tier (ElastiCache, RDS). Route table has only the
#                    local VPC route (and the free S3 gateway endpoint): no
#                    internet route, no NAT, no public IPs.
# App-tier egress (ECR, Secrets Manager, SSM, CloudWatch Logs, dnf, the
# Compose plugin download) goes out through the internet gateway from the
# instance's public IP; no NAT gateway or interface endpoints are billed.
# Ingress to the app tier is limited by security groups (see ec2.tf / alb.tf).
# -----------------------------------------------------------------------------
resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11: lab - VPC flow logs cost CloudWatch ingestion and are not needed to study caching; the data tier has no internet route and SG-only ingress
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }
}

# Lock down the VPC's default security group (nothing uses it).
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.name}-default-unused" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = { Name = var.name }
}

resource "aws_subnet" "public" {
  count = 2

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.public_subnet_cidrs[count.index]

  # Public IPs are requested per instance in the launch template instead.
  map_public_ip_on_launch = false

  tags = {
    Name = "${var.name}-public-${local.azs[count.index]}"
    Tier = "app"
  }
}

resource "aws_subnet" "edge" {
  count = var.enable_alb ? 2 : 0

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.edge_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = {
    Name = "${var.name}-edge-${local.azs[count.index]}"
    Tier = "edge"
  }
}

resource "aws_subnet" "loadgen" {
  count = var.enable_loadgen ? 2 : 0

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.loadgen_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = {
    Name = "${var.name}-loadgen-${local.azs[count.index]}"
    Tier = "loadgen"
  }
}

resource "aws_subnet" "private" {
  count = 2

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.private_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = {
    Name = "${var.name}-private-${local.azs[count.index]}"
    Tier = "data"
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.name}-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = 2

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "edge" {
  count = length(aws_subnet.edge)

  subnet_id      = aws_subnet.edge[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "loadgen" {
  count = length(aws_subnet.loadgen)

  subnet_id      = aws_subnet.loadgen[count.index].id
  route_table_id = aws_route_table.public.id
}

# Private route table: intentionally no route to an internet or NAT gateway.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = 2

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# S3 gateway endpoint: free; ECR image layers are served from S3, so pulls
# stay on the AWS network.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.public.id, aws_route_table.private.id]

  tags = { Name = "${var.name}-s3" }
}

# -----------------------------------------------------------------------------
# Security groups. Rules are separate resources so tests can inspect them.
# -----------------------------------------------------------------------------
resource "aws_security_group" "alb" {
  count = var.enable_alb ? 1 : 0

  name        = "${var.name}-alb"
  description = "ALB: HTTP/HTTPS from allowed_http_cidrs and the load generator only"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-alb" }
}

resource "aws_security_group" "app" {
  name        = "${var.name}-app"
  description = "App tier EC2 instances"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-app" }
}

resource "aws_security_group" "cache" {
  name        = "${var.name}-cache"
  description = "ElastiCache: 6379 from the app tier only"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-cache" }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-db"
  description = "RDS PostgreSQL: 5432 from the app tier and the db-init task only"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-db" }
}

resource "aws_security_group" "db_init" {
  #checkov:skip=CKV2_AWS_5: attached to the db-init task when db-init.sh runs it (aws ecs run-task --network-configuration)
  name        = "${var.name}-db-init"
  description = "The db-init task: out to RDS and to AWS APIs only, nothing in"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-db-init" }
}

resource "aws_security_group" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  name        = "${var.name}-loadgen"
  description = "Load generator: Locust master and workers, nothing in from outside the group"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-loadgen" }
}

# --- ALB ---------------------------------------------------------------------
# Port 80 from the allowed CIDRs, except when the write API is on (its token
# must not travel in clear): then only HTTPS (certificate_arn).
resource "aws_vpc_security_group_ingress_rule" "alb_http" {
  for_each = var.enable_alb && !var.enable_write_api ? toset(var.allowed_http_cidrs) : toset([])

  security_group_id = aws_security_group.alb[0].id
  description       = "HTTP from an allowed client CIDR"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each = var.enable_alb && var.certificate_arn != "" ? toset(var.allowed_http_cidrs) : toset([])

  security_group_id = aws_security_group.alb[0].id
  description       = "HTTPS from an allowed client CIDR"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_ingress_rule" "alb_from_loadgen" {
  count = var.enable_alb && var.enable_loadgen ? 1 : 0

  security_group_id            = aws_security_group.alb[0].id
  description                  = "The load generator (in the VPC, to the ALB's private addresses)"
  referenced_security_group_id = aws_security_group.loadgen[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.loadgen_target_port
  to_port                      = local.loadgen_target_port
}

resource "aws_vpc_security_group_egress_rule" "alb_to_app" {
  count = var.enable_alb ? 1 : 0

  security_group_id            = aws_security_group.alb[0].id
  description                  = "HTTP to the app instances"
  referenced_security_group_id = aws_security_group.app.id
  ip_protocol                  = "tcp"
  from_port                    = 80
  to_port                      = 80
}

# --- App tier ----------------------------------------------------------------
# Without ALB: HTTP straight from allowed_http_cidrs (none by default; never
# with the write API on, whose token must not travel in clear).
resource "aws_vpc_security_group_ingress_rule" "app_http_cidr" {
  for_each = var.enable_alb || var.enable_write_api ? toset([]) : toset(var.allowed_http_cidrs)

  security_group_id = aws_security_group.app.id
  description       = "HTTP from an allowed client CIDR"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
}

# With ALB: HTTP only from the ALB's security group.
resource "aws_vpc_security_group_ingress_rule" "app_http_alb" {
  count = var.enable_alb ? 1 : 0

  security_group_id            = aws_security_group.app.id
  description                  = "HTTP from the ALB"
  referenced_security_group_id = aws_security_group.alb[0].id
  ip_protocol                  = "tcp"
  from_port                    = 80
  to_port                      = 80
}

# Without ALB: the load generator in the VPC straight to the instance.
resource "aws_vpc_security_group_ingress_rule" "app_http_loadgen" {
  count = !var.enable_alb && var.enable_loadgen ? 1 : 0

  security_group_id            = aws_security_group.app.id
  description                  = "HTTP from the load generator"
  referenced_security_group_id = aws_security_group.loadgen[0].id
  ip_protocol                  = "tcp"
  from_port                    = 80
  to_port                      = 80
}

resource "aws_vpc_security_group_egress_rule" "app_https" {
  security_group_id = aws_security_group.app.id
  description       = "HTTPS to AWS APIs (ECR, SSM, Secrets Manager, Logs), dnf and the Compose download"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "app_to_cache" {
  security_group_id            = aws_security_group.app.id
  description                  = "Redis/Valkey (TLS) to ElastiCache"
  referenced_security_group_id = aws_security_group.cache.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_egress_rule" "app_to_db" {
  security_group_id            = aws_security_group.app.id
  description                  = "PostgreSQL (TLS) to RDS"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# --- Data tier: only the app SG, no CIDR rules at all -----------------------
resource "aws_vpc_security_group_ingress_rule" "cache_from_app" {
  security_group_id            = aws_security_group.cache.id
  description                  = "Redis/Valkey from the app tier"
  referenced_security_group_id = aws_security_group.app.id
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
}

resource "aws_vpc_security_group_ingress_rule" "db_from_app" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the app tier"
  referenced_security_group_id = aws_security_group.app.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_vpc_security_group_ingress_rule" "db_from_db_init" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the db-init task"
  referenced_security_group_id = aws_security_group.db_init.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# --- db-init task -------------------------------------------------------------
resource "aws_vpc_security_group_egress_rule" "db_init_https" {
  security_group_id = aws_security_group.db_init.id
  description       = "HTTPS to ECR, Secrets Manager, CloudWatch Logs and the RDS CA bundle"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "db_init_to_db" {
  security_group_id            = aws_security_group.db_init.id
  description                  = "PostgreSQL (TLS) to RDS"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# --- Load generator --------------------------------------------------------------
resource "aws_vpc_security_group_ingress_rule" "loadgen_workers" {
  count = var.enable_loadgen ? 1 : 0

  security_group_id            = aws_security_group.loadgen[0].id
  description                  = "Locust workers to their master"
  referenced_security_group_id = aws_security_group.loadgen[0].id
  ip_protocol                  = "tcp"
  from_port                    = 5557
  to_port                      = 5557
}

resource "aws_vpc_security_group_egress_rule" "loadgen_to_master" {
  count = var.enable_loadgen ? 1 : 0

  security_group_id            = aws_security_group.loadgen[0].id
  description                  = "Locust workers to their master"
  referenced_security_group_id = aws_security_group.loadgen[0].id
  ip_protocol                  = "tcp"
  from_port                    = 5557
  to_port                      = 5557
}

resource "aws_vpc_security_group_egress_rule" "loadgen_https" {
  count = var.enable_loadgen ? 1 : 0

  security_group_id = aws_security_group.loadgen[0].id
  description       = "HTTPS to ECR, S3, SSM, CloudWatch Logs and the Docker download"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "loadgen_to_target" {
  count = var.enable_loadgen ? 1 : 0

  security_group_id            = aws_security_group.loadgen[0].id
  description                  = "The lab: the ALB's private addresses, or the instance"
  referenced_security_group_id = var.enable_alb ? aws_security_group.alb[0].id : aws_security_group.app.id
  ip_protocol                  = "tcp"
  from_port                    = local.loadgen_target_port
  to_port                      = local.loadgen_target_port
}
