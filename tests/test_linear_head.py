"""The linear head of the evaluation (quality/linear_head.py): per-source intercepts, the
inner leave-one-source-out choice of its strength, and `evaluate --router linear` on the
real sources with a vectors file made here."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from xrouter_core.quality import linear_head, sources
from xrouter_core.quality.routellm_data import routed_text


def synthetic_rows(count_per_source: int = 200, seed: int = 1):
    """Four sources; the gain is 1 where a hidden difficulty is high. Vector column 0 is
    that difficulty plus noise, column 1 is the source's mean gain (which source it is),
    column 2 is noise."""
    rng = random.Random(seed)
    rows, vectors = [], []
    for s, base in enumerate((0.1, 0.3, 0.6, 0.8)):
        for i in range(count_per_source):
            hard = rng.random()
            strong = 1.0 if hard > 1 - base else 0.0
            rows.append(sources.Row(f"src{s}", "t", f"p{s}-{i}", strong, 0.0))
            vectors.append([hard + rng.gauss(0, 0.1), base, rng.gauss(0, 1)])
    return rows, np.asarray(vectors)


def test_the_head_learns_the_within_source_signal_not_the_source():
    rows, matrix = synthetic_rows()
    head = linear_head.train(matrix, rows)
    assert head.alpha in linear_head.ALPHAS and head.inner_apgr is not None
    assert head.inner_apgr > 0.7  # the difficulty ranks each source (random: about 0.5)
    weights = head.weights
    # One intercept per source: the column that only says which source it is gets nothing.
    assert weights[0] > 0 and abs(weights[1]) < 1e-6 * abs(weights[0])
    assert abs(weights[2]) < 0.1 * abs(weights[0])
    # Deterministic: the same rows give the same head.
    again = linear_head.train(matrix, rows)
    assert again.alpha == head.alpha and np.array_equal(again.weights, head.weights)


def test_the_head_refuses_test_only_sources():
    rows, matrix = synthetic_rows(20)
    rows[0] = sources.Row("alpaca_eval", "t", "x", 1.0, 0.0)
    with pytest.raises(ValueError, match="test-only"):
        linear_head.train(matrix, rows)


TRAIN_SAMPLE = 120  # training prompts per source given a vector: the fold stays small


def test_evaluate_linear_router_trains_on_the_fold_and_reports_its_strength(tmp_path):
    """Vectors (a prompt's length and digit count as the router sees it) for every test
    prompt and a sample of each other source's, then one leave-one-source-out fold with
    the linear head next to random: the head trains on the sampled prompts of the other
    sources only (`--vectors-partial`)."""
    everything = sources.load_all()
    pick = random.Random(0)
    vectors = {}
    sampled = 0
    for name, rows in everything.items():
        if name != "llmrouter_code":
            rows = pick.sample(rows, min(TRAIN_SAMPLE, len(rows)))
            sampled += len(rows) if name not in sources.TEST_ONLY else 0
        for row in rows:
            text = routed_text(row.prompt)
            vectors[linear_head.vector_key(text)] = np.asarray(
                [np.log1p(len(text)), sum(c.isdigit() for c in text)], dtype=np.float32
            )
    path = tmp_path / "vectors.npz"
    np.savez(path, **vectors)
    report_path = tmp_path / "r.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xrouter_core.quality.evaluate",
            "--router",
            "linear",
            "random",
            "--source",
            "llmrouter_code",
            "--bootstrap",
            "10",
            "--vectors",
            str(path),
            "--vectors-hand",
            "--vectors-partial",
            "--json",
            str(report_path),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    entry = json.loads(report_path.read_text())["sources"]["llmrouter_code"]
    assert "llmrouter_code" not in entry["train_sources"]
    linear = entry["routers"]["linear"]
    assert linear["alpha"] in linear_head.ALPHAS and 0 < linear["inner_apgr"] < 2
    assert linear["train_rows"] == sampled  # the sample of the training sources, no more
    low, high = linear["ci95"]["apgr"]
    assert low <= high
    assert "| llmrouter_code | 164 |" in done.stdout

    # A file without the prompts' vectors is refused with a clear message.
    np.savez(path, **dict(list(vectors.items())[:10]))
    done = subprocess.run(
        [sys.executable, "-m", "xrouter_core.quality.evaluate", "--router", "linear",
         "--source", "llmrouter_code", "--bootstrap", "0", "--vectors", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "have no vector" in done.stderr


def test_evaluate_rejects_linear_without_vectors():
    done = subprocess.run(
        [sys.executable, "-m", "xrouter_core.quality.evaluate", "--router", "linear"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "--vectors" in done.stderr


def test_partial_vectors_train_on_the_rows_they_cover_and_linear_hand_adds_hand_features(
    tmp_path,
):
    """Vectors for each source's --sample only (slow features): without --vectors-partial
    the fold's training rows lack vectors and the run is refused; with it, both heads train
    on exactly the covered training rows, in one run next to each other."""
    from xrouter_core.quality.evaluate import sample

    everything = sources.load_all()
    size, held = 40, "llmrouter_code"
    vectors = {}
    for rows in everything.values():
        for row in sample(rows, size, 0):
            text = routed_text(row.prompt)
            vectors[linear_head.vector_key(text)] = np.asarray(
                [np.log1p(len(text)), sum(c.isdigit() for c in text)], dtype=np.float32
            )
    # Written in two files (as two shards of a slow run would be), read as their union.
    path, other = tmp_path / "vectors.npz", tmp_path / "more.npz"
    items = list(vectors.items())
    np.savez(path, **dict(items[::2]))
    np.savez(other, **dict(items[1::2]))
    command = [
        sys.executable, "-m", "xrouter_core.quality.evaluate",
        "--router", "linear", "linear_hand", "random", "--source", held,
        "--sample", str(size), "--bootstrap", "0", "--vectors", str(path), str(other),
    ]  # fmt: skip
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert refused.returncode != 0 and "have no vector" in refused.stderr

    report_path = tmp_path / "r.json"
    done = subprocess.run(
        [*command, "--vectors-partial", "--json", str(report_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    entry = json.loads(report_path.read_text())["sources"][held]
    assert entry["prompts"] == size
    covered = sum(
        min(size, len(rows))
        for name, rows in everything.items()
        if name != held and name not in sources.TEST_ONLY
    )
    linear, hand = entry["routers"]["linear"], entry["routers"]["linear_hand"]
    assert linear["train_rows"] == hand["train_rows"] == covered
    assert linear["alpha"] in linear_head.ALPHAS and hand["alpha"] in linear_head.ALPHAS
    # Two vector columns against two plus the hand features: different heads, different scores.
    assert [p["threshold"] for p in linear["points"]] != [p["threshold"] for p in hand["points"]]
    assert "APGR linear_hand" in done.stdout
