# db-init, once per deploy, as a one-shot Fargate task in the VPC (deploy.sh
# runs it with terraform/db-init.sh before the instances start or roll; the
# database is private, so deploy.sh cannot reach it itself).
#
# The task is the only thing that may read the RDS master secret: ECS hands
# the secret's current version (it rotates every 7 days) to this one
# container at start. It applies postgres-init/*.sql (skipping what did not
# change, with a lock timeout: app/cachelab/postgres/provision.py), sets the
# app role's password from its secret's current version, and stores the
# lab's settings. The app instances never hold the master password.
resource "aws_ecs_cluster" "this" {
  #checkov:skip=CKV_AWS_65: lab - Container Insights bills CloudWatch metrics for a task that runs a few seconds per deploy; its logs go to the container log group
  name = var.name

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    sid     = "EcsTasksAssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Used by ECS to start the task: pull the image, ship its logs, read the two
# secrets it injects. The container itself gets no role (no AWS calls).
resource "aws_iam_role" "db_init_execution" {
  name_prefix        = "${var.name}-db-init-"
  description        = "Starts the ${var.name} db-init task: image, logs, the master and app database secrets"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "db_init_execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # the API does not support resource-level permissions
  }

  statement {
    sid       = "EcrPull"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [aws_ecr_repository.this["app"].arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.containers.arn}:log-stream:*"]
  }

  statement {
    sid     = "DatabaseSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      aws_db_instance.this.master_user_secret[0].secret_arn,
      aws_secretsmanager_secret.this["app_db"].arn,
    ]
  }
}

resource "aws_iam_role_policy" "db_init_execution" {
  name   = "${var.name}-db-init"
  role   = aws_iam_role.db_init_execution.id
  policy = data.aws_iam_policy_document.db_init_execution.json
}

locals {
  # db-init's environment; tests/test_aws_rehearsal.py runs the image with the
  # same names against the RDS stand-in.
  db_init_environment = merge(
    {
      DB_HOST            = aws_db_instance.this.address
      DB_PORT            = tostring(aws_db_instance.this.port)
      DB_NAME            = var.db_name
      DB_CA_URL          = local.rds_ca_url
      APP_DB_USER        = var.app_db_username
      SLOW_QUERY_SECONDS = tostring(var.slow_query_seconds)
    },
    { for k, v in var.app_settings : k => v if contains(local.db_init_setting_names, k) },
  )
  db_init_secrets = {
    DB_OWNER_SECRET = aws_db_instance.this.master_user_secret[0].secret_arn
    APP_DB_PASSWORD = aws_secretsmanager_secret.this["app_db"].arn
  }
}

resource "aws_ecs_task_definition" "db_init" {
  family                   = "${var.name}-db-init"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.db_init_execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The root is read-only; db-init writes the downloaded CA bundle to /tmp.
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "db-init"
    image                  = local.app_image
    essential              = true
    command                = ["cachelab", "db-init"]
    readonlyRootFilesystem = true
    linuxParameters        = { capabilities = { drop = ["ALL"] } }
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    environment            = [for k in sort(keys(local.db_init_environment)) : { name = k, value = local.db_init_environment[k] }]
    secrets                = [for k in sort(keys(local.db_init_secrets)) : { name = k, valueFrom = local.db_init_secrets[k] }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.containers.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "db-init"
        mode                  = "non-blocking"
        max-buffer-size       = "4m"
      }
    }
  }])
}
