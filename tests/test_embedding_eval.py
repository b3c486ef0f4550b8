"""The embedding classifier of the evaluation (quality/embedding.py): its bank, the
nearest neighbours' score, and the engine client against a loopback fake of the OpenAI
`/v1/embeddings` wire format (tests/fakes.py: a bag of hashed words per text)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from fakes import FakeEmbeddingEngine, Reply, hashed_words

from xrouter_core.quality import embedding, sources
from xrouter_core.quality.embedding import EngineError, build_bank, knn_score, unit_rows


@pytest.fixture
def engine():
    server = FakeEmbeddingEngine()
    yield server
    server.close()


def embed(engine, texts, **kwargs):
    async def scenario():
        async with httpx.AsyncClient(trust_env=False) as client:
            return await embedding.embed(client, engine.url + "/v1", "all-minilm", texts, **kwargs)

    return asyncio.run(scenario())


# ---- the bank ------------------------------------------------------------------------------


def test_the_bank_weighs_sources_alike_centres_labels_and_leaves_test_sources_out():
    rows = sources.load_all()
    bank = build_bank(rows)
    assert bank == build_bank(rows)  # the same on every run
    assert "alpaca_eval" not in set(bank.sources)  # evaluation only (CC-BY-NC-4.0)
    for name in sources.trainable(rows):
        count = bank.sources.count(name)
        assert count == min(len(rows[name]), embedding.PER_SOURCE), name
    assert all(len(text) <= embedding.BANK_CHARS for text in bank.texts)
    assert 0.0 < bank.base < 1.0 and all(-1.0 <= label <= 1.0 for label in bank.labels)
    # Labels are gains less the source's mean: each source's labels sum to about zero.
    code = [
        label for label, s in zip(bank.labels, bank.sources, strict=True) if s == "llmrouter_code"
    ]
    assert abs(sum(code) / len(code)) < 0.1
    less = bank.without("llmrouter_code")
    assert "llmrouter_code" not in less.sources
    assert len(less.texts) == len(bank.texts) - len(code)


# ---- the score ----------------------------------------------------------------------------


def test_knn_score_is_the_similarity_weighted_mean_label_plus_base_clipped():
    matrix = unit_rows([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = np.asarray([0.4, -0.4, 0.0], dtype=np.float32)
    vector = unit_rows([[1.0, 0.0]])[0]
    assert knn_score(matrix, labels, 0.3, vector, 1) == pytest.approx(0.7)  # the nearest alone
    # k=2: rows 0 (cos 1) and 2 (cos 0.707), weighted by cos^2: (0.4 * 1 + 0 * 0.5) / 1.5.
    assert knn_score(matrix, labels, 0.3, vector, 2) == pytest.approx(0.3 + 0.4 / 1.5, abs=1e-4)
    assert knn_score(matrix, labels, 0.9, vector, 1) == 1.0  # clipped
    assert knn_score(matrix, labels, -0.9, vector, 1) == 0.0
    assert 0.0 <= knn_score(matrix, labels, 0.3, vector, 99) <= 1.0  # k above the bank's size


def test_neighbours_of_hard_prompts_score_above_neighbours_of_easy_ones(engine):
    hard = "prove the theorem about prime numbers rigorously"
    easy = "hello thanks see you soon friend"
    texts = [f"{hard} one", f"{hard} two", f"{easy} one", f"{easy} two"]
    labels = np.asarray([0.5, 0.4, -0.3, -0.2], dtype=np.float32)
    matrix = unit_rows(embed(engine, texts))
    high, low = (
        knn_score(matrix, labels, 0.3, unit_rows(embed(engine, [q]))[0], 2)
        for q in (f"{hard} please", f"{easy} again")
    )
    assert high > 0.66 and low < 0.2


# ---- the engine client ---------------------------------------------------------------------


def test_the_client_speaks_openai_embeddings_and_keeps_input_order(engine):
    texts = ["b b", "a", "x" * 5000]
    vectors = embed(engine, texts, api_key="sk-embed-secret-0042")
    assert vectors == [hashed_words(t) for t in ["b b", "a", "x" * embedding.MAX_CHARS]]
    sent = engine.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": "all-minilm", "input": ["b b", "a", "x" * embedding.MAX_CHARS]}
    assert sent.headers["authorization"] == "Bearer sk-embed-secret-0042"
    assert embedding.embeddings_url("http://h:1/v1/") == "http://h:1/v1/embeddings"
    assert embedding.embeddings_url("http://h:1/v1/embeddings") == "http://h:1/v1/embeddings"


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        (Reply(500, {"error": {"message": "model crashed"}}), 'HTTP 500: {"error"'),
        (Reply(200, {"object": "list", "data": []}), "0 usable embeddings for 1 inputs"),
        (Reply(200, {"data": [{"index": 0, "embedding": "nope"}]}), "no data[].embedding"),
        (Reply(200, "<html>not json</html>"), "not JSON"),
    ],
)
def test_an_engine_that_gives_no_usable_vectors_is_named_with_why(engine, failure, says):
    engine.failure = failure
    with pytest.raises(EngineError) as caught:
        embed(engine, ["hello"])
    assert says in str(caught.value)
