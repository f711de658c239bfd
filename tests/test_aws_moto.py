"""`terraform apply` and `destroy` of terraform/ against moto.

Two deployments, each against its own moto server (MOTO_IMAGE, published on
127.0.0.1), run side by side (the provider spends most of the time in its own
waits): the default variables (cluster mode and the load generator off), and
the scaled ones (2..3 instances behind an ALB with HTTPS and a
target-tracking policy, ElastiCache cluster mode with 2 shards of a primary
and a replica, Multi-AZ RDS, the write API on, the load generator on). Each
follows deploy.sh's order: a targeted apply of the ECR repositories, the
images put into ECR, the targeted apply of the db-init task and what it needs
(the task registered; moto cannot start it), the full apply; then the
outputs, the user data Terraform rendered (size as sent, shellcheck, no
secret, every setting the bootstrap needs), IAM (no instance may read the RDS
master secret), the CloudWatch alarms, filters and dashboard, the cache
users, the load generator, a rotation of the cache password, a second plan
(which must update the cache user's passwords), and destroy.sh.

moto's gaps with hashicorp/aws 5.100, handled here (and in terraform/README.md):
* a replication group gets no member clusters, and the provider waits for
  <id>-001 (cluster mode: <id>-0001-001...): they are created first with boto3
  (with an engine version, else the provider cannot parse it);
* ElastiCache user groups (CreateUserGroup) and ModifyUser do not exist in
  moto: moto_override.tf drops the user group (count = 0, no user_group_ids;
  terraform/tests/*.tftest.hcl check that wiring), and the rotation stops at
  the plan that updates the user;
* deleting a replication group never finishes and DeleteCacheSubnetGroup is
  not implemented: both leave the state before destroy;
* a second plan is not empty (moto omits or reshapes some attributes: security
  group rule references, descriptions, the replication group): it must
  succeed, its changes are recorded;
* ECS runs no container, and RunTask of an awsvpc (Fargate) task fails inside
  moto 5.2 (its network interface lacks private_dns_name): the db-init task is
  registered and what db-init.sh would send is checked
  (tests/test_aws_rehearsal.py runs its container against the RDS stand-in);
* CreateDBInstance ignores the CA (ca_cert_identifier): left to moto, else the
  provider modifies the new instance and waits for it twice;
* MOTO_IAM_LOAD_MANAGED_POLICIES=true gives the AWS-managed IAM policies.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from loadtest.stack import project_name
from tests.aws.standins import (
    REGION,
    ROOT,
    TF_DIR,
    Janitor,
    boto3_client,
    kill_all,
    run,
    shellcheck,
    start_moto,
)
from tests.helpers import docker_ready
from tests.test_terraform import _terraform, terraform_env, tf_env  # noqa: F401 - a fixture

pytestmark = [pytest.mark.aws, pytest.mark.slow, pytest.mark.timeout(3000)]

TAG = "c-0123456789ab"
RESULTS = ROOT / "results" / "aws-moto.json"
SERVICES = [
    "autoscaling",
    "cloudwatch",
    "ec2",
    "ecr",
    "ecs",
    "elasticache",
    "elbv2",
    "iam",
    "logs",
    "rds",
    "s3",
    "secretsmanager",
    "ssm",
    "sts",
]
SCENARIOS = {
    "default": {},
    "scaled": {
        "app_instance_count": 2,
        "app_max_instance_count": 3,
        "enable_alb": True,
        "cache_replicas": 1,
        "db_multi_az": True,
        "db_instance_class": "db.t4g.medium",
        "enable_write_api": True,
        "certificate_arn": "",  # imported into moto's ACM before the full apply
        "allowed_http_cidrs": ["198.51.100.0/24"],
        "enable_loadgen": True,
        "cache_cluster_mode": True,
        "cache_shards": 2,
    },
}
# moto has no ElastiCache user groups: the user group goes, the users stay.
NO_USER_GROUPS = """
resource "aws_elasticache_user_group" "this" {
  count = 0
}

