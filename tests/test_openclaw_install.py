"""`xrouter openclaw install|uninstall` on OpenClaw config files, run as the command:
merged into what is there, backed up, idempotent, refusing what it cannot parse. The
router's model list comes from a loopback fake of GET /v1/models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from fakes import FakeServer, Recorded, Reply, openai_models

MODELS = ["xrouter/auto", "xrouter/cheap", "xrouter-coding"]


@pytest.fixture(scope="module")
def router_models():
    def answer(request: Recorded) -> Reply:
        if request.headers.get("authorization") != "Bearer k-123":
            return Reply(401, {"error": {"message": "bad key"}})
        return Reply(body=openai_models(MODELS))

    server = FakeServer(answer)
    yield server
    server.close()


def xrouter_openclaw(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "xrouter_core", "openclaw", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


EXISTING = {
    "models": {"providers": {"other": {"baseUrl": "http://x/v1", "api": "openai-completions"}}},
    "agents": {"defaults": {"model": {"primary": "other/m"}, "workspace": "/w"}},
    "gateway": {"port": 18789},
}


def test_install_merges_backs_up_and_is_idempotent(tmp_path, router_models):
    config = tmp_path / "home" / ".openclaw" / "openclaw.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps(EXISTING))
    os.chmod(config, 0o640)
    url = router_models.url
    done = xrouter_openclaw(
        "install", "--url", url, "--key", "k-123", "--default", home=tmp_path / "home"
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(config.read_text())
    entry = doc["models"]["providers"]["xrouter"]
    assert entry == {
        "baseUrl": url + "/v1",
        "apiKey": "k-123",
        "api": "openai-completions",
        "models": [
            {"id": "xrouter/auto", "name": "Xrouter (auto)"},
            {"id": "xrouter/cheap", "name": "Xrouter (cheap)"},
            {"id": "xrouter-coding", "name": "Xrouter (xrouter-coding)"},
        ],
    }
    assert doc["models"]["providers"]["other"] == EXISTING["models"]["providers"]["other"]
    assert doc["agents"]["defaults"] == {
        "model": {"primary": "xrouter/xrouter/auto"},
        "workspace": "/w",
    }
    assert doc["gateway"] == {"port": 18789}
    assert oct(config.stat().st_mode & 0o777) == oct(0o640)
    backups = list(config.parent.glob("openclaw.json.bak-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == EXISTING
    again = xrouter_openclaw(
        "install", "--url", url, "--key", "k-123", "--default", home=tmp_path / "home"
    )
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert len(list(config.parent.glob("openclaw.json.bak-*"))) == 1

    removed = xrouter_openclaw("uninstall", home=tmp_path / "home")
    assert removed.returncode == 0, removed.stderr
    doc = json.loads(config.read_text())
    assert "xrouter" not in doc["models"]["providers"] and "other" in doc["models"]["providers"]
    assert doc["agents"]["defaults"] == {"model": {}, "workspace": "/w"}


def test_install_without_a_running_router_offers_auto_and_makes_the_file(tmp_path):
    config = tmp_path / "new" / "openclaw.json"
    done = xrouter_openclaw(
        "install", "--config", str(config), "--url", "http://127.0.0.1:9", home=tmp_path
    )
    assert done.returncode == 0, done.stderr
    entry = json.loads(config.read_text())["models"]["providers"]["xrouter"]
    assert [m["id"] for m in entry["models"]] == ["xrouter/auto"]
    assert entry["apiKey"] == "xrouter" and "agents" not in json.loads(config.read_text())


@pytest.mark.parametrize(
    "text", ["{ models: { /* json5 */ } }", "[1, 2]", '{"models": {"providers": []}}']
)
def test_a_file_it_cannot_parse_or_merge_is_left_alone(tmp_path, text):
    config = tmp_path / "openclaw.json"
    config.write_text(text)
    done = xrouter_openclaw(
        "install", "--config", str(config), "--url", "http://127.0.0.1:9", home=tmp_path
    )
    assert done.returncode == 1 and "not changed" in done.stderr
    assert config.read_text() == text
    assert not list(tmp_path.glob("openclaw.json.bak-*"))
