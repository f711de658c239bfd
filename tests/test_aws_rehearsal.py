"""The AWS deploy and boot path, rehearsed here with real stand-ins.

terraform/host/bootstrap.sh -- the script cachelab.service runs on every EC2
boot -- and the db-init task (the app image's `cachelab db-init` with the
environment terraform/dbinit.tf gives it) run unchanged against:

* moto (MOTO_IMAGE) for Secrets Manager, ECR's login, the Auto Scaling
  group, the Elastic IP, CloudWatch and S3 (AWS_ENDPOINT_URL);
* a local registry (REGISTRY_IMAGE) as ECR, fed by terraform/push-images.sh,
  the push code deploy.sh uses;
* "RDS": PostgreSQL with ssl=on, hostssl-only pg_hba.conf, the parameter
  group's settings, a NOSUPERUSER CREATEDB CREATEROLE master owning the
  database, its password in moto as RDS keeps it ({"username","password"});
* "ElastiCache": Redis with TLS only and RBAC: the `default` user off, the
  app's user with exactly the access string of terraform/elasticache.tf.

compose.yaml + terraform/compose.aws.yaml start exactly as on EC2; only the log
driver is swapped (tests/aws/compose.rehearsal.yaml). Checked through Nginx
on 127.0.0.1: MISS then HIT over sslmode=verify-full and rediss://; the cache
user never refused; a wrong CA or host name stops db-init with the reason;
rotations (the RDS master, the app's role, the cache user) keep the page
working; a bad setting stops the boot naming it and the instance asks for a
replacement; the load generator's master and workers run as on their hosts,
exempt from the rate limit, and one headless run comes back as a report.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from loadtest.stack import project_name, wait_until
from tests.aws.dbroles import check_app_role, prepare_foreign_objects
from tests.aws.standins import (
    CACHE_HOST,
    FAKE_AWS,
    RDS_HOST,
    ROOT,
    TF_DIR,
    Janitor,
    alnum,
    boto3_client,
    cache_access_rules,
    make_certs,
    run,
    start_cache,
    start_moto,
    start_rds,
    start_registry,
)
from tests.helpers import free_port

pytestmark = [pytest.mark.aws, pytest.mark.slow]

SLOW_QUERY_SECONDS = 2
WRONG_RDS_HOST = (
    "cachelab-db-old.c9akciq32xyz.eu-west-1.rds.amazonaws.com"  # resolves, not in the cert
)
BOOTSTRAP = TF_DIR / "host" / "bootstrap.sh"
LOADGEN = TF_DIR / "host" / "loadgen.sh"
PUSH = TF_DIR / "push-images.sh"
RESULTS = ROOT / "results" / "aws-rehearsal.json"


@dataclass
class Rehearsal:
    project: str
    workdir: Path
    env: dict[str, str]
    rds: Any
    cache: Any
    secrets: Any  # boto3 secretsmanager client on moto
    arns: dict[str, str]
    http_port: int
    docker: Any
    network: str
    moto: str
    images: dict[str, str]
    instance_id: str
    push_logs: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def project_dir(self) -> Path:
        return self.workdir / "project"

    def client(self, service: str):
        return boto3_client(service, self.moto)

    def bootstrap(
        self, *args: str, timeout: float = 600, **overrides: str
    ) -> subprocess.CompletedProcess:
        env = {**self.env, **overrides}
        started = time.monotonic()
        proc = run(["bash", str(BOOTSTRAP), *args], env=env, timeout=timeout, check=False)
        if not args:
            self.figures.setdefault("bootstrap_seconds", []).append(
                round(time.monotonic() - started, 1)
            )
        return proc

    def db_init(self, **overrides: str) -> subprocess.CompletedProcess:
        """The db-init task as terraform/dbinit.tf defines it: the app image's
        `cachelab db-init`, read-only, with the master secret's and the app
        secret's current values injected (ECS's `secrets`) and the endpoint's
        parts, on the network where RDS's name resolves."""
        sm = self.secrets
        env = {
            **db_init_environment(self),
            "DB_OWNER_SECRET": sm.get_secret_value(
                SecretId=self.arns["master"], VersionStage="AWSCURRENT"
            )["SecretString"],
            "APP_DB_PASSWORD": sm.get_secret_value(
                SecretId=self.arns["app_db"], VersionStage="AWSCURRENT"
            )["SecretString"],
            **overrides,
        }
        started = time.monotonic()
        proc = run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                self.network,
                "--read-only",
                "--tmpfs",
                "/tmp",
                "--cap-drop",
                "ALL",
                "-v",
                f"{self.figures['certs']}:/stand-in:ro",
                *[arg for name in env for arg in ("-e", name)],
                self.images["app"],
                "cachelab",
                "db-init",
            ],
            env={**os.environ, **env},
            timeout=300,
            check=False,
        )
        self.figures.setdefault("db_init_seconds", []).append(round(time.monotonic() - started, 1))
        return proc

    def page_works(self, item: int) -> None:
        first = self.get(f"/api/version?item={item}")
        assert first.status_code == 200 and first.headers["X-Cache"] in ("MISS", "BYPASS"), (
            first.status_code,
            first.headers,
            first.text[:300],
        )
        assert self.get(f"/api/version?item={item}").headers["X-Cache"] == "HIT"

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "COMPOSE_FILE": self.env["COMPOSE_FILE"],
            "COMPOSE_PROJECT_NAME": self.project,
        }
        return run(["docker", "compose", *args], env=env, cwd=self.project_dir, check=check)

    def container(self, service: str):
        found = self.docker.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                ]
            }
        )
        assert found, f"no running {service} container"
        return found[0]

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=timeout)

    def timed(self, path: str) -> tuple[requests.Response, float]:
        started = time.perf_counter()
        response = self.get(path)
        return response, time.perf_counter() - started


