# Instance role of the app tier: least privilege.
#   - Session Manager (AmazonSSMManagedInstanceCore), no SSH
#   - ECR pull from exactly the two repositories (+ GetAuthorizationToken,
#     which AWS only allows on "*")
#   - secretsmanager:GetSecretValue on exactly the runtime secrets: the RDS
#     master (db-init only), APP_DB_PASSWORD, the cache AUTH token and, with
#     enable_write_api, WRITE_API_TOKEN
#   - CloudWatch Logs writes on the container log group (awslogs driver)
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
    resources = [for r in aws_ecr_repository.this : r.arn]
  }

  statement {
    sid     = "ReadRuntimeSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat(
      [aws_db_instance.this.master_user_secret[0].secret_arn],
      [for s in aws_secretsmanager_secret.this : s.arn],
    )
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
