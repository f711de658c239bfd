# The load generator in the VPC (enable_loadgen): the lab's own Locust image
# (loadtest/Dockerfile, pushed to ECR by deploy.sh), a master and an Auto
# Scaling group of workers, in their own subnets:
#
#   - the web UI listens on the master's 127.0.0.1:8089 only: reach it with
#     the loadgen_ui_command output (Session Manager port forwarding);
#   - a headless run (loadgen_run_command, an SSM command) writes Locust's
#     CSVs, its HTML report and the lab's configuration to the results bucket;
#     `python -m loadtest.loadgen fetch` brings them back and prints them
#     beside the local run with the cost table;
#   - its traffic reaches the lab from inside the VPC (the ALB's private
#     addresses, or the instance), from subnets nginx exempts from the
#     per-client rate limit (RATE_LIMIT_EXEMPT); nothing else runs there.
#
# host/loadgen.sh does the work on both kinds of host (tested in
# tests/test_aws_rehearsal.py against the rehearsal stack).
data "aws_ec2_instance_type" "loadgen" {
  count         = var.enable_loadgen ? 1 : 0
  instance_type = var.loadgen_instance_type
}

locals {
  loadgen_master_ip = cidrhost(local.loadgen_subnet_cidrs[0], 10)
  # Workers run one Locust process per vCPU.
  loadgen_worker_processes = var.enable_loadgen ? var.loadgen_workers * data.aws_ec2_instance_type.loadgen[0].default_vcpus : 0
  loadgen_target_port      = local.https ? 443 : 80

  loadgen_env = var.enable_loadgen ? {
    AWS_REGION     = var.region
    ECR_REGISTRY   = local.ecr_registry
    LOCUST_IMAGE   = local.locust_image
    MASTER_HOST    = local.loadgen_master_ip
    EXPECT_WORKERS = local.loadgen_worker_processes
    RESULTS_BUCKET = aws_s3_bucket.loadgen[0].bucket
    # How the run finds the lab: the ALB's private addresses (its network
    # interfaces carry this description), or the app instance.
    TARGET_SCHEME       = local.https ? "https" : "http"
    ALB_ENI_DESCRIPTION = var.enable_alb ? "ELB ${aws_lb.app[0].arn_suffix}" : ""
    APP_GROUP           = aws_autoscaling_group.app.name
    # The lab's configuration, recorded beside every run (base64 of JSON).
    LAB_CONFIGURATION = base64encode(jsonencode(local.lab_configuration))
  } : {}

  loadgen_user_data = { for role in ["master", "worker"] : role => base64gzip(templatefile("${path.module}/loadgen-user-data.sh.tftpl", {
    role        = role
    loadgen_sh  = file("${path.module}/host/loadgen.sh")
    loadgen_env = join("\n", [for k in sort(keys(local.loadgen_env)) : "${k}=${local.loadgen_env[k]}"])
  })) }
}

# --- results bucket: encrypted, private, TLS only, expiring -------------------------
resource "aws_s3_bucket" "loadgen" {
  count = var.enable_loadgen ? 1 : 0
  #checkov:skip=CKV_AWS_18: lab - access logging needs a second bucket; the results are load-test output, readable only by the account
  #checkov:skip=CKV_AWS_144: lab - load-test results need no cross-region replica
  #checkov:skip=CKV_AWS_145: lab - SSE-S3 (AES256) encryption; a customer-managed KMS key costs $1/month
  #checkov:skip=CKV2_AWS_62: lab - nothing consumes event notifications of load-test results
  #checkov:skip=CKV_AWS_21: the results expire after loadgen_results_days; versions would only keep what expired

  bucket_prefix = "${var.name}-loadgen-"
  force_destroy = true # lab: destroy removes the results too (fetch them first)
}

