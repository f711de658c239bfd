"""Issue 6: container hardening, checked on the running containers.

Every container of the stack: no process runs as root, read-only root
filesystem, no-new-privileges, all capabilities dropped, memory and CPU
limits, a restart policy, published ports bound to 127.0.0.1 only. The app
image holds no compiler and no pip cache; both images declare a non-root USER
and a HEALTHCHECK; stop signals and grace periods let requests drain.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from loadtest.stack import IMAGE_TAG, ROOT

SERVICES = (
    "nginx",
    "app",
    "redis",
    "postgres",
    "prometheus",
    "redis-exporter",
    "postgres-exporter",
)


def running(stack, service):
    container = stack.container(service)
    container.reload()
    assert container.status == "running", service
    return container


@pytest.mark.parametrize("service", SERVICES)
def test_no_process_runs_as_root(lab, service):
    container = running(lab, service)
    top = container.top(ps_args="-o uid,pid,comm")
    uids = {int(row[0]) for row in top["Processes"]}
    assert uids and 0 not in uids, (service, top["Processes"])
    assert container.attrs["Config"]["User"] not in ("", "0", "root"), service


@pytest.mark.parametrize("service", SERVICES)
def test_container_is_locked_down(lab, service):
    host = running(lab, service).attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True, service
    assert "no-new-privileges:true" in (host.get("SecurityOpt") or []), service
    assert host.get("CapDrop") and "ALL" in host["CapDrop"], service
    assert not host.get("CapAdd"), service
    assert host["Privileged"] is False
    assert host["Memory"] > 0, service
    # A CPU limit: --cpus, or a quota per CFS period (app and nginx: 10 ms periods).
    assert host["NanoCpus"] > 0 or 0 < host["CpuQuota"] <= host["CpuPeriod"], service
    assert host["RestartPolicy"]["Name"] == "unless-stopped", service
    assert host["LogConfig"]["Config"].get("max-size"), service


@pytest.mark.parametrize("service", SERVICES)
def test_published_ports_are_local_only(lab, service):
    ports = running(lab, service).attrs["NetworkSettings"]["Ports"] or {}
    for bindings in ports.values():
        for binding in bindings or []:
            assert binding["HostIp"] == "127.0.0.1", (service, binding)


def test_only_nginx_is_published_besides_the_test_data_ports(lab):
    published = {
        service
        for service in SERVICES
        if any(
            running(lab, service).attrs["NetworkSettings"]["Ports"].get(p)
            for p in running(lab, service).attrs["NetworkSettings"]["Ports"]
        )
    }
    # tests/compose.test.yaml publishes postgres and redis on 127.0.0.1 for direct queries.
    assert published <= {"nginx", "postgres", "redis", "prometheus"}


def test_the_lab_itself_publishes_only_nginx_and_the_locust_ui():
    import yaml

    from loadtest.stack import ROOT

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert {name for name, spec in services.items() if spec.get("ports")} == {
        "nginx",
        "locust-master",
        "prometheus",
    }


def test_graceful_stop_settings(lab):
    nginx, app = running(lab, "nginx"), running(lab, "app")
    assert nginx.attrs["Config"]["StopSignal"] == "SIGQUIT"  # finish in-flight requests
    assert app.attrs["Config"].get("StopSignal", "SIGTERM") in ("SIGTERM", "15")
    # Longer than gunicorn's graceful_timeout (30 s) and than a slow answer.
    assert app.attrs["Config"]["StopTimeout"] >= 31
    assert nginx.attrs["Config"]["StopTimeout"] >= 31


@pytest.fixture(scope="module")
def production_image(stack, tmp_path_factory):
    """The app image as the lab and AWS build it (target runtime): the test
    stack runs the same image plus coverage.py (target coverage)."""
    override = tmp_path_factory.mktemp("runtime") / "runtime.yaml"
    override.write_text(
        f"services:\n  app:\n    image: cachelab/app:{IMAGE_TAG}-runtime\n"
        "    build:\n      target: runtime\n"
    )
    result = subprocess.run(
        [
            "docker",
            "compose",
            "-p",
            stack.project,
            "-f",
            str(ROOT / "compose.yaml"),
            "-f",
            str(override),
            "build",
            "--quiet",
            "app",
        ],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return stack.docker.images.get(f"cachelab/app:{IMAGE_TAG}-runtime")


def test_app_image_has_no_compiler_pip_cache_or_test_tools(lab, production_image):
    out = lab.docker.containers.run(
        production_image.id,
        [
            "sh",
            "-c",
            "command -v gcc cc c++ g++ x86_64-linux-gnu-gcc-12 as ld || true; "
            "ls -A /root/.cache /opt/coverage /src 2>/dev/null || true",
        ],
        entrypoint=[],
        user="0",
        remove=True,
        network_disabled=True,
    )
    assert out.decode().strip() == "", out.decode()


def test_app_image_is_multi_stage_and_declares_user_and_healthcheck(lab, production_image):
    for image in (production_image, running(lab, "nginx").image):
        config = image.attrs["Config"]
        assert config["User"] not in ("", "0", "root"), image.tags
        assert config.get("Healthcheck", {}).get("Test"), image.tags
    # The runtime stage starts from the base image and copies the finished venv:
    # no build step (pip, the source tree) left a layer in it.
    commands = [layer.get("CreatedBy", "") for layer in production_image.history()]
    assert not [c for c in commands if "pip install" in c or "/src/" in c], commands
    assert any("COPY /opt/venv /opt/venv" in c for c in commands), commands
    # The test image is exactly the production image plus coverage.py's layers.
    production_layers = production_image.attrs["RootFS"]["Layers"]
    test_layers = running(lab, "app").image.attrs["RootFS"]["Layers"]
    assert test_layers[: len(production_layers)] == production_layers
    assert len(test_layers) > len(production_layers)


def test_nginx_reload_works_as_non_root(lab):
    """The upstream watcher reloads nginx as its own user (pid file in /tmp)."""
    nginx = running(lab, "nginx")
    code, out = nginx.exec_run(["nginx", "-s", "reload"])
    assert code == 0, out
    assert lab.get("/healthz").status_code == 200
    code, out = nginx.exec_run(["sh", "-c", "touch /etc/nginx/x 2>&1; id -u"])
    assert b"Read-only file system" in out and out.split()[-1] != b"0", out


@pytest.mark.parametrize("service", ["db-init", "passwords"])
def test_one_shots_are_locked_down_too(lab, service):
    container = lab.container(service)  # exited after its work
    container.reload()
    host = container.attrs["HostConfig"]
    assert container.attrs["State"]["ExitCode"] == 0
    assert container.attrs["Config"]["User"] not in ("", "0", "root")
    assert host["ReadonlyRootfs"] is True and "ALL" in (host.get("CapDrop") or [])
    assert "no-new-privileges:true" in (host.get("SecurityOpt") or [])
    assert host["RestartPolicy"]["Name"] == "no"
