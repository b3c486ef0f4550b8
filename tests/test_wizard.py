"""The real wizard, driven through prompt_toolkit's pipe input like a person at a terminal,
against fake providers on 127.0.0.1; what it writes is loaded by the router's own config
code, and a real router is started on it."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeModelProvider, Reply
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from xrouter_core.config import load_settings
from xrouter_core.setup import hardware, wizard

ENTER, DOWN, CLEAR = "\r", "\x1b[B", "\x15"  # Ctrl-U clears the prefilled default
MEDIUM_KEY = "sk-medium-typed-secret-4242"
ENV_OPENAI_KEY = "sk-from-environment-9999"
LAYERS = {"sha256:" + "d" * 64: 397_000_000, "sha256:" + "e" * 64: 1_024}


class Transcript(io.StringIO):
    """What the wizard printed, readable while it runs."""

    encoding = "utf-8"

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def drive(
    argv: list[str], steps: list[tuple[str, str | None]], environ: dict[str, str]
) -> tuple[int, str]:
    """Run the wizard; for each step wait until `text` appears (after the previous one),
    then type `keys`. Returns the exit code and everything the wizard printed."""
    transcript = Transcript()
    failures: list[str] = []
    with create_pipe_input() as keyboard:

        def typist() -> None:
            position = 0
            for text, keys in steps:
                deadline = time.monotonic() + 20
                while (found := transcript.text().find(text, position)) < 0:
                    if time.monotonic() > deadline:
                        failures.append(f"never saw {text!r}")
                        keyboard.send_text("\x03")  # Ctrl-C: stop the wizard
                        return
                    time.sleep(0.02)
                position = found + len(text)
                if keys is not None:
                    keyboard.send_text(keys)

        thread = threading.Thread(target=typist, daemon=True)
        thread.start()
        with create_app_session(input=keyboard, output=PlainTextOutput(transcript)):
            code = wizard.main(argv, environ=environ)
        thread.join(5)
    assert not failures, failures[0] + "\n--- screen ---\n" + transcript.text()[-3000:]
    return code, transcript.text()


@pytest.fixture
def providers() -> Iterator[dict[str, FakeModelProvider]]:
    servers = {
        "ollama": FakeModelProvider("ollama", ["llama3.2:1b"], pullable={"qwen2.5:0.5b": LAYERS}),
        "medium": FakeModelProvider("openai", ["fast-model", "smart-model"], key=MEDIUM_KEY),
        # Its model list fails (HTTP 500): the wizard must fall back to the bundled catalog.
        "frontier": FakeModelProvider(
            "openai", [], fail=Reply(status=500, body={"error": {"message": "upstream exploded"}})
        ),
    }
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def cpu_machine(tmp_path: Path) -> Path:
    """A simulated 2-core, 24 GiB CPU machine, as `check_hw.py --json` would print it."""
    machine = hardware.Machine("Test CPU", 2, 2, 24.0, 20.0, "Linux 6.1", "x86_64")
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(hardware.Report(machine, hardware.recommend(machine)).to_dict()))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def quick_start_steps(providers: dict[str, FakeModelProvider]) -> list[tuple[str, str | None]]:
    return [
        ("How should xrouter run?", ENTER),  # Quick Start is the default on a viable machine
        ("Which local engine runs the classifier?", ENTER),  # Ollama, recommended
        ("Base URL of the local engine", CLEAR + providers["ollama"].url + "/v1" + ENTER),
        ("1 model(s) installed", None),
        ("Pull the recommended qwen2.5:0.5b into Ollama now?", ENTER),
        ("Pulled qwen2.5:0.5b.", None),
        ("Classifier model (recommended for this machine: qwen2.5:0.5b)", ENTER),
        ("Provider for the medium route", ENTER),  # OpenAI
        ("OpenAI base URL", CLEAR + providers["medium"].url + "/v1" + ENTER),
        ("API key (Enter uses $OPENAI_API_KEY)", CLEAR + MEDIUM_KEY + ENTER),
        ("2 models offered by the provider", None),
        ("Model", "smart-model" + ENTER),
        ("Provider for the frontier route", ENTER),
        ("OpenAI base URL", CLEAR + providers["frontier"].url + "/v1" + ENTER),
        ("API key (Enter uses $OPENAI_API_KEY)", ENTER),
        ("offering the bundled catalog", None),
        ("Model", ENTER),  # the catalog's suggestion for frontier
        ("Also update .env?", ENTER),
        ("will be replaced", ENTER),
        ("Start the router", None),
    ]


def test_quick_start_writes_files_the_router_loads_and_rerun_keeps_them(
    tmp_path, providers, cpu_machine, start_router
):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    env.write_text("# my own notes\nLOG_LEVEL=debug\nFRONTIER_MODEL=an-old-model\n")
    argv = [
        "--upstreams",
        str(upstreams),
        "--env-file",
        str(env),
        "--hardware-json",
        str(cpu_machine),
    ]
    environ = {"OPENAI_API_KEY": ENV_OPENAI_KEY}

    code, screen = drive(argv, quick_start_steps(providers), environ)
    assert code == 0, screen

    # The wizard said what it did, and never showed a key.
    assert "Engine:     llama.cpp" in screen
    assert "Could not list models (127.0.0.1" in screen and "HTTP 500" in screen
    assert "100.0%" in screen  # the pull's progress bar ran to the end
    assert MEDIUM_KEY not in screen and ENV_OPENAI_KEY not in screen
    assert [r.path for r in providers["ollama"].requests] == ["/api/tags", "/api/pull"]

    # Keys went to .env (mode 600); upstreams.json holds none.
    assert mode(env) == 0o600 and mode(upstreams) == 0o644
    assert MEDIUM_KEY not in upstreams.read_text()
    env_text = env.read_text()
    assert env_text.startswith("# my own notes\nLOG_LEVEL=debug\n")
    assert env_text.count("FRONTIER_MODEL=") == 1 and "an-old-model" not in env_text
    assert len(list(tmp_path.glob(".env.*.bak"))) == 1

    settings = load_settings(environ={}, env_file=env, upstreams_file=upstreams)
    ollama = providers["ollama"].url + "/v1"
    assert (settings.classifier.enabled, settings.classifier.base_url) == (True, ollama)
    assert settings.classifier.model == "qwen2.5:0.5b"
    assert (settings.routes["cheap"].base_url, settings.routes["cheap"].model) == (
        ollama,
        "qwen2.5:0.5b",
    )
    medium, frontier = settings.routes["medium"], settings.routes["frontier"]
    assert (medium.model, medium.api_key, medium.provider) == ("smart-model", MEDIUM_KEY, "openai")
    assert (frontier.model, frontier.api_key) == ("gpt-5.4", ENV_OPENAI_KEY)
    assert settings.log_level == "debug"

    # Run again pressing Enter everywhere: the current values are the defaults.
    first = (upstreams.read_text(), env.read_text())
    rerun = [
        ("offered as defaults", None),
        ("How should xrouter run?", ENTER),
        ("Which local engine runs the classifier?", ENTER),
        ("Base URL of the local engine", ENTER),
        ("2 model(s) installed", None),
        ("Classifier model", ENTER),
        ("Provider for the medium route", ENTER),
        ("OpenAI base URL", ENTER),
        ("API key (Enter keeps the current one)", ENTER),
        ("2 models offered", None),
        ("Model", ENTER),
        ("Provider for the frontier route", ENTER),
        ("OpenAI base URL", ENTER),
        ("API key (Enter keeps the current one)", ENTER),
        ("bundled catalog", None),
        ("Model", ENTER),
        ("Also update .env?", ENTER),
        ("will be replaced", ENTER),
        ("Start the router", None),
    ]
    code, screen = drive(argv, rerun, environ)
    assert code == 0, screen
    assert (upstreams.read_text(), env.read_text()) == first
    assert len(list(tmp_path.glob("upstreams.json.*.bak"))) == 1

    # A real router starts on these files and answers through them.
    router = start_router(
        {"UPSTREAMS_FILE": str(upstreams), "XROUTER_ENV_FILE": str(env)}, base=False
    )
    health = httpx.get(router.url + "/health", trust_env=False, timeout=10).json()
    assert {t: r["model"] for t, r in health["routes"].items()} == {
        "cheap": "qwen2.5:0.5b",
        "medium": "smart-model",
        "frontier": "gpt-5.4",
    }
    answer = httpx.post(
        router.url + "/v1/chat/completions",
        json={"model": "xrouter/auto", "messages": [{"role": "user", "content": "hi"}]},
        trust_env=False,
        timeout=20,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-xrouter-upstream"] in ("cheap", "medium", "frontier")


def test_cloud_mode_without_classifier_and_a_bad_url_is_caught_by_the_router_rules(
    tmp_path, providers, cpu_machine
):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    argv = [
        "--upstreams",
        str(upstreams),
        "--env-file",
        str(env),
        "--hardware-json",
        str(cpu_machine),
    ]
    steps = [
        ("How should xrouter run?", DOWN + ENTER),  # full cloud mode
        ("Classifier for cloud mode?", ENTER),  # none: everything to frontier
        ("only frontier is asked", None),
        ("Provider for the frontier route", ENTER),
        # The router's own URL check rejects this as it is typed; then a good one.
        ("OpenAI base URL", CLEAR + "ftp://nope" + ENTER),
        ("must be an http(s) URL", CLEAR + providers["medium"].url + "/v1" + ENTER),
        ("API key", MEDIUM_KEY + ENTER),
        ("2 models offered", None),
        ("Model", "fast-model" + ENTER),
        ("Also update .env?", "n" + ENTER),
        ("Wrote", None),
    ]
    code, screen = drive(argv, steps, {})
    assert code == 0, screen
    assert not env.exists()
    # The key lives in upstreams.json now, so it is private.
    assert mode(upstreams) == 0o600
    settings = load_settings(environ={}, env_file=env, upstreams_file=upstreams)
    assert settings.classifier.enabled is False
    assert list(settings.routes) == ["frontier"]
    assert (settings.routes["frontier"].model, settings.routes["frontier"].api_key) == (
        "fast-model",
        MEDIUM_KEY,
    )


# ---- --yes ------------------------------------------------------------------------------


def test_yes_mode_from_flags_and_environment(tmp_path, providers, cpu_machine, capsys):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    env.write_text("PORT=3005\n")
    code = wizard.main(
        [
            "--yes",
            "--upstreams",
            str(upstreams),
            "--env-file",
            str(env),
            "--update-env",
            "--hardware-json",
            str(cpu_machine),
            "--local-url",
            providers["ollama"].url,
            "--pull",
            "--medium-provider",
            "groq",
            "--medium-url",
            providers["medium"].url + "/v1",
            "--frontier-url",
            providers["frontier"].url + "/v1",
            "--frontier-model",
            "big-one",
        ],
        environ={"MEDIUM_API_KEY": MEDIUM_KEY, "OPENAI_API_KEY": ENV_OPENAI_KEY},
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert MEDIUM_KEY not in out.out + out.err
    settings = load_settings(environ={}, env_file=env, upstreams_file=upstreams)
    assert settings.port == 3005
    assert settings.classifier.model == "qwen2.5:0.5b"  # recommended for the simulated machine
    assert settings.routes["medium"].provider == "groq"
    assert settings.routes["medium"].model == "openai/gpt-oss-20b"  # the catalog's suggestion
    assert settings.routes["medium"].api_key == MEDIUM_KEY
    # No provider given for frontier: inferred from the URL (not a known host) as compatible.
    assert settings.routes["frontier"].provider == "openai_compatible"
    assert any(r.path == "/api/pull" for r in providers["ollama"].requests)
    assert mode(env) == 0o600 and MEDIUM_KEY in env.read_text()


def test_yes_mode_reports_every_problem_and_writes_nothing(tmp_path, cpu_machine, capsys):
    upstreams = tmp_path / "upstreams.json"
    code = wizard.main(
        [
            "--yes",
            "--upstreams",
            str(upstreams),
            "--env-file",
            str(tmp_path / ".env"),
            "--hardware-json",
            str(cpu_machine),
            "--mode",
            "cloud",
            "--classifier",
            "cloud",
            "--classifier-url",
            "not a url",
            "--frontier-url",
            "ftp://example.invalid",
        ],
        environ={},
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "CLASSIFIER_BASE_URL must be an http(s) URL" in err
    assert "FRONTIER_BASE_URL must be an http(s) URL" in err
    assert "nothing was written" in err
    assert not upstreams.exists()


# ---- in a real terminal -----------------------------------------------------------------


def test_configure_py_in_a_real_terminal_under_tmux(tmp_path, providers, cpu_machine):
    """configure.py itself in a tmux pane (a real pty): arrow keys, masked key, catalog note."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (apt-get install tmux)")
    root = Path(__file__).resolve().parents[1]
    socket = f"xrouter-wizard-{os.getpid()}"
    upstreams = tmp_path / "upstreams.json"
    exit_file = shlex.quote(str(tmp_path / "exit"))
    command = (
        shlex.join(
            [
                sys.executable,
                str(root / "configure.py"),
                "--upstreams",
                str(upstreams),
                "--env-file",
                str(tmp_path / ".env"),
                "--hardware-json",
                str(cpu_machine),
            ]
        )
        # Written aside and renamed, so the file never exists empty (the test polls for it).
        + f"; echo EXIT=$? > {exit_file}.part; mv {exit_file}.part {exit_file}; sleep 30"
    )

    def tmux(*args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", "wiz")
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"never saw {text!r}:\n{screen}")

    tmux(
        "new-session",
        "-d",
        "-s",
        "wiz",
        "-x",
        "160",
        "-y",
        "50",
        "-e",
        "TERM=xterm-256color",
        command,
    )
    try:
        wait_for("How should xrouter run?")
        tmux("send-keys", "-t", "wiz", "Down", "Enter")
        wait_for("Classifier for cloud mode?")
        tmux("send-keys", "-t", "wiz", "Enter")
        wait_for("Provider for the frontier route")
        tmux("send-keys", "-t", "wiz", "Enter")
        wait_for("OpenAI base URL")
        tmux("send-keys", "-t", "wiz", "C-u", providers["frontier"].url + "/v1", "Enter")
        wait_for("API key")
        tmux("send-keys", "-t", "wiz", "-l", MEDIUM_KEY)
        tmux("send-keys", "-t", "wiz", "Enter")
        screen = wait_for("Model:")
        assert "offering the bundled catalog" in screen
        assert MEDIUM_KEY not in screen and "*" * len(MEDIUM_KEY) in screen
        tmux("send-keys", "-t", "wiz", "Enter")
        wait_for("Also update .env?")
        tmux("send-keys", "-t", "wiz", "n", "Enter")
        deadline = time.monotonic() + 20
        while not (tmp_path / "exit").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "exit").read_text().strip() == "EXIT=0"
    finally:
        tmux("kill-server")
    settings = load_settings(environ={}, env_file=tmp_path / ".env", upstreams_file=upstreams)
    assert settings.routes["frontier"].model == "gpt-5.4"
    assert settings.routes["frontier"].api_key == MEDIUM_KEY
    assert mode(upstreams) == 0o600