def _explain(proc: subprocess.CompletedProcess) -> str:
    return (
        f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-5000:]}\n"
        f"--- stderr ---\n{proc.stderr[-5000:]}"
    )


def db_init_environment(state: Rehearsal) -> dict[str, str]:
    """The task's environment (terraform/dbinit.tf: db_init_environment), for the stand-ins."""
    return {
        "DB_HOST": RDS_HOST,
        "DB_PORT": "5432",
        "DB_NAME": state.rds.db_name,
        "DB_CA_URL": "file:///stand-in/ca.pem",  # on AWS: RDS's trust store (https)
        "APP_DB_USER": "cachelab_app",
        "SLOW_QUERY_SECONDS": str(SLOW_QUERY_SECONDS),
    }


def moto_app_instance(moto: str) -> tuple[str, str]:
    """An Auto Scaling group `cachelab-app` with one instance, and an Elastic IP, in moto."""
    ec2, autoscaling = boto3_client("ec2", moto), boto3_client("autoscaling", moto)
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="cachelab-app",
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.small"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="cachelab-app",
        LaunchTemplate={"LaunchTemplateName": "cachelab-app", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        AvailabilityZones=["eu-west-1a"],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["cachelab-app"])
    instance = group["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    return instance, allocation


@pytest.fixture(scope="module")
def rehearsal(docker_available, tmp_path_factory):
    import docker

    client = docker.from_env()
    janitor = Janitor(client)
    project = project_name("aws")
    workdir = tmp_path_factory.mktemp("aws-rehearsal")
    workdir.chmod(0o755)
    pushed: list[str] = []
    state: Rehearsal | None = None
    try:
        moto = start_moto(janitor, f"{project}-moto")
        registry = start_registry(janitor, f"{project}-registry")
        # The network Compose would create, made first (with Compose's labels, so
        # Compose adopts it) so the endpoints resolve from the first db-init on.
        network = janitor.network(
            f"{project}_default",
            labels={"com.docker.compose.network": "default", "com.docker.compose.project": project},
        ).name
        certs = make_certs(workdir / "certs", {"rds": RDS_HOST, "cache": CACHE_HOST})
        rds = start_rds(janitor, f"{project}-rds", network, [RDS_HOST, WRONG_RDS_HOST], certs)
        cache = start_cache(janitor, f"{project}-cache", network, [CACHE_HOST], certs)

        # What Terraform and RDS create in Secrets Manager (the cache user's
        # secret is JSON: the password and the previous one, secrets.tf).
        sm = boto3_client("secretsmanager", moto)
        arns = {
            "master": sm.create_secret(
                Name=f"rds!db-{secrets.token_hex(8)}",
                SecretString=json.dumps(
                    {"username": rds.master_user, "password": rds.master_password}
                ),
            )["ARN"],
            "app_db": sm.create_secret(Name="cachelab-app-db-x", SecretString=alnum(40))["ARN"],
            "cache": sm.create_secret(
                Name="cachelab-cache-auth-x",
                SecretString=json.dumps({"password": cache.token, "previous": cache.token}),
            )["ARN"],
            "write_api": sm.create_secret(Name="cachelab-write-api-x", SecretString=alnum(48))[
                "ARN"
            ],
        }
        instance_id, allocation_id = moto_app_instance(moto)

        # ECR: the same push script deploy.sh runs. The first run cannot reach the
        # nginx repository (a half-pushed tag), the second resumes it.
        tool_env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        tag = run([str(PUSH), "tag"], env=tool_env).stdout.strip()
        app_repo, nginx_repo = f"{registry}/cachelab/app", f"{registry}/cachelab/nginx"
        locust_repo = f"{registry}/cachelab/locust"
        pushed += [
            f"{app_repo}:{tag}",
            f"{nginx_repo}:{tag}",
            f"{locust_repo}:{tag}",
            f"127.0.0.1:1/cachelab/nginx:{tag}",
        ]
        half = run(
            [str(PUSH), "push", app_repo, "127.0.0.1:1/cachelab/nginx", tag, locust_repo],
            env=tool_env,
            timeout=1500,
            check=False,
        )
        resumed = run(
            [str(PUSH), "push", app_repo, nginx_repo, tag, locust_repo],
            env=tool_env,
            timeout=1500,
            check=False,
        )
        again = run(
            [str(PUSH), "push", app_repo, nginx_repo, tag, locust_repo],
            env=tool_env,
            timeout=300,
            check=False,
        )
        # The bootstrap must pull them back from the registry, not find them here.
        for ref in pushed:
            subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=60)

        project_dir = workdir / "project"  # /opt/<name> on EC2
        project_dir.mkdir()
        shutil.copy2(ROOT / "compose.yaml", project_dir / "compose.yaml")
        shutil.copy2(TF_DIR / "compose.aws.yaml", project_dir / "compose.aws.yaml")
        shutil.copy2(
            ROOT / "tests" / "aws" / "compose.rehearsal.yaml",
            project_dir / "compose.rehearsal.yaml",
        )
        docker_config = workdir / "docker-config"  # keeps the login out of ~/.docker
        docker_config.mkdir()
        http_port = free_port()
        env = {
            "PATH": tool_env["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_CONFIG": str(docker_config),
            **FAKE_AWS,
            "AWS_ENDPOINT_URL": moto,
            # bootstrap.env, as Terraform renders it (ec2.tf), with the stand-ins' values
            "PROJECT_DIR": str(project_dir),
            "COMPOSE_PROJECT_NAME": project,
            "COMPOSE_FILE": "compose.yaml:compose.aws.yaml:compose.rehearsal.yaml",
            "ECR_REGISTRY": registry,
            "APP_IMAGE": f"{app_repo}:{tag}",
            "NGINX_APP_IMAGE": f"{nginx_repo}:{tag}",
            "APP_DB_SECRET_ARN": arns["app_db"],
            "CACHE_AUTH_SECRET_ARN": arns["cache"],
            "CACHE_USER": cache.user,
            "APP_DB_USER": "cachelab_app",
            "DB_HOST": RDS_HOST,
            "DB_PORT": "5432",
            "DB_NAME": rds.db_name,
            "REDIS_HOST": CACHE_HOST,
            "REDIS_PORT": "6379",
            "RDS_CA_URL": certs.ca_pem.as_uri(),
            "CACHE_CA_URL": certs.ca_pem.as_uri(),
            "AWSLOGS_GROUP": "/cachelab/containers",
            "INSTANCE_ID": instance_id,
            "AUTOSCALING_GROUP": "cachelab-app",
            "METRICS_NAMESPACE": "cachelab",
            "EIP_ALLOCATION_ID": allocation_id,
            "HTTP_BIND": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            # the app's settings, as ec2.tf lists them (APP_SETTINGS) in bootstrap.env
            "APP_SETTINGS": "CACHE_STRATEGY,CACHE_TTL_SECONDS,DB_POOL_SIZE,GUNICORN_WORKERS,"
            "REDIS_SOCKET_TIMEOUT_MS,SLOW_QUERY_SECONDS",
            "CACHE_STRATEGY": "two-tier",
            "CACHE_TTL_SECONDS": "30",
            "SLOW_QUERY_SECONDS": str(SLOW_QUERY_SECONDS),
            "GUNICORN_WORKERS": "2",
            "DB_POOL_SIZE": "20",
            "REDIS_SOCKET_TIMEOUT_MS": "150",
            "RATE_LIMIT_RPS": "0",
            "UP_TIMEOUT_SECONDS": "180",
        }
        state = Rehearsal(
            project,
            workdir,
            env,
            rds,
            cache,
            sm,
            arns,
            http_port,
            client,
            network,
            moto,
            {"app": f"{app_repo}:{tag}", "locust": f"{locust_repo}:{tag}"},
            instance_id,
            [
                half.stdout + half.stderr,
                resumed.stdout + resumed.stderr,
                again.stdout + again.stderr,
            ],
        )
        state.figures["push_exit_codes"] = [half.returncode, resumed.returncode, again.returncode]
        state.figures["certs"] = str(certs.directory)
        yield state
    finally:
        if state is not None:
            state.compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)
            prefix = state.figures.get("loadgen_prefix")
            for container in client.containers.list(all=True) if prefix else []:
                if container.name.startswith(prefix):
                    container.remove(force=True)
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(
                json.dumps({k: v for k, v in state.figures.items() if k != "certs"}, indent=2)
            )
        janitor.cleanup()
        for ref in pushed:
            subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=60)


