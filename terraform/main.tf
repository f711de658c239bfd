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

  # 10.40.0.0/16 -> public 10.40.0.0/24, 10.40.1.0/24; private 10.40.10.0/24, 10.40.11.0/24
  public_subnet_cidrs  = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i)]
  private_subnet_cidrs = [for i in range(2) : cidrsubnet(var.vpc_cidr, 8, i + 10)]

  app_repositories = {
    app   = "${var.name}/app"
    nginx = "${var.name}/nginx"
  }

  # tag@digest from the ECR data source (ecr.tf): the plan fails while the
  # image is missing, so no instance ever starts without its image.
  app_image    = "${aws_ecr_repository.this["app"].repository_url}:${var.app_image_tag}@${data.aws_ecr_image.this["app"].image_digest}"
  nginx_image  = "${aws_ecr_repository.this["nginx"].repository_url}:${var.app_image_tag}@${data.aws_ecr_image.this["nginx"].image_digest}"
  ecr_registry = split("/", aws_ecr_repository.this["app"].repository_url)[0]

  log_group_name = "/${var.name}/containers"
}