def test_yes_cloud_classifier_key_goes_to_env(tmp_path, providers, cpu_machine, capsys):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    code = wizard.main(
        [
            "--yes",
            "--upstreams",
            str(upstreams),
            "--env-file",
            str(env),
            "--update-env",
            "--hardware-json",
            str(cpu_machine),
            "--mode",
            "cloud",
            "--classifier",
            "cloud",
            "--classifier-provider",
            "groq",
            "--classifier-url",
            providers["medium"].url + "/v1",
            "--medium-url",
            providers["medium"].url + "/v1",
            "--medium-model",
            "smart-model",
            "--frontier-url",
            providers["frontier"].url + "/v1",
            "--frontier-model",
            "big-one",
        ],
        environ={"GROQ_API_KEY": "gsk-classifier-secret", "MEDIUM_API_KEY": MEDIUM_KEY},
    )
    assert code == 0, capsys.readouterr().err
    assert "secret" not in upstreams.read_text() and MEDIUM_KEY not in upstreams.read_text()
    settings = load_settings(environ={}, env_file=env, upstreams_file=upstreams)
    assert settings.classifier.model == "llama-3.1-8b-instant"  # Groq's catalog suggestion
    assert settings.classifier.api_key == "gsk-classifier-secret"
    # cheap was not given: like the interactive wizard, it uses the classifier's model
    cheap = settings.routes["cheap"]
    assert (cheap.provider, cheap.model, cheap.api_key) == (
        "groq",
        "llama-3.1-8b-instant",
        "gsk-classifier-secret",
    )
    assert settings.routes["medium"].api_key == MEDIUM_KEY