resource "aws_s3_bucket_public_access_block" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  bucket                  = aws_s3_bucket.loadgen[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  bucket = aws_s3_bucket.loadgen[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  bucket = aws_s3_bucket.loadgen[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  bucket = aws_s3_bucket.loadgen[0].id
  rule {
    id     = "expire-results"
    status = "Enabled"
    filter {}
    expiration {
      days = var.loadgen_results_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "loadgen_bucket" {
  count = var.enable_loadgen ? 1 : 0

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.loadgen[0].arn, "${aws_s3_bucket.loadgen[0].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  bucket = aws_s3_bucket.loadgen[0].id
  policy = data.aws_iam_policy_document.loadgen_bucket[0].json

  depends_on = [aws_s3_bucket_public_access_block.loadgen]
}

# --- the hosts' role: SSM, the locust image, the results, finding the target -----------
resource "aws_iam_role" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  name_prefix        = "${var.name}-loadgen-"
  description        = "Load generator of ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "loadgen_ssm_core" {
  count = var.enable_loadgen ? 1 : 0

  role       = aws_iam_role.loadgen[0].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the API does not support resource-level permissions
  }

  statement {
    sid       = "EcrPull"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.this["locust"].arn]
  }

  statement {
    sid       = "WriteResults"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.loadgen[0].arn}/runs/*"]
  }

  statement {
    sid       = "FindTheTarget"
    actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeInstances"]
    resources = ["*"] # Describe* calls support no resource-level permissions
  }
}

resource "aws_iam_role_policy" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  name   = "${var.name}-loadgen"
  role   = aws_iam_role.loadgen[0].id
  policy = data.aws_iam_policy_document.loadgen[0].json
}

resource "aws_iam_instance_profile" "loadgen" {
  count = var.enable_loadgen ? 1 : 0

  name_prefix = "${var.name}-loadgen-"
  role        = aws_iam_role.loadgen[0].name
}

# --- master and workers ------------------------------------------------------------
resource "aws_launch_template" "loadgen" {
  for_each = var.enable_loadgen ? toset(["master", "worker"]) : toset([])

  name_prefix   = "${var.name}-loadgen-${each.key}-"
  description   = "${var.name} load generator (${each.key})"
  image_id      = data.aws_ssm_parameter.al2023_ami.value
  instance_type = var.loadgen_instance_type
  user_data     = local.loadgen_user_data[each.key]
  ebs_optimized = true

  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.loadgen[0].arn
  }

  # The master's interface is the instance's own (a fixed address, below).
  vpc_security_group_ids = each.key == "master" ? [aws_security_group.loadgen[0].id] : null

  dynamic "network_interfaces" {
    for_each = each.key == "worker" ? [1] : []
    content {
      #checkov:skip=CKV_AWS_88: lab - the load generator uses a public IP for egress (ECR, S3, SSM) instead of a NAT gateway; its security group admits nothing from outside the group
      device_index                = 0
      associate_public_ip_address = true
      delete_on_termination       = true
      security_groups             = [aws_security_group.loadgen[0].id]
    }
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 16
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = { Name = "${var.name}-loadgen-${each.key}" }
  }

  lifecycle {
    precondition {
      condition     = contains(data.aws_ec2_instance_type.loadgen[0].supported_architectures, "x86_64")
      error_message = "loadgen_instance_type ${var.loadgen_instance_type} is not x86_64: the AMI and the Locust image are x86_64."
    }
    precondition {
      condition     = length(local.loadgen_user_data[each.key]) <= 16384
      error_message = "The load generator's gzip+base64 user data exceeds the 16 KB EC2 limit."
    }
  }
}

# The master at a fixed private address the workers know (an Auto Scaling
# group cannot pin an address); everything else comes from its template.
resource "aws_instance" "loadgen_master" {
  count = var.enable_loadgen ? 1 : 0
  #checkov:skip=CKV_AWS_88: lab - the load generator uses a public IP for egress (ECR, S3, SSM) instead of a NAT gateway; its security group admits nothing from outside the group
  #checkov:skip=CKV_AWS_126: detailed monitoring is on in its launch template (aws_launch_template.loadgen["master"])
  #checkov:skip=CKV_AWS_135: EBS optimisation is on in its launch template
  #checkov:skip=CKV_AWS_79: IMDSv2 is required by its launch template
  #checkov:skip=CKV_AWS_8: the root volume is encrypted by its launch template
  #checkov:skip=CKV2_AWS_41: its instance profile (aws_iam_instance_profile.loadgen) comes from its launch template

  subnet_id                   = aws_subnet.loadgen[0].id
  private_ip                  = local.loadgen_master_ip
  associate_public_ip_address = true

  launch_template {
    id      = aws_launch_template.loadgen["master"].id
    version = aws_launch_template.loadgen["master"].latest_version
  }

  tags = { Name = "${var.name}-loadgen-master" }

  depends_on = [
    aws_route_table_association.loadgen,
    aws_iam_role_policy.loadgen,
    aws_iam_role_policy_attachment.loadgen_ssm_core,
  ]
}

resource "aws_autoscaling_group" "loadgen_worker" {
  count = var.enable_loadgen ? 1 : 0

  name                = "${var.name}-loadgen-worker"
  vpc_zone_identifier = aws_subnet.loadgen[*].id
  min_size            = var.loadgen_workers
  max_size            = var.loadgen_workers
  desired_capacity    = var.loadgen_workers
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.loadgen["worker"].id
    version = aws_launch_template.loadgen["worker"].latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-loadgen-worker"
    propagate_at_launch = true
  }

  depends_on = [
    aws_instance.loadgen_master,
    aws_route_table_association.loadgen,
    aws_iam_role_policy.loadgen,
    aws_iam_role_policy_attachment.loadgen_ssm_core,
  ]
}
