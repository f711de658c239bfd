#!/usr/bin/env bash
# Build the images from the same Dockerfiles as `docker compose build`, push
# them to ECR under an immutable tag (the git short sha) and deploy.
#
#   terraform/deploy.sh                 # interactive terraform apply
#   terraform/deploy.sh -auto-approve   # extra args go to both applies
#
# Needs: terraform >= 1.7, docker with the compose plugin, AWS CLI v2 and
# credentials (AWS_PROFILE / AWS_REGION or the usual chain). Settings come
# from terraform/terraform.tfvars (copy terraform.tfvars.example).
# APP_IMAGE_TAG=... overrides the tag.
set -euo pipefail

TF_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$TF_DIR/.." && pwd)
cd "$TF_DIR"

for tool in terraform docker aws git; do
  command -v "$tool" >/dev/null || { echo "deploy.sh: $tool not found on PATH" >&2; exit 1; }
done
docker compose version >/dev/null

# --- immutable tag -------------------------------------------------------------
if [ -z "${APP_IMAGE_TAG:-}" ]; then
  APP_IMAGE_TAG=$(git -C "$ROOT" rev-parse --short=12 HEAD)
  if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
    # uncommitted changes: never reuse the commit's tag for different content
    APP_IMAGE_TAG="$APP_IMAGE_TAG-dirty-$(date -u +%Y%m%d%H%M%S)"
  fi
fi
echo "==> image tag: $APP_IMAGE_TAG"

tf_eval() { echo "$1" | terraform console | tr -d '"'; }

# --- 1. ECR repositories first -------------------------------------------------
terraform init -input=false
terraform apply -input=false \
  -target='aws_ecr_repository.this' -target='aws_ecr_lifecycle_policy.this' \
  -var "app_image_tag=$APP_IMAGE_TAG" "$@"

REGION=$(tf_eval 'var.region')
APP_REPO=$(tf_eval 'aws_ecr_repository.this["app"].repository_url')
NGINX_REPO=$(tf_eval 'aws_ecr_repository.this["nginx"].repository_url')
REGISTRY=${APP_REPO%%/*}

# --- 2. build with Compose (same Dockerfiles/contexts as local) and push -------
export APP_IMAGE="$APP_REPO:$APP_IMAGE_TAG"
export NGINX_APP_IMAGE="$NGINX_REPO:$APP_IMAGE_TAG"
export DOCKER_DEFAULT_PLATFORM=linux/amd64 # the instances are x86_64

aws ecr get-login-password --region "$REGION" |
  docker login --username AWS --password-stdin "$REGISTRY"

image_exists() {
  aws ecr describe-images --region "$REGION" --repository-name "${1#*/}" \
    --image-ids "imageTag=$2" >/dev/null 2>&1
}

if image_exists "$APP_REPO" "$APP_IMAGE_TAG" && image_exists "$NGINX_REPO" "$APP_IMAGE_TAG"; then
  echo "==> $APP_IMAGE_TAG already in ECR (tags are immutable): skipping build/push"
else
  echo "==> building $APP_IMAGE and $NGINX_APP_IMAGE"
  docker compose -f "$ROOT/compose.yaml" --project-directory "$ROOT" build app nginx
  docker push "$APP_IMAGE"
  docker push "$NGINX_APP_IMAGE"
fi

# --- 3. everything else ----------------------------------------------------------
terraform apply -input=false -var "app_image_tag=$APP_IMAGE_TAG" "$@"

echo
echo "==> deployed $APP_IMAGE_TAG"
terraform output url
echo "Instances need ~3-5 minutes after boot (docker, images, db-init). Verify:"
echo "  URL=\$(terraform -chdir=$TF_DIR output -raw url)"
echo "  curl -si \"\$URL\" | grep -i -E 'x-cache|cache-status'   # twice: MISS, then HIT"