# ---- the catalog form -----------------------------------------------------------------

GROQ_KEY = "gsk_catalog_secret_0123"
ANTHROPIC_KEY = "sk-ant-catalog-secret-0456"


def test_the_wizard_offers_keys_in_the_environment_as_a_catalog(tmp_path, providers, cpu_machine):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    argv = ["--upstreams", str(upstreams), "--env-file", str(env)]
    argv += ["--hardware-json", str(cpu_machine)]
    steps = [
        ("How should xrouter run?", DOWN + ENTER),
        ("Classifier for cloud mode?", ENTER),
        ("Provider for the frontier route", ENTER),
        ("OpenAI base URL", CLEAR + providers["medium"].url + "/v1" + ENTER),
        ("API key", MEDIUM_KEY + ENTER),
        ("2 models offered", None),
        ("Model", "fast-model" + ENTER),
        ("Keys for groq ($GROQ_API_KEY) are set here", ENTER),
        ("frontier openai/gpt-oss-120b", None),
        ("Also update .env?", "n" + ENTER),
        ("then groq/openai/gpt-oss-120b", None),
        ("Wrote", None),
    ]
    code, screen = drive(argv, steps, {"GROQ_API_KEY": GROQ_KEY})
    assert code == 0, screen
    assert GROQ_KEY not in screen and GROQ_KEY not in upstreams.read_text()
    doc = json.loads(upstreams.read_text())
    assert doc["providers"] == {
        "groq": {
            "type": "groq",
            "base_url": "https://api.groq.com/openai/v1",
            "api_key_env": "GROQ_API_KEY",
            "models": [
                {"model": "llama-3.1-8b-instant", "tiers": ["cheap"]},
                {"model": "openai/gpt-oss-20b", "tiers": ["medium"]},
                {"model": "openai/gpt-oss-120b", "tiers": ["frontier"]},
            ],
        }
    }
    settings = load_settings(
        environ={"GROQ_API_KEY": GROQ_KEY}, env_file=env, upstreams_file=upstreams
    )
    assert [r.label for r in settings.tier_candidates("frontier")] == [
        "openai/fast-model",
        "groq/openai/gpt-oss-120b",
    ]
    assert settings.tier_candidates("frontier")[1].api_key == GROQ_KEY
    # Without the key the router still starts on the chosen route, with one warning.
    alone = load_settings(environ={}, env_file=env, upstreams_file=upstreams)
    assert [r.model for r in alone.tier_candidates("frontier")] == ["fast-model"]
    assert len(alone.warnings) == 1 and "GROQ_API_KEY" in alone.warnings[0]


