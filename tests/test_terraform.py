"""Offline checks of the AWS deployment in terraform/.

* ``terraform fmt -check -recursive``
* ``terraform init -backend=false`` + ``terraform validate``
* ``terraform test`` (plan-level runs against a mocked hashicorp/aws provider)
* checkov over terraform/ (framework terraform) and over the Dockerfiles
  (framework dockerfile), offline, zero failed checks, every skip with a reason
* static checks of the configuration and of terraform/compose.aws.yaml

Terraform and checkov are external tools: without them these tests skip with
a reason naming the missing tool, except under ``CI=true`` where they fail.
checkov is taken from $CHECKOV, else beside the running Python, else PATH
(checkov 3.3.30 pins cachetools<6, so it cannot share one pip install with the
app's cachetools==8.x: give it its own venv).

Nothing is written to the work tree: init/validate/test run on a copy of
terraform/ (with ../compose.yaml beside it, which user-data embeds) in a
pytest tmp dir. The provider comes from wherever TF_CLI_CONFIG_FILE points
(.ci/run writes a filesystem-mirror config); when it is unset or names a
missing file and a local mirror exists at $TF_PLUGIN_MIRROR (default
/opt/tf-plugins), an equivalent config is written into the tmp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import compose_loader

REPO = Path(__file__).resolve().parents[1]
TF_DIR = REPO / "terraform"
COMPOSE = REPO / "compose.yaml"
DOCKERFILES = [
    "app/Dockerfile",
    "nginx/Dockerfile",
    "loadtest/Dockerfile",
    "loadtest/baseline/Dockerfile",
    "loadtest/benchstack/wrk.Dockerfile",
    "loadtest/bench.Dockerfile",
]
IN_CI = os.environ.get("CI", "").lower() == "true"

TF_TIMEOUT = 600


# --------------------------------------------------------------------------- helpers
def _missing(what: str) -> None:
    """Skip locally, fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: required)")
    pytest.skip(what)


def _found(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    assert match, f"{pattern!r} not found"
    return match


def _terraform() -> str:
    exe = shutil.which("terraform")
    if not exe:
        _missing("terraform not found on PATH")
    assert exe is not None
    return exe


def _checkov() -> str:
    explicit = os.environ.get("CHECKOV")  # e.g. a checkov in its own venv
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            _missing(f"checkov not found at CHECKOV={explicit}")
        return explicit
    beside_python = Path(sys.executable).with_name("checkov")
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    exe = shutil.which("checkov")
    if not exe:
        _missing("checkov not found on PATH")
    assert exe is not None
    return exe


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = TF_TIMEOUT):
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return proc


def _explain(proc: subprocess.CompletedProcess) -> str:
    return (
        f"$ {' '.join(proc.args)}\nexit {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-12000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )


def _tf_files() -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(TF_DIR.glob("*.tf"))}


def _blocks(text: str, kind: str, type_: str | None = None):
    """Yield (labels, body) of top-level blocks like `resource "t" "n" { ... }`."""
    pattern = re.compile(r"^" + re.escape(kind) + r'((?:\s+"[^"]*")+)\s*\{', re.MULTILINE)
    for m in pattern.finditer(text):
        labels = re.findall(r'"([^"]*)"', m.group(1))
        if type_ is not None and labels[0] != type_:
            continue
        depth, i = 1, m.end()
        while depth and i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        yield labels, text[m.end() : i - 1]


