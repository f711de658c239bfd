#!/usr/bin/env bash
# Tear the AWS lab down completely: instances, ALB, ElastiCache, RDS (no final
# snapshot unless db_skip_final_snapshot = false), secrets (no recovery
# window), ECR repositories including their images (force_delete), VPC.
#
#   terraform/destroy.sh [-auto-approve]
set -euo pipefail

TF_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$TF_DIR"
command -v terraform >/dev/null || { echo "destroy.sh: terraform not found on PATH" >&2; exit 1; }

terraform init -input=false
# app_image_tag is required by the configuration: reuse the deployed one.
tag=$(terraform output -raw app_image_tag 2>/dev/null || true)
terraform destroy -input=false -var "app_image_tag=${APP_IMAGE_TAG:-${tag:-destroy}}" "$@"

echo "==> destroyed. Left behind only if you asked for it:"
echo "    - a final RDS snapshot when db_skip_final_snapshot = false (aws rds describe-db-snapshots)"
