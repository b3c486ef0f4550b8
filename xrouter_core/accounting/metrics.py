"""GET /metrics: the usage counters in Prometheus' text exposition format (0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xrouter_core.accounting.usage import BUCKETS_MS, NANO_USD, Stored, key_rows, payment_fields
from xrouter_core.tiers import TIERS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Counter families read straight from the stored counters, as (name, help, counter field,
# kinds): `t|{tier}|{field}` per tier, `m|{tier}|{provider}|{model}|{field}` per model; a
# field with `{kind}` gives one sample per kind (see _counters).
TIER_FAMILIES = (
    ("xrouter_requests_total", "Routed requests by route tier.", "requests", ()),
    ("xrouter_errors_total", "Routed requests that ended in an error.", "errors", ()),
    ("xrouter_tokens_total", "Tokens by route tier and kind.", "{kind}", ("prompt", "completion")),
    (
        "xrouter_cached_tokens_total",
        "Prompt tokens read from (read) or written to (write) a provider's prompt cache,"
        " by tier; they are part of the prompt tokens.",
        "cache_{kind}",
        ("read", "write"),
    ),
)
MODEL_FAMILIES = (
    ("xrouter_model_requests_total", "Requests by tier, provider and model.", "requests", ()),
    (
        "xrouter_model_tokens_total",
        "Tokens by tier, provider, model, kind.",
        "{kind}",
        ("prompt", "completion"),
    ),
    (
        "xrouter_model_cached_tokens_total",
        "Cached prompt tokens (read, write) by tier, provider and model.",
        "cache_{kind}",
        ("read", "write"),
    ),
    (
        "xrouter_model_unpriced_requests_total",
        "Requests of a model with no known price, counted at zero cost.",
        "unpriced",
        (),
    ),
)
# Families with samples per client key, as (name, type, help, samples): each sample is
# a field of the key's row (key_rows, or the budgets) and the labels it adds to `key`.
KEY_FAMILIES: tuple[tuple[str, str, str, tuple[tuple[str, dict[str, str]], ...]], ...] = (
    ("xrouter_key_requests_total", "counter", "Requests by client key.", (("requests", {}),)),
    ("xrouter_key_cost_usd_total", "counter", "Cost in USD by client key.", (("costUsd", {}),)),
    (
        "xrouter_key_cache_hits_total",
        "counter",
        "Requests of a client key answered from the response cache (at no cost).",
        (("cacheHits", {}),),
    ),
    (
        "xrouter_key_cache_saved_usd_total",
        "counter",
        "USD a client key's response-cache hits saved (their answers' first cost).",
        (("cacheSavedUsd", {}),),
    ),
    (
        "xrouter_key_rate_limited_total",
        "counter",
        "Requests of a client key refused over its requests-per-minute limit.",
        (("rateLimited", {}),),
    ),
    (
        "xrouter_key_refused_total",
        "counter",
        "Requests of a client key refused over a budget or its tokens-per-minute limit.",
        (("overBudget", {"limit": "budget"}), ("overTokens", {"limit": "tpm"})),
    ),
)
SPEND_FAMILY = (
    "xrouter_key_spend_usd",
    "gauge",
    "USD used of a client key's budget in the current UTC day or month (in flight too).",
    (("spentTodayUsd", {"period": "day"}), ("spentThisMonthUsd", {"period": "month"})),
)
HITS_HELP = "Requests answered from the response cache."


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items()) + "}"


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        text = repr(float(value)) if isinstance(value, float) else str(value)
        self.lines.append(f"{name}{_labels(**labels) if labels else ''} {text}")


def render_metrics(stored: Stored, budgets: Mapping[str, Mapping[str, Any]] | None = None) -> bytes:
    """The Prometheus text; `budgets`: the keys' budgets and what is used of them now
    (Accounting.key_budgets)."""
    c = stored.counters
    doc = _Doc()

    tiers = [(f"t|{tier}|", {"tier": tier}) for tier in TIERS]
    for family in TIER_FAMILIES:
        _counters(doc, c, tiers, *family)
    doc.family("xrouter_cost_usd_total", "counter", "Cost in USD by tier, priced per request.")
    for tier in TIERS:
        doc.sample("xrouter_cost_usd_total", c.get(f"t|{tier}|cost_nusd", 0) / NANO_USD, tier=tier)

    _payments(doc, c)

    keys = key_rows(c)
    for family in KEY_FAMILIES:
        _per_key(doc, keys, *family)
    budgets = budgets or {}
    _per_key(doc, budgets, *SPEND_FAMILY)
    doc.family("xrouter_key_budget_usd", "gauge", "A client key's budget per UTC day or month.")
    for name, row in budgets.items():
        for period, field in (("day", "dailyUsd"), ("month", "monthlyUsd")):
            if row[field]:
                doc.sample("xrouter_key_budget_usd", row[field], key=name, period=period)

    models = [
        (f"m|{tier}|{provider}|{model}|", {"tier": tier, "provider": provider, "model": model})
        for tier, provider, model in sorted(
            key[2 : -len("|requests")].split("|", 2)
            for key in c
            if key.startswith("m|") and key.endswith("|requests")
        )
    ]
    for family in MODEL_FAMILIES:
        _counters(doc, c, models, *family)

    doc.family(
        "xrouter_upstream_latency_seconds", "histogram", "Time from routing to the answer's end."
    )
    for tier in TIERS:
        _histogram(
            doc,
            "xrouter_upstream_latency_seconds",
            c,
            f"h|upstream|{tier}|",
            c.get(f"t|{tier}|upstream_us", 0),
            tier=tier,
        )
    doc.family("xrouter_classifier_latency_seconds", "histogram", "Classifier call duration.")
    classifier_us = sum(c.get(f"t|{tier}|classifier_us", 0) for tier in TIERS)
    _histogram(doc, "xrouter_classifier_latency_seconds", c, "h|classifier|all|", classifier_us)

    doc.family(
        "xrouter_decisions_total",
        "counter",
        "Routing decisions by source (llm, builtin, builtin_fallback, llm_failed, cache, ...) and tier.",
    )
    for key in sorted(k for k in c if k.startswith("d|")):
        _, source, digit = key.split("|", 2)
        doc.sample("xrouter_decisions_total", c[key], source=source, decision=digit)
    doc.family(
        "xrouter_classifier_failures_total", "counter", "LLM classifier calls with no answer."
    )
    failures = sum(
        v for k, v in c.items() if k.startswith(("d|llm_failed|", "d|builtin_fallback|"))
    )
    doc.sample("xrouter_classifier_failures_total", failures)

    doc.family("xrouter_cache_requests_total", "counter", "Response and decision cache lookups.")
    doc.sample(
        "xrouter_cache_requests_total", c.get("c|response|hit", 0), cache="response", result="hit"
    )
    doc.sample(
        "xrouter_cache_requests_total", c.get("c|response|miss", 0), cache="response", result="miss"
    )
    decision_hits = sum(v for k, v in c.items() if k.startswith("d|cache|"))
    doc.sample("xrouter_cache_requests_total", decision_hits, cache="decision", result="hit")
    _counters(doc, c, tiers, "xrouter_cache_hits_total", HITS_HELP, "cache_hits")
    doc.family(
        "xrouter_cache_saved_usd_total",
        "counter",
        "USD response-cache hits saved: what their answers cost when first served.",
    )
    for tier in TIERS:
        saved = c.get(f"t|{tier}|cache_saved_nusd", 0) / NANO_USD
        doc.sample("xrouter_cache_saved_usd_total", saved, tier=tier)

    doc.family("xrouter_fallbacks_total", "counter", "Requests retried on another route.")
    for key in sorted(k for k in c if k.startswith("f|")):
        _, source, target, reason = key.split("|", 3)
        doc.sample(
            "xrouter_fallbacks_total", c[key], **{"from": source, "to": target, "reason": reason}
        )
    return ("\n".join(doc.lines) + "\n").encode()


def _counters(
    doc: _Doc,
    c: dict[str, int],
    rows: list[tuple[str, dict[str, str]]],
    name: str,
    help_text: str,
    field: str,
    kinds: tuple[str, ...] = (),
) -> None:
    """A counter family read from the stored counters: per row (its counter-key prefix and
    labels) the counter `prefix + field`, 0 when absent; with `kinds`, one sample per kind,
    labelled with it, from `field` with `{kind}` filled in."""
    doc.family(name, "counter", help_text)
    for prefix, labels in rows:
        if not kinds:
            doc.sample(name, c.get(prefix + field, 0), **labels)
        for kind in kinds:
            doc.sample(name, c.get(prefix + field.format(kind=kind), 0), **labels, kind=kind)


def _per_key(
    doc: _Doc,
    rows: Mapping[str, Mapping[str, Any]],
    name: str,
    kind: str,
    help_text: str,
    samples: tuple[tuple[str, dict[str, str]], ...],
) -> None:
    """A family of samples per client key: for each key's row, each (field, labels)."""
    doc.family(name, kind, help_text)
    for key, row in rows.items():
        for field, labels in samples:
            doc.sample(name, row[field], key=key, **labels)