def test_push_script_resumes_a_half_pushed_tag(rehearsal):
    half, resumed, again = rehearsal.push_logs
    codes = rehearsal.figures["push_exit_codes"]
    assert codes[0] != 0, "the first push cannot reach the nginx repository\n" + half[-2000:]
    assert codes[1] == 0, resumed[-3000:]
    assert "cachelab/app:" in resumed and "is already in the registry: skipped" in resumed
    assert "pushing" in resumed and "cachelab/nginx:" in resumed
    assert codes[2] == 0 and again.count("already in the registry: skipped") == 3, again[-2000:]
    assert "building" not in again, "nothing to push: nothing to build"


def test_the_task_environment_is_the_one_terraform_defines(rehearsal):
    """The names this rehearsal gives db-init are those of terraform/dbinit.tf."""
    text = (TF_DIR / "dbinit.tf").read_text()
    environment = text[text.index("db_init_environment = merge(") :]
    environment = environment[: environment.index("db_init_secrets")]
    declared = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+)\s+=", environment, re.MULTILINE))
    assert declared == set(db_init_environment(rehearsal)), declared
    secrets_block = text[text.index("db_init_secrets = {") :]
    secrets_block = secrets_block[: secrets_block.index("}")]
    assert set(re.findall(r"([A-Z][A-Z0-9_]+)\s+=", secrets_block)) == {
        "DB_OWNER_SECRET",
        "APP_DB_PASSWORD",
    }


