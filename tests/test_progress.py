"""Progress bars of the long offline commands (quality/progress.py): prompt_toolkit's bar
on a terminal (a real one: tmux), plain log lines in a pipe."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import ROOT

TRAIN = [sys.executable, "-m", "xrouter_core.quality.train_builtin", "--holdout", "llmrouter_code"]


def test_training_shows_a_bar_on_a_terminal():
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed (.ci/run installs it)")
    server = f"xrouter-progress-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", server, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    command = " ".join([*TRAIN, "--passes", "2"]) + " > /dev/null; echo EXITED $?; sleep 60"
    tmux("new-session", "-d", "-x", "150", "-y", "30", "-c", str(ROOT), command)
    try:
        deadline = time.monotonic() + 240
        screen = ""
        while time.monotonic() < deadline and "EXITED" not in screen:
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p")
        assert "EXITED 0" in screen, screen
        assert "Training the built-in classifier" in screen, screen
        assert "passes" in screen and "2/  2" in screen, screen
    finally:
        tmux("kill-server")


def test_in_a_pipe_there_is_no_bar_only_the_log_line():
    done = subprocess.run(
        [*TRAIN, "--passes", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("training prompts:")
    assert "Training the built-in classifier" not in done.stderr and "\x1b[" not in done.stderr
