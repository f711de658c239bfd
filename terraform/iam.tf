# Instance role of the app tier: least privilege.
#   - Session Manager (AmazonSSMManagedInstanceCore), no SSH
#   - ECR pull from exactly the app and nginx repositories (+
#     GetAuthorizationToken, which AWS only allows on "*")
#   - secretsmanager:GetSecretValue on exactly the runtime secrets:
#     APP_DB_PASSWORD, the cache user's password and, with enable_write_api,
#     WRITE_API_TOKEN. Never the RDS master: only the db-init task (dbinit.tf)
#     reads that one.
#   - CloudWatch Logs writes on the container log group (awslogs driver)
#   - its own health (autoscaling:SetInstanceHealth on the app group): a boot
#     that fails for good asks the group for a replacement
#   - the heartbeat (cloudwatch:PutMetricData in the lab's namespace only)
#   - without the ALB: taking over the lab's Elastic IP (the stable URL)
data "aws_iam_policy_document" "ec2_assume" {
  statement {
    sid     = "EC2AssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "app" {
  name_prefix        = "${var.name}-app-"
  description        = "App tier EC2 instances of ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.app.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "app" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the API does not support resource-level permissions
  }

  statement {
    sid = "EcrPull"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [aws_ecr_repository.this["app"].arn, aws_ecr_repository.this["nginx"].arn]
  }

  statement {
    sid       = "ReadRuntimeSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for s in aws_secretsmanager_secret.this : s.arn]
  }

  statement {
    sid       = "Heartbeat"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # the API has no resources; the condition names the lab's namespace
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [local.metrics_namespace]
    }
  }

  statement {
    sid       = "ReportOwnHealth"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.name}-app"]
  }

  dynamic "statement" {
    for_each = var.enable_alb ? [] : [1]
    content {
      sid     = "TakeOverTheElasticIp"
      actions = ["ec2:AssociateAddress"]
      resources = [
        "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:elastic-ip/${aws_eip.app[0].allocation_id}",
        "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:instance/*",
        "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:network-interface/*",
      ]
      condition {
        test     = "StringEquals"
        variable = "aws:ResourceTag/Name"
        values   = ["${var.name}-app"]
      }
    }
  }

  statement {
    sid = "ContainerLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:DescribeLogStreams",
      "logs:PutLogEvents",
    ]
    resources = [
      aws_cloudwatch_log_group.containers.arn,
      "${aws_cloudwatch_log_group.containers.arn}:log-stream:*",
    ]
  }
}

resource "aws_iam_role_policy" "app" {
  name   = "${var.name}-app-runtime"
  role   = aws_iam_role.app.id
  policy = data.aws_iam_policy_document.app.json
}

resource "aws_iam_instance_profile" "app" {
  name_prefix = "${var.name}-app-"
  role        = aws_iam_role.app.name
}

resource "aws_cloudwatch_log_group" "containers" {
  #checkov:skip=CKV_AWS_158: lab - CloudWatch Logs' own encryption is used; a customer-managed KMS key costs $1/month
  #checkov:skip=CKV_AWS_338: lab - container logs are kept for log_retention_days (14 by default), not a year
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
}