def test_db_init_with_a_wrong_rds_ca_stops_with_the_reason(rehearsal):
    proc = rehearsal.db_init(DB_CA_URL="file:///stand-in/wrong-ca.pem")
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert "certificate verify failed" in out and "db-init failed" in out, _explain(proc)
    assert "Traceback" not in out and rehearsal.rds.master_password not in out


def test_db_init_with_a_wrong_host_name_stops_with_the_reason(rehearsal):
    proc = rehearsal.db_init(DB_HOST=WRONG_RDS_HOST)
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert f'does not match host name "{WRONG_RDS_HOST}"' in out, _explain(proc)
    assert "Traceback" not in out


def test_db_init_prepares_the_database_once_then_changes_nothing(rehearsal):
    first = rehearsal.db_init()
    assert first.returncode == 0, _explain(first)
    assert "applied 00-extensions.sql, 01-slow-version.sql" in first.stdout
    again = rehearsal.db_init()
    assert again.returncode == 0 and "applied nothing (no file changed)" in again.stdout, _explain(
        again
    )


def test_boot_serves_miss_then_hit_over_verified_tls(rehearsal):
    proc = rehearsal.bootstrap()
    assert proc.returncode == 0, _explain(proc)
    assert "bootstrap: done" in proc.stdout
    assert "db-init" not in proc.stdout + proc.stderr, "the boot no longer runs db-init"

    first, miss_seconds = rehearsal.timed("/api/version?item=1")
    assert first.status_code == 200, first.text[:300]
    assert first.headers["X-Cache"] == "MISS"
    assert miss_seconds >= SLOW_QUERY_SECONDS
    second, hit_seconds = rehearsal.timed("/api/version?item=1")
    assert second.status_code == 200 and second.headers["X-Cache"] == "HIT"
    assert hit_seconds < SLOW_QUERY_SECONDS / 4
    assert second.json()["version"].startswith("PostgreSQL ")
    rehearsal.figures.update(miss_seconds=round(miss_seconds, 3), hit_seconds=round(hit_seconds, 4))
    ready = rehearsal.get("/readyz").json()
    assert ready["status"] == "ready", ready

    # The app's connections: its own role, TLS (verify-full against the CA file).
    app_conns = rehearsal.rds.psql(
        "SELECT string_agg(DISTINCT a.usename || ':' || s.ssl::text, ',') FROM pg_stat_activity a "
        "JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'cachelab'"
    )
    assert app_conns == "cachelab_app:true"
    app_env = str(rehearsal.container("app").attrs["Config"]["Env"])
    assert "sslmode=verify-full" in app_env
    # The entry went to the TLS-only cache, as the app's own user.
    assert int(rehearsal.cache.cli("DBSIZE")) >= 1
    assert f"rediss://{rehearsal.cache.user}:" in app_env
    # Every setting of APP_SETTINGS reached the app.
    assert "REDIS_SOCKET_TIMEOUT_MS=150" in app_env

    # pg_stat_statements counts the slow query on the RDS stand-in.
    calls = rehearsal.rds.psql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%slow_version()%'"
    )
    assert int(calls) >= 1

    # The stable URL: the Elastic IP now points at this instance.
    address = rehearsal.client("ec2").describe_addresses()["Addresses"][0]
    assert address.get("InstanceId") == rehearsal.instance_id, address


def test_the_cache_user_is_refused_nothing_and_can_do_nothing_else(rehearsal):
    """The access string of terraform/elasticache.tf covers every command the app
    sends (pages, misses, leases, tracking, the heartbeat, purge) and nothing else."""
    cache = rehearsal.cache
    cache.cli("ACL", "LOG", "RESET")
    for item in (5, 6, 5, 6):
        assert rehearsal.get(f"/?item={item}").status_code == 200
        assert rehearsal.get(f"/api/version?item={item}").status_code == 200

    def app_clients() -> list[dict[str, str]] | None:
        clients = _client_list(cache)
        names = {c.get("name") for c in clients}
        return clients if names >= {"cachelab", "cachelab-tracking"} else None

    modes = wait_until(
        app_clients,
        timeout=30,
        message="the app's pool and its tracking connection",
    )
    assert {c["user"] for c in modes if c.get("name", "").startswith("cachelab")} == {cache.user}
    purge = rehearsal.compose("exec", "-T", "app", "cachelab", "cache", "purge", check=False)
    assert purge.returncode == 0 and "deleted" in purge.stdout, _explain(purge)
    dashboard = rehearsal.get("/api/dashboard")
    assert dashboard.status_code == 200, dashboard.text[:300]
    assert cache.acl_log() == [], "the cache refused the app:\n" + "\n".join(cache.acl_log())
    rehearsal.figures["cache_rules_unknown_to_redis_7_0"] = cache.unknown_rules
    # ... and nothing beyond it: other keys, FLUSHALL, KEYS, CONFIG
    probe = (
        "import os, redis\n"
        "r = redis.Redis.from_url(os.environ['REDIS_URL'])\n"
        "for name, call in (('flushall', r.flushall), ('keys', lambda: r.keys('*')),\n"
        "                   ('config', lambda: r.config_get('maxmemory')),\n"
        "                   ('other-key', lambda: r.set('other:key', 1))):\n"
        "    try:\n"
        "        call(); print(name, 'allowed')\n"
        "    except redis.exceptions.NoPermissionError:\n"
        "        print(name, 'refused')\n"
    )
    code, out = rehearsal.container("app").exec_run(["python", "-c", probe])
    assert code == 0 and out.decode().split() == [
        "flushall",
        "refused",
        "keys",
        "refused",
        "config",
        "refused",
        "other-key",
        "refused",
    ], out


