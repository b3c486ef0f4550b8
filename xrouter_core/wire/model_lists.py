"""Which models a provider offers, read from its own list endpoint.

Used by the wizard (setup/model_lists.py adds the bundled catalog) and by the running
router, which checks its default routes' models at start (default_routes.py).

Each provider family lists models its own way:
  openai     GET {base}/models  (base ends in /v1)      -> {"data": [{"id": ...}]}
             (some servers, e.g. Together, answer with a bare array)
  anthropic  GET /v1/models, x-api-key + anthropic-version -> {"data": [{"id"}], "has_more", "last_id"}
  gemini     GET /v1beta/models, x-goog-api-key            -> {"models": [{"name": "models/..",
                                                              "supportedGenerationMethods"}], "nextPageToken"}
  cohere     GET /v1/models?endpoint=chat, Bearer          -> {"models": [{"name"}], "next_page_token"}
  ollama     GET /api/tags                                 -> {"models": [{"name", "model", "size"}]}
Keys go in headers, never in URLs, so no error message can carry one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from xrouter_core.wire.adapters.anthropic import API_VERSION as ANTHROPIC_VERSION
from xrouter_core.wire.errors import redact

MAX_PAGES = 20


class ListingError(Exception):
    """A provider's model list could not be read; the message is key-free and one line."""


def strip_suffix(base_url: str, *suffixes: str) -> str:
    base = base_url.rstrip("/")
    for suffix in suffixes:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _get(
    client: httpx.Client, url: str, headers: dict[str, str], params: dict[str, Any], key: str
) -> Any:
    try:
        response = client.get(url, headers=headers, params=params)
    except httpx.HTTPError as exc:
        host = urlsplit(url).netloc
        raise ListingError(f"could not reach {host}: {type(exc).__name__}") from None
    if response.status_code != 200:
        detail = _error_detail(response)
        raise ListingError(
            redact(f"{urlsplit(url).netloc} answered HTTP {response.status_code}{detail}", (key,))
        )
    try:
        return response.json()
    except ValueError:
        raise ListingError(f"{urlsplit(url).netloc} did not answer with JSON") from None


def _error_detail(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    message = (
        error.get("message")
        if isinstance(error, dict)
        else error
        if isinstance(error, str)
        else None
    )
    if message is None and isinstance(doc, dict):
        message = doc.get("message")
    return f": {str(message)[:200]}" if message else ""


def _openai(client: httpx.Client, base_url: str, key: str) -> list[str]:
    base = base_url.rstrip("/")
    url = base + ("/models" if urlsplit(base).path else "/v1/models")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    doc = _get(client, url, headers, {}, key)
    items = doc if isinstance(doc, list) else doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ListingError("the answer has no model list (expected a 'data' array)")
    return [str(item["id"]) for item in items if isinstance(item, dict) and item.get("id")]


def _anthropic(client: httpx.Client, base_url: str, key: str) -> list[str]:
    url = strip_suffix(base_url, "/v1") + "/v1/models"
    headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
    names: list[str] = []
    params: dict[str, Any] = {"limit": 1000}
    for _ in range(MAX_PAGES):
        doc = _get(client, url, headers, params, key)
        names += [
            str(m["id"]) for m in doc.get("data") or [] if isinstance(m, dict) and m.get("id")
        ]
        if not doc.get("has_more") or not doc.get("last_id"):
            break
        params = {"limit": 1000, "after_id": doc["last_id"]}
    return names


def _gemini(client: httpx.Client, base_url: str, key: str) -> list[str]:
    url = strip_suffix(base_url, "/v1beta", "/v1") + "/v1beta/models"
    headers = {"x-goog-api-key": key}
    names: list[str] = []
    params: dict[str, Any] = {"pageSize": 1000}
    for _ in range(MAX_PAGES):
        doc = _get(client, url, headers, params, key)
        for model in doc.get("models") or []:
            methods = model.get("supportedGenerationMethods")
            if methods is not None and "generateContent" not in methods:
                continue  # embedding and other non-chat models
            name = str(model.get("name", ""))
            if name:
                names.append(name.removeprefix("models/"))
        token = doc.get("nextPageToken")
        if not token:
            break
        params = {"pageSize": 1000, "pageToken": token}
    return names


def _cohere(client: httpx.Client, base_url: str, key: str) -> list[str]:
    url = strip_suffix(base_url, "/v1", "/v2") + "/v1/models"
    headers = {"authorization": f"Bearer {key}"}
    names: list[str] = []
    params: dict[str, Any] = {"endpoint": "chat", "page_size": 1000}
    for _ in range(MAX_PAGES):
        doc = _get(client, url, headers, params, key)
        names += [
            str(m["name"]) for m in doc.get("models") or [] if isinstance(m, dict) and m.get("name")
        ]
        token = doc.get("next_page_token")
        if not token:
            break
        params = {"endpoint": "chat", "page_size": 1000, "page_token": token}
    return names


def _ollama(client: httpx.Client, base_url: str, key: str) -> list[str]:
    url = strip_suffix(base_url, "/v1") + "/api/tags"
    doc = _get(client, url, {}, {}, key)
    return [
        str(m.get("name") or m.get("model")) for m in doc.get("models") or [] if isinstance(m, dict)
    ]


LISTERS = {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
    "cohere": _cohere,
    "ollama": _ollama,
}


def fetch_models(
    listing: str,
    base_url: str,
    api_key: str = "",
    timeout: float = 5.0,
    client: httpx.Client | None = None,
) -> list[str]:
    """The provider's own list; raises ListingError (key-free) when it cannot be had."""
    lister = LISTERS.get(listing)
    if lister is None:
        raise ListingError("this provider has no model list endpoint")
    own = client is None
    client = client or httpx.Client(timeout=timeout, trust_env=False, follow_redirects=True)
    try:
        return sorted(set(lister(client, base_url, api_key)))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ListingError("the answer did not look like a model list") from None
    finally:
        if own:
            client.close()