def _histogram(
    doc: _Doc, name: str, c: dict[str, int], prefix: str, sum_us: int, **labels: str
) -> None:
    cumulative = 0
    for bound in BUCKETS_MS:
        cumulative += c.get(f"{prefix}{bound}", 0)
        doc.sample(f"{name}_bucket", cumulative, **labels, le=repr(bound / 1000))
    cumulative += c.get(f"{prefix}inf", 0)
    doc.sample(f"{name}_bucket", cumulative, **labels, le="+Inf")
    doc.sample(f"{name}_sum", sum_us / 1_000_000, **labels)
    doc.sample(f"{name}_count", cumulative, **labels)


def _payments(doc: _Doc, c: dict[str, int]) -> None:
    """x402 per route (its key, e.g. frontier or frontier#2) and tier: payments signed,
    their amount, those the upstream settled, and 402s answered unpaid by reason."""
    _, routes = payment_fields(c)
    families = (
        ("xrouter_x402_payments_total", "x402 payments signed, by route.", "payments", 1),
        ("xrouter_x402_paid_usd_total", "USD paid over x402, by route.", "paid_uusd", 1e6),
        ("xrouter_x402_settled_total", "x402 payments the upstream said it settled.", "settled", 1),
    )
    for name, help_text, field, scale in families:
        doc.family(name, "counter", help_text)
        for route, row in sorted(routes.items()):
            value = row["fields"].get(field, 0)
            doc.sample(name, value / scale if scale != 1 else value, route=route, tier=row["tier"])
    doc.family(
        "xrouter_x402_refusals_total",
        "counter",
        "402s of a paying route answered to the client unpaid, by route and reason.",
    )
    for route, row in sorted(routes.items()):
        for field, value in sorted(row["fields"].items()):
            if field.startswith("refused:"):
                doc.sample(
                    "xrouter_x402_refusals_total",
                    value,
                    route=route,
                    tier=row["tier"],
                    reason=field.removeprefix("refused:"),
                )
