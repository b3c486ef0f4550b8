"""Configuration: sources, precedence, defaults and one clear line per problem."""

import json

import pytest

from xrouter_core.config import ConfigError, load_settings, parse_dotenv

BASE = {
    "CLASSIFIER_BASE_URL": "http://127.0.0.1:11434",
    "CLASSIFIER_MODEL": "qwen2.5:0.5b",
    "MEDIUM_BASE_URL": "https://api.groq.com/openai/v1",
    "FRONTIER_BASE_URL": "https://api.openai.com/v1",
}


def load(env, tmp_path, dotenv=None, upstreams=None):
    env_file = tmp_path / ".env"
    ups = tmp_path / "upstreams.json"
    if dotenv is not None:
        env_file.write_text(dotenv)
    if upstreams is not None:
        ups.write_text(json.dumps(upstreams))
    return load_settings(env, env_file=env_file, upstreams_file=ups)


def test_defaults_and_cheap_shares_the_classifier_model(tmp_path):
    settings = load(BASE, tmp_path)
    assert (settings.host, settings.port, settings.log_level) == ("0.0.0.0", 3000, "info")
    cheap = settings.route("cheap")
    assert cheap.base_url == "http://127.0.0.1:11434"
    assert cheap.model == "qwen2.5:0.5b"  # no model swapping on the local engine


def test_cheap_model_can_be_set_apart(tmp_path):
    settings = load({**BASE, "CHEAP_MODEL": "llama3.2:1b"}, tmp_path)
    assert settings.route("cheap").model == "llama3.2:1b"


def test_precedence_environment_over_dotenv_over_upstreams(tmp_path):
    upstreams = {
        "classifier": {"base_url": "http://127.0.0.1:1", "model": "from-json", "timeout_ms": 900},
        "routes": {
            "medium": {
                "base_url": "http://json-medium:1/v1",
                "model": "json-medium",
                "headers": {"X-A": "1"},
            },
            "frontier": {"base_url": "http://json-frontier:1/v1", "api_key": "sk-json"},
        },
    }
    dotenv = (
        "# comment\nexport MEDIUM_MODEL='dotenv-medium'\nCLASSIFIER_MODEL=from-dotenv # trailing\n"
    )
    settings = load({"CLASSIFIER_MODEL": "from-env"}, tmp_path, dotenv, upstreams)
    assert settings.classifier.model == "from-env"
    assert settings.classifier.timeout_ms == 900
    assert settings.route("medium").model == "dotenv-medium"
    assert settings.route("medium").headers == {"X-A": "1"}
    assert settings.route("frontier").api_key == "sk-json"
    assert "sk-json" in settings.secrets


def test_every_problem_is_reported_at_once(tmp_path):
    env = {
        "CLASSIFIER_BASE_URL": "http://127.0.0.1:11434",
        "FRONTIER_BASE_URL": "https://api.openai.com/v1",
        "FRONTIER_HEADERS": "[1, 2]",
        "PORT": "eighty",
        "CLASSIFIER_TIMEOUT_MS": "-5",
        "LOG_LEVEL": "loud",
        "CHEAP_PROVIDER": "carrier-pigeon",
    }
    with pytest.raises(ConfigError) as caught:
        load(env, tmp_path)
    text = "\n".join(caught.value.problems)
    assert "MEDIUM_BASE_URL is required when the classifier is enabled" in text
    assert "FRONTIER_HEADERS is not a JSON object" in text
    assert "PORT must be a whole number" in text
    assert "CLASSIFIER_TIMEOUT_MS must be at least 1" in text
    assert "LOG_LEVEL must be one of" in text
    assert "CHEAP_PROVIDER 'carrier-pigeon' is not a known provider type" in text
    assert len(caught.value.problems) == 6


def test_classifier_disabled_needs_only_frontier(tmp_path):
    settings = load(
        {"CLASSIFIER_ENABLED": "false", "FRONTIER_BASE_URL": "https://api.openai.com/v1"}, tmp_path
    )
    assert list(settings.routes) == ["frontier"]
    with pytest.raises(ConfigError, match="FRONTIER_BASE_URL is required"):
        load({"CLASSIFIER_ENABLED": "false", "CHEAP_BASE_URL": "http://127.0.0.1:1"}, tmp_path)


def test_bad_urls_and_unknown_upstream_keys(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(
            {**BASE, "MEDIUM_BASE_URL": "groq.com"},
            tmp_path,
            upstreams={"routes": {"turbo": {}}, "colour": 1},
        )
    text = "\n".join(caught.value.problems)
    assert "MEDIUM_BASE_URL must be an http(s) URL" in text
    assert "unknown route 'turbo'" in text
    assert "unknown keys ['colour']" in text


def test_dotenv_parsing():
    assert parse_dotenv('A=1\n\n# x\nB="two words"\nexport C=3\nD=4 # note\nbroken line\n') == {
        "A": "1",
        "B": "two words",
        "C": "3",
        "D": "4",
    }
