# ECR repositories for the images built from the same Dockerfiles as the
# local Compose stack (app/Dockerfile, nginx/Dockerfile, loadtest/Dockerfile).
resource "aws_ecr_repository" "this" {
  for_each = local.app_repositories

  name                 = each.value
  image_tag_mutability = "IMMUTABLE"
  force_delete         = true # lab: `terraform destroy` removes pushed images too

  image_scanning_configuration {
    scan_on_push = true
  }

  # AWS-managed KMS key (aws/ecr): no key to pay for or manage.
  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 20 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 20
      }
      action = { type = "expire" }
    }]
  })
}

# The images deploy.sh (terraform/push-images.sh) pushed under app_image_tag.
# Reading them fails with ImageNotFoundException when the tag was never
# pushed: `terraform apply` stops before any instance is created.
#
# Read at plan time (by name, not through the repository resource): on an
# account where the repositories do not exist yet the plan fails naming them;
# deploy.sh creates them first with a targeted apply.
data "aws_ecr_image" "this" {
  for_each = local.used_repositories

  repository_name = each.value
  image_tag       = var.app_image_tag
}