locals {
  cache_user_group_ids = []
}
"""
# moto's CreateDBInstance keeps rds-ca-default whatever CA is asked for, so the
# provider follows the create with ModifyDBInstance and waits for the instance a
# second time (its waiter sleeps a fixed minute first: 80 s on the critical
# path). The CA is left to moto here; defaults.tftest.hcl checks the real one.
MOTO_RDS_CA = """
resource "aws_db_instance" "this" {
  ca_cert_identifier = null
}
"""
# An image manifest for ECR (moto stores it; the data source reads its digest).
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "0" * 64,
        },
        "layers": [],
    }
)


def _override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {name} = "{endpoint}"' for name in SERVICES)
    return (
        'provider "aws" {\n  access_key                  = "testing"\n'
        '  secret_key                  = "testing"\n  skip_credentials_validation = true\n'
        "  skip_metadata_api_check     = true\n  skip_requesting_account_id  = true\n\n"
        f"  endpoints {{\n{endpoints}\n  }}\n}}\n"
    )


class Deployment:
    def __init__(
        self,
        name: str,
        variables: dict,
        workdir: Path,
        env: dict,
        endpoint: str,
        running: set[subprocess.Popen],
    ):
        self.name, self.variables, self.env, self.endpoint = name, variables, env, endpoint
        self.running = running  # its Terraform processes, killed if the session ends first
        root = workdir / name
        root.mkdir()
        shutil.copy2(ROOT / "compose.yaml", root / "compose.yaml")  # ec2.tf embeds ../compose.yaml
        self.dir = root / "terraform"
        shutil.copytree(
            TF_DIR,
            self.dir,
            ignore=shutil.ignore_patterns(
                ".terraform", "*.tfstate", "*.tfstate.*", "terraform.tfvars", "*.auto.tfvars"
            ),
        )
        (self.dir / "moto_override.tf").write_text(
            _override(endpoint) + NO_USER_GROUPS + MOTO_RDS_CA
        )
        (self.dir / "lab.auto.tfvars.json").write_text(json.dumps(variables))
        self.figures: dict = {}

    def tf(self, *args: str, timeout: float = 900, check: bool = True):
        started = time.monotonic()
        try:
            proc = run(
                [_terraform(), *args, "-no-color"],
                env=self.env,
                cwd=self.dir,
                timeout=timeout,
                check=check,
                running=self.running,
            )
            log = self.dir.parent / f"{len(self.figures.get('phases', [])):02d}-{args[0]}.log"
            log.write_text(proc.stdout + proc.stderr)
            return proc
        finally:
            self.phase(" ".join(a for a in args[:2] if not a.startswith("-")), started)

    def phase(self, what: str, started: float) -> None:
        """Every step's wall time, in order, in results/aws-moto.json (where the time goes)."""
        self.figures.setdefault("phases", []).append([what, round(time.monotonic() - started, 1)])

    def timed(self, key: str, *cmd: str, **kwargs):
        started = time.monotonic()
        proc = self.tf(*cmd, **kwargs)
        self.figures[key] = round(time.monotonic() - started, 1)
        return proc

    def client(self, service: str):
        return boto3_client(service, self.endpoint)

    def deploy_and_destroy(self) -> dict:
        self.tf("init", "-input=false")
        tag = f"-var=app_image_tag={TAG}"
        # 1. deploy.sh's targeted apply, and what it reads afterwards
        self.timed(
            "ecr_apply_seconds",
            "apply",
            "-auto-approve",
            "-input=false",
            tag,
            "-target=aws_ecr_repository.this",
            "-target=aws_ecr_lifecycle_policy.this",
        )
        early = json.loads(self.tf("output", "-json").stdout)
        repos = early["ecr_repository_urls"]["value"]
        assert repos["app"].endswith(".dkr.ecr.eu-west-1.amazonaws.com/cachelab/app"), repos
        assert repos["app"].split(".")[3] == REGION  # deploy.sh takes the region from the host name
        # 2. the push (ECR in moto is no registry: put the manifests)
        started = time.monotonic()
        ecr = self.client("ecr")
        for repo in ("cachelab/app", "cachelab/nginx", "cachelab/locust"):
            ecr.put_image(repositoryName=repo, imageManifest=MANIFEST, imageTag=TAG)
        if self.variables.get("certificate_arn") == "":
            self.variables["certificate_arn"] = self.import_certificate()
            (self.dir / "lab.auto.tfvars.json").write_text(json.dumps(self.variables))
        # moto gap: the replication group's member clusters
        cache = self.client("elasticache")
        for node in self.cache_node_ids():
            cache.create_cache_cluster(
                CacheClusterId=node,
                ReplicationGroupId="cachelab-cache",
                Engine="valkey",
                EngineVersion="8.0",
                CacheNodeType="cache.t4g.micro",
                NumCacheNodes=1,
            )
        self.phase("push and boto3 set-up", started)
        # 3. deploy.sh's db-init step: what the task needs, then the task
        deploy = (TF_DIR / "deploy.sh").read_text()
        targets = re.findall(r"-target='(aws_[a-z_]+\.[a-z_]+)'", deploy.split("# --- 3.")[1])
        assert "aws_ecs_task_definition.db_init" in targets, targets
        self.timed(
            "db_init_apply_seconds",
            "apply",
            "-auto-approve",
            "-input=false",
            tag,
            *[f"-target={t}" for t in targets],
        )
        self.check_db_init_task(json.loads(self.tf("output", "-json").stdout))
        # 4. the full apply
        self.timed("apply_seconds", "apply", "-auto-approve", "-input=false", tag)
        outputs = {k: v["value"] for k, v in json.loads(self.tf("output", "-json").stdout).items()}
        started = time.monotonic()
        self.check_outputs(outputs)
        self.check_user_data(outputs)
        self.check_least_privilege(outputs)
        self.check_monitoring(outputs)
        self.check_cache_users(outputs)
        if self.variables.get("enable_loadgen"):
            self.check_loadgen(outputs)
        self.phase("checks", started)
        # 5. a rotation of the cache password reaches the cache user (moto has
        # no ModifyUser: the plan shows the update)
        self.rotate_cache_password(outputs)
        # 6. a second plan (refreshing everything, after the rotation): must work;
        # not empty on moto (recorded), and it updates the cache user's passwords
        second = self.tf("plan", "-detailed-exitcode", "-input=false", tag, check=False)
        assert second.returncode == 2, second.stdout[-3000:] + second.stderr[-3000:]
        self.figures["second_plan"] = re.findall(r"Plan: .*", second.stdout)
        rotated = re.search(
            r"^  # aws_elasticache_user\.app will be updated in-place\n(.*?)^    }$",
            second.stdout,
            re.DOTALL | re.MULTILINE,
        )
        assert rotated, second.stdout[-3000:]
        assert re.search(r"^      ~ passwords ", rotated.group(1), re.MULTILINE), rotated.group(0)
        # 7. destroy (moto gap: the replication group and the cache subnet group leave the state)
        self.tf(
            "state",
            "rm",
            "aws_elasticache_replication_group.this",
            "aws_elasticache_subnet_group.this",
        )
        started = time.monotonic()
        destroyed = run(
            ["bash", str(self.dir / "destroy.sh"), "-auto-approve", "-no-color"],
            env=self.env,
            cwd=self.dir,
            timeout=900,
            running=self.running,
        )
        self.figures["destroy_seconds"] = round(time.monotonic() - started, 1)
        self.phase("destroy.sh", started)
        (self.dir.parent / "destroy.log").write_text(destroyed.stdout + destroyed.stderr)
        assert self.tf("state", "list").stdout.strip() == ""
        assert not self.client("rds").describe_db_instances()["DBInstances"]
        return self.figures

    def cache_node_ids(self) -> list[str]:
        replicas = self.variables.get("cache_replicas", 0)
        if self.variables.get("cache_cluster_mode"):
            return [
                f"cachelab-cache-{shard + 1:04d}-{node + 1:03d}"
                for shard in range(self.variables["cache_shards"])
                for node in range(1 + replicas)
            ]
        return [f"cachelab-cache-{node + 1:03d}" for node in range(1 + replicas)]

    def import_certificate(self) -> str:
        """An ACM certificate for the HTTPS listener (moto checks the ARN exists)."""
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("lab.example.com")
        return self.client("acm").import_certificate(
            Certificate=cert.cert_chain_pems[0].bytes(),
            PrivateKey=cert.private_key_pem.bytes(),
            CertificateChain=ca.cert_pem.bytes(),
        )["CertificateArn"]

    def check_db_init_task(self, o: dict) -> None:
        """The one-shot db-init task as db-init.sh starts it: registered and accepted."""
        task = o["db_init_task"]["value"]
        ecs = self.client("ecs")
        definition = ecs.describe_task_definition(taskDefinition=task["task_definition"])[
            "taskDefinition"
        ]
        container = definition["containerDefinitions"][0]
        assert container["command"] == ["cachelab", "db-init"]
        assert {e["name"] for e in container["environment"]} >= {
            "DB_HOST",
            "DB_NAME",
            "DB_CA_URL",
            "APP_DB_USER",
        }
        secrets = {e["name"]: e["valueFrom"] for e in container["secrets"]}
        master = self.client("rds").describe_db_instances()["DBInstances"][0]["MasterUserSecret"]
        assert secrets["DB_OWNER_SECRET"] == master["SecretArn"]
        assert container["logConfiguration"]["options"]["mode"] == "non-blocking"
        # moto gap: RunTask of an awsvpc task fails inside moto 5.2 (its network
        # interface has no private_dns_name); what db-init.sh would send exists.
        ec2 = self.client("ec2")
        subnets = ec2.describe_subnets(SubnetIds=task["subnets"])["Subnets"]
        assert len(subnets) == 2 and all(s["CidrBlock"].endswith(".0/24") for s in subnets)
        groups = ec2.describe_security_groups(GroupIds=[task["security_group"]])
        assert groups["SecurityGroups"][0]["GroupName"] == "cachelab-db-init"
        assert ecs.describe_clusters(clusters=[task["cluster"]])["clusters"][0]["status"] == (
            "ACTIVE"
        )
        self.figures["db_init_task"] = definition["family"]

    def check_outputs(self, o: dict) -> None:
        scaled = self.name == "scaled"
        assert (
            o["app_image"]
            == f"{o['ecr_repository_urls']['app']}:{TAG}@sha256:"
            + self.client("ecr").describe_images(repositoryName="cachelab/app")["imageDetails"][0][
                "imageDigest"
            ][7:]
        )
        assert o["rds_endpoint"].endswith(".eu-west-1.rds.amazonaws.com:5432")
        assert o["redis_primary_endpoint"]
        assert o["region"] == REGION and o["app_image_tag"] == TAG
        sm = self.client("secretsmanager")
        arns = {s["ARN"] for s in sm.list_secrets()["SecretList"]}
        assert {
            o["app_db_secret_arn"],
            o["cache_auth_secret_arn"],
            o["rds_master_secret_arn"],
        } <= arns
        assert (
            (o.get("write_api_secret_arn") in arns)
            if scaled
            else o.get("write_api_secret_arn") is None
        )
        budget = o["db_connection_budget"]
        workers = 2 * (20 + 4 + 1)  # pool, control connections, listener
        # the maximum (3) doubled by an instance refresh behind the ALB
        assert budget["peak_instances"] == (6 if scaled else 1)
        assert budget["needed"] == budget["peak_instances"] * workers
        assert budget["needed"] <= budget["allowed"]
        rds = self.client("rds")
        group = rds.describe_db_instances()["DBInstances"][0]["DBParameterGroups"][0]
        params = {
            p["ParameterName"]: p.get("ParameterValue")
            for p in rds.describe_db_parameters(DBParameterGroupName=group["DBParameterGroupName"])[
                "Parameters"
            ]
        }
        assert params["max_connections"] == str(budget["max_connections"])
        asg = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[o["autoscaling_group_name"]]
        )["AutoScalingGroups"][0]
        assert asg["DesiredCapacity"] == (2 if scaled else 1)
        assert len(o["instance_ids"]) == (2 if scaled else 1)
        if scaled:
            assert o["url"].startswith("https://") and ".elb.amazonaws.com" in o["url"]
            assert asg["MaxSize"] == 3 and asg["MinSize"] == 2
            policies = self.client("autoscaling").describe_policies(
                AutoScalingGroupName=o["autoscaling_group_name"]
            )["ScalingPolicies"]
            tracking = policies[0]["TargetTrackingConfiguration"]
            assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
                "ALBRequestCountPerTarget"
            )
        else:  # the Elastic IP: a stable URL
            addresses = self.client("ec2").describe_addresses()["Addresses"]
            assert o["url"] == f"http://{addresses[0]['PublicIp']}/"
        self.figures["outputs"] = sorted(o)

    def check_user_data(self, o: dict) -> None:
        ec2 = self.client("ec2")
        asg = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[o["autoscaling_group_name"]]
        )["AutoScalingGroups"][0]
        template = asg["LaunchTemplate"]["LaunchTemplateId"]
        data = ec2.describe_launch_template_versions(
            LaunchTemplateId=template, Versions=["$Latest"]
        )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
        sent = data["UserData"]  # base64 of gzip, as EC2 receives it
        assert len(sent) <= 16384, f"user data is {len(sent)} bytes, over EC2's 16 KB"
        self.figures["user_data_bytes"] = len(sent)
        script = gzip.decompress(base64.b64decode(sent)).decode()
        self.figures["user_data_script_bytes"] = len(script.encode())
        path = self.dir.parent / "user-data.sh"
        path.write_text(script)
        lint = run([shellcheck(), "--severity=info", str(path)], check=False)
        assert lint.returncode == 0, lint.stdout[-4000:]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        # bootstrap.env: every setting bootstrap.sh insists on, no secret value
        env_block = script.split("<<'__CACHELAB_BOOTSTRAP_ENV__'\n", 1)[1].split(
            "\n__CACHELAB_BOOTSTRAP_ENV__", 1
        )[0]
        rendered = dict(line.split("=", 1) for line in env_block.splitlines() if line)
        boot = (TF_DIR / "host" / "bootstrap.sh").read_text()
        loop = re.search(r"for name in (.*?); do\n  need", boot, re.DOTALL)
        assert loop, "bootstrap.sh's loop over the required variables"
        needed = loop.group(1).replace("\\\n", " ").split()
        assert set(needed) - {"INSTANCE_ID"} <= set(rendered), set(needed) - set(rendered)
        assert rendered["APP_IMAGE"] == o["app_image"] and rendered["HTTP_BIND"] == "0.0.0.0"
        assert ("WRITE_API_SECRET_ARN" in rendered) == (self.name == "scaled")
        assert not any("MASTER" in k for k in rendered), "the instances never get the master secret"
        assert rendered["REDIS_HOST"] == o["redis_primary_endpoint"]
        assert ("REDIS_CLUSTER" in rendered) == bool(self.variables.get("cache_cluster_mode"))
        sm = self.client("secretsmanager")
        for arn in (o["app_db_secret_arn"], o["cache_auth_secret_arn"]):
            value = sm.get_secret_value(SecretId=arn)["SecretString"]
            assert value not in script, "a secret value reached the user data"
        assert json.loads(sm.get_secret_value(SecretId=o["cache_auth_secret_arn"])["SecretString"])
        assert (TF_DIR / "host" / "bootstrap.sh").read_text() in script

    def check_least_privilege(self, o: dict) -> None:
        """Only the db-init task's execution role may read the RDS master secret."""
        iam = self.client("iam")
        master = o["rds_master_secret_arn"]
        readers = []
        for role in iam.list_roles()["Roles"]:
            for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)
                if master in json.dumps(document["PolicyDocument"]):
                    readers.append(role["RoleName"])
        assert len(readers) == 1 and readers[0].startswith("cachelab-db-init-"), readers

    def check_monitoring(self, o: dict) -> None:
        cw = self.client("cloudwatch")
        alarms = {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}
        assert alarms == set(o["alarm_names"]), (alarms, o["alarm_names"])
        nodes = self.cache_node_ids()
        replicas = self.variables.get("cache_replicas", 0)
        alb = 2 if self.variables.get("enable_alb") else 0  # p99, healthy hosts
        # hit rate + app (down, status checks, overloaded) + per node (evictions, CPU,
        # connections, CPU credits, replication lag with replicas) + database (connections,
        # CPU, free storage, CPU credits) + ALB (+ 5xx)
        per_node = 4 + (1 if replicas else 0)
        assert len(alarms) == 1 + 3 + per_node * len(nodes) + 4 + alb + (1 if alb else 0)
        assert {f"{n}-engine-cpu" for n in nodes} <= alarms
        app_down = cw.describe_alarms(AlarmNames=["cachelab-app-down"])["MetricAlarms"][0]
        assert app_down["TreatMissingData"] == "breaching"
        filters = self.client("logs").describe_metric_filters(logGroupName=o["log_group_name"])[
            "metricFilters"
        ]
        assert {f["metricTransformations"][0]["metricName"] for f in filters} >= {
            "CacheHit",
            "CacheMiss",
            "CacheStale",
        }
        assert all(f["filterPattern"] == '{ $.event = "cache_summary" }' for f in filters)
        body = json.loads(cw.get_dashboard(DashboardName=o["dashboard_name"])["DashboardBody"])
        titles = [w["properties"].get("title", "") for w in body["widgets"]]
        assert any("ALB" in t for t in titles) == (self.name == "scaled"), titles
        assert all(f'"{n}"' in json.dumps(body) for n in nodes), "widgets name every node"
        self.figures["alarms"] = len(alarms)

    def check_cache_users(self, o: dict) -> None:
        users = {u["UserId"]: u for u in self.client("elasticache").describe_users()["Users"]}
        app = users["cachelab-app"]
        assert app["UserName"] == o["cache_user"]["name"] == "cachelab-app"
        assert app["AccessString"].startswith("on ~lab:* -@all ")
        cluster = bool(self.variables.get("cache_cluster_mode"))
        assert ("+cluster|slots" in app["AccessString"]) == cluster
        assert users["cachelab-default"]["UserName"] == "default"
        assert users["cachelab-default"]["AccessString"].startswith("off")

    def rotate_cache_password(self, o: dict) -> None:
        """What rotate-secret.sh cache_auth puts: a new password, the old one as previous."""
        sm = self.client("secretsmanager")
        old = json.loads(sm.get_secret_value(SecretId=o["cache_auth_secret_arn"])["SecretString"])
        new = {"password": "R0tated" + "x" * 41, "previous": old["password"]}
        sm.put_secret_value(SecretId=o["cache_auth_secret_arn"], SecretString=json.dumps(new))

    def check_loadgen(self, o: dict) -> None:
        ec2 = self.client("ec2")
        master = ec2.describe_instances(
            Filters=[{"Name": "tag:Name", "Values": ["cachelab-loadgen-master"]}]
        )["Reservations"][0]["Instances"][0]
        assert master["PrivateIpAddress"] == "10.40.30.10"
        data = ec2.describe_instance_attribute(
            InstanceId=master["InstanceId"], Attribute="userData"
        )["UserData"]["Value"]
        assert len(data) <= 16384
        script = gzip.decompress(base64.b64decode(data)).decode()
        path = self.dir.parent / "loadgen-user-data.sh"
        path.write_text(script)
        lint = run([shellcheck(), "--severity=info", str(path)], check=False)
        assert lint.returncode == 0, lint.stdout[-4000:]
        assert "loadgen.sh master" in script and "RESULTS_BUCKET=" in script
        workers = self.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=["cachelab-loadgen-worker"]
        )["AutoScalingGroups"][0]
        assert workers["DesiredCapacity"] == 2
        s3 = self.client("s3")
        bucket = o["loadgen_results_bucket"]
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        assert rules[0]["Expiration"]["Days"] == 30
        encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values())
        assert o["instance_refresh_preferences"].startswith("MinHealthyPercentage=100,")
        self.figures["loadgen_user_data_bytes"] = len(data)


