"""deploy/kubernetes/: every resource validated against the Kubernetes API's own JSON
schemas (bundled per release by the kubernetes-validate package, strict: an unknown field
fails), the references between them checked (selectors, ports, probes, the ConfigMap and
Secret the pods read, the Redis Service REDIS_URL names), and the pod's command run for
real: the container's command and arguments, with the ConfigMap and Secret as its
environment, in front of fake providers and a redis-server started with the Redis
container's arguments, all on 127.0.0.1."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import free_port, unique
from helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release still in wide use and the newest the package bundles.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def resources() -> list[dict]:
    """Every resource of every file kustomization.yaml lists, in its order."""
    found = []
    for name in kustomization()["resources"]:
        found += [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]
    return found


def kustomization() -> dict:
    return yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())


def one(kind: str, name: str) -> dict:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.parametrize("version", VERSIONS)
def test_every_resource_is_valid_against_the_kubernetes_schema(version):
    kinds = []
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=True)
        kinds.append(resource["kind"])
    assert sorted(kinds) == sorted(
        ["ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"]
        + ["Deployment", "Service"]
    )


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"].update(replicas="three"),
        lambda d: d["spec"].update(replica=3),  # a misspelt field: strict rejects it
        lambda d: container(d)["readinessProbe"]["httpGet"].pop("port"),
    ],
    ids=["wrong-type", "unknown-field", "missing-required"],
)
def test_the_schema_check_rejects_a_broken_deployment(break_it):
    broken = copy.deepcopy(one("Deployment", "xrouter"))
    break_it(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest():
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_the_resources_fit_together():
    deployment = one("Deployment", "xrouter")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    router = container(deployment)
    assert router["command"] == ["xrouter"]
    workers = router["args"][router["args"].index("--workers") + 1]
    assert int(workers) >= 1
    ports = {p["name"]: p["containerPort"] for p in router["ports"]}
    config = one("ConfigMap", "xrouter-config")["data"]
    assert ports["http"] == int(config["PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert router[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"cpu", "memory"} <= set(router["resources"]["requests"])
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in router["envFrom"]}
    assert sources == {"configMapRef": "xrouter-config", "secretRef": "xrouter-keys"}
    secret = one("Secret", "xrouter-keys")
    assert "ROUTER_API_KEY" in secret["stringData"]
    assert not set(secret["stringData"]) & set(config), "a key in the ConfigMap"

    service = one("Service", "xrouter")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    budget = one("PodDisruptionBudget", "xrouter")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]

    # The image's user (Dockerfile), which owns nothing on the read-only root filesystem.
    user = pod["spec"]["securityContext"]["runAsUser"]
    assert f"useradd --create-home --uid {user} " in (ROOT / "Dockerfile").read_text()
    # Every path the settings write to is on a volume (the root filesystem is read-only).
    assert router["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m["mountPath"] for m in router["volumeMounts"]]
    confdir = next(a for a in router["args"] if a.startswith("confdir="))
    for path in (config["XROUTER_DATA_DIR"], confdir.split("=", 1)[1]):
        assert any(path.startswith(m + "/") for m in mounts), path

    # REDIS_URL names the Redis Service and its port, which selects the Redis pods.
    redis_url = urlsplit(config["REDIS_URL"])
    redis_service = one("Service", redis_url.hostname)
    (redis_port,) = redis_service["spec"]["ports"]
    assert redis_port["port"] == redis_url.port
    redis_pod = one("Deployment", "xrouter-redis")["spec"]["template"]
    assert redis_service["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    assert redis_port["targetPort"] in {
        p["name"] for p in container({"spec": {"template": redis_pod}})["ports"]
    }


def test_the_pod_command_runs_with_its_config_map_and_secret(upstreams, tmp_path):
    """What a pod runs, run here: the container's command and arguments (--workers, the
    confdir on its volume), the ConfigMap and the Secret as the environment, and Redis
    started with the Redis container's arguments. The probes' /health answers without the
    key, the API needs it, and the two workers count in the one Redis."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (.ci/run installs it)")
    import redis

    state = tmp_path / "var-lib-xrouter"
    state.mkdir()
    redis_args = container(one("Deployment", "xrouter-redis"))["args"]
    assert redis_args[0] == "redis-server"
    (tmp_path / "redis").mkdir()
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        [
            shutil.which("redis-server"),
            *[str(tmp_path / "redis") if a == "/data" else a for a in redis_args[1:]],
            *("--port", str(redis_port), "--bind", "127.0.0.1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = redis.Redis(port=redis_port, socket_timeout=1)
    try:
        wait_for(lambda: _pings(store), timeout=10)
        router_spec = container(one("Deployment", "xrouter"))

        def on_this_machine(value: str) -> str:
            return value.replace("/var/lib/xrouter", str(state))

        env = dict(one("ConfigMap", "xrouter-config")["data"])
        env.update({e["name"]: e["value"] for e in router_spec["env"]})
        env = {name: on_this_machine(value) for name, value in env.items()}
        env.update(one("Secret", "xrouter-keys")["stringData"])
        env["ROUTER_API_KEY"] = "rk-kubernetes-test-key"
        # Loopback only: the fake providers instead of the real ones, Redis on its port.
        env.update(upstreams.env())
        env.update(
            HOST="127.0.0.1", REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", PORT=str(free_port())
        )
        assert router_spec["command"] == ["xrouter"]
        args = [on_this_machine(a) for a in router_spec["args"]]
        # As conftest's Router starts `xrouter`, but with the pod's arguments alone (they
        # set confdir themselves).
        log_path = tmp_path / "router.log"
        url = f"http://127.0.0.1:{env['PORT']}"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "xrouter_core", *args],
                cwd=tmp_path,
                env={
                    "PATH": os.environ.get("PATH", ""),
                    "HOME": str(tmp_path),
                    "PYTHONPATH": str(ROOT),
                    "PYTHONUNBUFFERED": "1",
                    **env,
                },
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(lambda: proc.poll() is not None or _healthy(url), timeout=30)
            assert proc.poll() is None, log_path.read_text()
            with httpx.Client(base_url=url, trust_env=False, timeout=20) as client:
                assert client.get("/health").status_code == 200  # the probes send no key
                body = {"model": "auto", "messages": [{"role": "user", "content": unique("k8s")}]}
                assert client.post("/v1/chat/completions", json=body).status_code == 401
                auth = {"authorization": "Bearer rk-kubernetes-test-key"}
                for _ in range(4):
                    response = client.post("/v1/chat/completions", json=body, headers=auth)
                    assert response.status_code == 200, response.text
                    body["messages"][0]["content"] = unique("k8s")
                # Whichever worker answers /usage reads the counts of both from Redis.
                assert wait_for(
                    lambda: client.get("/usage", headers=auth).json()["totalRequests"] == 4,
                    timeout=10,
                ), log_path.read_text()
            assert (state / "mitmproxy").is_dir()  # the confdir on the pod's volume
            os.killpg(proc.pid, signal.SIGTERM)  # what the kubelet sends
            assert proc.wait(20) == 0
            logs = log_path.read_text()
            assert "Traceback" not in logs
            assert "rk-kubernetes-test-key" not in logs
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    finally:
        redis_proc.kill()
        redis_proc.wait(5)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _pings(store) -> bool:
    import redis

    try:
        return bool(store.ping())
    except redis.RedisError:
        return False