# --------------------------------------------------------------------------- fixtures
def terraform_env(scratch: Path) -> dict:
    """Terraform's environment for the suites: no prompts, no checkpoint calls, the
    provider from a filesystem mirror (an rc file written into ``scratch``) when
    TF_CLI_CONFIG_FILE names none."""
    env = dict(os.environ)
    env.update(TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", TF_INPUT="0")
    env.pop("TF_WORKSPACE", None)
    configured = env.get("TF_CLI_CONFIG_FILE", "")
    if not configured or not Path(configured).is_file():
        mirror = Path(env.get("TF_PLUGIN_MIRROR", "/opt/tf-plugins"))
        if mirror.is_dir():
            rc = scratch / "terraform.rc"
            rc.write_text(
                "provider_installation {\n"
                "  filesystem_mirror {\n"
                f'    path    = "{mirror}"\n'
                '    include = ["registry.terraform.io/hashicorp/*"]\n'
                "  }\n"
                "}\n"
            )
            env["TF_CLI_CONFIG_FILE"] = str(rc)
    return env


@pytest.fixture(scope="module")
def tf_env(tmp_path_factory) -> dict:
    return terraform_env(tmp_path_factory.mktemp("tfrc"))


@pytest.fixture(scope="module")
def tf_work(tmp_path_factory, tf_env) -> Path:
    """A copy of terraform/ (plus ../compose.yaml) with `terraform init` done."""
    terraform = _terraform()
    if not COMPOSE.is_file():
        pytest.fail(
            f"{COMPOSE.relative_to(REPO)} is missing: terraform/ec2.tf embeds it in the "
            'user data with file("${path.module}/../compose.yaml"), so validate/test need it'
        )
    root = tmp_path_factory.mktemp("tf")
    shutil.copy2(COMPOSE, root / "compose.yaml")
    work = root / "terraform"
    shutil.copytree(
        TF_DIR,
        work,
        ignore=shutil.ignore_patterns(
            ".terraform", "*.tfstate", "*.tfstate.*", "terraform.tfvars", "*.auto.tfvars"
        ),
    )
    proc = _run([terraform, "init", "-backend=false", "-input=false", "-no-color"], work, tf_env)
    assert proc.returncode == 0, "terraform init failed (offline provider mirror?)\n" + _explain(
        proc
    )
    return work


# --------------------------------------------------------------------------- terraform CLI
def test_terraform_fmt(tf_env):
    terraform = _terraform()
    proc = _run([terraform, "fmt", "-check", "-recursive", "-diff", "-no-color"], TF_DIR, tf_env)
    assert proc.returncode == 0, "run `terraform fmt -recursive terraform/`\n" + _explain(proc)


def test_terraform_validate(tf_work, tf_env):
    proc = _run([_terraform(), "validate", "-no-color"], tf_work, tf_env)
    assert proc.returncode == 0, _explain(proc)
    assert "Warning" not in proc.stdout + proc.stderr, _explain(proc)


def test_terraform_test_mocked_plans(tf_work, tf_env):
    """Every tests/*.tftest.hcl file, two at a time (Terraform 1.11 runs the files
    of one `terraform test` one after the other; each plan is CPU-bound). The
    files with the most runs start first, so no long file is left for the end
    while the other worker idles."""
    from concurrent.futures import ThreadPoolExecutor

    def runs(path: Path) -> int:
        return len(re.findall(r"^run ", (tf_work / path).read_text(), re.MULTILINE))

    files = sorted(
        (p.relative_to(tf_work) for p in (tf_work / "tests").glob("*.tftest.hcl")),
        key=lambda path: (-runs(path), str(path)),
    )
    assert len(files) >= 5, files

    def one(path: Path) -> subprocess.CompletedProcess:
        return _run([_terraform(), "test", "-no-color", f"-filter={path}"], tf_work, tf_env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(one, files))
    total = 0
    for proc in procs:
        assert proc.returncode == 0, _explain(proc)
        summary = re.search(r"(\d+) passed, (\d+) failed", proc.stdout)
        assert summary, _explain(proc)
        passed, failed = map(int, summary.groups())
        assert failed == 0, _explain(proc)
        total += passed
    assert total >= 40, f"only {total} runs passed"


# --------------------------------------------------------------------------- checkov
def _checkov_ok(proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "checkov reported failed checks\n" + _explain(proc)
    failed = [int(n) for n in re.findall(r"Failed checks: (\d+)", out)]
    assert failed and all(n == 0 for n in failed), _explain(proc)


def test_checkov_terraform(tmp_path):
    checkov = _checkov()
    scan = tmp_path / "terraform"
    shutil.copytree(
        TF_DIR,
        scan,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate", "*.tfstate.*", "terraform.tfvars"),
    )
    proc = _run(
        [
            checkov,
            "-d",
            str(scan),
            "--framework",
            "terraform",
            "--skip-download",
            "--quiet",
            "--compact",
        ],
        tmp_path,
    )
    _checkov_ok(proc)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_checkov_dockerfile(dockerfile, tmp_path):
    checkov = _checkov()
    path = REPO / dockerfile
    assert path.is_file(), (
        f"{dockerfile} is missing (checkov must scan it with the dockerfile framework)"
    )
    proc = _run(
        [
            checkov,
            "-f",
            str(path),
            "--framework",
            "dockerfile",
            "--skip-download",
            "--quiet",
            "--compact",
        ],
        tmp_path,
    )
    _checkov_ok(proc)


def test_checkov_skips_have_reasons():
    files = list(TF_DIR.rglob("*.tf")) + [REPO / d for d in DOCKERFILES if (REPO / d).is_file()]
    bad = []
    for path in files:
        for line in path.read_text().splitlines():
            m = re.search(r"checkov:skip=([A-Z0-9_]+)(.*)", line)
            if m and not re.match(r"\s*:\s*\S.{9,}", m.group(2)):
                bad.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert not bad, "checkov skips need an inline reason (#checkov:skip=ID: why):\n" + "\n".join(
        bad
    )


# --------------------------------------------------------------------------- static checks
def test_only_aws_provider_and_versions():
    text = (TF_DIR / "versions.tf").read_text()
    assert re.search(r'required_version\s*=\s*">=\s*1\.7"', text)
    assert re.search(r'source\s*=\s*"hashicorp/aws"', text)
    constraint = re.search(r'version\s*=\s*"(>=\s*5\.\d+,\s*<\s*6\.0)"', text)
    assert constraint, (
        "aws provider must be constrained like '>= 5.73, < 6.0' (5.100.0 must satisfy it)"
    )
    low = int(_found(r">=\s*5\.(\d+)", constraint.group(1)).group(1))
    assert 73 <= low <= 100, 'engine = "valkey" needs hashicorp/aws >= 5.73'
    lock = (TF_DIR / ".terraform.lock.hcl").read_text()
    assert (
        'provider "registry.terraform.io/hashicorp/aws"' in lock
        and 'version     = "5.100.0"' in lock
    )
    assert len(re.findall(r'"zh:[0-9a-f]{64}"', lock)) >= 10, (
        "keep the registry's zh: hashes (all platforms)"
    )
    alltext = "\n".join(_tf_files().values())
    for banned in ("random", "null", "tls", "cloudinit", "local", "http", "external", "time"):
        assert not re.search(rf'(resource|data)\s+"{banned}_', alltext), (
            f"{banned} provider is not allowed"
        )
        assert not re.search(rf'hashicorp/{banned}"', alltext), f"{banned} provider is not allowed"


def test_every_variable_typed_described_defaulted():
    text = (TF_DIR / "variables.tf").read_text()
    names = []
    for labels, body in _blocks(text, "variable"):
        names.append(labels[0])
        for attr in ("type", "description", "default"):
            assert re.search(rf"^\s*{attr}\s*=", body, re.MULTILINE), (
                f"variable {labels[0]} lacks {attr}"
            )
    assert len(names) >= 20
    for other in _tf_files():
        if other.name != "variables.tf":
            assert not list(_blocks(other.read_text(), "variable")), (
                f"variables belong in variables.tf ({other.name})"
            )


def test_no_open_admin_or_data_ports():
    """Ingress is only ever declared as aws_vpc_security_group_ingress_rule;
    CIDR-based ingress may only open TCP 80; the data tier only references SGs."""
    alltext = "\n".join(_tf_files().values())
    assert "aws_security_group_rule" not in alltext, "use aws_vpc_security_group_*_rule resources"
    for labels, body in _blocks(alltext, "resource", "aws_security_group"):
        assert not re.search(r"^\s*(ingress|egress)\s*[{=]", body, re.MULTILINE), (
            f"inline rules in {labels}"
        )
    rules = list(_blocks(alltext, "resource", "aws_vpc_security_group_ingress_rule"))
    assert {labels[1] for labels, _ in rules} == {
        "alb_http",
        "alb_https",
        "alb_from_loadgen",
        "app_http_cidr",
        "app_http_alb",
        "app_http_loadgen",
        "cache_from_app",
        "db_from_app",
        "db_from_db_init",
        "loadgen_workers",
    }, "a new ingress rule needs a matching assertion in terraform/tests/*.tftest.hcl and here"
    for labels, body in rules:
        ports = set(re.findall(r"(?:from_port|to_port)\s*=\s*(\S+)", body))
        assert "22" not in ports, f"{labels[1]} opens 22"
        if re.search(r"cidr_ipv[46]|prefix_list_id", body):
            assert ports in ({"80"}, {"443"}), f"{labels[1]}: CIDR ingress may only open 80 or 443"
            assert "allowed_http_cidrs" in body, (
                f"{labels[1]}: CIDR ingress must come from allowed_http_cidrs"
            )
        if labels[1] in ("cache_from_app", "db_from_app", "db_from_db_init"):
            assert "referenced_security_group_id = aws_security_group." in body
            assert not re.search(r"cidr_ipv[46]|prefix_list_id", body)
        if labels[1] == "alb_http":
            assert "!var.enable_write_api" in body, "port 80 stays closed with the write API on"
    assert "key_name" not in alltext, "no SSH key pair"
    assert not re.search(
        r"default\s*=\s*\[\s*\"0\.0\.0\.0/0\"", (TF_DIR / "variables.tf").read_text()
    )


def test_user_data_template_is_secret_free_and_uses_the_project_files():
    tpl = (TF_DIR / "user-data.sh.tftpl").read_text()
    ec2 = (TF_DIR / "ec2.tf").read_text()
    boot = (TF_DIR / "host" / "bootstrap.sh").read_text()
    assert 'file("${path.module}/../compose.yaml")' in ec2
    assert 'file("${path.module}/compose.aws.yaml")' in ec2
    assert 'file("${path.module}/host/bootstrap.sh")' in ec2
    assert "base64gzip(" in ec2 and "16384" in ec2
    # user data: only what needs the real host; the rest is the bootstrap, at every boot
    assert "/usr/local/lib/docker/cli-plugins" in tpl and "169.254.169.254" in tpl
    assert (
        "systemctl enable cachelab.service" in tpl
        and "ExecStart=${project_dir}/bootstrap.sh" in tpl
    )
    assert "get-secret-value" not in tpl and "run --rm" not in tpl
    assert "aws secretsmanager get-secret-value" in boot
    # db-init is the deploy's one-shot task now, never the boot's
    assert "db-init" not in boot.split("set -euo pipefail", 1)[1] and "MASTER" not in boot
    assert "up -d --no-build" in boot and "check-config" in boot
    assert "rediss://$CACHE_USER:" in boot and "sslmode=verify-full" in boot
    assert "sslmode=require" not in boot
    # the only secret material reaches the host at boot, never Terraform's template inputs
    inputs = _found(r"templatefile\([^{]*\{(.*?)\n  \}\)", ec2, re.DOTALL).group(1)
    assert "password" not in inputs.lower() and "auth_token" not in inputs.lower()
    env = _found(r"bootstrap_env = merge\(\{(.*?)\n  \}\)", ec2, re.DOTALL).group(1)
    assert "secret_string" not in env and "random_password" not in env


def test_shell_scripts_pass_shellcheck(tmp_path):
    """bootstrap.sh, deploy/destroy/push scripts and the user-data template (rendered
    with placeholders; tests/test_aws_moto.py checks the user data Terraform renders)."""
    from tests.aws.standins import shellcheck as shellcheck_exe

    shellcheck = shellcheck_exe()
    tpl = (TF_DIR / "user-data.sh.tftpl").read_text()
    rendered = re.sub(r"%\{[^}]*\}\n?", "", tpl)
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: f"placeholder-{m.group(1)}", rendered)
    (tmp_path / "user-data.sh").write_text(rendered)
    loadgen_tpl = (TF_DIR / "loadgen-user-data.sh.tftpl").read_text()
    loadgen = re.sub(r"\$\{(\w+)\}", lambda m: f"placeholder-{m.group(1)}", loadgen_tpl)
    (tmp_path / "loadgen-user-data.sh").write_text(loadgen)
    scripts = [
        TF_DIR / "host" / "bootstrap.sh",
        TF_DIR / "host" / "loadgen.sh",
        TF_DIR / "deploy.sh",
        TF_DIR / "destroy.sh",
        TF_DIR / "db-init.sh",
        TF_DIR / "rotate-secret.sh",
        TF_DIR / "push-images.sh",
        tmp_path / "user-data.sh",
        tmp_path / "loadgen-user-data.sh",
    ]
    proc = _run([shellcheck, "--severity=info", *map(str, scripts)], REPO, timeout=120)
    assert proc.returncode == 0, _explain(proc)


# --------------------------------------------------------------------------- compose override
def test_compose_aws_override_shape():
    yaml, Loader = compose_loader()
    data = yaml.load((TF_DIR / "compose.aws.yaml").read_text(), Loader=Loader)
    services = data["services"]
    # db-init runs once per deploy as its own task (terraform/dbinit.tf), not on the instances
    for local_only in ("postgres", "redis", "db-init", "locust-master", "locust-worker"):
        assert services[local_only]["profiles"] == ["local-only"], local_only
    for svc in ("app", "nginx"):
        assert services[svc]["build"]["__tag__"] == "reset", f"{svc} must not build on AWS"
        assert services[svc]["logging"]["driver"] == "awslogs"
    logging = data["x-awslogs"]["options"]
    assert logging["mode"] == "non-blocking" and logging["max-buffer-size"], "awslogs never blocks"
    assert services["app"]["depends_on"]["__tag__"] == "reset"
    env = services["app"]["environment"]
    assert {"DATABASE_URL", "REDIS_URL", "CACHE_TTL_SECONDS", "CACHE_STRATEGY"} <= set(env)
    assert env["REDIS_CLUSTER"] == "${REDIS_CLUSTER:-off}"
    assert env["WRITE_API_TOKEN"] is None, "set only when .env defines it (enable_write_api)"
    # !override: the local lab's password volumes are not mounted on AWS.
    volumes = services["app"]["volumes"]
    assert volumes["__tag__"] == "override", "app must not mount the local volumes"
    assert volumes["value"] == ["./certs:/etc/cachelab/certs:ro"]
    assert env["DATABASE_PASSWORD_FILE"] == "", "the local password file does not exist here"
    assert {"RATE_LIMIT_RPS", "REAL_IP_FROM", "RATE_LIMIT_EXEMPT"} <= set(
        services["nginx"]["environment"]
    )


def test_compose_aws_override_covers_every_local_service():
    yaml, Loader = compose_loader()
    if not COMPOSE.is_file():
        pytest.fail(f"{COMPOSE.relative_to(REPO)} is missing")
    base = yaml.load(COMPOSE.read_text(), Loader=Loader)["services"]
    override = yaml.load((TF_DIR / "compose.aws.yaml").read_text(), Loader=Loader)["services"]
    on_aws = {"app", "nginx"}
    assert on_aws <= set(base), f"compose.yaml lacks {on_aws - set(base)}"
    unhandled = [
        name
        for name in base
        if name not in on_aws and override.get(name, {}).get("profiles") != ["local-only"]
    ]
    assert not unhandled, f"services not disabled on AWS in terraform/compose.aws.yaml: {unhandled}"


def test_compose_config_merges(tmp_path):
    """`docker compose config` accepts compose.yaml + compose.aws.yaml (needs the docker CLI)."""
    docker = shutil.which("docker")
    if not docker or _run([docker, "compose", "version"], REPO, timeout=60).returncode != 0:
        pytest.skip("docker compose not available")
    if not COMPOSE.is_file():
        pytest.fail(f"{COMPOSE.relative_to(REPO)} is missing")
    env = dict(os.environ)
    env.update(
        APP_IMAGE="123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/app:abc1234",
        NGINX_APP_IMAGE="123456789012.dkr.ecr.eu-west-1.amazonaws.com/cachelab/nginx:abc1234",
        DATABASE_URL="postgresql://u:p@db.example:5432/lab?sslmode=require",
        REDIS_URL="rediss://:token@cache.example:6379/0",
        AWS_REGION="eu-west-1",
        AWSLOGS_GROUP="/cachelab/containers",
        INSTANCE_ID="i-0123456789abcdef0",
        POSTGRES_PASSWORD="unused-on-aws",
        APP_DB_PASSWORD="unused-in-this-test",
    )
    proc = _run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE),
            "-f",
            str(TF_DIR / "compose.aws.yaml"),
            "--project-directory",
            str(REPO),
            "config",
            "--services",
        ],
        tmp_path,
        env,
        timeout=120,
    )
    assert proc.returncode == 0, _explain(proc)
    assert set(proc.stdout.split()) == {"app", "nginx"}, _explain(proc)