def _client_list(cache) -> list[dict[str, str]]:
    return [
        dict(field.split("=", 1) for field in line.split() if "=" in field)
        for line in cache.cli("CLIENT", "LIST").splitlines()
    ]


def test_files_on_the_host_and_in_the_containers(rehearsal):
    project_dir = rehearsal.project_dir
    env_file = project_dir / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert rehearsal.rds.master_password not in text, "the instances never see the master"
    assert "DATABASE_URL='postgresql://cachelab_app:" in text and "sslmode=verify-full" in text
    assert "WRITE_API_TOKEN" not in text
    ca = project_dir / "certs" / "rds-ca.pem"
    assert (
        stat.S_IMODE(ca.stat().st_mode) == 0o644 and stat.S_IMODE(ca.parent.stat().st_mode) == 0o755
    )
    app = rehearsal.container("app")
    # uid 10001, every capability dropped: it can read the CA bundles
    code, out = app.exec_run(
        [
            "python",
            "-c",
            "import os; print(os.getuid(), "
            "len(open('/etc/cachelab/certs/rds-ca.pem').read()) > 0, "
            "'WRITE_API_TOKEN' in os.environ)",
        ]
    )
    assert code == 0 and out.decode().split() == ["10001", "True", "False"], out
    ports = rehearsal.container("nginx").attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    assert {p["HostIp"] for p in ports} == {"127.0.0.1"}


def test_the_heartbeat_reports_a_serving_stack(rehearsal):
    proc = rehearsal.bootstrap("heartbeat")
    assert proc.returncode == 0, _explain(proc)
    metrics = rehearsal.client("cloudwatch").list_metrics(Namespace="cachelab")["Metrics"]
    assert {(m["MetricName"], m["Dimensions"][0]["Value"]) for m in metrics if m["Dimensions"]} >= {
        ("StackHeartbeat", "cachelab-app")
    }, metrics


def test_app_role_has_least_privilege_on_the_rds_standin(rehearsal):
    owner = rehearsal.rds.connect(rehearsal.rds.master_user, rehearsal.rds.master_password)
    try:
        prepare_foreign_objects(owner)
    finally:
        owner.close()
    app_password = rehearsal.secrets.get_secret_value(SecretId=rehearsal.arns["app_db"])[
        "SecretString"
    ]
    app = rehearsal.rds.connect("cachelab_app", app_password)
    try:
        assert check_app_role(app, "cachelab_app") == []
    finally:
        app.close()
    assert rehearsal.rds.psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'cachelab'") == "f"
    assert (
        rehearsal.rds.psql("SELECT value FROM lab_settings WHERE name = 'slow_query_seconds'")
        == f"{float(SLOW_QUERY_SECONDS)}"
    )


def test_master_rotation_reaches_db_init_and_never_the_app(rehearsal):
    import psycopg2

    rds, sm, arn = rehearsal.rds, rehearsal.secrets, rehearsal.arns["master"]
    old = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])
    old_version = sm.get_secret_value(SecretId=arn)["VersionId"]
    new_password = alnum(28)
    # RDS's rotation: createSecret (AWSPENDING), setSecret, testSecret, finishSecret.
    pending = sm.put_secret_value(
        SecretId=arn,
        VersionStages=["AWSPENDING"],
        SecretString=json.dumps({**old, "password": new_password}),
    )
    rds.psql(f"ALTER ROLE {rds.master_user} PASSWORD '{new_password}'")
    rds.connect(rds.master_user, new_password).close()
    sm.update_secret_version_stage(
        SecretId=arn,
        VersionStage="AWSCURRENT",
        MoveToVersionId=pending["VersionId"],
        RemoveFromVersionId=old_version,
    )
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        rds.connect(rds.master_user, old["password"])
    rds.master_password = new_password
    # The app never had the master: every app connection dropped, the pool reconnects.
    rds.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cachelab_app'"
    )
    wait_until(
        lambda: rehearsal.get("/api/version?item=2").status_code == 200,
        timeout=30,
        message="an uncached item after the rotation",
    )
    # The next deploy's db-init reads the current master (ECS injects it at start).
    proc = rehearsal.db_init()
    assert proc.returncode == 0, _explain(proc)


