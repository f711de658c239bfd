#!/usr/bin/env bash
# The one push path for the app, nginx and Locust images, used by deploy.sh
# (to ECR) and by the AWS rehearsal (tests/test_aws_rehearsal.py, to a local
# registry).
#
#   terraform/push-images.sh tag
#       prints the content tag: c-<12 hex of a sha256 over every build input
#       (tracked and untracked, not git-ignored: app/, nginx/, postgres-init/,
#       loadtest/, .dockerignore) and the base image names). Same inputs, same
#       tag.
#   terraform/push-images.sh push APP_REPO NGINX_REPO TAG [LOCUST_REPO]
#       builds the images with `docker compose build` (the Dockerfiles and
#       contexts of the local lab) and pushes each one that the registry does
#       not hold yet. Resumable: after an interrupted run, an image already
#       pushed is skipped (registry tags are immutable on ECR), the others
#       are pushed. Log in to the registry first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
INPUTS=(app nginx postgres-init loadtest .dockerignore)

content_tag() {
  local files
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git -C "$ROOT" ls-files --cached --others --exclude-standard -- "${INPUTS[@]}")
  else
    files=$(cd "$ROOT" && find "${INPUTS[@]}" -type f 2>/dev/null)
  fi
  {
    echo "PYTHON_IMAGE=${PYTHON_IMAGE:-}"
    echo "NGINX_IMAGE=${NGINX_IMAGE:-}"
    echo "K6_IMAGE=${K6_IMAGE:-}"
    while IFS= read -r f; do
      # a tracked file deleted in the work tree is not an input any more
      if [ -f "$ROOT/$f" ]; then printf '%s  %s\n' "$(sha256sum <"$ROOT/$f" | cut -c1-64)" "$f"; fi
    done < <(printf '%s\n' "$files" | LC_ALL=C sort)
  } | sha256sum | cut -c1-12 | sed 's/^/c-/'
}

in_registry() { # IMAGE: true when the registry already has this tag
  local insecure=()
  case "$1" in 127.0.0.1:* | localhost:*) insecure=(--insecure) ;; esac # plain-HTTP local registry
  docker manifest inspect "${insecure[@]}" "$1" >/dev/null 2>&1
}

push() {
  local app_repo=$1 nginx_repo=$2 tag=$3 locust_repo=${4:-} image
  export APP_IMAGE="$app_repo:$tag" NGINX_APP_IMAGE="$nginx_repo:$tag"
  local images=("$APP_IMAGE" "$NGINX_APP_IMAGE") services=(app nginx)
  if [ -n "$locust_repo" ]; then
    export LOCUST_IMAGE="$locust_repo:$tag"
    images+=("$LOCUST_IMAGE")
    services+=(locust-master)
  fi
  local todo=()
  for image in "${images[@]}"; do
    if in_registry "$image"; then
      echo "push-images: $image is already in the registry: skipped"
    else
      todo+=("$image")
    fi
  done
  if [ ${#todo[@]} -eq 0 ]; then return 0; fi
  echo "push-images: building ${images[*]}"
  # POSTGRES_PASSWORD/APP_DB_PASSWORD: compose.yaml requires them; a build uses neither.
  POSTGRES_PASSWORD=unused APP_DB_PASSWORD=unused \
    docker compose -f "$ROOT/compose.yaml" --project-directory "$ROOT" build "${services[@]}"
  for image in "${todo[@]}"; do
    echo "push-images: pushing $image"
    docker push "$image"
  done
}

case "${1:-}" in
  tag) content_tag ;;
  push)
    [ $# -eq 4 ] || [ $# -eq 5 ] || { echo "usage: $0 push APP_REPO NGINX_REPO TAG [LOCUST_REPO]" >&2; exit 2; }
    push "$2" "$3" "$4" "${5:-}"
    ;;
  *)
    echo "usage: $0 tag | push APP_REPO NGINX_REPO TAG [LOCUST_REPO]" >&2
    exit 2
    ;;
esac