def test_app_settings_accepts_exactly_the_settings_the_app_reads():
    """variables.tf's list of app_settings names follows the app: every setting
    it or db-init reads, minus those with a variable of their own or set by
    Terraform (terraform/ec2.tf, dbinit.tf) or fixed by the AWS override
    (compose.aws.yaml: no password files, no Prometheus)."""
    from tests.unit.test_documented_settings import variables_read_by

    text = (TF_DIR / "variables.tf").read_text()
    body = dict((labels[0], b) for labels, b in _blocks(text, "variable"))["app_settings"]
    listed = _found(r"contains\(\[(.*?)\], k\)", body, re.DOTALL).group(1)
    accepted = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', listed))
    own_variables = {
        "CACHE_STRATEGY",
        "CACHE_TTL_SECONDS",
        "SLOW_QUERY_SECONDS",
        "GUNICORN_WORKERS",
        "DB_POOL_SIZE",
    }
    set_by_terraform = {"DATABASE_URL", "REDIS_URL", "REDIS_CLUSTER", "WRITE_API_TOKEN"}
    import yaml

    compose = yaml.safe_load(COMPOSE.read_text())
    app_env = set(compose["services"]["app"]["environment"])  # the app's and gunicorn's
    yaml_aws, Loader = compose_loader()
    aws_env = yaml_aws.load((TF_DIR / "compose.aws.yaml").read_text(), Loader=Loader)["services"][
        "app"
    ]["environment"]
    set_by_terraform |= {k for k, v in aws_env.items() if v is not None and "${" not in str(v)}
    db_init = variables_read_by("cli.py") - {"DATABASE_URL"}
    expected = (app_env | variables_read_by("config.py") | db_init) - own_variables
    expected -= set_by_terraform
    assert accepted == expected, (
        f"app_settings misses {sorted(expected - accepted)}, "
        f"accepts unknown {sorted(accepted - expected)}"
    )