class Deployments:
    """Both scenarios' deploy-and-destroy, each on a thread of its own.

    Started once per session, as early as it can be: tests/conftest.py starts
    it as soon as the session is collected, so that its five minutes (nearly
    all the provider's fixed waits, about half a core on average) run beside
    the unit layer and the promise checker, whose five minutes are a fixed
    budget; the tests below collect the results. Run alone, the fixture starts
    it. If the session ends first, :meth:`stop` kills its Terraform processes
    and removes its moto servers."""

    def __init__(self) -> None:
        import docker

        self.janitor = Janitor(docker.from_env())
        self.workdir = Path(tempfile.mkdtemp(prefix="cachelab-aws-moto-"))
        self.env = terraform_env(self.workdir)
        self.running: set[subprocess.Popen] = set()
        self.results: dict[str, object] = {}
        self.started = time.monotonic()
        self.finished: dict[str, float] = {}
        self.seconds: float | None = None
        self.threads = [
            threading.Thread(target=self._deploy, args=(name,), name=f"moto-{name}", daemon=True)
            for name in SCENARIOS
        ]
        for thread in self.threads:
            thread.start()

    def _deploy(self, name: str) -> None:
        try:
            # Unique on an engine shared by several checkouts (a tmp dir's name is not).
            endpoint = start_moto(self.janitor, project_name(f"moto-{name}"))
            deployment = Deployment(
                name, SCENARIOS[name], self.workdir, self.env, endpoint, self.running
            )
            self.results[name] = deployment.deploy_and_destroy()
        except BaseException as exc:  # noqa: BLE001 - reported by that scenario's test
            self.results[name] = exc
        finally:
            self.finished[name] = time.monotonic()

    def collect(self, timeout: float) -> dict[str, object]:
        """Wait for both (at most ``timeout`` seconds in all), record, clean up."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for name in SCENARIOS:
            self.results.setdefault(name, TimeoutError(f"{name}: not done in {timeout:g} s"))
        self.stop()
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "wall_seconds": self.seconds,
                    "logs": str(self.workdir),
                    **{n: (r if isinstance(r, dict) else repr(r)) for n, r in self.results.items()},
                },
                indent=2,
            )
        )
        return self.results

    def stop(self) -> None:
        if self.seconds is None:
            done = len(self.finished) == len(SCENARIOS)
            last = max(self.finished.values()) if done else time.monotonic()
            self.seconds = round(last - self.started, 1)
        kill_all(self.running)
        self.janitor.cleanup()
        # Each command's output stays beside its working directory (the
        # provider's copies, hundreds of MB, go).
        for plugins in self.workdir.glob("*/terraform/.terraform"):
            shutil.rmtree(plugins, ignore_errors=True)


_deployments: Deployments | None = None


def start_deployments() -> Deployments | None:
    """The session's deployments, started now if they were not; None where
    Docker or Terraform is missing (the fixture's own checks then say so)."""
    global _deployments
    if _deployments is None and docker_ready() and shutil.which("terraform"):
        _deployments = Deployments()
    return _deployments


def stop_deployments() -> float | None:
    """At the session's end: stop whatever still runs; their wall time, if started."""
    if _deployments is None:
        return None
    _deployments.stop()
    return _deployments.seconds


@pytest.fixture(scope="module")
def deployments(docker_available, tf_env):  # noqa: F811 - tf_env is the fixture
    _terraform()  # skips (fails under CI) where Terraform is missing
    started = start_deployments()
    assert started is not None
    return started.collect(timeout=2700)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_apply_and_destroy_against_moto(deployments, scenario):
    result = deployments[scenario]
    if isinstance(result, Exception):
        raise result
    assert result["apply_seconds"] > 0 and result["destroy_seconds"] > 0
    assert result["user_data_bytes"] <= 16384
