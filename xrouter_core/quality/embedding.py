"""An embedding classifier, for measurement: a prompt scores like the labelled prompts nearest to it.

    python -m xrouter_core.quality.evaluate --router builtin embedding \\
        --embedding-url http://127.0.0.1:11434/v1 --embedding-model all-minilm

An OpenAI-compatible engine (`POST {base}/embeddings`: Ollama, llama.cpp's server with
`--embedding`, vLLM, a hosted API) embeds a bank of labelled prompts and each test prompt;
the score is base + the similarity-weighted mean label of the prompt's K nearest bank
prompts, clipped into [0, 1]. The bank (`build_bank`) takes at most PER_SOURCE prompts of
every trainable source, each labelled with its gain (max(strong - weak, 0)) less its
source's mean gain, so the neighbours say how much harder a prompt is than its kind's
usual, not how hard its benchmark is; `base` is the mean over sources of their mean gain.

It is not a router mode: measured leave-one-source-out with all-MiniLM-L6-v2 it ranks no
better than chance and below the built-in classifier (docs/classifiers.md, "Embedding
classifier"), and the routing-quality issue keeps it only where it beats the built-in one.
This module lets anyone measure another embedding model the same way. numpy does the
arithmetic (the `evaluation` extra).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from xrouter_core.quality import sources
from xrouter_core.quality.routellm_data import routed_text

if TYPE_CHECKING:
    import numpy as np

PER_SOURCE = 400  # bank prompts per source, chosen by a salted hash of the text
BANK_CHARS = 1000  # bank prompts are cut to this
MAX_CHARS = 2000  # any text sent to the engine is cut to this (small models read 256-512 tokens)
BATCH = 64  # texts per embeddings request
NEIGHBOURS = 50


class EngineError(Exception):
    """The engine gave no usable embeddings; the message says why."""


@dataclass(frozen=True)
class Bank:
    """Labelled prompts: text, label around `base`, and the source it came from."""

    texts: tuple[str, ...]
    labels: tuple[float, ...]
    sources: tuple[str, ...]
    base: float

    def without(self, source: str) -> Bank:
        """The bank less one source's prompts (leave-one-source-out)."""
        keep = [i for i, s in enumerate(self.sources) if s != source]
        return Bank(
            tuple(self.texts[i] for i in keep),
            tuple(self.labels[i] for i in keep),
            tuple(self.sources[i] for i in keep),
            self.base,
        )


def _rank(prompt: str) -> bytes:
    return hashlib.sha256(b"bank:" + prompt.encode("utf-8", "surrogatepass")).digest()


def _gain(row: sources.Row) -> float:
    return min(max(row.gain, 0.0), 1.0)


def build_bank(rows: Mapping[str, Sequence[sources.Row]], per_source: int = PER_SOURCE) -> Bank:
    """The bank of the trainable sources (never `sources.TEST_ONLY`), the same on every machine."""
    texts: list[str] = []
    labels: list[float] = []
    names: list[str] = []
    means: list[float] = []
    for name in sources.trainable(dict(rows)):
        if not rows[name]:
            continue
        mean = sum(map(_gain, rows[name])) / len(rows[name])
        means.append(mean)
        for row in sorted(rows[name], key=lambda r: _rank(r.prompt))[:per_source]:
            texts.append(routed_text(row.prompt)[:BANK_CHARS])
            labels.append(_gain(row) - mean)
            names.append(name)
    return Bank(tuple(texts), tuple(labels), tuple(names), sum(means) / len(means))


def embeddings_url(base_url: str) -> str:
    """`http://host:11434/v1` -> `.../v1/embeddings` (a full `/embeddings` URL is kept)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/embeddings") else f"{base}/embeddings"


def vectors_of(doc: Any, count: int) -> list[list[float]]:
    """The `data[].embedding` lists of an OpenAI embeddings answer, in input order."""
    try:
        items = sorted(doc["data"], key=lambda item: item.get("index", 0))
        found = [[float(x) for x in item["embedding"]] for item in items]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"no data[].embedding in the answer ({exc!r})") from None
    if len(found) != count or not all(found) or len({len(v) for v in found}) != 1:
        raise EngineError(f"{len(found)} usable embeddings for {count} inputs")
    return found


async def embed(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    texts: Sequence[str],
    api_key: str = "",
) -> list[list[float]]:
    """One `POST /embeddings` for these texts, each cut to MAX_CHARS."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    body = {"model": model or "default", "input": [t[:MAX_CHARS] for t in texts]}
    url = embeddings_url(base_url)
    response = await client.post(url, content=json.dumps(body).encode(), headers=headers)
    if response.status_code != 200:
        detail = response.text[:200].replace("\n", " ")
        raise EngineError(f"{url} answered HTTP {response.status_code}: {detail}")
    try:
        doc = response.json()
    except ValueError:
        raise EngineError(f"{url} answered something that is not JSON") from None
    return vectors_of(doc, len(texts))


def unit_rows(rows: Sequence[Sequence[float]]) -> np.ndarray:
    import numpy as np

    matrix = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def knn_score(
    matrix: np.ndarray, labels: np.ndarray, base: float, vector: np.ndarray, neighbours: int
) -> float:
    """base + the similarity-weighted (cosine squared) mean label of the nearest rows, in [0, 1].

    `matrix` rows and `vector` are unit length, so the dot product is the cosine."""
    import numpy as np

    sims = matrix @ vector
    k = min(max(neighbours, 1), len(sims))
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    weights = np.maximum(sims[top], 0.0) ** 2 + 1e-6
    value = base + float(labels[top] @ weights / weights.sum())
    return min(max(value, 0.0), 1.0)
