#!/usr/bin/env bash
# Build the images from the same Dockerfiles as `docker compose build`, push
# them (terraform/push-images.sh), prepare the database and deploy.
#
#   terraform/deploy.sh                                  # interactive applies
#   terraform/deploy.sh -auto-approve -var-file=my.tfvars # extra args go to every apply
#
# Needs: terraform >= 1.7, docker with the compose plugin, AWS CLI v2 and
# credentials (AWS_PROFILE / AWS_REGION or the usual chain), git. Settings come
# from terraform/terraform.tfvars (copy terraform.tfvars.example) or -var-file.
# The image tag is a hash of the build inputs (untracked files included);
# APP_IMAGE_TAG=... overrides it. Safe to re-run after any failure.
set -euo pipefail

TF_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$TF_DIR"

for tool in terraform docker aws git python3; do
  command -v "$tool" >/dev/null || { echo "deploy.sh: $tool not found on PATH" >&2; exit 1; }
done
docker compose version >/dev/null

APP_IMAGE_TAG=${APP_IMAGE_TAG:-$("$TF_DIR/push-images.sh" tag)}
echo "==> image tag: $APP_IMAGE_TAG"

# --- 1. ECR repositories first -------------------------------------------------
terraform init -input=false
terraform apply -input=false \
  -target='aws_ecr_repository.this' -target='aws_ecr_lifecycle_policy.this' \
  -var "app_image_tag=$APP_IMAGE_TAG" "$@"

# The repository URLs from the state the targeted apply wrote (whatever
# -var-file it was given); the region is part of the registry host name
# (<account>.dkr.ecr.<region>.amazonaws.com).
outputs=$(terraform output -json)
out() { # KEY...: one value of `terraform output -json`
  python3 -c 'import functools, json, sys; print(functools.reduce(lambda v, k: v[k], sys.argv[1:], json.load(sys.stdin)))' "$@" <<<"$outputs"
}
APP_REPO=$(out ecr_repository_urls value app)
NGINX_REPO=$(out ecr_repository_urls value nginx)
LOCUST_REPO=$(out ecr_repository_urls value locust)
REGION=$(cut -d. -f4 <<<"$APP_REPO")

# --- 2. build and push, each image once ------------------------------------------
export DOCKER_DEFAULT_PLATFORM=linux/amd64 # the instances are x86_64
aws ecr get-login-password --region "$REGION" |
  docker login --username AWS --password-stdin "${APP_REPO%%/*}"
"$TF_DIR/push-images.sh" push "$APP_REPO" "$NGINX_REPO" "$APP_IMAGE_TAG" "$LOCUST_REPO"

# --- 3. the database, then db-init once (before any instance runs the new code) ----
# A targeted apply brings what the db-init task needs (the network, RDS, the
# secrets, the task itself); the task then applies what changed in
# postgres-init/ and sets the app role's password, from inside the VPC.
terraform apply -input=false -var "app_image_tag=$APP_IMAGE_TAG" \
  -target='aws_ecs_task_definition.db_init' -target='aws_ecs_cluster.this' \
  -target='aws_iam_role_policy.db_init_execution' -target='aws_route_table_association.public' \
  -target='aws_vpc_security_group_egress_rule.db_init_https' \
  -target='aws_vpc_security_group_egress_rule.db_init_to_db' \
  -target='aws_vpc_security_group_ingress_rule.db_from_db_init' "$@"
"$TF_DIR/db-init.sh"

# --- 4. everything else ----------------------------------------------------------
terraform apply -input=false -var "app_image_tag=$APP_IMAGE_TAG" "$@"

echo
echo "==> deployed $APP_IMAGE_TAG"
terraform output url
echo "Instances need ~3-5 minutes after launch (docker, images). Verify:"
echo "  URL=\$(terraform -chdir=$TF_DIR output -raw url)"
echo "  curl -si \"\$URL\" | grep -i -E 'x-cache|cache-status'   # twice: MISS, then HIT"