def test_app_and_cache_password_rotations_reach_the_database_and_the_cache(rehearsal):
    """rotate-secret.sh cache_auth / app_db: the new value reaches the cache user
    (both passwords for a while) and the role (db-init), then the instances (a
    reboot, as the instance refresh does)."""
    import psycopg2

    sm, cache = rehearsal.secrets, rehearsal.cache
    # --- the cache user: the new password beside the old one (deploy.sh) ---
    current = json.loads(sm.get_secret_value(SecretId=rehearsal.arns["cache"])["SecretString"])
    new_cache = alnum(48)
    sm.put_secret_value(
        SecretId=rehearsal.arns["cache"],
        SecretString=json.dumps({"password": new_cache, "previous": current["password"]}),
    )
    cache.set_app_user(cache_access_rules(), [new_cache, current["password"]])
    rehearsal.page_works(20)  # the running app, still on the old password
    # --- the app's database role: db-init sets the new password ---
    old_app = sm.get_secret_value(SecretId=rehearsal.arns["app_db"])["SecretString"]
    new_app = alnum(40)
    sm.put_secret_value(SecretId=rehearsal.arns["app_db"], SecretString=new_app)
    proc = rehearsal.db_init()
    assert proc.returncode == 0, _explain(proc)
    rehearsal.rds.connect("cachelab_app", new_app).close()
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        rehearsal.rds.connect("cachelab_app", old_app)
    # --- the instance refresh: a boot with both new values ---
    proc = rehearsal.bootstrap()
    assert proc.returncode == 0, _explain(proc)
    env = str(rehearsal.container("app").attrs["Config"]["Env"])
    assert new_app in env and f"{cache.user}:{new_cache}@" in env
    rehearsal.page_works(21)
    # the next rotation drops the old cache password: the new instance is unaffected
    cache.set_app_user(cache_access_rules(), [new_cache])
    rehearsal.page_works(22)


def test_a_bad_setting_stops_the_boot_naming_it_and_asks_for_a_replacement(rehearsal):
    proc = rehearsal.bootstrap(
        APP_SETTINGS=rehearsal.env["APP_SETTINGS"] + ",XFETCH_BETA", XFETCH_BETA="99"
    )
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert "XFETCH_BETA must be between" in out and "refuses its configuration" in out, out[-3000:]
    # systemd gives up after its retries and runs `bootstrap.sh report-unhealthy`
    report = rehearsal.bootstrap("report-unhealthy")
    assert report.returncode == 0, _explain(report)
    health = rehearsal.client("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[rehearsal.instance_id]
    )["AutoScalingInstances"][0]["HealthStatus"]
    assert health.upper() == "UNHEALTHY"
    # the stack the failed boot left running still serves (compose up was not reached)
    assert rehearsal.get("/healthz").status_code == 200


def test_cluster_mode_against_a_non_cluster_cache_stops_the_boot_naming_it(rehearsal):
    """cache_cluster_mode sets REDIS_CLUSTER=on; against a node that is no
    cluster (the rehearsal's cache), check-config stops the boot naming it."""
    proc = rehearsal.bootstrap(
        APP_SETTINGS=rehearsal.env["APP_SETTINGS"] + ",REDIS_CLUSTER", REDIS_CLUSTER="on"
    )
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert "REDIS_CLUSTER" in out and "refuses its configuration" in out, out[-3000:]
    assert rehearsal.get("/healthz").status_code == 200  # the running stack is untouched


def test_wrong_cache_ca_is_reported_by_readyz(rehearsal):
    certs = Path(rehearsal.figures["certs"])
    proc = rehearsal.bootstrap(CACHE_CA_URL=(certs / "wrong-ca.pem").as_uri())
    assert proc.returncode == 0, _explain(proc)  # Redis is optional: the page still works
    ready = wait_until(
        lambda: (r := rehearsal.get("/readyz")).json()["status"] == "degraded" and r.json(),
        timeout=30,
        message="/readyz to report the cache",
    )
    assert "certificate verify failed" in json.dumps(ready["redis"]), ready
    page = rehearsal.get("/api/version?item=4")
    assert page.status_code == 200


# --------------------------------------------------------------------------- load generator
def _nginx_client_address(rehearsal) -> str:
    """The address nginx sees for requests from this host (the load generator's host here)."""
    marker = f"/healthz?who={secrets.token_hex(4)}"
    rehearsal.get(marker)

    def logged() -> str | None:  # the access log reaches `docker logs` a moment later
        logs = rehearsal.container("nginx").logs(tail=50).decode()
        return next((line for line in reversed(logs.splitlines()) if marker in line), None)

    line = wait_until(logged, timeout=10, message="nginx to log the marker request")
    return json.loads(line[line.index("{") :])["remote_addr"]


def _burst_from_the_nginx_container(rehearsal, count: int, forwarded: str | None) -> list[str]:
    # one curl, one connection, the requests back to back
    header = ["-H", f"X-Forwarded-For: {forwarded}"] if forwarded else []
    urls = [f"http://127.0.0.1:8080/api/version?item=1&n={i}" for i in range(count)]
    code, out = rehearsal.container("nginx").exec_run(
        [
            "curl",
            "-s",
            *header,
            *[a for u in urls for a in ("-o", "/dev/null", u)],
            "-w",
            "%{http_code} ",
        ]
    )
    assert code == 0, out
    return out.decode().split()


