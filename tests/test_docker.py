"""docker-compose.yml and the Dockerfile: validated by Compose itself, and checked for what
the router needs (no Docker engine runs here, so the containers are not started)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def compose_command() -> list[str] | None:
    """`docker compose` (plugin) when present, else Debian's `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def load(text: str) -> dict:
    return YAML(typ="safe").load(io.StringIO(text))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the compose file beside the two config files it mounts."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / "upstreams.json").write_text("{}\n")
    (tmp_path / ".env").write_text("LOG_LEVEL=info\n")
    return tmp_path


def check_router_service(doc: dict) -> None:
    router, redis = doc["services"]["router"], doc["services"]["redis"]
    assert router["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert router["depends_on"]["redis"]["condition"] == "service_healthy"
    ports = router["ports"]
    assert ports in (["3000:3000"], [{"published": 3000, "target": 3000}]) or any(
        str(p.get("published")) == "3000" and p.get("target") == 3000
        for p in ports
        if isinstance(p, dict)
    )
    assert any("/health" in part for part in router["healthcheck"]["test"])
    targets = {v["target"]: v for v in router["volumes"]}
    assert targets["/config/upstreams.json"]["read_only"] is True
    assert targets["/config/.env"]["read_only"] is True
    assert router["environment"]["UPSTREAMS_FILE"] == "/config/upstreams.json"
    assert router["environment"]["XROUTER_ENV_FILE"] == "/config/.env"
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_file_wires_router_and_redis():
    check_router_service(load((ROOT / "docker-compose.yml").read_text()))


def test_compose_config_validates(project):
    command = compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)"
        )
    done = subprocess.run(
        [*command, "config"], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    check_router_service(load(done.stdout))


def test_dockerfile_runs_the_production_command_with_a_health_check_and_no_baked_secrets():
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["xrouter"]' in text
    assert "HEALTHCHECK" in text and "/health" in text
    assert "EXPOSE 3000" in text
    copied = [line.split()[1:-1] for line in text.splitlines() if line.startswith("COPY ")]
    assert all(".env" not in src and "upstreams.json" not in src for src in copied)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and "upstreams.json" in ignored
