#!/usr/bin/env bash
# Rotate one of the lab's generated secrets and hand the new value to what
# uses it, then to every instance:
#
#   terraform/rotate-secret.sh cache_auth [deploy.sh args...]
#       the app's ElastiCache user password. The secret keeps the old one as
#       "previous" and deploy.sh gives the user both, so instances booted
#       before keep connecting until the refresh replaces them.
#   terraform/rotate-secret.sh app_db [deploy.sh args...]
#       the app's PostgreSQL role password: deploy.sh's db-init sets it. The
#       instances booted before keep their open connections, but a new
#       connection of theirs fails until the refresh replaces them (PostgreSQL
#       knows one password per role): rotate when the lab is quiet.
#   terraform/rotate-secret.sh write_api [deploy.sh args...]
#       WRITE_API_TOKEN (with enable_write_api).
#
# (The RDS master rotates itself; the db-init task reads its current version.)
set -euo pipefail
TF_DIR=$(cd "$(dirname "$0")" && pwd)
name=${1:-}
shift || true
case "$name" in
  cache_auth | app_db | write_api) ;;
  *) echo "usage: $0 cache_auth|app_db|write_api [deploy.sh args...]" >&2; exit 2 ;;
esac

outputs=$(terraform -chdir="$TF_DIR" output -json)
out() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]]["value"] or "")' "$1" <<<"$outputs"; }
region=$(out region)
arn=$(out "${name}_secret_arn")
[ -n "$arn" ] || { echo "rotate-secret.sh: no $name secret in this deployment" >&2; exit 1; }
new=$(aws secretsmanager get-random-password --region "$region" --exclude-punctuation \
  --password-length 48 --query RandomPassword --output text)
if [ "$name" = cache_auth ]; then
  current=$(aws secretsmanager get-secret-value --region "$region" --secret-id "$arn" \
    --version-stage AWSCURRENT --query SecretString --output text)
  value=$(python3 -c 'import json, sys; print(json.dumps({"password": sys.argv[1], "previous": json.loads(sys.argv[2])["password"]}))' "$new" "$current")
else
  value=$new
fi
aws secretsmanager put-secret-value --region "$region" --secret-id "$arn" --secret-string "$value" \
  --query VersionId --output text
unset new value current
echo "==> $name rotated; deploying it"
"$TF_DIR/deploy.sh" "$@"
group=$(terraform -chdir="$TF_DIR" output -raw autoscaling_group_name)
preferences=$(terraform -chdir="$TF_DIR" output -raw instance_refresh_preferences)
aws autoscaling start-instance-refresh --region "$region" --auto-scaling-group-name "$group" \
  --preferences "$preferences" --query InstanceRefreshId --output text
echo "==> instance refresh started: every instance boots with the new $name"