def test_loadgen_runs_distributed_exempt_from_the_rate_limit_and_reports(rehearsal, tmp_path):
    """loadgen.sh master and worker start as on their hosts, one headless run goes
    to S3 (moto), `python -m loadtest.loadgen fetch` brings it back beside a local
    run with the cost table. nginx limits everyone but the load generator's
    addresses, and a forged X-Forwarded-For does not help."""
    # nginx as on AWS with the ALB: X-Forwarded-For believed from the "ALB" (here
    # 127.0.0.1 in the nginx container), the load generator's address exempt.
    loadgen_address = _nginx_client_address(rehearsal)
    proc = rehearsal.bootstrap(
        RATE_LIMIT_RPS="2",
        RATE_LIMIT_BURST="2",
        REAL_IP_FROM="127.0.0.1/32",
        RATE_LIMIT_EXEMPT=f"{loadgen_address}/32",
    )
    assert proc.returncode == 0, _explain(proc)
    # another client, through the "ALB" (which appends the real address): limited,
    # also when it forges the load generator's address before it
    for forwarded in ("10.9.9.9", f"{loadgen_address}, 10.9.9.9"):
        codes = _burst_from_the_nginx_container(rehearsal, 12, forwarded)
        assert "429" in codes, (forwarded, codes)

    s3 = rehearsal.client("s3")
    bucket = f"cachelab-loadgen-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    prefix = f"aws-rh-loadgen-{secrets.token_hex(3)}"
    rehearsal.figures["loadgen_prefix"] = prefix
    web_port, master_port = free_port(), free_port()
    metrics = {"namespace": "cachelab", "app_group": "cachelab-app", "db_instance": "cachelab-db"}
    lab = {"region": "eu-west-1", "app_instances_min": 1, "cache_nodes": 1, "alb": False}
    lab["metrics"] = metrics  # terraform's lab_configuration names them
    env = {
        **{k: rehearsal.env[k] for k in ("PATH", "HOME", "DOCKER_CONFIG")},
        **FAKE_AWS,
        "AWS_ENDPOINT_URL": rehearsal.moto,
        "ECR_REGISTRY": rehearsal.env["ECR_REGISTRY"],
        "LOCUST_IMAGE": rehearsal.images["locust"],
        "MASTER_HOST": "127.0.0.1",
        "EXPECT_WORKERS": "2",
        "WORKER_PROCESSES": "2",
        "RESULTS_BUCKET": bucket,
        "TARGET_URL": f"http://127.0.0.1:{rehearsal.http_port}",
        "LOCUST_WEB_PORT": str(web_port),
        "LOCUST_MASTER_PORT": str(master_port),
        "RUNS_DIR": str(tmp_path / "runs"),
        "NAME_PREFIX": prefix,
        "LAB_CONFIGURATION": base64.b64encode(json.dumps(lab).encode()).decode(),
    }

    def loadgen(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run(["bash", str(LOADGEN), *args], env=env, timeout=timeout, check=False)

    def workers() -> int:
        stats = requests.get(f"http://127.0.0.1:{web_port}/stats/requests", timeout=3).json()
        return len(stats.get("workers", [])) or stats.get("worker_count", 0)

    for role in ("master", "worker"):
        proc = loadgen(role)
        assert proc.returncode == 0, _explain(proc)
    wait_until(lambda: workers() == 2, timeout=60, message="2 workers at the UI master")
    started = time.monotonic()
    proc = loadgen("run", "20", "10", "10s", "ZipfUser", "--zipf-keys", "20", timeout=400)
    rehearsal.figures["loadgen_run_seconds"] = round(time.monotonic() - started, 1)
    assert proc.returncode == 0, _explain(proc)
    assert f"s3://{bucket}/runs/" in proc.stdout and "(Locust exit code 0)" in proc.stdout
    # the workers follow the UI master back
    wait_until(lambda: workers() == 2, timeout=90, message="the workers back at the UI master")

    # the same scenario locally, then one command brings the AWS run back beside it
    local = run(
        [
            sys.executable,
            "-m",
            "loadtest.loadgen",
            "local",
            "--url",
            f"http://127.0.0.1:{rehearsal.http_port}",
            "-u",
            "20",
            "-r",
            "10",
            "-t",
            "10s",
            "--out",
            str(tmp_path / "local"),
            "ZipfUser",
            "--zipf-keys",
            "20",
        ],
        env={**os.environ, **FAKE_AWS},
        timeout=300,
        check=False,
    )
    assert local.returncode == 0, _explain(local)
    fetched = run(
        [
            sys.executable,
            "-m",
            "loadtest.loadgen",
            "fetch",
            "--bucket",
            bucket,
            "--region",
            "eu-west-1",
            "--out",
            str(tmp_path / "aws"),
            "--local",
            str(next((tmp_path / "local").iterdir())),
        ],
        env={**os.environ, **FAKE_AWS, "AWS_ENDPOINT_URL": rehearsal.moto},
        timeout=120,
        check=False,
    )
    assert fetched.returncode == 0, _explain(fetched)
    run_dir = next((tmp_path / "aws").iterdir())
    stats = {r["Name"]: r for r in csv.DictReader((run_dir / "locust_stats.csv").open())}
    total = stats["Aggregated"]
    assert int(total["Request Count"]) >= 50 and int(total["Failure Count"]) == 0, total
    assert f"{int(total['Request Count']):,} (0)" in fetched.stdout, fetched.stdout
    assert "$ per million requests" in fetched.stdout and "| no cache |" in fetched.stdout
    assert json.loads((run_dir / "run.json").read_text())["lab"] == lab
    rehearsal.figures["loadgen_requests"] = int(total["Request Count"])
    rehearsal.figures["loadgen_rps"] = float(total["Requests/s"])
    # the cost report on the local figures alone (what CI can always run)
    local_run = next((tmp_path / "local").iterdir())
    priced = run(
        [sys.executable, "-m", "loadtest.cost", str(local_run), "--target-ms", "500"],
        env=dict(os.environ),
        timeout=60,
        check=False,
    )
    assert priced.returncode == 0, _explain(priced)
    assert "| **total** |" in priced.stdout and "| the cache (as deployed) |" in priced.stdout
    # 429s would be failures: the load generator was never limited
    failures = (run_dir / "locust_failures.csv").read_text().splitlines()
    assert len(failures) <= 1, failures

    # The open-loop benchmark from the same host and image (k6, `loadgen openloop`),
    # the same steps locally, and one fetch puts them side by side with the cost.
    env["KEYS"] = "20"
    proc = loadgen("openloop", "3", "20", "40", timeout=300)
    assert proc.returncode == 0, _explain(proc)
    assert "(2 of 2 open-loop steps)" in proc.stdout, proc.stdout
    # AWS's figures for the run's minute, as EC2, RDS and the log filters would put them
    uploaded = re.search(r"/runs/(\w+)/", proc.stdout)
    assert uploaded, proc.stdout
    run_id = uploaded.group(1)
    meta = json.loads(s3.get_object(Bucket=bucket, Key=f"runs/{run_id}/run.json")["Body"].read())
    at = datetime.strptime(meta["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    for namespace, name, dimensions, value in (
        ("AWS/EC2", "CPUUtilization", {"AutoScalingGroupName": "cachelab-app"}, 30.0),
        ("AWS/RDS", "CPUUtilization", {"DBInstanceIdentifier": "cachelab-db"}, 4.0),
        ("cachelab", "CacheMiss", {}, 9.0),
    ):
        rehearsal.client("cloudwatch").put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    "Value": value,
                    "Timestamp": at,
                }
            ],
        )
    local_open = run(
        [sys.executable, "-m", "loadtest.loadgen", "openloop", "--target-ms", "500"]
        + ["--url", f"http://127.0.0.1:{rehearsal.http_port}", "-t", "3", "--keys", "20"]
        + ["--out", str(tmp_path / "local-open"), "20", "40"],
        env=dict(os.environ),
        timeout=300,
        check=False,
    )
    assert local_open.returncode == 0, _explain(local_open)
    local_steps = (next((tmp_path / "local-open").iterdir()) / "openloop.jsonl").read_text()
    assert [json.loads(line)["seed"] for line in local_steps.splitlines()] == [1, 2]
    fetched = run(
        [sys.executable, "-m", "loadtest.loadgen", "fetch", "--bucket", bucket]
        + ["--region", "eu-west-1", "--out", str(tmp_path / "aws-open"), "--target-ms", "500"]
        + ["--local", str(next((tmp_path / "local-open").iterdir()))],
        env={**os.environ, **FAKE_AWS, "AWS_ENDPOINT_URL": rehearsal.moto},
        timeout=120,
        check=False,
    )
    assert fetched.returncode == 0, _explain(fetched)
    run_dir = next((tmp_path / "aws-open").iterdir())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["kind"] == "openloop" and meta["keys"] == {"KEYS": "20"} and meta["lab"] == lab
    steps = [json.loads(line) for line in (run_dir / "openloop.jsonl").read_text().splitlines()]
    assert [s["rate"] for s in steps] == [20, 40], steps
    assert [s["seed"] for s in steps] == [1, 2], "each step draws its own keys"
    for step in steps:  # every request sent on time and answered, none limited
        assert step["dropped"] == 0 and step["errors"] == 0, step
        assert step["requests"] >= 0.9 * step["rate"] * step["duration_s"], step
        assert step["latency_ms"]["p(99.9)"] >= step["latency_ms"]["p(99)"] > 0, step
    assert "## Open-loop runs" in fetched.stdout and "| offered 40 req/s |" in fetched.stdout
    held = next(line for line in fetched.stdout.splitlines() if "highest rate held" in line)
    assert "none" not in held, fetched.stdout
    assert "k6, open loop" in fetched.stdout and "| no cache |" in fetched.stdout
    # the target's load per request: CloudWatch's on AWS (9 misses), PostgreSQL's here
    requests_total = sum(s["requests"] for s in steps)
    per_thousand = f"{1000 * 9 / requests_total:,.2f} (the app's CacheMiss, CloudWatch)"
    queries = next(line for line in fetched.stdout.splitlines() if "slow queries per" in line)
    assert per_thousand in queries, fetched.stdout
    assert "| database CPU, average | 4.0 % (RDS CPUUtilization" in fetched.stdout
    cpu = next(line for line in fetched.stdout.splitlines() if "app CPU-seconds per" in line)
    assert "CPUUtilization x 1 x 2 vCPUs" in cpu, fetched.stdout
    rehearsal.figures["loadgen_openloop_steps"] = [
        {k: s[k] for k in ("rate", "requests", "dropped", "errors")}
        | {"p99_ms": round(s["latency_ms"]["p(99)"], 1)}
        for s in steps
    ]