def _units(script: str) -> dict[str, str]:
    """The systemd units a user-data script writes: {file name: text}."""
    pattern = r"cat > /etc/systemd/system/([\w.-]+) <<'(?P<tag>__\w+__)'\n(?P<body>.*?)\n(?P=tag)\n"
    return {m.group(1): m.group("body") for m in re.finditer(pattern, script, re.DOTALL)}


@pytest.mark.parametrize("template", ["user-data.sh.tftpl", "loadgen-user-data.sh.tftpl"])
def test_systemd_units_of_the_user_data_verify(template, tmp_path):
    """The units the instances run (the boot retried, a lasting failure reported,
    the heartbeat timer) pass `systemd-analyze verify` in a scratch root."""
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        _missing("systemd-analyze not found (apt-get install systemd)")
    assert analyze is not None
    text = (TF_DIR / template).read_text()
    rendered = re.sub(r"%\{[^}]*\}\n?", "", text)
    rendered = rendered.replace("${project_dir}", "/opt/cachelab").replace("${role}", "master")
    units = _units(rendered)
    expected = (
        {
            "cachelab.service",
            "cachelab-unhealthy.service",
            "cachelab-heartbeat.service",
            "cachelab-heartbeat.timer",
        }
        if template == "user-data.sh.tftpl"
        else {"cachelab-loadgen.service"}
    )
    assert set(units) == expected, sorted(units)
    root = tmp_path / "root"
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    # the host's own units (targets such as network-online.target), and docker's
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (system / "docker.service").write_text("[Service]\nExecStart=/bin/true\n")
    for directory in ("opt/cachelab", "opt/cachelab-loadgen"):
        (root / directory).mkdir(parents=True)
    for script in ("opt/cachelab/bootstrap.sh", "opt/cachelab-loadgen/loadgen.sh"):
        (root / script).write_text("#!/bin/sh\n")
        (root / script).chmod(0o755)
    for env in ("opt/cachelab/bootstrap.env", "opt/cachelab-loadgen/loadgen.env"):
        (root / env).write_text("")
    for name, body in units.items():
        (system / name).write_text(body + "\n")
    proc = _run(
        [analyze, "verify", f"--root={root}", *[f"etc/systemd/system/{n}" for n in units]],
        root,
        timeout=120,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), _explain(proc)
    service = units.get("cachelab.service") or units["cachelab-loadgen.service"]
    assert "Restart=on-failure" in service and "StartLimitBurst=" in service
