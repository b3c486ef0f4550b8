"""GET /metrics as text: the per-tier and per-model counter families, line for line, from
counters as the accounting stores them (no router needed: the renderer is plain code)."""

from __future__ import annotations

from xrouter_core.accounting.metrics import render_metrics
from xrouter_core.accounting.usage import Stored

# A cheap Ollama model and a frontier Anthropic one whose name needs escaping; counters
# left out must show as 0 where the family lists every tier or kind.
COUNTERS = {
    "t|cheap|requests": 3,
    "t|cheap|errors": 1,
    "t|cheap|prompt": 30,
    "t|cheap|completion": 12,
    "t|cheap|cache_read": 8,
    "t|frontier|cache_write": 4,
    "t|frontier|cost_nusd": 2500,
    "t|medium|cache_hits": 2,
    "m|cheap|ollama|llama3|requests": 3,
    "m|cheap|ollama|llama3|prompt": 30,
    "m|cheap|ollama|llama3|completion": 12,
    "m|cheap|ollama|llama3|cache_read": 8,
    "m|cheap|ollama|llama3|unpriced": 3,
    'm|frontier|anthropic|claude "x"|requests': 1,
    'm|frontier|anthropic|claude "x"|cache_write': 4,
}
EXPECTED = [
    "# HELP xrouter_requests_total Routed requests by route tier.",
    "# TYPE xrouter_requests_total counter",
    'xrouter_requests_total{tier="cheap"} 3',
    'xrouter_requests_total{tier="medium"} 0',
    'xrouter_requests_total{tier="frontier"} 0',
    "# HELP xrouter_errors_total Routed requests that ended in an error.",
    "# TYPE xrouter_errors_total counter",
    'xrouter_errors_total{tier="cheap"} 1',
    'xrouter_errors_total{tier="medium"} 0',
    'xrouter_errors_total{tier="frontier"} 0',
    "# HELP xrouter_tokens_total Tokens by route tier and kind.",
    "# TYPE xrouter_tokens_total counter",
    'xrouter_tokens_total{tier="cheap",kind="prompt"} 30',
    'xrouter_tokens_total{tier="cheap",kind="completion"} 12',
    'xrouter_tokens_total{tier="medium",kind="prompt"} 0',
    'xrouter_tokens_total{tier="medium",kind="completion"} 0',
    'xrouter_tokens_total{tier="frontier",kind="prompt"} 0',
    'xrouter_tokens_total{tier="frontier",kind="completion"} 0',
    "# HELP xrouter_cached_tokens_total Prompt tokens read from (read) or written to (write) a provider's prompt cache, by tier; they are part of the prompt tokens.",
    "# TYPE xrouter_cached_tokens_total counter",
    'xrouter_cached_tokens_total{tier="cheap",kind="read"} 8',
    'xrouter_cached_tokens_total{tier="cheap",kind="write"} 0',
    'xrouter_cached_tokens_total{tier="medium",kind="read"} 0',
    'xrouter_cached_tokens_total{tier="medium",kind="write"} 0',
    'xrouter_cached_tokens_total{tier="frontier",kind="read"} 0',
    'xrouter_cached_tokens_total{tier="frontier",kind="write"} 4',
    "# HELP xrouter_cost_usd_total Cost in USD by tier, priced per request.",
    "# TYPE xrouter_cost_usd_total counter",
    'xrouter_cost_usd_total{tier="cheap"} 0.0',
    'xrouter_cost_usd_total{tier="medium"} 0.0',
    'xrouter_cost_usd_total{tier="frontier"} 2.5e-06',
    "# HELP xrouter_model_requests_total Requests by tier, provider and model.",
    "# TYPE xrouter_model_requests_total counter",
    'xrouter_model_requests_total{tier="cheap",provider="ollama",model="llama3"} 3',
    'xrouter_model_requests_total{tier="frontier",provider="anthropic",model="claude \\"x\\""} 1',
    "# HELP xrouter_model_tokens_total Tokens by tier, provider, model, kind.",
    "# TYPE xrouter_model_tokens_total counter",
    'xrouter_model_tokens_total{tier="cheap",provider="ollama",model="llama3",kind="prompt"} 30',
    'xrouter_model_tokens_total{tier="cheap",provider="ollama",model="llama3",kind="completion"} 12',
    'xrouter_model_tokens_total{tier="frontier",provider="anthropic",model="claude \\"x\\"",kind="prompt"} 0',
    'xrouter_model_tokens_total{tier="frontier",provider="anthropic",model="claude \\"x\\"",kind="completion"} 0',
    "# HELP xrouter_model_cached_tokens_total Cached prompt tokens (read, write) by tier, provider and model.",
    "# TYPE xrouter_model_cached_tokens_total counter",
    'xrouter_model_cached_tokens_total{tier="cheap",provider="ollama",model="llama3",kind="read"} 8',
    'xrouter_model_cached_tokens_total{tier="cheap",provider="ollama",model="llama3",kind="write"} 0',
    'xrouter_model_cached_tokens_total{tier="frontier",provider="anthropic",model="claude \\"x\\"",kind="read"} 0',
    'xrouter_model_cached_tokens_total{tier="frontier",provider="anthropic",model="claude \\"x\\"",kind="write"} 4',
    "# HELP xrouter_model_unpriced_requests_total Requests of a model with no known price, counted at zero cost.",
    "# TYPE xrouter_model_unpriced_requests_total counter",
    'xrouter_model_unpriced_requests_total{tier="cheap",provider="ollama",model="llama3"} 3',
    'xrouter_model_unpriced_requests_total{tier="frontier",provider="anthropic",model="claude \\"x\\""} 0',
]


