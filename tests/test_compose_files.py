"""compose.yaml as a newcomer and as AWS run it (`docker compose config`: the
docker CLI, no stack): bare, it needs no variable; the AWS overlay still
refuses to start without its real secrets, and ships neither the generated
passwords, the monitoring nor the Docker socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from loadtest.stack import ROOT
from tests.helpers import require_tool

AWS_FILES = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "terraform" / "compose.aws.yaml")]
AWS_ENV = {
    "APP_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/app:abc1234",
    "NGINX_APP_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/nginx:abc1234",
    "DATABASE_URL": "postgresql://u:p@db.example:5432/lab?sslmode=verify-full",
    "REDIS_URL": "rediss://:token@cache.example:6379/0",
    "AWS_REGION": "eu-west-1",
    "AWSLOGS_GROUP": "/cachelab/containers",
}


def compose_config(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    require_tool(shutil.which("docker") is not None, "the docker CLI")
    bare = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST")}
    return subprocess.run(
        [
            "docker",
            "compose",
            "--project-directory",
            str(ROOT),
            *args,
            "config",
            "--format",
            "json",
        ],
        cwd=ROOT,
        env={**bare, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_lab_needs_no_variable_and_no_password():
    result = compose_config("-f", str(ROOT / "compose.yaml"), env={})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "passwords" in services and "prometheus" in services
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key and not key.endswith("_FILE"):
                assert not value, f"{name}: {key} has a value in the repository"


def test_the_aws_overlay_refuses_to_start_without_its_secrets():
    # db-init is not on the instances (its own task: terraform/dbinit.tf).
    for missing in ("DATABASE_URL", "REDIS_URL", "APP_IMAGE", "NGINX_APP_IMAGE"):
        env = {k: v for k, v in AWS_ENV.items() if k != missing}
        result = compose_config(*AWS_FILES, env=env)
        assert result.returncode != 0, missing
        assert f"{missing} must be set" in result.stderr, result.stderr


def test_aws_runs_no_local_only_service_no_password_file_and_no_docker_socket():
    result = compose_config(*AWS_FILES, env=AWS_ENV)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    # db-init runs once per deploy as its own task (terraform/dbinit.tf), not here.
    assert set(config["services"]) == {"app", "nginx"}
    text = json.dumps(config["services"])
    assert "docker.sock" not in text and "lab-secrets" not in text
    app = config["services"]["app"]["environment"]
    assert app["PROMETHEUS_URL"] == "" and app["DATABASE_PASSWORD_FILE"] == ""
    assert app["PROMETHEUS_UI_URL"] == "", "no Prometheus UI to link on AWS"
    # Locally, the bench container is the only one with the socket, behind a profile.
    local = json.loads(
        compose_config("-f", str(ROOT / "compose.yaml"), "--profile", "bench", env={}).stdout
    )
    with_socket = {
        name
        for name, service in local["services"].items()
        if "docker.sock" in json.dumps(service.get("volumes", []))
    }
    assert with_socket == {"bench"} and local["services"]["bench"]["profiles"] == ["bench"]