def test_yes_catalog_lists_every_provider_with_a_key(tmp_path, providers, cpu_machine, capsys):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    environ = {"GROQ_API_KEY": GROQ_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    code = wizard.main(
        [
            "--yes",
            "--catalog",
            "--upstreams",
            str(upstreams),
            "--env-file",
            str(env),
            "--hardware-json",
            str(cpu_machine),
            "--mode",
            "cloud",
            "--frontier-provider",
            "groq",
            "--frontier-url",
            providers["medium"].url + "/v1",
            "--frontier-model",
            "smart-model",
        ],
        environ=environ,
    )
    assert code == 0, capsys.readouterr().err
    text = upstreams.read_text()
    assert ANTHROPIC_KEY not in text  # (the frontier route's own key is there, as before)
    # groq serves the chosen route: only anthropic is listed, with today's models.
    doc = json.loads(text)
    assert list(doc["providers"]) == ["anthropic"]
    assert doc["providers"]["anthropic"]["models"] == [
        {"model": "claude-haiku-4-5", "tiers": ["cheap"]},
        {"model": "claude-sonnet-4-6", "tiers": ["medium"]},
        {"model": "claude-opus-4-7", "tiers": ["frontier"]},
    ]
    settings = load_settings(environ=environ, env_file=env, upstreams_file=upstreams)
    assert [r.label for r in settings.tier_candidates("frontier")] == [
        "groq/smart-model",
        "anthropic/claude-opus-4-7",
    ]
    assert settings.tier_candidates("cheap")[0].api_key == ANTHROPIC_KEY