def test_tier_and_model_families_line_for_line():
    text = render_metrics(Stored(counters=COUNTERS, series={}, recent=[], updated=0.0))
    lines = text.decode().splitlines()
    tiers_end = lines.index("# HELP xrouter_x402_payments_total x402 payments signed, by route.")
    models = lines.index(
        "# HELP xrouter_model_requests_total Requests by tier, provider and model."
    )
    models_end = next(
        n for n, line in enumerate(lines) if line.startswith("# HELP xrouter_upstream_latency")
    )
    assert lines[:tiers_end] + lines[models:models_end] == EXPECTED
    assert 'xrouter_cache_hits_total{tier="medium"} 2' in lines


KEY_COUNTERS = {
    "k|team-a|requests": 3,
    "k|team-a|cost_nusd": 1500,
    "k|team-a|limited": 2,
    "k|team-a|over_daily": 1,
    "k|team-a|over_tpm": 4,
    "k|team-a|cache_hits": 2,
    "k|team-a|cache_saved_nusd": 40000,
    "k|b|requests": 1,
}
BUDGETS = {
    "team-a": {"spentTodayUsd": 0.5, "spentThisMonthUsd": 2.25, "dailyUsd": 1.0, "monthlyUsd": 0}
}
KEY_EXPECTED = [
    "# HELP xrouter_key_requests_total Requests by client key.",
    "# TYPE xrouter_key_requests_total counter",
    'xrouter_key_requests_total{key="b"} 1',
    'xrouter_key_requests_total{key="team-a"} 3',
    "# HELP xrouter_key_cost_usd_total Cost in USD by client key.",
    "# TYPE xrouter_key_cost_usd_total counter",
    'xrouter_key_cost_usd_total{key="b"} 0.0',
    'xrouter_key_cost_usd_total{key="team-a"} 1.5e-06',
    "# HELP xrouter_key_cache_hits_total Requests of a client key answered from the response"
    " cache (at no cost).",
    "# TYPE xrouter_key_cache_hits_total counter",
    'xrouter_key_cache_hits_total{key="b"} 0',
    'xrouter_key_cache_hits_total{key="team-a"} 2',
    "# HELP xrouter_key_cache_saved_usd_total USD a client key's response-cache hits saved"
    " (their answers' first cost).",
    "# TYPE xrouter_key_cache_saved_usd_total counter",
    'xrouter_key_cache_saved_usd_total{key="b"} 0.0',
    'xrouter_key_cache_saved_usd_total{key="team-a"} 4e-05',
    "# HELP xrouter_key_rate_limited_total Requests of a client key refused over its"
    " requests-per-minute limit.",
    "# TYPE xrouter_key_rate_limited_total counter",
    'xrouter_key_rate_limited_total{key="b"} 0',
    'xrouter_key_rate_limited_total{key="team-a"} 2',
    "# HELP xrouter_key_refused_total Requests of a client key refused over a budget or its"
    " tokens-per-minute limit.",
    "# TYPE xrouter_key_refused_total counter",
    'xrouter_key_refused_total{key="b",limit="budget"} 0',
    'xrouter_key_refused_total{key="b",limit="tpm"} 0',
    'xrouter_key_refused_total{key="team-a",limit="budget"} 1',
    'xrouter_key_refused_total{key="team-a",limit="tpm"} 4',
    "# HELP xrouter_key_spend_usd USD used of a client key's budget in the current UTC day or"
    " month (in flight too).",
    "# TYPE xrouter_key_spend_usd gauge",
    'xrouter_key_spend_usd{key="team-a",period="day"} 0.5',
    'xrouter_key_spend_usd{key="team-a",period="month"} 2.25',
    "# HELP xrouter_key_budget_usd A client key's budget per UTC day or month.",
    "# TYPE xrouter_key_budget_usd gauge",
    'xrouter_key_budget_usd{key="team-a",period="day"} 1.0',
]


def test_client_key_families_line_for_line():
    """Every key of key_rows in each family; a budget of 0 (none) is not a sample."""
    text = render_metrics(Stored(KEY_COUNTERS, {}, [], 0.0), BUDGETS).decode()
    lines = text.splitlines()
    start = lines.index(KEY_EXPECTED[0])
    assert lines[start : start + len(KEY_EXPECTED) + 1] == [
        *KEY_EXPECTED,
        "# HELP xrouter_model_requests_total Requests by tier, provider and model.",
    ]
