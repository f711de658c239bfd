#!/usr/bin/env bash
# Run db-init once, as the one-shot Fargate task of terraform/dbinit.tf, and
# wait for it: deploy.sh calls this before the instances start or roll. The
# database is private, so db-init runs inside the VPC; only this task may read
# the RDS master secret (ECS hands its current version to the container).
#
#   terraform/db-init.sh          # after `terraform apply` (reads the outputs)
#
# Exit 0 when db-init succeeded; its log (CloudWatch) is printed either way.
# db-init's own exit 75 (the database not reachable yet, or a table kept
# locked) is retried, up to DB_INIT_ATTEMPTS times.
set -euo pipefail
TF_DIR=$(cd "$(dirname "$0")" && pwd)
DB_INIT_ATTEMPTS=${DB_INIT_ATTEMPTS:-3}

outputs=$(terraform -chdir="$TF_DIR" output -json)
out() { # KEY...: one value of `terraform output -json`
  python3 -c 'import functools, json, sys; v = functools.reduce(lambda v, k: v[k], sys.argv[1:], json.load(sys.stdin)); print(",".join(v) if isinstance(v, list) else v)' "$@" <<<"$outputs"
}
region=$(out region value)
cluster=$(out db_init_task value cluster)
task_definition=$(out db_init_task value task_definition)
subnets=$(out db_init_task value subnets)
security_group=$(out db_init_task value security_group)
log_group=$(out db_init_task value log_group)
log_prefix=$(out db_init_task value log_prefix)

attempt=1
while true; do
  echo "==> db-init (attempt $attempt/$DB_INIT_ATTEMPTS): $task_definition"
  task=$(aws ecs run-task --region "$region" --cluster "$cluster" --task-definition "$task_definition" \
    --launch-type FARGATE --count 1 --started-by deploy.sh \
    --network-configuration "awsvpcConfiguration={subnets=[$subnets],securityGroups=[$security_group],assignPublicIp=ENABLED}" \
    --query 'tasks[0].taskArn' --output text)
  [[ $task == arn:* ]] || { echo "db-init.sh: the task did not start: $task" >&2; exit 1; }
  aws ecs wait tasks-stopped --region "$region" --cluster "$cluster" --tasks "$task"
  code=$(aws ecs describe-tasks --region "$region" --cluster "$cluster" --tasks "$task" \
    --query 'tasks[0].containers[0].exitCode' --output text)
  reason=$(aws ecs describe-tasks --region "$region" --cluster "$cluster" --tasks "$task" \
    --query 'tasks[0].stoppedReason' --output text)
  aws logs get-log-events --region "$region" --log-group-name "$log_group" \
    --log-stream-name "$log_prefix/${task##*/}" --query 'events[].message' --output text 2>/dev/null |
    tr '\t' '\n' || true
  if [ "$code" = 0 ]; then
    echo "==> db-init done"
    exit 0
  fi
  if [ "$code" != 75 ] || [ "$attempt" -ge "$DB_INIT_ATTEMPTS" ]; then
    echo "db-init.sh: db-init failed (exit $code: $reason); nothing was rolled out" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep 20
done
