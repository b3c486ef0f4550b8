"""upstreams.json and .env writing: in-place .env updates, quoting, modes, backups."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from xrouter_core.config import parse_dotenv
from xrouter_core.setup.config_files import (
    backup,
    format_env_value,
    holds_secrets,
    read_current,
    update_dotenv_text,
    write_file,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_update_keeps_comments_and_other_lines_and_drops_duplicates():
    old = (
        "# my settings\n"
        "LOG_LEVEL=debug\n"
        "export FRONTIER_API_KEY=old-key\n"
        "\n"
        "PORT=3001  # my port\n"
        "FRONTIER_API_KEY=older-duplicate\n"
        "# FRONTIER_MODEL=commented-out stays as it is\n"
        "CHEAP_MODEL=stale\n"
    )
    new = update_dotenv_text(
        old, {"FRONTIER_API_KEY": "sk-new", "MEDIUM_API_KEY": "sk-medium"}, disable={"CHEAP_MODEL"}
    )
    lines = new.splitlines()
    assert lines[:5] == [
        "# my settings",
        "LOG_LEVEL=debug",
        "export FRONTIER_API_KEY=sk-new",
        "",
        "PORT=3001  # my port",
    ]
    assert "FRONTIER_API_KEY=older-duplicate" not in new
    assert "# FRONTIER_MODEL=commented-out stays as it is" in lines
    assert any(line.startswith("# CHEAP_MODEL=stale") for line in lines)
    assert lines[-2:] == ["# Added by xrouter-configure", "MEDIUM_API_KEY=sk-medium"]
    values = parse_dotenv(new)
    assert values["FRONTIER_API_KEY"] == "sk-new"
    assert values["MEDIUM_API_KEY"] == "sk-medium"
    assert values["PORT"] == "3001" and values["LOG_LEVEL"] == "debug"
    assert "CHEAP_MODEL" not in values
    assert sum(1 for line in lines if "FRONTIER_API_KEY=" in line) == 1


def test_updating_twice_changes_nothing_more():
    once = update_dotenv_text("A=1\n", {"B": "2"})
    assert update_dotenv_text(once, {"B": "2"}) == once


@pytest.mark.parametrize(
    "value",
    ["plain-key_123", "with space", "has # hash", 'json {"a": "b"}', "it's", "", "a=b=c"],
)
def test_values_read_back_unchanged(value):
    text = update_dotenv_text("", {"X": value})
    assert parse_dotenv(text)["X"] == value


def test_values_that_cannot_be_written():
    with pytest.raises(ValueError):
        format_env_value("line\nbreak")
    with pytest.raises(ValueError):
        format_env_value("""both ' and " quotes""")


def test_private_files_are_600_and_others_644(tmp_path):
    secret, public = tmp_path / "secret", tmp_path / "public"
    write_file(secret, "KEY=1\n", private=True)
    write_file(public, "{}\n", private=False)
    assert mode(secret) == 0o600 and mode(public) == 0o644
    # Rewriting an existing world-readable file as private tightens it.
    write_file(public, "KEY=2\n", private=True)
    assert mode(public) == 0o600 and public.read_text() == "KEY=2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["public", "secret"]  # no temp files left


def test_backup_copies_with_mode_600_and_never_overwrites(tmp_path):
    original = tmp_path / "upstreams.json"
    assert backup(original) is None
    original.write_text("first")
    original.chmod(0o644)
    first = backup(original)
    second = backup(original)
    assert first != second and first.read_text() == second.read_text() == "first"
    assert mode(first) == 0o600


def test_holds_secrets():
    assert holds_secrets({"routes": {"frontier": {"base_url": "x", "api_key": "k"}}})
    assert holds_secrets({"classifier": {"api_key": "k"}})
    assert not holds_secrets({"routes": {"frontier": {"base_url": "x", "model": "m"}}})


def test_read_current_merges_like_the_router_and_tolerates_broken_files(tmp_path):
    upstreams, env = tmp_path / "upstreams.json", tmp_path / ".env"
    upstreams.write_text('{"routes": {"frontier": {"base_url": "http://a", "model": "m1"}}}')
    env.write_text("FRONTIER_MODEL=m2\n")
    assert read_current(upstreams, env) == {"FRONTIER_BASE_URL": "http://a", "FRONTIER_MODEL": "m2"}
    upstreams.write_text("{not json")
    assert read_current(upstreams, env) == {"FRONTIER_MODEL": "m2"}
