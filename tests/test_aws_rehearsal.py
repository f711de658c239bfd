"""Issue 10: the AWS boot path, rehearsed here with real stand-ins.

terraform/host/bootstrap.sh -- the script cachelab.service runs on every EC2
boot -- runs unchanged against:

* moto (MOTO_IMAGE) for Secrets Manager and ECR's login (AWS_ENDPOINT_URL);
* a local registry (REGISTRY_IMAGE) as ECR, fed by terraform/push-images.sh,
  the push code deploy.sh uses;
* "RDS": PostgreSQL with ssl=on, hostssl-only pg_hba.conf, the parameter
  group's settings, a NOSUPERUSER CREATEDB CREATEROLE master owning the
  database, its password in moto as RDS keeps it ({"username","password"});
* "ElastiCache": Redis with TLS only and an AUTH token.

compose.yaml + terraform/compose.aws.yaml start exactly as on EC2; only the log
driver is swapped (tests/aws/compose.rehearsal.yaml). Checked through Nginx
on 127.0.0.1: MISS then HIT over sslmode=verify-full and rediss://; a wrong CA
or host name fails with the reason; the RDS way of rotating the master keeps
the page working and a re-run of the bootstrap (a reboot) works.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
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
    push_logs: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def project_dir(self) -> Path:
        return self.workdir / "project"

    def bootstrap(self, timeout: float = 600, **overrides: str) -> subprocess.CompletedProcess:
        env = {**self.env, **overrides}
        started = time.monotonic()
        proc = run(["bash", str(BOOTSTRAP)], env=env, timeout=timeout, check=False)
        self.figures.setdefault("bootstrap_seconds", []).append(
            round(time.monotonic() - started, 1)
        )
        return proc

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

        # What Terraform and RDS create in Secrets Manager.
        sm = boto3_client("secretsmanager", moto)
        arns = {
            "master": sm.create_secret(
                Name=f"rds!db-{secrets.token_hex(8)}",
                SecretString=json.dumps(
                    {"username": rds.master_user, "password": rds.master_password}
                ),
            )["ARN"],
            "app_db": sm.create_secret(Name="cachelab-app-db-x", SecretString=alnum(40))["ARN"],
            "cache": sm.create_secret(Name="cachelab-cache-auth-x", SecretString=cache.token)[
                "ARN"
            ],
            "write_api": sm.create_secret(Name="cachelab-write-api-x", SecretString=alnum(48))[
                "ARN"
            ],
        }

        # ECR: the same push script deploy.sh runs. The first run cannot reach the
        # nginx repository (a half-pushed tag), the second resumes it.
        tool_env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        tag = run([str(PUSH), "tag"], env=tool_env).stdout.strip()
        app_repo, nginx_repo = f"{registry}/cachelab/app", f"{registry}/cachelab/nginx"
        pushed += [f"{app_repo}:{tag}", f"{nginx_repo}:{tag}", f"127.0.0.1:1/cachelab/nginx:{tag}"]
        half = run(
            [str(PUSH), "push", app_repo, "127.0.0.1:1/cachelab/nginx", tag],
            env=tool_env,
            timeout=1500,
            check=False,
        )
        resumed = run(
            [str(PUSH), "push", app_repo, nginx_repo, tag], env=tool_env, timeout=1500, check=False
        )
        again = run(
            [str(PUSH), "push", app_repo, nginx_repo, tag], env=tool_env, timeout=300, check=False
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
            "DB_MASTER_SECRET_ARN": arns["master"],
            "APP_DB_SECRET_ARN": arns["app_db"],
            "CACHE_AUTH_SECRET_ARN": arns["cache"],
            "APP_DB_USER": "cachelab_app",
            "DB_HOST": RDS_HOST,
            "DB_PORT": "5432",
            "DB_NAME": rds.db_name,
            "REDIS_HOST": CACHE_HOST,
            "REDIS_PORT": "6379",
            "RDS_CA_URL": certs.ca_pem.as_uri(),
            "CACHE_CA_URL": certs.ca_pem.as_uri(),
            "AWSLOGS_GROUP": "/cachelab/containers",
            "INSTANCE_ID": "i-0rehearsal",
            "HTTP_BIND": "127.0.0.1",
            "HTTP_PORT": str(http_port),
            "CACHE_TTL_SECONDS": "30",
            "SLOW_QUERY_SECONDS": str(SLOW_QUERY_SECONDS),
            "GUNICORN_WORKERS": "2",
            "DB_POOL_SIZE": "20",
            "RATE_LIMIT_RPS": "0",
            "REAL_IP_FROM": "10.40.0.0/16",
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
    assert codes[2] == 0 and again.count("already in the registry: skipped") == 2, again[-2000:]
    assert "building" not in again, "nothing to push: nothing to build"


def test_wrong_rds_ca_stops_the_boot_with_the_reason(rehearsal):
    certs = Path(rehearsal.figures["certs"])
    proc = rehearsal.bootstrap(RDS_CA_URL=(certs / "wrong-ca.pem").as_uri())
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert "certificate verify failed" in out, _explain(proc)
    assert "bootstrap: error: db-init failed" in out, _explain(proc)
    assert "Traceback" not in out
    assert not rehearsal.docker.containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={rehearsal.project}",
                "com.docker.compose.service=app",
            ]
        }
    )


def test_wrong_rds_host_name_stops_the_boot_with_the_reason(rehearsal):
    proc = rehearsal.bootstrap(DB_HOST=WRONG_RDS_HOST)
    assert proc.returncode != 0, _explain(proc)
    out = proc.stdout + proc.stderr
    assert f'does not match host name "{WRONG_RDS_HOST}"' in out, _explain(proc)
    assert "bootstrap: error: db-init failed" in out and "Traceback" not in out


def test_boot_serves_miss_then_hit_over_verified_tls(rehearsal):
    proc = rehearsal.bootstrap()
    assert proc.returncode == 0, _explain(proc)
    assert "bootstrap: done" in proc.stdout

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
    assert "sslmode=verify-full" in rehearsal.container("app").attrs["Config"]["Env"].__str__()
    # The entry went to the TLS-only cache (there is no plaintext port).
    assert int(rehearsal.cache.cli("DBSIZE")) >= 1
    assert "rediss://" in str(rehearsal.container("app").attrs["Config"]["Env"])

    # pg_stat_statements counts the slow query on the RDS stand-in.
    calls = rehearsal.rds.psql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%slow_version()%'"
    )
    assert int(calls) >= 1


def test_files_on_the_host_and_in_the_containers(rehearsal):
    project_dir = rehearsal.project_dir
    env_file = project_dir / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert rehearsal.rds.master_password not in text, (
        "the rotating master password is never written"
    )
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


def test_master_rotation_keeps_the_page_working_and_a_reboot_works(rehearsal):
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
    current = sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"]
    assert json.loads(current)["password"] == new_password
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        rds.connect(rds.master_user, old["password"])  # what an app using the master would hit

    # Every app connection is dropped: the pool must reconnect, with its own role.
    rds.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cachelab_app'"
    )
    after = wait_until(
        lambda: (r := rehearsal.get("/api/version?item=2")).status_code == 200 and r,
        timeout=30,
        message="an uncached item after the rotation",
    )
    assert after.headers["X-Cache"] in ("MISS", "BYPASS")
    assert rehearsal.get("/api/version?item=2").headers["X-Cache"] == "HIT"

    # A reboot: the bootstrap again, now with the write API on as well.
    proc = rehearsal.bootstrap(WRITE_API_SECRET_ARN=rehearsal.arns["write_api"])
    assert proc.returncode == 0, _explain(proc)
    first = rehearsal.get("/api/version?item=3")
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    assert rehearsal.get("/api/version?item=3").headers["X-Cache"] == "HIT"
    token = sm.get_secret_value(SecretId=rehearsal.arns["write_api"])["SecretString"]
    code, out = rehearsal.container("app").exec_run(
        ["python", "-c", "import os; print(os.environ.get('WRITE_API_TOKEN', ''))"]
    )
    assert code == 0 and out.decode().strip() == token


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
